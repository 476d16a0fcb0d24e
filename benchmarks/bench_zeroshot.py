"""Per-frame cost of the zero-shot method with the real architectures (random weights, same compute).

Builds CLAP (HTS-AT + RoBERTa, laion/clap-htsat-unfused sizes), Grounding DINO tiny (Swin-T + BERT-base) or OWLv2
base/16 at 960 px, SAM ViT-B and CLIP ViT-B/16 from their default configs with random weights (no download),
with the real image-processor sizes; tokenizers come from the tiny test models (token ids are all that matter
for speed). Thresholds are opened so every analysed frame runs the detector, SAM and CLIP on
`--boxes-per-class` boxes for each of `--sounding` classes: the worst case for a frame with sound. Frames
without a sounding class cost only their CLAP window.

    python benchmarks/bench_zeroshot.py --device cpu --size 640x360 --clips 2
    python benchmarks/bench_zeroshot.py --device cuda --size 1280x720 --detector owlv2
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from _common import fail, require_device, run  # noqa: E402
from models.prediction import ClipInput  # noqa: E402
from models.zeroshot.config import ZeroShotConfig  # noqa: E402
from models.zeroshot.predictor import ZeroShotPredictor  # noqa: E402


def _size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, e.g. 640x360, got {text!r}") from None
    if min(width, height) < 1:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT with positive sides, got {text!r}")
    return width, height


def build(detector_kind: str, device: torch.device, folder: Path, sounding: int, boxes_per_class: int,
          detector_size: int | None = None):
    from transformers import (
        AutoProcessor,
        ClapConfig,
        ClapModel,
        GroundingDinoConfig,
        GroundingDinoForObjectDetection,
        Owlv2Config,
        Owlv2ForObjectDetection,
        SamConfig,
        SamModel,
    )

    from models.clip_loading import load_pretrained_clip
    from models.zeroshot.audio_text import ClapAudioTagger
    from models.zeroshot.grounding_dino import GroundingDinoDetector
    from models.zeroshot.owlv2 import Owlv2Detector
    from models.zeroshot.rescore import CropRescorer
    from models.zeroshot.segmenter import SamBoxSegmenter
    from tiny_clap_sam import save_tiny_clap, save_tiny_sam
    from tiny_detectors import save_tiny_grounding_dino, save_tiny_owlv2

    def ready(model):
        return model.eval().requires_grad_(False).to(device)

    clap_processor = AutoProcessor.from_pretrained(save_tiny_clap(folder / "clap"))
    tagger = ClapAudioTagger(ready(ClapModel(ClapConfig())), clap_processor, device, prompt="{}")
    if detector_kind == "grounding-dino":
        processor = AutoProcessor.from_pretrained(save_tiny_grounding_dino(folder / "gdino"))
        processor.image_processor.size = {"shortest_edge": 800, "longest_edge": 1333}
        detector = GroundingDinoDetector(ready(GroundingDinoForObjectDetection(GroundingDinoConfig())), processor,
                                         device, min_score=0.0, input_short_side=detector_size)
    else:
        processor = AutoProcessor.from_pretrained(save_tiny_owlv2(folder / "owlv2"))
        processor.image_processor.size = {"height": 960, "width": 960}
        config = Owlv2Config(vision_config={"image_size": 960})
        detector = Owlv2Detector(ready(Owlv2ForObjectDetection(config)), processor, device, min_score=0.0)
    sam_processor = AutoProcessor.from_pretrained(save_tiny_sam(folder / "sam"))
    sam_processor.image_processor.size = {"longest_edge": 1024}
    sam_processor.image_processor.pad_size = {"height": 1024, "width": 1024}
    segmenter = SamBoxSegmenter(ready(SamModel(SamConfig())), sam_processor, device)
    clip, _ = load_pretrained_clip("ViT-B-16", "openai", device, clip_weights="random")
    config = ZeroShotConfig(detector=detector_kind, audio_threshold=0.0, box_threshold=0.0, score_threshold=0.0,
                            silence_dbfs=-200.0, max_sounding=sounding, max_boxes_per_class=boxes_per_class,
                            min_mask_pixels=0)
    return ZeroShotPredictor(tagger, detector, segmenter, CropRescorer(clip, device=device), config,
                             device=str(device))


def timed(stats, name, function, device):
    def wrapper(*args, **kwargs):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        result = function(*args, **kwargs)
        if device.type == "cuda":
            torch.cuda.synchronize()
        stats[name] += time.perf_counter() - start
        return result

    return wrapper


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]")
    parser.add_argument("--detector", default="grounding-dino", choices=("grounding-dino", "owlv2"),
                        help="open-vocabulary detector")
    parser.add_argument("--size", type=_size, default="640x360", help="WIDTHxHEIGHT of the frames")
    parser.add_argument("--clips", type=int, default=2, help="clips to time (after a one-frame warm-up clip)")
    parser.add_argument("--frames", type=int, default=5, help="frames per clip (1-5; fewer for a quick CPU run)")
    parser.add_argument("--sounding", type=int, default=2, help="sounding classes per frame")
    parser.add_argument("--boxes-per-class", type=int, default=2, help="detector boxes kept per sounding class")
    parser.add_argument("--detector-size", type=int, default=None,
                        help="Grounding DINO input short side (default: the model's 800)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    return parser


def main() -> None:
    args = build_parser().parse_args()
    require_device(args.device)
    width, height = args.size
    if not 1 <= args.frames <= 5 or args.clips < 1 or args.sounding < 1 or args.boxes_per_class < 1:
        fail("--frames must be 1-5; --clips, --sounding and --boxes-per-class at least 1")
    if args.detector_size is not None and args.detector != "grounding-dino":
        fail("--detector-size applies to --detector grounding-dino only")
    from models.device import prepare_cpu

    prepare_cpu()  # before torch's first parallel operation, like the CLI (resolve_device)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        predictor = build(args.detector, device, Path(tmp), args.sounding, args.boxes_per_class, args.detector_size)
    predictor.set_vocabulary(["violin", "acoustic guitar", "man", "dog", "car"])
    stats: dict[str, float] = defaultdict(float)
    predictor.tagger.similarities = timed(stats, "CLAP", predictor.tagger.similarities, device)
    predictor.detector.detect = timed(stats, "detector", predictor.detector.detect, device)
    predictor.segmenter.segment = timed(stats, "SAM", predictor.segmenter.segment, device)
    predictor.rescorer.probabilities = timed(stats, "CLIP crops", predictor.rescorer.probabilities, device)
    rng = np.random.default_rng(0)
    waveform = (0.3 * rng.standard_normal(6 * 16000)).astype(np.float32)

    def clip(count: int) -> ClipInput:
        frames = rng.integers(0, 256, (count, height, width, 3), dtype=np.uint8)
        return ClipInput(frames, np.zeros((count, 1, 96, 64), np.float32), waveform,
                         tuple(float(t) for t in range(count)))

    with torch.inference_mode():
        predictor.predict_clip(clip(1))  # warm-up
        stats.clear()
        instances = 0
        start = time.perf_counter()
        for _ in range(args.clips):
            instances += sum(len(p.instances) for p in predictor.predict_clip(clip(args.frames)))
        total = time.perf_counter() - start
    frames = args.frames * args.clips
    print(f"device {device}, detector {args.detector} (size {args.detector_size or 'default'}), {width}x{height}, "
          f"{frames} frames, "
          f"{args.sounding} sounding classes x {args.boxes_per_class} boxes, threads {torch.get_num_threads()}")
    print(f"per frame: {total / frames:.3f} s ({frames / total:.2f} frames/s); instances per frame "
          f"{instances / frames:.1f}")
    for name, seconds in stats.items():
        print(f"  {name:<11} {seconds / frames:.3f} s/frame")
    print(f"  {'fusion/etc':<11} {(total - sum(stats.values())) / frames:.3f} s/frame")


if __name__ == "__main__":
    run(main)
