"""The network forward never reads a tensor's value back to the host.

On CUDA such a read (`.item()`, `.tolist()`, `bool(tensor)`, a data-dependent shape) makes the CPU wait for
the GPU, so the launch queue runs dry at every one; it also splits what `torch.compile` can capture into
several graphs (and rules out CUDA graphs). TorchDynamo finds every such read without a GPU: each one is a
graph break. The level sizes of the deformable attention used to be a device tensor read back 9 times per
forward (14 graph breaks, 15 graphs).
"""

from __future__ import annotations

import pytest
import torch

from models.data.transforms import normalize_and_pad
from models.ovavss.config import get_config
from models.ovavss.deform_attn import MSDeformAttn
from models.ovavss.deform_sampling import as_level_sizes
from models.ovavss.device_constants import DeviceConstants
from models.ovavss.model import build_ovavss


def tiny_inputs(num_frames: int = 3, height: int = 96, width: int = 160):
    config = get_config("tiny")
    gen = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 256, (num_frames, 3, height, width), dtype=torch.uint8, generator=gen)
    images, _ = normalize_and_pad([frames], config.size_divisibility)
    audio = torch.randn(1, num_frames, 1, 96, 64, generator=gen)
    return config, images, audio


@pytest.mark.parametrize("mode", ["inference", "training"])
def test_the_network_forward_is_one_graph_without_host_reads(mode):
    config, images, audio = tiny_inputs()
    torch.manual_seed(0)
    model = build_ovavss(config).train(mode == "training")
    torch._dynamo.reset()
    with torch.inference_mode(mode == "inference"):
        explanation = torch._dynamo.explain(model)(images, audio_examples=audio)
    reasons = [f"{b.reason.splitlines()[0]} at {b.user_stack[-1] if b.user_stack else '?'}"
               for b in explanation.break_reasons]
    assert explanation.graph_break_count == 0, reasons
    assert explanation.graph_count == 1


@pytest.mark.filterwarnings("ignore:Dynamo detected a call to a `functools.lru_cache`")
def test_the_swin_backbone_is_one_graph_without_host_reads():
    """swinb's backbone (a small Swin here): the shifted-window masks are made on the host; they reach the
    device once per padded size, not by a blocking copy in every forward."""
    from models.ovavss.swin import SwinConfig, SwinTransformer

    torch.manual_seed(0)
    model = SwinTransformer(SwinConfig(embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4),
                                       window_size=12)).eval()
    torch._dynamo.reset()
    with torch.inference_mode():
        explanation = torch._dynamo.explain(model)(torch.randn(2, 3, 96, 160))
    assert explanation.graph_break_count == 0 and explanation.graph_count == 1
    eager = model(torch.ones(1, 3, 96, 160))
    again = model(torch.ones(1, 3, 96, 160))  # the cached masks give the same result
    assert all(torch.equal(eager[name], again[name]) for name in eager)
    assert sum(len(stage._masks) for stage in model.modules() if hasattr(stage, "_masks")) >= 1


def test_deformable_attention_takes_python_sizes_or_the_official_tensor():
    torch.manual_seed(1)
    attention = MSDeformAttn(d_model=16, n_levels=2, n_heads=2, n_points=3).double()
    with torch.no_grad():  # move the points off their initial rays so every level is really sampled
        attention.sampling_offsets.weight.normal_(0, 0.5)
        attention.attention_weights.weight.normal_(0, 0.5)
    sizes = [(5, 7), (3, 4)]
    tokens = torch.randn(2, 35 + 12, 16, dtype=torch.float64)
    reference = torch.rand(2, 47, 2, 2, dtype=torch.float64)
    starts = torch.tensor([0, 35])
    from_tensor = attention(tokens, reference, tokens, torch.tensor(sizes), starts)
    from_pairs = attention(tokens, reference, tokens, sizes)
    assert torch.equal(from_tensor, from_pairs)
    swapped = attention(tokens[:, :47], reference, tokens, [(7, 5), (4, 3)])  # same counts, other layout
    assert not torch.allclose(swapped, from_pairs)


