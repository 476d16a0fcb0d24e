"""Speed and memory of the OV-AVSS network: forward and forward+backward per 5-frame clip.

Usage:
    .venv/bin/python benchmarks/bench_model.py --configs r50 swinb --device cpu --short-side 360
    .venv/bin/python benchmarks/bench_model.py --configs r50 --device cuda --amp bf16

Inputs are random (normalised-scale) frames of a 16:9 video resized to the given short side and padded to a
multiple of 32, with random VGGish examples; weights are random (speed does not depend on them). Times are
medians over --repeat runs after --warmup runs; CUDA times are taken between synchronisations.
Reports per-clip and per-frame times, "training it/s" at batch 1 and peak memory (CUDA: max allocated;
CPU: peak RSS of the process, which includes everything loaded before).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time

import torch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_time(fn, device: torch.device, warmup: int, repeat: int) -> float:
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench(config: str, device: torch.device, short_side: int, frames: int, amp: str, warmup: int, repeat: int,
          backward: bool) -> dict:
    from models.ovavss.model import build_ovavss
    from models.pipeline.train import _autocast

    model = build_ovavss(config).to(device)
    h = short_side
    w = int(short_side * 16 / 9 + 0.5)
    hp, wp = -(-h // 32) * 32, -(-w // 32) * 32
    images = torch.randn(1, frames, 3, hp, wp, device=device)
    audio = torch.randn(1, frames, 1, 96, 64, device=device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def forward():
        with torch.inference_mode(), _autocast(device, amp):
            model.eval()
            model(images, audio_examples=audio)

    def train_step():
        model.train()
        with _autocast(device, amp):
            out = model(images, audio_examples=audio)
        loss = out["pred_masks"].float().mean() + out["pred_logits"].float().mean()
        for aux in out["aux_outputs"]:
            loss = loss + aux["pred_masks"].float().mean()
        loss.backward()
        model.zero_grad(set_to_none=True)

    row = {"config": config, "device": str(device), "input": f"{frames}x3x{hp}x{wp}", "amp": amp}
    row["forward_s"] = _median_time(forward, device, warmup, repeat)
    if backward:
        row["train_step_s"] = _median_time(train_step, device, warmup, repeat)
    if device.type == "cuda":
        row["peak_mem_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
    else:
        row["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=["r50"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--short-side", type=int, default=360)
    parser.add_argument("--frames", type=int, default=5)
    parser.add_argument("--amp", default="off", choices=["off", "bf16", "fp16"])
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-backward", action="store_true")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    from models.device import flush_denormals

    flush_denormals()  # as the CLI does (resolve_device), before torch's first parallel operation
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""))
    for config in args.configs:
        row = bench(config, device, args.short_side, args.frames, args.amp, args.warmup, args.repeat,
                    not args.no_backward)
        per_frame = row["forward_s"] / args.frames
        text = (f"{row['config']:6s} {row['input']:16s} amp={row['amp']:4s} forward {row['forward_s']:.3f} s/clip "
                f"({per_frame:.3f} s/frame)")
        if "train_step_s" in row:
            text += f", train step {row['train_step_s']:.3f} s ({1 / row['train_step_s']:.2f} it/s)"
        text += f", peak {row.get('peak_mem_gb', row.get('peak_rss_gb')):.2f} GB"
        print(text, flush=True)


if __name__ == "__main__":
    main()
