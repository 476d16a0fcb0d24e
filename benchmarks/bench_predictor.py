"""Per-frame time of the whole predictor (network + CLIP classifier + painting), with and without the sound options.

Usage:
    .venv/bin/python benchmarks/bench_predictor.py                       # r50 + ViT-B-16, 360p, CPU
    .venv/bin/python benchmarks/bench_predictor.py --modes official crops3 --repeat 3 --threads 2
    .venv/bin/python benchmarks/bench_predictor.py --config swinb --device cuda --amp fp16

Weights are random (r50 network, VGGish and CLIP ViT-B-16; swinb uses ViT-L-14-336), so the number of
(query, frame) masks CLIP has to classify is whatever random masks give; it is printed per mode ("crops
/ clip") because the CLIP time is proportional to it. With trained weights most of the 100 queries also
have a non-empty mask in most frames, so the official protocol's CLIP cost is of the same order.
Frames: a random 16:9 clip at --short-side (original size = network size, so no extra resize cost).
Modes: official (no sound options), gate<p> (sound_gate=p), crops<n> (max_crops_per_frame=n), and any of
them joined by "+", e.g. gate<p>+crops<n>; "+graphs" runs the network as CUDA graphs (`cuda_graphs`; the
first clip of a shape captures, so keep --warmup >= 1); "+pipelined" times `predict_clips` over the timed clips
as one stream (consecutive clips overlap on a GPU; mean instead of median, network not timed apart). Times are medians over --repeat clips after --warmup clips. The last columns give the
process's resident memory after the first and after the last timed clip (it must not grow from clip to clip)
and its peak. `AVSEG_MALLOC=system` in the environment measures with the C library's allocator defaults
(see `models.cpu_allocator`).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import time

import numpy as np
import torch
from _common import fail, require_device, run


def _number(text: str, kind):
    try:
        return kind(text)
    except ValueError:
        return None


def parse_mode(mode: str) -> dict:
    options: dict = {}
    for part in mode.split("+"):
        if part == "official":
            continue
        if part.startswith("gate") and _number(part[4:], float) is not None:
            options["sound_gate"] = _number(part[4:], float)
        elif part.startswith("crops") and _number(part[5:], int) is not None:
            options["max_crops_per_frame"] = _number(part[5:], int)
        elif part == "graphs":
            options["cuda_graphs"] = True
        elif part == "pipelined":
            options["pipelined"] = True
        else:
            fail(f"unknown mode {mode!r}: official, gate<p>, crops<n>, graphs, pipelined, joined by + "
                 "(e.g. gate0.5+crops3, official+graphs+pipelined)")
    return options


def build_predictor(config_name: str, device: torch.device, amp: str, options: dict, parts: dict | None):
    from models.ovavss.clip_model import load_clip
    from models.ovavss.config import get_config
    from models.ovavss.model import build_ovavss
    from models.vggish_setup import random_vggish_
    from models.predictor import AVSegPredictor, PredictorOptions

    config = get_config(config_name)
    if parts is None:
        torch.manual_seed(0)
        model = build_ovavss(config)
        random_vggish_(model.audio_encoder, 0)
        clip = load_clip(config.clip_model, pretrained=None, device=device, quick_gelu=True)
        parts = {"model": model, "clip": clip}
    predictor = AVSegPredictor(parts["model"], parts["clip"], config, device,
                               PredictorOptions(amp=amp, templates=("a photo of a {}.",), **options))
    return predictor, parts


def resident_gb() -> float:
    """The process's current resident set (VmRSS), in GB."""
    with open(f"/proc/{os.getpid()}/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**30


def peak_resident_gb() -> float:
    """The process's peak resident set so far, in GB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def count_crops(predictor) -> list[int]:
    """Wrap the classifier's CLIP image encoder to count the crops it encodes."""
    counts = [0]
    encode = predictor.classifier.encode_regions

    def counting(regions):
        counts[0] += int(regions.shape[0])
        return encode(regions)

    predictor.classifier.encode_regions = counting
    return counts


def print_row(mode: str, clip_s: float, frames: int, crops: float, network: str, first_rss: str,
              last_rss: float) -> None:
    """One line of the table (`network` and `first_rss` already formatted, "-" where not measured)."""
    print(f"{mode:<18} {clip_s / frames:>10.4f} {frames / clip_s:>9.1f} {clip_s:>10.3f} {crops:>13.0f} "
          f"{network:>17} {first_rss:>9}/{last_rss:.2f}/{peak_resident_gb():.2f}")


def run_pipelined(predictor, clips, args, mode: str, counts: list[int], device: torch.device) -> None:
    """Time `predict_clips` over the timed clips as one stream (consecutive clips overlap on a GPU): the
    per-clip time is the stream's time over its clip count; the network is not timed apart (timing it would
    wait for the GPU and undo the overlap)."""
    for clip in clips[: args.warmup]:
        predictor.predict_clip(clip)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    counts[0] = 0
    start = time.perf_counter()
    for _ in predictor.predict_clips(clips[args.warmup:]):
        pass
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    clip_s = (time.perf_counter() - start) / args.repeat
    print_row(mode, clip_s, args.frames, counts[0] / args.repeat, "-", "-", resident_gb())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="r50", choices=["r50", "swinb", "tiny"], help="network config")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default: cpu)")
    parser.add_argument("--amp", default="off", choices=["off", "fp16", "bf16"],
                        help="predictor autocast (fp16: CUDA only; bf16: CUDA or a CPU with bfloat16 instructions)")
    parser.add_argument("--short-side", type=int, default=360, help="frame short side (16:9 frames)")
    parser.add_argument("--frames", type=int, default=5, help="frames per clip")
    parser.add_argument("--repeat", type=int, default=1, help="timed clips (the median is reported)")
    parser.add_argument("--warmup", type=int, default=1, help="clips run before timing")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    parser.add_argument("--vocabulary", type=int, default=70, help="number of class names")
    parser.add_argument("--modes", nargs="+", default=["official", "gate0.5", "crops5", "gate0.5+crops5"],
                        help="official, gate<p>, crops<n>, graphs, pipelined, joined by + (see above)")
    return parser


