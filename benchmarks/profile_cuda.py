"""Where the time goes: the r50 predictor and the r50 training loop, part by part (CUDA or CPU).

Usage:
    python benchmarks/profile_cuda.py --device cuda --amp fp16 --parts predictor clip train

Each part is timed between device synchronisations, so CPU/GPU overlap is removed and the parts add up to
a little more than a plain run; "rest" is the remainder of the enclosing call. Weights are random.
  predictor  predict_clip on a 5-frame 640x360 clip (official protocol), split into network / crop
             selection / crop_regions / CLIP encode / mean over frames / paint / frame outputs, then
             torch.profiler's top operators
  clip       CLIP ViT-B/16 encode_image alone: batch 64 and 256, under fp16 autocast, with half weights and
             in fp32, 10 timed calls each after 3 warm-ups. Fixed size and GPU-oriented: it ignores --iters,
             --config and --amp, and is refused on the CPU (fp16 there is emulated: many minutes)
  train      the `avseg train` loop on a synthetic 360x640 dataset: data wait / VGGish / forward / criterion
             (matcher inside) / backward / clip + step; --iters iterations, the first min(10, iters // 2)
             left out as warm-up
"""

from __future__ import annotations

import argparse
import collections
import functools
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import default_workers, fail, require_device, run  # noqa: E402

TIMES: dict[str, float] = collections.defaultdict(float)
CALLS: dict[str, int] = collections.defaultdict(int)


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(name: str, fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        _sync()
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            _sync()
            TIMES[name] += time.perf_counter() - start
            CALLS[name] += 1

    return wrapper


PATCHES: list[tuple[object, str, object]] = []


def patch(owner, attribute: str, name: str) -> None:
    """Time `owner.attribute` under `name` until `unpatch_all`."""
    original = getattr(owner, attribute)
    PATCHES.append((owner, attribute, original))
    setattr(owner, attribute, timed(name, original))


def unpatch_all() -> None:
    """Undo every `patch`, so a later part (or the profiler) runs without the synchronising wrappers."""
    while PATCHES:
        owner, attribute, original = PATCHES.pop()
        setattr(owner, attribute, original)


def report(title: str, per: float, unit: str) -> None:
    print(f"\n{title}")
    for name, seconds in sorted(TIMES.items(), key=lambda kv: -kv[1]):
        print(f"  {name:28} {1000 * seconds / per:9.2f} ms/{unit}   ({CALLS[name] / per:.1f} calls/{unit})")


def profile_predictor(device: torch.device, amp: str, config: str, clips: int) -> None:
    import numpy as np

    import models.ovavss.classifier as classifier_module
    from bench_predictor import build_predictor
    from models.ovavss.classifier import OpenVocabularyClassifier
    from models.ovavss.model import OVAVSS
    from models.prediction import ClipInput

    predictor, _ = build_predictor(config, device, amp, {}, None)
    predictor.set_vocabulary([f"class {i}" for i in range(70)])
    rng = np.random.default_rng(0)
    clip = ClipInput(frames=rng.integers(0, 256, (5, 360, 640, 3), dtype=np.uint8),
                     audio_examples=rng.standard_normal((5, 1, 96, 64)).astype(np.float32))
    for _ in range(2):
        predictor.predict_clip(clip)
    patch(OVAVSS, "forward", "network")
    patch(OpenVocabularyClassifier, "pairs_to_crop", "pairs_to_crop (boxes)")
    patch(classifier_module, "crop_regions", "crop_regions")
    patch(predictor.classifier, "encode_regions", "CLIP encode")
    patch(OpenVocabularyClassifier, "paint", "paint")
    patch(predictor, "_frame_predictions", "frame outputs (to CPU)")
    patch(OpenVocabularyClassifier, "classify_pairs", "classify_pairs (all)")
    patch(OpenVocabularyClassifier, "mean_over_frames", "mean_over_frames")
    whole = timed("predict_clip (all)", predictor.predict_clip)
    for _ in range(clips):
        whole(clip)
    report(f"predictor {config}, amp {amp}, 640x360, official protocol ({device})", clips * 5, "frame")
    unpatch_all()
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(2):
            predictor.predict_clip(clip)
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=sort, row_limit=25, max_name_column_width=60))
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15, max_name_column_width=60))


