"""Speed and memory of the OV-AVSS network: forward and forward+backward per 5-frame clip.

Usage:
    .venv/bin/python benchmarks/bench_model.py --configs r50 swinb --device cpu --short-side 360
    .venv/bin/python benchmarks/bench_model.py --configs r50 --device cuda --amp bf16

Inputs are random (normalised-scale) frames of a 16:9 video resized to the given short side and padded to a
multiple of 32, with random VGGish examples; weights are random (speed does not depend on them). Times are
medians over --repeat runs after --warmup runs; CUDA times are taken between synchronisations.
Reports per-clip and per-frame times, "training it/s" at batch 1 and peak memory (CUDA: max allocated;
CPU: peak RSS of the process, which includes everything loaded before). On the CPU it also prints the process
CPU time of a forward and the CPU time the hypervisor stole from this machine meanwhile (/proc/stat), because
on a shared virtual machine wall times vary with the neighbours' load.

--sampling picks the deformable-attention sampling form (compare gather and grid_sample); --stages adds the
forward time of each stage (backbone, VGGish, pixel decoder, mask decoder). --runner graphs replays the forward
as CUDA graphs (`models.ovavss.graphed_network`), --runner compile[-MODE] runs it through torch.compile; their
first call (capture or compilation) is reported on its own.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import time

import torch
from _common import fail, require_device, run


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _steal_ticks() -> int | None:
    """Clock ticks the hypervisor gave to other guests (the 'steal' column of /proc/stat), if known."""
    try:
        with open("/proc/stat") as stat:
            return int(stat.readline().split()[8])
    except (OSError, IndexError, ValueError):
        return None


def _median_time(fn, device: torch.device, warmup: int, repeat: int) -> tuple[float, float]:
    """Median wall time and median process CPU time (all threads) of `fn` over `repeat` runs."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times, cpu_times = [], []
    for _ in range(repeat):
        start, cpu_start = time.perf_counter(), time.process_time()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
    return statistics.median(times), statistics.median(cpu_times)


def _stage_timer(model: torch.nn.Module, device: torch.device) -> dict[str, list[float]]:
    """Forward hooks that record the wall time of the model's main stages on every call."""
    stages = {"backbone": model.backbone, "audio (VGGish)": model.audio_encoder,
              "pixel decoder": model.sem_seg_head.pixel_decoder, "mask decoder": model.sem_seg_head.predictor}
    times: dict[str, list[float]] = {name: [] for name in stages}
    for name, module in stages.items():
        def before(_module, _inputs, name=name):
            _sync(device)
            times[name].append(-time.perf_counter())

        def after(_module, _inputs, _output, name=name):
            _sync(device)
            times[name][-1] += time.perf_counter()

        module.register_forward_pre_hook(before)
        module.register_forward_hook(after)
    return times


RUNNERS = ("eager", "graphs", "compile", "compile-reduce-overhead", "compile-max-autotune")


