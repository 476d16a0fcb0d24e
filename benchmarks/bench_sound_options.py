"""What the sound-head options (`--sound-gate`, `--max-crops`) do to an open-vocabulary result, on synthetic data.

Usage:
    .venv/bin/python benchmarks/bench_sound_options.py                 # ~6 minutes on 2 CPU cores
    .venv/bin/python benchmarks/bench_sound_options.py --modes official gate0.5 crops1 --json result.json

The official inference sends every (query, frame) mask with a pixel above 0.5 to CLIP and ignores the sound
head; the two options use the sound head to send fewer. Their CPU savings are in RESULTS.md; this measures what
they change in the result. No pretrained weights exist on this machine, so everything is trained here, on the
CPU, from synthetic data in the AVSBench layout (like tests/test_learning.py):

1. clips with two moving objects of 4 classes (guitar, dog, piano, car), one sounding (a class-specific tone)
   and one silent; only the sounding one is labelled. 64 training and 12 test videos of 10 frames, 64x96;
2. the `tiny` network (10 queries) trained on them: 400 iterations at batch 2, random VGGish (as the test);
3. a tiny CLIP (open_clip ViT, 32-pixel input, one layer; `tests/ov_synthetic.py`) trained to name square crops of the training
   objects (the official crop protocol, sounding and silent objects alike) against all 70 AVSBench class
   names in the 14 ViLD templates, with the classifier's own 100 x cosine logits;
4. `avseg eval`'s path (`evaluate_open_vocabulary`: the 70-name vocabulary, every frame, PNGs at the original
   size) on the test split, once per mode.

Reported per mode: CLIP crops per frame, seconds per frame, mIoU over the 4 classes, class-agnostic foreground
IoU, and the share of painted pixels that lie on the silent object. Weights are random at the start of every
step (seeded), so a run is reproducible on one machine.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from _common import run  # noqa: E402
from bench_predictor import parse_mode  # noqa: E402  (the same mode names: official, gate<p>, crops<n>, joined by +)
from ov_synthetic import (  # noqa: E402  (shared with tests/test_learning.py)
    POOL,
    make_sounding_silent_dataset,
    score,
    train_clip,
    train_tiny,
)

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modes", nargs="+", default=["official", "gate0.5", "crops1", "crops2", "gate0.5+crops1"],
                        help="predictor modes to evaluate, as in bench_predictor.py: official, gate<p>, crops<n>, "
                        "joined by +")
    parser.add_argument("--train-iters", type=int, default=400, help="training iterations of the tiny network")
    parser.add_argument("--clip-steps", type=int, default=300, help="training steps of the tiny CLIP")
    parser.add_argument("--train-videos", type=int, default=64, help="synthetic training videos")
    parser.add_argument("--test-videos", type=int, default=12, help="synthetic test videos (the evaluated split)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data and of every training step")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    return parser


def main() -> None:
    args = build_parser().parse_args()
    for mode in args.modes:
        parse_mode(mode)
    if args.threads:
        torch.set_num_threads(args.threads)

    from models.pipeline.evaluate_ov import evaluate_open_vocabulary
    from models.data.prepared import PreparedData
    from models.predictor import AVSegPredictor

    with tempfile.TemporaryDirectory(prefix="avseg-sound-options-") as tmp:
        root = Path(tmp)
        os.environ["AVSEG_CACHE"] = str(root / "cache")  # the tiny CLIP's text embeddings stay out of the user's
        started = time.perf_counter()
        dataset, data_dir = make_sounding_silent_dataset(root, args.train_videos, args.test_videos, args.seed)
        checkpoint = train_tiny(data_dir, root / "run", args.train_iters)
        print(f"tiny network trained: {args.train_iters} iterations in {time.perf_counter() - started:.0f} s")
        clip_dir, crops_seen, accuracy = train_clip(dataset, POOL, root / "clip", args.clip_steps, args.seed)
        print(f"tiny CLIP: {crops_seen} training crops, accuracy among the 70 names {accuracy:.3f}")
        data = PreparedData.open(data_dir)
        rows = []
        for mode in args.modes:
            predictor = AVSegPredictor.from_checkpoint(checkpoint, device="cpu", clip_weights=clip_dir,
                                                       **parse_mode(mode))
            crops = [0]
            encode = predictor.classifier.encode_regions

            def counting(regions, _encode=encode, _crops=crops):
                _crops[0] += len(regions)
                return _encode(regions)

            predictor.classifier.encode_regions = counting
            result = evaluate_open_vocabulary(predictor, data, "test", root / "pred" / mode)
            frames = result.run.num_frames
            row = {"mode": mode, "crops_per_frame": crops[0] / frames, "s_per_frame": result.run.seconds / frames,
                   **score(dataset, POOL, data_dir, root / "pred" / mode)}
            rows.append(row)
            print(f"{mode:16} crops/frame {row['crops_per_frame']:5.2f}  s/frame {row['s_per_frame']:.3f}  "
                  f"mIoU(4) {row['miou']:.3f}  fg IoU {row['fg_iou']:.3f}  "
                  f"silent share {row['silent_share_of_painted']:.3f}", flush=True)
    print("\n| mode | CLIP crops / frame | s / frame | mIoU (4 classes) | foreground IoU | painted on the silent object |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['mode']} | {row['crops_per_frame']:.2f} | {row['s_per_frame']:.3f} | {row['miou']:.3f} | "
              f"{row['fg_iou']:.3f} | {row['silent_share_of_painted']:.3f} |")
    if args.json is not None:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}, indent=2))


if __name__ == "__main__":
    run(main)
