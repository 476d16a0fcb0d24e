"""How many operations the network's inference forward dispatches, and what dispatching them costs the host.

Usage:
    .venv/bin/python benchmarks/count_ops.py --configs r50 swinb
    .venv/bin/python benchmarks/count_ops.py --configs r50 --by-module 3 --top 25
    .venv/bin/python benchmarks/count_ops.py --configs r50 --predictor-modes official crops3

On an H100 the r50 forward is bound by the host issuing kernels, not by the GPU running them (~57 ms per
5-frame 360p clip with the GPU mostly idle; benchmarks/RESULTS.md). Both quantities that matter can be measured
without a GPU:

- operations: every ATen operation the forward dispatches (counted with a `TorchDispatchMode`), split into
  compute operations (each one or more kernel launches on CUDA) and views / no-op casts (no launch). The forward
  takes the CUDA code path on the CPU (grid_sample deformable sampling, one-kernel softmax, contiguous frames),
  so the counts are those of a CUDA run with `--amp off`.
- host time: the median wall time of the forward from VGGish embeddings on a tiny CPU input (5 frames of
  64x64): for the tiny config mostly the framework's (Python and dispatcher) cost of issuing the operations,
  which a launch-bound CUDA run pays too (plus the launches). The r50 / swinb decoders' 100 queries keep real
  work at any input size, so their host time is an upper bound. (PyTorch's meta device, which only computes
  shapes, dispatches several times slower than the CPU here: no use as a proxy.)

--predictor-modes official crops3 also counts one whole-predictor clip (`AVSegPredictor.predict_resized`: network,
random CLIP ViT classifier with 70 class names, painting, per-frame outputs) by phase, and the value reads among
them that make the host wait for the device.

--train-step also counts one `avseg train` step by phase (forward in training mode, criterion with Hungarian
matching, backward, gradient clipping, fused AdamW) on a 5 x 256x448 clip with two target objects.

Weights are random. --by-module N groups the compute operations by the first N components of the module name.
"""

from __future__ import annotations

import argparse
import collections
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

NO_LAUNCH = {
    "view", "_unsafe_view", "reshape", "select", "slice", "transpose", "t", "permute", "unsqueeze", "squeeze",
    "flatten", "unflatten", "expand", "detach", "alias", "split", "split_with_sizes", "chunk", "unbind", "narrow",
    "as_strided", "lift_fresh", "dropout", "contiguous", "to", "_to_copy", "type_as", "view_as", "expand_as",
    "detach_", "numpy_T", "resolve_conj", "resolve_neg",
}
"""Operations that launch nothing when their result shares the input's storage (views, no-op casts)."""


class OperationCounter(TorchDispatchMode):
    """Counts dispatched ATen operations; those returning a tensor that shares an input's storage count as views."""

    def __init__(self, module_stack: list[str], depth: int) -> None:
        super().__init__()
        self.module_stack = module_stack
        self.depth = depth
        self.compute: collections.Counter[str] = collections.Counter()
        self.by_module: collections.Counter[str] = collections.Counter()
        self.views = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func.overloadpacket.__name__
        storages = {a.untyped_storage().data_ptr() for a in args if isinstance(a, torch.Tensor)}
        shares_input = isinstance(out, torch.Tensor) and out.untyped_storage().data_ptr() in storages
        if name in NO_LAUNCH and (shares_input or name not in {"to", "_to_copy", "contiguous", "type_as"}):
            self.views += 1
        else:
            self.compute[name] += 1
            module = self.module_stack[-1] if self.module_stack else "<outside modules>"
            self.by_module[".".join(module.split(".")[: self.depth]) or "<root>"] += 1
        return out


def build(config: str) -> torch.nn.Module:
    """The network in eval mode with the CUDA code paths forced (see the module docstring)."""
    from models.ovavss.deform_attn import MSDeformAttn
    from models.ovavss.model import build_ovavss

    model = build_ovavss(config).eval()
    for module in model.modules():
        if isinstance(module, MSDeformAttn):
            module.sampling = "grid_sample"
    return model


def count(model: torch.nn.Module, images: torch.Tensor, audio: torch.Tensor, depth: int) -> OperationCounter:
    stack: list[str] = []
    hooks = []
    for name, module in model.named_modules():
        hooks.append(module.register_forward_pre_hook(lambda _m, _i, name=name: stack.append(name)))
        hooks.append(module.register_forward_hook(lambda _m, _i, _o: stack.pop() and None))
    counter = OperationCounter(stack, depth)
    try:
        with torch.inference_mode():
            model(images, audio_examples=audio)  # the first call fills what is cached per input shape
            with counter:
                model(images, audio_examples=audio)
    finally:
        for hook in hooks:
            hook.remove()
    return counter


