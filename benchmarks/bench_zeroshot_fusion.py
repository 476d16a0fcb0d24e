"""How well the zero-shot instance policies pick the sounding instance among look-alikes (synthetic scenes).

Audio tells the zero-shot method *which class* sounds, never *which* of several visible instances of it. This
benchmark runs the real `ZeroShotPredictor` decision code (`models.zeroshot.fusion`) with controlled stand-ins
for CLAP, the detector and SAM on synthetic scenes: N textured instances of the sounding class, exactly one of
them sounding. Assumption under test (the "motion" policy's premise): the sounding instance moves or deforms
between analysed frames (here: its texture is re-drawn, like a strummed string or a talking face), the silent
ones change less: Gaussian noise on their texture with a standard deviation of "distractor motion" times 255
(0 = still). The table covers a fixed grid of scenes: 2 or 3 instances with still distractors, 3 instances with
distractor motion 0.05 and 0.2, and a control where the sounding instance does not move either. Detector scores
are random (uniform 0.4-0.9) and carry no information about which instance sounds. Reported per scene kind and
policy (all, best, motion): precision and recall of the kept instances and mean IoU of the painted
sounding-class mask with the sounding instance's mask. Options: --scenes per row, --seed.

    python benchmarks/bench_zeroshot_fusion.py --scenes 300
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from models.prediction import ClipInput  # noqa: E402
from models.zeroshot.config import ZeroShotConfig  # noqa: E402
from models.zeroshot.predictor import ZeroShotPredictor  # noqa: E402
from zeroshot_fakes import BoxMaskSegmenter  # noqa: E402

SIZE = (120, 200)


class OneClassTagger:
    logit_scale = 50.0

    def similarities(self, windows, texts):
        out = np.zeros((len(windows), len(texts)))
        out[:, 0] = 1.0
        return out


class SceneDetector:
    name = "scene"

    def __init__(self, boxes, scores):
        self.boxes, self.scores = boxes, scores

    def detect(self, frames, names):
        return [SimpleNamespace(boxes=self.boxes, class_scores=self.scores[:, None].repeat(len(names), 1))
                for _ in frames]


def make_scene(rng, instances: int, distractor_motion: float, sounding_moves: bool):
    """Two frames one second apart, `instances` boxes of one class; index 0 of the boxes is the sounding one."""
    frames = np.empty((2,) + SIZE + (3,), np.uint8)
    background = rng.integers(60, 120, SIZE + (3,))
    for t in range(2):
        frames[t] = np.clip(background + rng.normal(0, 2, SIZE + (3,)), 0, 255)
    boxes = []
    width = SIZE[1] // instances
    for i in range(instances):
        x1 = i * width + 5
        y1 = int(rng.integers(5, 40))
        box = (x1, y1, x1 + width - 10, y1 + 60)
        boxes.append(box)
        texture = rng.integers(0, 256, (60, width - 10, 3))
        frames[0, box[1]:box[3], box[0]:box[2]] = texture
        if i == 0 and sounding_moves:
            frames[1, box[1]:box[3], box[0]:box[2]] = rng.integers(0, 256, texture.shape)
        else:
            change = rng.normal(0, 255 * distractor_motion, texture.shape) if distractor_motion else 0
            frames[1, box[1]:box[3], box[0]:box[2]] = np.clip(texture + change, 0, 255)
    order = rng.permutation(instances)  # the detector lists instances in random order
    boxes = np.array(boxes, np.float32)[order]
    sounding_index = int(np.flatnonzero(order == 0)[0])
    return frames, boxes, sounding_index


def run(policy: str, scenes: int, instances: int, distractor_motion: float, sounding_moves: bool, seed: int):
    rng = np.random.default_rng(seed)
    kept_right = kept_total = found = 0
    ious = []
    for _ in range(scenes):
        frames, boxes, sounding = make_scene(rng, instances, distractor_motion, sounding_moves)
        scores = rng.uniform(0.4, 0.9, len(boxes)).astype(np.float32)
        predictor = ZeroShotPredictor(OneClassTagger(), SceneDetector(boxes, scores), BoxMaskSegmenter(), None,
                                      ZeroShotConfig(rescore=False, instance_policy=policy, max_boxes_per_class=5))
        predictor.set_vocabulary(["guitar"])
        waveform = 0.3 * np.sin(np.arange(2 * 16000) / 16000 * 2 * np.pi * 440).astype(np.float32)
        prediction = predictor.predict_clip(ClipInput(frames, np.zeros((2, 1, 96, 64), np.float32), waveform,
                                                      (0.0, 1.0)))[1]
        truth = np.zeros(SIZE, bool)
        x1, y1, x2, y2 = boxes[sounding].astype(int)
        truth[y1:y2, x1:x2] = True
        kept = [instance.mask for instance in prediction.instances]
        right = [bool((mask & truth).sum() == truth.sum() == mask.sum()) for mask in kept]
        kept_right += sum(right)
        kept_total += len(kept)
        found += any(right)
        painted = prediction.label_map > 0
        ious.append((painted & truth).sum() / max(1, (painted | truth).sum()))
    return kept_right / max(1, kept_total), found / scenes, float(np.mean(ious))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenes", type=int, default=200, help="synthetic scenes per table row (default: 200)")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the scenes and detector scores")
    return parser


def main() -> None:
    parser = build_parser()
    args = parser.parse_args()
    if args.scenes < 1:
        parser.error("--scenes must be at least 1")
    print("| instances | distractor motion | sounding moves | policy | precision | recall | mIoU |")
    print("|---|---|---|---|---|---|---|")
    for instances, distractor, moves in ((2, 0.0, True), (3, 0.0, True), (3, 0.05, True), (3, 0.2, True),
                                         (2, 0.0, False)):
        for policy in ("all", "best", "motion"):
            precision, recall, miou = run(policy, args.scenes, instances, distractor, moves, args.seed)
            print(f"| {instances} | {distractor:.2f} | {'yes' if moves else 'no'} | {policy} | {precision:.3f} | "
                  f"{recall:.3f} | {miou:.3f} |")


if __name__ == "__main__":
    main()