def bench(config: str, device: torch.device, short_side: int, frames: int, amp: str, warmup: int, repeat: int,
          backward: bool, sampling: str = "auto", stages: bool = False, runner: str = "eager") -> dict:
    from models.ovavss.deform_attn import MSDeformAttn
    from models.ovavss.model import build_ovavss
    from models.pipeline.train import _autocast

    model = build_ovavss(config).to(device)
    for module in model.modules():
        if isinstance(module, MSDeformAttn):
            module.sampling = sampling
    stage_times = _stage_timer(model, device) if stages else None
    h = short_side
    w = int(short_side * 16 / 9 + 0.5)
    hp, wp = -(-h // 32) * 32, -(-w // 32) * 32
    images = torch.randn(1, frames, 3, hp, wp, device=device)
    audio = torch.randn(1, frames, 1, 96, 64, device=device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    network = model
    if runner == "graphs":
        from models.ovavss.graphed_network import GraphedNetwork
        from models.predictor import AMP_DTYPES

        model.eval()
        network = GraphedNetwork(model, AMP_DTYPES.get(amp))  # train steps run eagerly (GraphedNetwork: inference)
    elif runner.startswith("compile"):
        mode = runner.removeprefix("compile").removeprefix("-") or None
        network = torch.compile(model, mode=mode)

    def forward():
        with torch.inference_mode(), _autocast(device, amp):
            model.eval()
            network(images, audio_examples=audio)

    def train_step():
        model.train()
        with _autocast(device, amp):
            out = (model if runner == "graphs" else network)(images, audio_examples=audio)
        loss = out["pred_masks"].float().mean() + out["pred_logits"].float().mean()
        for aux in out["aux_outputs"]:
            loss = loss + aux["pred_masks"].float().mean()
        loss.backward()
        model.zero_grad(set_to_none=True)

    row = {"config": config, "device": str(device), "input": f"{frames}x3x{hp}x{wp}", "amp": amp, "runner": runner}
    if runner != "eager":  # the first call captures or compiles: timed on its own
        start = time.perf_counter()
        forward()
        _sync(device)
        row["first_forward_s"] = time.perf_counter() - start
    steal_before = _steal_ticks()
    row["forward_s"], row["forward_cpu_s"] = _median_time(forward, device, warmup, repeat)
    if steal_before is not None:
        row["steal_s"] = (_steal_ticks() - steal_before) / os.sysconf("SC_CLK_TCK")
    if stage_times is not None:
        row["stages_s"] = {name: statistics.median(t[warmup:]) for name, t in stage_times.items() if t}
        for t in stage_times.values():
            t.clear()
    if backward:
        row["train_step_s"], _ = _median_time(train_step, device, warmup, repeat)
    if device.type == "cuda":
        row["peak_mem_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
    else:
        row["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return row


def build_parser() -> argparse.ArgumentParser:
    from models.ovavss.deform_sampling import SAMPLING_METHODS

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=["r50"], choices=["r50", "swinb", "tiny"],
                        help="network configs to time, one row each (default: r50)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default: cpu)")
    parser.add_argument("--short-side", type=int, default=360, help="frame short side before padding to 32")
    parser.add_argument("--frames", type=int, default=5, help="frames per clip")
    parser.add_argument("--amp", default="off", choices=["off", "bf16", "fp16"],
                        help="autocast dtype (fp16: CUDA only, as in avseg)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs before the timed ones")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs; the median is reported")
    parser.add_argument("--no-backward", action="store_true", help="time the forward only (no train step)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--sampling", default="auto", choices=SAMPLING_METHODS,
                        help="deformable-attention sampling form (auto: gather on the CPU, grid_sample elsewhere)")
    parser.add_argument("--stages", action="store_true", help="also print the forward time of each stage")
    parser.add_argument("--runner", default="eager", choices=RUNNERS,
                        help="eager; graphs: the forward as CUDA graphs (GraphedNetwork; train steps stay eager); "
                        "compile[-MODE]: torch.compile with that mode, forward and train step")
    return parser


def main() -> None:
    args = build_parser().parse_args()
    require_device(args.device)
    if args.amp == "fp16" and torch.device(args.device).type != "cuda":
        fail(f"--amp fp16 needs a CUDA device (fp16 autocast is CUDA-only in avseg); on {args.device} use --amp off")
    if args.runner == "graphs" and torch.device(args.device).type != "cuda":
        fail(f"--runner graphs needs a CUDA device, not {args.device}")
    if min(args.repeat, args.frames, args.short_side) < 1 or args.warmup < 0:
        fail("--repeat, --frames and --short-side must be >= 1, --warmup >= 0")
    from models.device import prepare_cpu

    prepare_cpu()  # as the CLI does (resolve_device), before torch's first parallel operation
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""))
    for config in args.configs:
        row = bench(config, device, args.short_side, args.frames, args.amp, args.warmup, args.repeat,
                    not args.no_backward, args.sampling, args.stages, args.runner)
        per_frame = row["forward_s"] / args.frames
        text = (f"{row['config']:6s} {row['input']:16s} amp={row['amp']:4s} sampling={args.sampling} "
                f"runner={args.runner} forward {row['forward_s']:.3f} s/clip ({per_frame:.3f} s/frame)")
        if "first_forward_s" in row:
            text += f" (first call, capture/compile: {row['first_forward_s']:.1f} s)"
        if "train_step_s" in row:
            text += f", train step {row['train_step_s']:.3f} s ({1 / row['train_step_s']:.2f} it/s)"
        text += f", peak {row.get('peak_mem_gb', row.get('peak_rss_gb')):.2f} GB"
        if device.type == "cpu":
            # On a shared virtual machine, time stolen by other guests inflates wall times; CPU time does not.
            text += f"; forward CPU time {row['forward_cpu_s']:.2f} s/clip over {torch.get_num_threads()} threads"
            if "steal_s" in row:
                text += f", {row['steal_s']:.1f} s stolen during the forward runs"
        print(text, flush=True)
        for name, seconds in row.get("stages_s", {}).items():
            print(f"    {name:15s} {seconds:.3f} s/clip", flush=True)


if __name__ == "__main__":
    run(main)