def host_time(model: torch.nn.Module, frames: int, size: tuple[int, int], repeat: int) -> float:
    """Median wall time of the forward from VGGish embeddings on a tiny CPU input: there the kernels take
    little and the time is mostly the framework's cost of issuing the operations (for the tiny config; the
    r50 / swinb transformer decoder's 100 queries keep real work at any input size)."""
    images = torch.randn(1, frames, 3, *size)
    embeddings = torch.randn(1, frames, 128)
    times = []
    with torch.inference_mode():
        for _ in range(3):
            model(images, audio_embeddings=embeddings)
        for _ in range(repeat):
            start = time.perf_counter()
            model(images, audio_embeddings=embeddings)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def count_train_step(config: str) -> dict[str, OperationCounter]:
    """Operations of one training step by phase (the second step: the first one fills what is kept)."""
    from models.ovavss.config import TrainConfig, get_config
    from models.ovavss.criterion import build_criterion, weighted_total
    from models.ovavss.optim import build_optimizer, clip_full_model_grad_norm

    torch.manual_seed(0)
    model = build(config).train()
    train_cfg = TrainConfig()
    criterion = build_criterion(train_cfg, get_config(config).dec_layers)
    optimizer = build_optimizer(model, train_cfg, fused=True)  # what CUDA runs
    params = [param for group in optimizer.param_groups for param in group["params"]]
    frames, height, width = 5, 256, 448
    images = torch.randn(1, frames, 3, height, width)
    embeddings = torch.randn(1, frames, 128)
    masks = torch.zeros(2, frames, height, width, dtype=torch.bool)
    masks[0, :, 10:100, 20:200] = True
    masks[1, :, 120:200, 200:400] = True
    targets = [{"labels": torch.zeros(2, dtype=torch.long), "masks": masks, "frame_indices": torch.arange(frames)}]
    phases = ("forward", "criterion", "backward", "clip", "step")
    for _ in range(2):
        counters = {phase: OperationCounter([], 1) for phase in phases}
        with counters["forward"]:
            outputs = model(images, audio_embeddings=embeddings)
        with counters["criterion"]:
            total = weighted_total(criterion(outputs, targets), criterion.weight_dict)
        optimizer.zero_grad(set_to_none=True)
        with counters["backward"]:
            total.backward()
        with counters["clip"]:
            clip_full_model_grad_norm(params, train_cfg.clip_grad_norm)
        with counters["step"]:
            optimizer.step()
    return counters


PREDICTOR_PHASES = ("network", "mask boxes", "crops", "CLIP image tower", "scores", "paint", "frame outputs")
"""The parts of one `AVSegPredictor.predict_resized` call, in order (`count_predictor`)."""

SYNCS = {"_local_scalar_dense", "nonzero", "nonzero_numpy", "is_nonzero", "equal"}
"""Operations that make the host wait for a CUDA device (a value read back; `nonzero` for its output size).
Not seen: copies to the host (on the CPU indistinguishable from the no-op `.to(device)` calls) and `Tensor.tolist`
(it dispatches nothing)."""


