"""What the network keeps between calls (per-shape position encodings and reference points, folded FrozenBN
affines) never changes a result, and really is kept: a repeated forward recomputes none of it.

The kept tensors save ~480 of the r50 forward's ~1,380 operations (benchmarks/count_ops.py), each a kernel
launch on a GPU, where the forward is launch-bound.
"""

from __future__ import annotations

import collections
import copy

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from models.ovavss.model import build_ovavss
from models.ovavss.position_encoding import PositionEmbeddingSine, PositionEmbeddingSine3D
from test_host_reads import tiny_inputs

RECOMPUTED_CONSTANTS = ("sin", "cos", "rsqrt", "meshgrid")
"""Operations that only making the position encodings, reference points and folded affines dispatches (`arange`
too, but the CPU's deformable sampling also makes an index range per call)."""


class OperationCounter(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.counts: collections.Counter[str] = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.counts[func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))


def counted_forward(model, images, audio) -> collections.Counter:
    counter = OperationCounter()
    with counter:
        model(images, audio_examples=audio)
    return counter.counts


@pytest.mark.parametrize("config_name", ["tiny", "r50"])
def test_a_repeated_forward_recomputes_no_constants(config_name):
    """r50 has FrozenBN (tiny has GroupNorm): its first forward folds them, later ones do not."""
    _, images, audio = tiny_inputs(num_frames=3, height=64, width=96)
    torch.manual_seed(0)
    model = build_ovavss(config_name).eval()
    with torch.inference_mode():
        first = counted_forward(model, images, audio)
        second = counted_forward(model, images, audio)
        other_shape = counted_forward(model, images[:, :2], audio[:, :2])
    made_first = ("sin", "cos", "meshgrid") + (("rsqrt",) if config_name == "r50" else ())
    assert all(first[name] > 0 for name in made_first), first
    assert {name: second[name] for name in RECOMPUTED_CONSTANTS} == dict.fromkeys(RECOMPUTED_CONSTANTS, 0)
    assert sum(second.values()) < 0.8 * sum(first.values())
    # a new clip length needs new 3-D encodings only (the 2-D ones, reference points and affines are kept)
    assert other_shape["sin"] > 0 and other_shape["rsqrt"] == 0 and other_shape["meshgrid"] == 0


def test_kept_constants_never_change_a_result():
    """Alternating clip shapes and modes (inference, autograd), the network equals a fresh copy of itself
    (which keeps nothing yet) bit for bit, so nothing kept is stale or written into."""
    config, images, audio = tiny_inputs(num_frames=3, height=64, width=96)
    torch.manual_seed(0)
    pristine = build_ovavss(config).eval()
    model = copy.deepcopy(pristine)
    gen = torch.Generator().manual_seed(5)
    steps = [(3, 64, 96, True), (2, 96, 64, True), (3, 64, 96, False), (3, 64, 96, True), (2, 96, 64, False)]
    for frames, height, width, inference in steps:
        x = torch.randn(1, frames, 3, height, width, generator=gen)
        a = torch.randn(1, frames, 1, 96, 64, generator=gen)
        fresh = copy.deepcopy(pristine)
        with torch.inference_mode(inference):
            got, want = model(x, audio_examples=a), fresh(x, audio_examples=a)
        assert torch.equal(got["pred_masks"], want["pred_masks"])
        assert torch.equal(got["pred_logits"], want["pred_logits"])
        for got_aux, want_aux in zip(got["aux_outputs"], want["aux_outputs"]):
            assert torch.equal(got_aux["pred_logits"], want_aux["pred_logits"])
        if not inference:  # the autograd forward can be differentiated (no inference tensor in it)
            got["pred_masks"].sum().backward()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_position_encodings_are_kept_per_shape_and_dtype(dtype):
    two_d, three_d = PositionEmbeddingSine(8), PositionEmbeddingSine3D(8)
    x2, x3 = torch.zeros(2, 4, 3, 5, dtype=dtype), torch.zeros(2, 3, 4, 3, 5, dtype=dtype)
    first2, first3 = two_d(x2), three_d(x3)
    assert first2.shape == (2, 16, 3, 5) and first3.shape == (2, 3, 16, 3, 5)
    assert first2.dtype == dtype and first3.dtype == dtype
    again2, again3 = two_d(x2[:1]), three_d(x3)
    assert again2.data_ptr() == first2.data_ptr() and again3.data_ptr() == first3.data_ptr()  # the same storage
    assert torch.equal(again2[0], first2[1])  # the batch is a view of one encoding
    wider = two_d(torch.zeros(1, 4, 3, 6, dtype=dtype))
    assert wider.shape == (1, 16, 3, 6) and wider.data_ptr() != first2.data_ptr()
    fresh2, fresh3 = PositionEmbeddingSine(8)(x2), PositionEmbeddingSine3D(8)(x3)
    assert torch.equal(first2, fresh2) and torch.equal(first3, fresh3)


def test_moving_or_converting_the_network_drops_what_it_kept():
    """`.to()` / `.double()` / `.cuda()` empty every kept constant (nothing stays allocated for the old device or
    dtype), and the converted network computes what a freshly converted copy does."""
    from models.ovavss.device_constants import DeviceConstants
    from models.ovavss.frozen_bn import FrozenBatchNorm2d

    _, images, audio = tiny_inputs(num_frames=2, height=64, width=96)
    torch.manual_seed(0)
    pristine = build_ovavss("r50").eval()
    model = copy.deepcopy(pristine)
    norms = [m for m in model.modules() if isinstance(m, FrozenBatchNorm2d)]
    with torch.inference_mode():
        model(images, audio_examples=audio)
    assert DeviceConstants.entries_in(model) and all(norm._folded is not None for norm in norms)
    model.double()
    assert DeviceConstants.entries_in(model) == [] and all(norm._folded is None for norm in norms)
    with torch.inference_mode():
        got = model(images.double(), audio_examples=audio.double())
        want = copy.deepcopy(pristine).double()(images.double(), audio_examples=audio.double())
    assert got["pred_masks"].dtype == torch.float64
    assert torch.equal(got["pred_masks"], want["pred_masks"])


def test_the_operation_counting_benchmark_runs():
    """benchmarks/count_ops.py (how RESULTS.md's operation counts are made) on the tiny config: the forward it
    counts is the repeated one (nothing recomputed), every phase of a training step dispatches work, and the
    whole-predictor count attributes the network's operations to the network phase, nothing else to it."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import count_ops

    _, images, audio = tiny_inputs(num_frames=3, height=64, width=96)
    model = count_ops.build("tiny")
    counter = count_ops.count(model, images, audio, depth=2)
    assert sum(counter.compute.values()) > 100 and counter.views > 0
    assert all(counter.compute[name] == 0 for name in RECOMPUTED_CONSTANTS)
    assert counter.compute["grid_sampler"] > 0  # the CUDA code path of the deformable sampling
    assert sum(counter.by_module.values()) == sum(counter.compute.values())
    phases = count_ops.count_train_step("tiny")
    assert all(sum(phase.compute.values()) > 0 for phase in phases.values())
    predictor = count_ops.count_predictor("tiny", "crops1", (64, 96), num_frames=3)
    assert predictor.by_module["network"] == sum(counter.compute.values())
    assert all(predictor.by_module[phase] > 0 for phase in count_ops.PREDICTOR_PHASES)
    assert sum(predictor.by_module.values()) == sum(predictor.compute.values())
    assert predictor.crop_batches == [3]  # the crop cap: one per frame