def profile_clip(device: torch.device) -> None:
    from models.ovavss.clip_model import load_clip

    clip = load_clip("ViT-B-16", pretrained=None, device=device, quick_gelu=True)
    model = clip.model.eval()
    rows = []
    for batch in (64, 256):
        images = torch.randn(batch, 3, 224, 224, device=device)
        for regime in ("autocast fp16", "half weights", "fp32"):
            if regime == "half weights":
                run_model = model.half()
                inputs = images.half()
            else:
                run_model = model.float()
                inputs = images
            context = (torch.autocast(device.type, dtype=torch.float16) if regime == "autocast fp16"
                       else torch.autocast(device.type, enabled=False))
            times = []
            with torch.inference_mode(), context:
                for i in range(13):
                    _sync()
                    start = time.perf_counter()
                    run_model.encode_image(inputs)
                    _sync()
                    if i >= 3:
                        times.append(time.perf_counter() - start)
            median = statistics.median(times)
            rows.append((batch, regime, median, batch / median))
        model.float()
    print("\nCLIP ViT-B/16 encode_image (random weights)")
    for batch, regime, median, rate in rows:
        print(f"  batch {batch:4} {regime:14} {1000 * median:8.2f} ms   {rate:8.0f} crops/s")


def profile_train(device: torch.device, amp: str, config: str, iters: int, skip: int) -> None:
    import models.ovavss.optim as optim_module
    from models.data.synthetic import make_synthetic_avsbench
    from models.ovavss.criterion import SetCriterion
    from models.ovavss.matcher import HungarianMatcher
    from models.ovavss.model import OVAVSS
    from models.pipeline.audio_cache import AudioEmbeddingCache
    from models.pipeline.prepare import prepare_dataset
    from models.pipeline.train import TrainOptions, train

    patch(OVAVSS, "forward", "forward")
    patch(SetCriterion, "forward", "criterion (all)")
    patch(HungarianMatcher, "match_predictions", "matcher (all predictions)")
    patch(AudioEmbeddingCache, "embed", "VGGish")
    patch(torch.Tensor, "backward", "backward")
    patch(optim_module, "clip_full_model_grad_norm", "grad clip")
    patch(torch.amp.GradScaler, "step", "optimizer step")

    marks = {}

    class Marks:
        iteration = 0

        def start(self, *_a, **_k):
            pass

        def finish(self):
            pass

        def advance(self, steps=1, **_status):
            _sync()
            self.iteration += steps
            if self.iteration == skip:
                TIMES.clear()
                CALLS.clear()
                marks["start"] = time.perf_counter()
            marks["end"] = time.perf_counter()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_synthetic_avsbench(root / "avs", num_train=8, num_val=1, num_test=1, seed=0, size=(360, 640))
        prepare_dataset(root / "avs", root / "data")
        train(TrainOptions(data_dir=root / "data", config_name=config, out_dir=root / "run", device=str(device),
                           max_iters=iters, amp=amp, checkpoint_period=10**9, num_workers=default_workers(8),
                           vggish_weights="random"), progress=Marks(), warn=lambda *_: None)
    measured = iters - skip
    wall = marks["end"] - marks["start"]
    TIMES["(iteration, all)"] = wall
    CALLS["(iteration, all)"] = measured
    report(f"train loop {config}, amp {amp} ({device}): {measured / wall:.2f} it/s with synchronised parts",
           measured, "iteration")


PARTS = ("predictor", "clip", "train")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="cuda[:N] (default) or cpu (predictor and train parts)")
    parser.add_argument("--amp", default="fp16", choices=["off", "fp16", "bf16"],
                        help="predictor part: autocast (fp16 needs CUDA)")
    parser.add_argument("--train-amp", default="off", choices=["off", "fp16", "bf16"], help="train part: autocast")
    parser.add_argument("--parts", nargs="+", default=list(PARTS), choices=PARTS,
                        help="what to profile, in this order (default: all three; see above)")
    parser.add_argument("--iters", type=int, default=40, help="train part: iterations (>= 2; not the clip part)")
    parser.add_argument("--config", default="r50", choices=["r50", "swinb", "tiny"],
                        help="network config of the predictor and train parts (not the clip part)")
    parser.add_argument("--clips", type=int, default=10, help="predictor clips timed")
    return parser


def main() -> None:
    args = build_parser().parse_args()
    require_device(args.device)
    device = torch.device(args.device)
    if "clip" in args.parts and device.type != "cuda":
        fail("--parts clip is fixed-size and GPU-oriented (fp16 on the CPU takes many minutes): use --device cuda "
             "or leave it out of --parts")
    if "predictor" in args.parts and args.amp == "fp16" and device.type != "cuda":
        fail(f"--amp fp16 (the predictor part's default) needs a CUDA device: on {args.device} use --amp off")
    if "train" in args.parts and args.iters < 2:
        fail(f"--iters {args.iters}: the train part needs at least 2 (half of them, up to 10, are warm-up)")
    if "predictor" in args.parts and args.clips < 1:
        fail(f"--clips {args.clips}: at least 1")
    for part in args.parts:
        TIMES.clear()
        CALLS.clear()
        try:
            if part == "predictor":
                profile_predictor(device, args.amp, args.config, args.clips)
            elif part == "clip":
                profile_clip(device)
            else:
                profile_train(device, args.train_amp, args.config, args.iters, skip=min(10, args.iters // 2))
        finally:
            unpatch_all()


if __name__ == "__main__":
    run(main)