def count_predictor(config: str, mode: str, size: tuple[int, int], num_frames: int) -> OperationCounter:
    """Operations of one whole-predictor clip (network + CLIP classifier + painting) by phase.

    The network and random CLIP are those `bench_predictor.py` times (70 class names, one template), amp off;
    with random weights the official protocol crops most (query, frame) pairs (353 of 500 for r50). Phases are
    attributed through the counter's module stack: each part is wrapped to push its name. The returned counter
    also holds `crop_batches`, the sizes of the counted call's CLIP batches.
    """
    from models.data.classes import CLASS_NAMES
    from models.ovavss import classifier as classifier_module
    from models.ovavss.clip_model import load_clip
    from models.ovavss.config import get_config
    from models.vggish_setup import random_vggish_
    from models.predictor import AVSegPredictor, PredictorOptions

    options: dict = {}
    if mode.startswith("crops"):
        options["max_crops_per_frame"] = int(mode[5:])
    elif mode != "official":
        raise SystemExit(f"--predictor-modes: official or crops<n>, got {mode!r}")
    model_config = get_config(config)
    torch.manual_seed(0)
    model = build(config)
    random_vggish_(model.audio_encoder, 0)
    clip = load_clip(model_config.clip_model, pretrained=None, quick_gelu=True)
    predictor = AVSegPredictor(model, clip, model_config, "cpu",
                               PredictorOptions(templates=("a photo of a {}.",), **options))
    predictor.set_vocabulary(CLASS_NAMES[1:71])
    stack: list[str] = []
    counter = OperationCounter(stack, 1)
    crop_batches: list[int] = []

    def phase(name: str, function):
        def wrapped(*args, **kwargs):
            stack.append(name)
            try:
                return function(*args, **kwargs)
            finally:
                stack.pop()
        return wrapped

    classifier = predictor.classifier
    predictor._network = phase("network", predictor._network)
    classifier.pairs_to_crop = phase("mask boxes", classifier.pairs_to_crop)
    encode_regions = phase("CLIP image tower", classifier.encode_regions)

    def counting_crops(regions: torch.Tensor) -> torch.Tensor:
        crop_batches.append(int(regions.shape[0]))
        return encode_regions(regions)

    classifier.encode_regions = counting_crops
    classifier.paint = phase("paint", classifier.paint)
    predictor._frame_predictions = phase("frame outputs", predictor._frame_predictions)
    original_crop_regions = classifier_module.crop_regions
    classifier_module.crop_regions = phase("crops", original_crop_regions)
    # what the parts above leave of the classification
    classifier.classify_pairs = phase("scores", classifier.classify_pairs)
    classifier.mean_over_frames = phase("scores", classifier.mean_over_frames)
    frames_in = torch.randint(0, 256, (num_frames, 3, *size), dtype=torch.uint8)
    audio = torch.randn(num_frames, 1, 96, 64)
    try:
        predictor.predict_resized(frames_in, audio, size)  # fills what is kept per shape
        crop_batches.clear()  # only the counted call's batches
        with counter:
            predictor.predict_resized(frames_in, audio, size)
    finally:
        classifier_module.crop_regions = original_crop_regions
    counter.crop_batches = crop_batches
    return counter


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=["r50"])
    parser.add_argument("--frames", type=int, default=5)
    parser.add_argument("--size", type=int, nargs=2, default=(384, 640), metavar=("H", "W"),
                        help="input size (multiples of 32)")
    parser.add_argument("--host-size", type=int, nargs=2, default=(64, 64), metavar=("H", "W"),
                        help="input size of the host-time runs")
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--by-module", type=int, default=0, metavar="N")
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--train-step", action="store_true", help="also count a training step by phase")
    parser.add_argument("--predictor-modes", nargs="*", default=[], metavar="MODE",
                        help="also count one whole-predictor clip by phase (modes: official, crops<n>)")
    args = parser.parse_args()
    from models.device import prepare_cpu

    prepare_cpu()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, CPU threads {torch.get_num_threads()}")
    torch.manual_seed(0)
    for config in args.configs:
        model = build(config)
        images = torch.randn(1, args.frames, 3, *args.size)
        audio = torch.randn(1, args.frames, 1, 96, 64)
        counter = count(model, images, audio, max(args.by_module, 1))
        seconds = host_time(model, args.frames, tuple(args.host_size), args.repeat)
        total = sum(counter.compute.values())
        print(f"{config}: {total} compute operations, {counter.views} views / no-op casts per forward "
              f"({args.frames}x{args.size[0]}x{args.size[1]}); host time {1000 * seconds:.1f} ms per forward at "
              f"{args.frames}x{args.host_size[0]}x{args.host_size[1]} ({1e6 * seconds / (total + counter.views):.1f} "
              "us per dispatched operation)")
        top = ", ".join(f"{name} {n}" for name, n in counter.compute.most_common(args.top))
        print(f"  most frequent: {top}")
        if args.by_module:
            for module, n in counter.by_module.most_common(args.top):
                print(f"  {n:6d}  {module}")
        if args.train_step:
            phases = count_train_step(config)
            total = sum(sum(c.compute.values()) for c in phases.values())
            parts = ", ".join(f"{phase} {sum(c.compute.values())}" for phase, c in phases.items())
            print(f"  training step: {total} compute operations ({parts})")
        for mode in args.predictor_modes:
            counter = count_predictor(config, mode, tuple(args.size), args.frames)
            total = sum(counter.compute.values())
            syncs = sum(n for name, n in counter.compute.items() if name in SYNCS)
            parts = ", ".join(f"{name} {counter.by_module.get(name, 0)}" for name in PREDICTOR_PHASES)
            other = total - sum(counter.by_module.get(name, 0) for name in PREDICTOR_PHASES)
            print(f"  predictor ({mode}): {total} compute operations ({parts}, other {other}); "
                  f"{syncs} value reads (nonzero, item) that wait for the device; "
                  f"{sum(counter.crop_batches)} crops in {len(counter.crop_batches)} CLIP calls")
            if args.by_module:
                top = ", ".join(f"{name} {n}" for name, n in counter.compute.most_common(args.top))
                print(f"    most frequent: {top}")


if __name__ == "__main__":
    main()
