"""Iterations per second of the whole `avseg train` loop on a synthetic dataset in the AVSBench layout.

Usage:
    python benchmarks/bench_train.py --config r50 --device cuda --amp bf16 off --iters 60
    python benchmarks/bench_train.py --config tiny --device cpu --iters 10 --size 96x160

Unlike bench_model.py (the network's forward+backward alone), this times what a training run does per
iteration: data loading and augmentation (--workers processes), VGGish on the fly, the forward, Hungarian
matching, the point-sampled losses, the backward, gradient clipping and the AdamW step. The dataset is
written once to a temporary folder (--videos train videos of HEIGHTxWIDTH frames, the size of a 360p video),
then `train()` runs with log_period 1; iterations/s are taken from the log's timestamps after --skip
warm-up iterations: from the end of iteration --skip to the end of the last one, so --iters minus --skip
iterations are timed (--skip 0: from the start of the loop, worker start-up included). Weights are random (a
Mask2Former init changes nothing in the cost). CUDA also reports the peak memory allocated ("n/a" on the CPU).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import default_workers, fail, require_device, run  # noqa: E402

DEFAULT_WORKERS = default_workers(4)


def _iterations_per_second(log: Path, skip: int) -> tuple[float, int]:
    """(iterations per second, iterations timed) from a log with one row per iteration (iteration numbers count
    from 1, `time` = seconds since the loop started, at the end of that iteration): the iterations after the
    first `skip`, from the end of iteration `skip` (the loop's start for 0) to the end of the last."""
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    start = {"iteration": 0, "time": 0.0} if skip == 0 else next((r for r in rows if r["iteration"] == skip), None)
    last = rows[-1] if rows else None
    if start is None or last is None or last["iteration"] <= skip:
        fail(f"no iteration to time after the {skip} skipped ({len(rows)} logged)", 1)
    timed = last["iteration"] - start["iteration"]
    return timed / (last["time"] - start["time"]), timed


def _size(text: str) -> tuple[int, int]:
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HEIGHTxWIDTH, e.g. 360x640, got {text!r}") from None
    if min(height, width) < 1:
        raise argparse.ArgumentTypeError(f"expected HEIGHTxWIDTH with positive sides, got {text!r}")
    return height, width


def _peak(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.2f}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="r50", choices=["r50", "swinb", "tiny"], help="network config")
    parser.add_argument("--device", default="cuda", help="cuda[:N] (default) or cpu")
    parser.add_argument("--amp", nargs="+", default=["off"], choices=["off", "bf16", "fp16"],
                        help="autocast modes to time, one run each (fp16 needs CUDA)")
    parser.add_argument("--iters", type=int, default=60, help="iterations per run, warm-up included")
    parser.add_argument("--skip", type=int, default=10,
                        help="warm-up iterations left out of the rate (at most --iters minus 1)")
    parser.add_argument("--batch-size", type=int, default=1, help="clips per iteration")
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS,
                        help=f"data-loader worker processes (default: 4 or the CPUs available, here {DEFAULT_WORKERS})")
    parser.add_argument("--videos", type=int, default=8, help="synthetic training videos")
    parser.add_argument("--size", type=_size, default="360x640", help="HEIGHTxWIDTH of the synthetic frames")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    return parser


def main() -> None:
    args = build_parser().parse_args()
    require_device(args.device)
    if args.skip < 0 or args.iters <= args.skip:
        fail(f"--iters {args.iters} must be larger than --skip {args.skip} (>= 0): nothing would be timed")
    if "fp16" in args.amp and torch.device(args.device).type != "cuda":
        fail(f"--amp fp16 needs a CUDA device: on {args.device} use off or bf16")
    if args.workers < 0 or args.videos < 1 or args.batch_size < 1:
        fail("--workers must be >= 0, --videos and --batch-size >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)

    from models.data.synthetic import make_synthetic_avsbench
    from models.pipeline.prepare import prepare_dataset
    from models.pipeline.train import TrainOptions, train

    height, width = args.size
    results = []
    with tempfile.TemporaryDirectory(prefix="avseg-bench-train-") as tmp:
        root = Path(tmp)
        make_synthetic_avsbench(root / "avs", num_train=args.videos, num_val=1, num_test=1, seed=0,
                                size=(height, width))
        prepare_dataset(root / "avs", root / "data")
        for amp in args.amp:
            device = torch.device(args.device)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            out = root / f"run-{amp}"
            result = train(TrainOptions(data_dir=root / "data", config_name=args.config, out_dir=out,
                                        device=args.device, max_iters=args.iters, amp=amp,
                                        batch_size=args.batch_size, checkpoint_period=10**9, log_period=1,
                                        num_workers=args.workers, vggish_weights="random"),
                           warn=lambda *_: None)
            rate, timed = _iterations_per_second(out / "log.jsonl", args.skip)
            peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
            results.append((amp, rate, timed, result.final_loss, peak))
            print(f"{args.config} {args.device} amp={amp}: {rate:.2f} it/s over {timed} iterations, "
                  f"final loss {result.final_loss:.3f}, peak {_peak(peak)} GiB", flush=True)

    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    print(f"\n`avseg train` loop, {args.config}, batch {args.batch_size}, {height}x{width} synthetic frames, "
          f"{args.workers} workers, {name}")
    print(f"{'amp':6} {'it/s':>7} {'s/it':>7} {'peak GiB':>9}")
    for amp, rate, _timed, _loss, peak in results:
        print(f"{amp:6} {rate:7.2f} {1 / rate:7.3f} {_peak(peak):>9}")


if __name__ == "__main__":
    run(main)