def test_level_sizes_from_tensors_and_pairs():
    assert as_level_sizes(torch.tensor([[12, 20], [6, 10]])) == [(12, 20), (6, 10)]
    assert as_level_sizes([(12, 20), (6, 10)]) == [(12, 20), (6, 10)]
    assert all(type(v) is int for pair in as_level_sizes(torch.tensor([[3, 4]])) for v in pair)
    with pytest.raises(ValueError, match=r"must be \(L, 2\)"):
        as_level_sizes(torch.tensor([12, 20]))


def test_the_level_size_divisor_is_made_once_per_resolution():
    attention = MSDeformAttn(d_model=16, n_levels=2, n_heads=2, n_points=1)
    like = torch.zeros(1)
    first = attention._size_divisor([(5, 7), (3, 4)], like)
    assert first.tolist() == [[7.0, 5.0], [4.0, 3.0]]  # (w, h) per level
    assert attention._size_divisor([(5, 7), (3, 4)], like) is first
    assert attention._size_divisor([(5, 7), (3, 4)], like.double()).dtype == torch.float64
    with torch.inference_mode():
        inference = attention._size_divisor([(5, 7), (3, 4)], torch.zeros(1))
    assert inference.is_inference() and not first.is_inference()
    assert len(attention._constants) == 3
    assert not any("constants" in key for key in attention.state_dict())


def test_device_constants_are_made_once_and_bounded():
    made = []

    def make():
        made.append(1)
        return torch.arange(3)

    constants = DeviceConstants(max_entries=2)
    a = constants.get("a", make, torch.device("cpu"), torch.float32)
    assert a.dtype == torch.float32 and a.tolist() == [0.0, 1.0, 2.0]
    assert constants.get("a", make, "cpu", torch.float32) is a and len(made) == 1
    b = constants.get("b", make, "cpu", torch.float32)
    assert constants.get("a", make, "cpu", torch.float32) is a  # "a" is now the most recently used
    constants.get("c", make, "cpu", torch.float32)  # full: the least recently used ("b") goes
    assert len(constants) == 2 and len(made) == 3
    assert constants.get("a", make, "cpu", torch.float32) is a and len(made) == 3
    assert constants.get("b", make, "cpu", torch.float32) is not b and len(made) == 4
    with pytest.raises(ValueError, match="at least 1"):
        DeviceConstants(0)


def test_device_computed_constants_are_kept_per_mode_and_not_while_capturing(monkeypatch):
    """`computed`: made by the caller on the device, kept per key and inference mode; made afresh and not
    kept while a CUDA graph is being captured (the graph owns it then)."""
    from models.ovavss import device_constants

    made = []

    def make():
        made.append(1)
        return torch.full((2,), float(len(made)))

    constants = DeviceConstants(max_entries=4)
    first = constants.computed("k", make, "cpu")
    assert constants.computed("k", make, torch.device("cpu")) is first and len(made) == 1
    with torch.inference_mode():
        inference = constants.computed("k", make, "cpu")
    assert inference is not first and len(made) == 2 and len(constants) == 2
    monkeypatch.setattr(device_constants, "capturing_cuda_graph", lambda device: True)
    during_capture = constants.computed("k", make, "cpu")
    assert during_capture is not first and len(made) == 3 and len(constants) == 2


def test_a_model_that_predicted_in_inference_mode_still_trains():
    """The cached divisor of inference mode is an inference tensor, which autograd refuses: training after
    prediction (a validation pass, a notebook) must get its own."""
    config, images, audio = tiny_inputs(num_frames=2, height=64, width=96)
    torch.manual_seed(0)
    model = build_ovavss(config).eval()
    with torch.inference_mode():
        model(images, audio_examples=audio)
    model.train()
    outputs = model(images, audio_examples=audio)
    outputs["pred_masks"].mean().backward()
    offsets = model.sem_seg_head.pixel_decoder.transformer.encoder.layers[0].self_attn.sampling_offsets
    assert offsets.weight.grad is not None and offsets.weight.grad.abs().sum() > 0
