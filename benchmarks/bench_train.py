"""Iterations per second of the whole `avseg train` loop on a synthetic dataset in the AVSBench layout.

Usage:
    python benchmarks/bench_train.py --config r50 --device cuda --amp bf16 off --iters 60
    python benchmarks/bench_train.py --config tiny --device cpu --iters 10 --size 96x160

Unlike bench_model.py (the network's forward+backward alone), this times what a training run does per
iteration: data loading and augmentation (--workers processes), VGGish on the fly, the forward, Hungarian
matching, the point-sampled losses, the backward, gradient clipping and the AdamW step. The dataset is
written once to a temporary folder (--videos train videos of HEIGHTxWIDTH frames, the size of a 360p video),
then `train()` runs with log_period 1; iterations/s are taken from the log's timestamps after --skip
warm-up iterations. Weights are random (a Mask2Former init changes nothing in the cost). CUDA also reports
the peak memory allocated.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _iterations_per_second(log: Path, skip: int) -> tuple[float, int]:
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    timed = [r for r in rows if r["iteration"] > skip]
    if len(timed) < 2:
        raise SystemExit(f"too few iterations after the {skip} skipped to time ({len(rows)} logged)")
    first, last = timed[0], timed[-1]
    return (last["iteration"] - first["iteration"]) / (last["time"] - first["time"]), len(timed) - 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="r50", choices=["r50", "swinb", "tiny"])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--amp", nargs="+", default=["off"], choices=["off", "bf16", "fp16"])
    parser.add_argument("--iters", type=int, default=60)
    parser.add_argument("--skip", type=int, default=10, help="warm-up iterations left out of the rate")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--videos", type=int, default=8)
    parser.add_argument("--size", default="360x640", help="HEIGHTxWIDTH of the synthetic frames")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from models.data.synthetic import make_synthetic_avsbench
    from models.pipeline.prepare import prepare_dataset
    from models.pipeline.train import TrainOptions, train

    height, width = (int(v) for v in args.size.lower().split("x"))
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
                  f"final loss {result.final_loss:.3f}, peak {peak:.2f} GiB", flush=True)

    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    print(f"\n`avseg train` loop, {args.config}, batch {args.batch_size}, {height}x{width} synthetic frames, "
          f"{args.workers} workers, {name}")
    print(f"{'amp':6} {'it/s':>7} {'s/it':>7} {'peak GiB':>9}")
    for amp, rate, _timed, _loss, peak in results:
        print(f"{amp:6} {rate:7.2f} {1 / rate:7.3f} {peak:9.2f}")


if __name__ == "__main__":
    main()