def main() -> None:
    args = build_parser().parse_args()
    require_device(args.device)
    for mode in args.modes:
        parse_mode(mode)
    if min(args.repeat, args.frames, args.short_side, args.vocabulary) < 1 or args.warmup < 0:
        fail("--repeat, --frames, --short-side and --vocabulary must be >= 1, --warmup >= 0")
    from models.device import prepare_cpu

    prepare_cpu()  # as the CLI does (resolve_device), before torch's first parallel operation
    if args.threads:
        torch.set_num_threads(args.threads)
    from models.data.classes import CLASS_NAMES
    from models.prediction import ClipInput

    device = torch.device(args.device)
    height = args.short_side
    width = int(args.short_side * 16 / 9 + 0.5)
    rng = np.random.default_rng(0)
    clips = [
        ClipInput(frames=rng.integers(0, 256, (args.frames, height, width, 3), dtype=np.uint8),
                  audio_examples=rng.standard_normal((args.frames, 1, 96, 64)).astype(np.float32))
        for _ in range(args.repeat + args.warmup)
    ]
    names = [f"{CLASS_NAMES[1 + i % 70]}-{i // 70}" if i >= 70 else CLASS_NAMES[1 + i] for i in range(args.vocabulary)]
    print(f"{args.config} + random CLIP, {args.frames} frames of {width}x{height}, device {device}, amp {args.amp}, "
          f"threads {torch.get_num_threads()}, vocabulary {len(names)}")
    print(f"{'mode':<18} {'s / frame':>10} {'frames/s':>9} {'s / clip':>10} {'crops / clip':>13} "
          f"{'network s / clip':>17} {'RSS first/last/peak GB':>23}")
    parts = None
    for mode in args.modes:
        options = parse_mode(mode)
        pipelined = options.pop("pipelined", False)
        predictor, parts = build_predictor(args.config, device, args.amp, options, parts)
        predictor.set_vocabulary(names)
        counts = count_crops(predictor)
        if pipelined:
            run_pipelined(predictor, clips, args, mode, counts, device)
            continue
        network_times: list[float] = []
        network = predictor._network  # the model, or its CUDA-graph runner

        def timed_network(*a, **k):
            start = time.perf_counter()
            out = network(*a, **k)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            network_times.append(time.perf_counter() - start)
            return out

        predictor._network = timed_network
        times, crops, resident = [], [], []
        for index, clip in enumerate(clips):
            counts[0] = 0
            start = time.perf_counter()
            predictor.predict_clip(clip)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if index >= args.warmup:
                times.append(time.perf_counter() - start)
                crops.append(counts[0])
                resident.append(resident_gb())
        predictor._network = network
        clip_s = statistics.median(times)
        network_s = statistics.median(network_times[args.warmup:])
        print_row(mode, clip_s, args.frames, statistics.median(crops), f"{network_s:.3f}", f"{resident[0]:.2f}",
                  resident[-1])


if __name__ == "__main__":
    run(main)
