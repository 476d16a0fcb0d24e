"""End-to-end speed of `avseg annotate`: decode + predictor + render + encode, in frames per second.

Usage:
    .venv/bin/python benchmarks/bench_annotate.py                       # fake predictor: the I/O part alone
    .venv/bin/python benchmarks/bench_annotate.py --sizes 360 720 --seconds 10
    .venv/bin/python benchmarks/bench_annotate.py --checkpoint model_ov_avss_r50.pth --device cuda
    .venv/bin/python benchmarks/bench_annotate.py --random-weights r50 --device cpu --sizes 360 --seconds 2 \
        --max-crops 1

Each size gets a generated 16:9 clip (ffmpeg's testsrc2 at 25 fps with a sine tone, H.264 + AAC).
Columns: `decode` = frames/s of decoding alone (`iter_frames`); `annotate` = frames/s of the whole
`Annotator.annotate` (probe, audio, decode, predictor, overlay rendering, H.264 encoding with the audio
copied, mask PNGs, JSON), one run after a warm-up run on a 1 s clip. Without --checkpoint the predictor
is a fake that returns, for every frame, three moving elliptical instances (the painting, rendering and
writing work of a busy real result, none of the network's), so the numbers are the I/O ceiling.
`--random-weights r50` runs the real OV-AVSS predictor with random weights (r50 network, VGGish, CLIP
ViT-B-16; the same compute as trained weights, except that how many queries reach CLIP depends on the
masks, hence the printed crop count and `--max-crops`). `s/analysed` = wall seconds per analysed frame.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import fail, require_device, run  # noqa: E402
from models.prediction import ClipInput, FramePrediction, Instance  # noqa: E402


class EllipsesPredictor:
    """A fake `VideoPredictor`: three ellipses per frame that move with the frame time; no network."""

    clip_len = 5

    def set_vocabulary(self, names) -> None:
        self.names = list(names)

    def describe(self) -> dict:
        return {"method": "benchmark-ellipses"}

    def __init__(self, busy_ms: float = 0.0) -> None:
        self.busy_ms = busy_ms

    def predict_clip(self, clip: ClipInput) -> list[FramePrediction]:
        if self.busy_ms:
            # hold the GIL as a launch-bound GPU predictor does (Python-side work per frame)
            deadline = time.perf_counter() + self.busy_ms / 1000 * len(clip.frames)
            while time.perf_counter() < deadline:
                pass
        height, width = clip.frames.shape[1:3]
        rows = np.arange(height, dtype=np.float32)[:, None]
        cols = np.arange(width, dtype=np.float32)[None, :]
        predictions = []
        for t in clip.times:
            label_map = np.zeros((height, width), np.uint8)
            instances = []
            for k in range(3):
                cx = width * (0.25 + 0.25 * k + 0.05 * np.sin(t + k))
                cy = height * (0.5 + 0.1 * np.cos(t * 0.7 + k))
                mask = ((cols - cx) / (0.12 * width)) ** 2 + ((rows - cy) / (0.2 * height)) ** 2 <= 1.0
                c = k % len(self.names)
                label_map[mask & (label_map == 0)] = c + 1
                instances.append(Instance(mask, self.names[c], c, 0.9 - 0.1 * k, 0.8, k))
            predictions.append(FramePrediction(label_map, instances))
        return predictions


def make_clip(path: Path, short_side: int, seconds: float) -> Path:
    from models.io.ffmpeg import ffmpeg_exe

    width = int(round(short_side * 16 / 9 / 2)) * 2
    command = [
        ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
        "-f", "lavfi", "-i", f"testsrc2=duration={seconds}:size={width}x{short_side}:rate=25",
        "-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}:sample_rate=44100",
        "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-c:a", "aac", str(path),
    ]  # fmt: skip
    subprocess.run(command, check=True)
    return path


def decode_fps(path: Path) -> float:
    from models.io.video import iter_frames, probe

    info = probe(path)
    start = time.perf_counter()
    count = sum(1 for _ in iter_frames(path, info))
    return count / (time.perf_counter() - start)


def annotate_fps(annotator, path: Path) -> tuple[int, float, float]:
    """(frames, frames per second, seconds per analysed frame) of one `Annotator.annotate` run."""
    result = annotator.annotate(path, warn=lambda message: None)
    return result.num_frames, result.num_frames / result.seconds, result.seconds / max(1, result.num_analysed_frames)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[360, 720], help="short sides of the clips")
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each clip")
    parser.add_argument("--checkpoint", type=Path, help="OV-AVSS checkpoint (default: fake predictor, I/O only)")
    parser.add_argument("--device", default="auto", help="auto (CUDA if any, else cpu), cpu or cuda[:N]")
    parser.add_argument("--vggish-weights", help="with --checkpoint: as avseg annotate --vggish-weights")
    parser.add_argument("--clip-weights", help="with --checkpoint: as avseg annotate --clip-weights")
    parser.add_argument("--classes", default="man,woman,guitar", help="comma-separated class names")
    parser.add_argument("--analysis-fps", type=float, help="as avseg annotate --analysis-fps (default: every frame)")
    parser.add_argument("--no-video", action="store_true", help="do not write the annotated video")
    parser.add_argument("--no-masks", action="store_true", help="do not write the mask PNGs")
    parser.add_argument("--no-json", action="store_true", help="do not write the JSON")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--random-weights", choices=["r50", "tiny"],
                        help="real OV-AVSS predictor with random weights of this config (no checkpoint needed)")
    parser.add_argument("--max-crops", type=int, help="predictor option max_crops_per_frame")
    parser.add_argument("--sound-gate", type=float, help="predictor option sound_gate")
    parser.add_argument("--fake-busy-ms", type=float, default=0.0,
                        help="fake predictor: also hold the GIL this many ms per frame (simulates the Python-side "
                             "cost of a launch-bound GPU predictor; shows how well rendering overlaps it)")
    parser.add_argument("--render-workers", default="threads", choices=["threads", "processes"],
                        help="AnnotateOptions.render_workers")
    parser.add_argument("--amp", default="off", choices=["off", "fp16", "bf16"],
                        help="predictor autocast (fp16: CUDA; bf16: CUDA or a CPU with bfloat16 instructions)")
    parser.add_argument("--cuda-graphs", action="store_true", help="predictor option cuda_graphs (CUDA only)")
    return parser


def main() -> None:
    args = build_parser().parse_args()
    require_device(args.device, allow_auto=True)
    if args.seconds <= 0 or not args.sizes or min(args.sizes) < 2:
        fail("--seconds must be positive and --sizes at least 2 pixels")

    from models.pipeline.annotate import Annotator
    from models.pipeline.annotate_outputs import AnnotateOptions

    import torch

    from models.device import prepare_cpu, resolve_device

    prepare_cpu()  # as the CLI does (subnormals off, freed memory kept), before the first parallel op
    if args.threads:
        torch.set_num_threads(args.threads)
    crop_counts = None
    options = {key: value for key, value in (("max_crops_per_frame", args.max_crops), ("sound_gate", args.sound_gate))
               if value is not None}
    if args.cuda_graphs:
        options["cuda_graphs"] = True
    if args.random_weights:
        from bench_predictor import build_predictor, count_crops

        predictor, _ = build_predictor(args.random_weights, resolve_device(args.device), args.amp, options, None)
        crop_counts = count_crops(predictor)
        what = (f"random-weight {args.random_weights} predictor on {predictor.device} "
                f"({torch.get_num_threads()} threads), amp {args.amp}, options {options or 'official'}")
    elif args.checkpoint is None:
        predictor = EllipsesPredictor(args.fake_busy_ms)
        what = ("fake predictor (I/O only)" if not args.fake_busy_ms
                else f"fake predictor holding the GIL {args.fake_busy_ms:g} ms per frame")
    else:
        from models.predictor import AVSegPredictor

        predictor = AVSegPredictor.from_checkpoint(
            args.checkpoint, device=args.device, vggish_weights=args.vggish_weights, clip_weights=args.clip_weights,
            sound_gate=args.sound_gate, max_crops_per_frame=args.max_crops, amp=args.amp,
            cuda_graphs=args.cuda_graphs,
        )
        what = f"{args.checkpoint} on {predictor.describe().get('device', args.device)}"

    rows = []
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        options = AnnotateOptions(
            out_dir=folder / "out", analysis_fps=args.analysis_fps, write_video=not args.no_video,
            write_masks=not args.no_masks, write_json=not args.no_json, render_workers=args.render_workers,
        )
        annotator = Annotator(predictor, [name.strip() for name in args.classes.split(",")], options)
        warmup = make_clip(folder / "warmup.mp4", min(args.sizes), 1.0)
        annotate_fps(annotator, warmup)
        for size in args.sizes:
            clip = make_clip(folder / f"clip{size}p.mp4", size, args.seconds)
            decoded = decode_fps(clip)
            if crop_counts is not None:
                crop_counts[0] = 0
            frames, fps, per_analysed = annotate_fps(annotator, clip)
            rows.append((f"{size}p", frames, decoded, fps, per_analysed, crop_counts[0] if crop_counts else None))

    print(f"avseg annotate, {what}; render workers: {args.render_workers}; outputs: "
          + ", ".join(n for n, on in (("video", not args.no_video), ("masks", not args.no_masks),
                                      ("json", not args.no_json)) if on))
    print(f"{'clip':>6} {'frames':>7} {'decode f/s':>11} {'annotate f/s':>13} {'ms/frame':>9} {'s/analysed':>11}"
          + (f" {'CLIP crops':>11}" if crop_counts is not None else ""))
    for name, frames, decoded, fps, per_analysed, crops in rows:
        print(f"{name:>6} {frames:>7} {decoded:>11.1f} {fps:>13.1f} {1000 / fps:>9.1f} {per_analysed:>11.2f}"
              + (f" {crops:>11}" if crops is not None else ""))


if __name__ == "__main__":
    run(main)
