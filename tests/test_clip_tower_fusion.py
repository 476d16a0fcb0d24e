"""The CLIP image tower's inference fusion (models/ovavss/clip_tower_fusion.py): the same function, fewer passes."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from open_clip.model import CLIP
from torch import nn

from models.ovavss.clip_tower_fusion import AmpLayerNorm, QuickGELUAsSiLU, fuse_image_tower
from test_predictor import TINY_CLIP_CONFIG

CONFIG = {**TINY_CLIP_CONFIG, "vision_cfg": {**TINY_CLIP_CONFIG["vision_cfg"], "layers": 2}}


def quick_gelu_clip(seed: int = 0) -> CLIP:
    torch.manual_seed(seed)
    model = CLIP(**CONFIG, quick_gelu=True).eval()
    with torch.no_grad():  # larger MLP pre-activations than the init's, so QuickGELU's shape matters
        for block in model.visual.transformer.resblocks:
            block.mlp.c_fc.weight.mul_(8)
    return model


def test_fused_tower_computes_the_same_function():
    """float64: the fused image tower's embeddings equal the original's to rounding; the text tower is untouched."""
    original = quick_gelu_clip().double()
    fused = copy.deepcopy(original)
    counts = fuse_image_tower(fused.visual)
    assert counts == {"mlps": 2, "layer_norms": 2 * 2 + 2}  # ln_1, ln_2 per block; ln_pre, ln_post
    assert all(isinstance(b.mlp.gelu, QuickGELUAsSiLU) for b in fused.visual.transformer.resblocks)
    assert all(not isinstance(m, nn.LayerNorm) or isinstance(m, AmpLayerNorm) for m in fused.visual.modules())
    assert fused.visual.state_dict().keys() == original.visual.state_dict().keys()
    images = torch.randn(6, 3, 32, 32, dtype=torch.float64)
    with torch.inference_mode():
        want, got = original.encode_image(images), fused.encode_image(images)
        hidden = original.visual.transformer.resblocks[0].mlp.c_fc(torch.randn(50, 32, dtype=torch.float64))
    assert hidden.abs().max() > 3  # QuickGELU is far from linear there
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    assert not torch.equal(fused.visual.transformer.resblocks[0].mlp.c_fc.weight,
                           original.visual.transformer.resblocks[0].mlp.c_fc.weight)
    for name, param in original.state_dict().items():
        if not name.startswith("visual."):
            assert torch.equal(param, fused.state_dict()[name]), name


def test_fusing_twice_changes_nothing_and_other_activations_are_left_alone():
    model = quick_gelu_clip()
    fuse_image_tower(model.visual)
    once = copy.deepcopy(model.visual.state_dict())
    assert fuse_image_tower(model.visual) == {"mlps": 0, "layer_norms": 0}
    assert all(torch.equal(once[k], v) for k, v in model.visual.state_dict().items())
    torch.manual_seed(0)
    gelu = CLIP(**CONFIG, quick_gelu=False)
    weights = copy.deepcopy(gelu.visual.state_dict())
    assert fuse_image_tower(gelu.visual)["mlps"] == 0
    assert all(isinstance(b.mlp.gelu, nn.GELU) for b in gelu.visual.transformer.resblocks)
    assert all(torch.equal(weights[k], v) for k, v in gelu.visual.state_dict().items())


def fused_and_unfused_errors(device: torch.device, dtype: torch.dtype, num_images: int = 8):
    """The quick-GELU tower in `dtype` under autocast on `device`, unfused (weights cast) and fused through
    `cast_inference_weights` (what the predictor does with amp weights), against the float64 original.

    Returns ({fused: relative error}, {fused: [(layer norm input dtype, autocast on inside it), ...]}).
    """
    from models.ovavss.model import build_ovavss
    from models.predictor import cast_inference_weights

    original = quick_gelu_clip()
    images = torch.randn(num_images, 3, 32, 32)
    with torch.inference_mode():
        reference = copy.deepcopy(original).double().encode_image(images.double())
    errors, norms = {}, {}
    layer_norm = F.layer_norm
    for fused in (False, True):
        model = copy.deepcopy(original).to(device)
        if fused:
            cast_inference_weights(build_ovavss("tiny").to(device), model, dtype)
            assert isinstance(model.visual.transformer.resblocks[0].mlp.gelu, QuickGELUAsSiLU)
        else:
            for param in model.visual.parameters():
                param.data = param.data.to(dtype)
        assert {p.dtype for p in model.visual.parameters()} == {dtype}
        seen = norms[fused] = []
        F.layer_norm = lambda x, *a, **k: seen.append((x.dtype, torch.is_autocast_enabled(device.type))) or \
            layer_norm(x, *a, **k)
        try:
            with torch.inference_mode(), torch.autocast(device.type, dtype=dtype):
                out = model.encode_image(images.to(device)).double().cpu()
        finally:
            F.layer_norm = layer_norm
        errors[fused] = float((out - reference).norm() / reference.norm())
    return errors, norms


def test_the_fold_is_made_in_float32_before_the_amp_cast():
    """Through `cast_inference_weights`: the bfloat16 tower's embeddings are as close to the original's as those
    of the unfused bfloat16 tower, and its layer norms run with autocast off (the unfused ones with it on)."""
    errors, norms = fused_and_unfused_errors(torch.device("cpu"), torch.bfloat16)
    assert errors[True] < 0.03 and errors[False] < 0.03
    assert errors[True] < 1.5 * errors[False], errors
    assert norms[True] and set(norms[True]) == {(torch.bfloat16, False)}
    assert norms[False] and {enabled for _, enabled in norms[False]} == {True}


def test_amp_layer_norm():
    """float32 outside autocast: exactly nn.LayerNorm. Half precision: the input's dtype, autocast off inside,
    values of the float64 norm rounded once."""
    torch.manual_seed(0)
    norm = nn.LayerNorm(24)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 2)
        norm.bias.uniform_(-1, 1)
    amp = AmpLayerNorm(24)
    amp.load_state_dict(norm.state_dict())
    x = torch.randn(5, 7, 24) * 3 + 1
    assert torch.equal(amp(x), norm(x))
    seen = []
    layer_norm = F.layer_norm

    def recording(*args, **kwargs):
        seen.append((args[0].dtype, torch.is_autocast_enabled("cpu")))
        return layer_norm(*args, **kwargs)

    for dtype in (torch.bfloat16, torch.float16):
        half = x.to(dtype)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            F.layer_norm, seen[:] = recording, []
            try:
                out = amp(half)
            finally:
                F.layer_norm = layer_norm
        assert seen == [(dtype, False)] and out.dtype == dtype
        want = F.layer_norm(half.double(), (24,), norm.weight.to(dtype).double(), norm.bias.to(dtype).double())
        torch.testing.assert_close(out.double(), want, rtol=2 ** -7 if dtype == torch.bfloat16 else 2 ** -10,
                                   atol=2 ** -7 if dtype == torch.bfloat16 else 2 ** -10)


@pytest.mark.parametrize("affine", [True, False])
def test_amp_layer_norm_shares_the_parameters(affine):
    from models.ovavss.clip_tower_fusion import amp_layer_norm

    norm = nn.LayerNorm(8, elementwise_affine=affine)
    replacement = amp_layer_norm(norm)
    assert replacement.weight is norm.weight and replacement.bias is norm.bias
    assert replacement.state_dict().keys() == norm.state_dict().keys()
    x = torch.randn(3, 8)
    assert torch.equal(replacement(x), norm(x))


@pytest.mark.skipif(not __import__("models.device").device.cpu_supports_bf16(),
                    reason="this CPU has no native bfloat16 (AVX512-BF16 / AMX)")
def test_predictor_fuses_the_tower_with_amp_weights_only():
    """`AVSegPredictor` with --amp bf16 (amp weights, the default) fuses the image tower, with amp_weights=False
    or amp off it does not; the fused bf16 run's class probabilities are as close to float32's as the unfused one's."""
    import open_clip

    from models.ovavss.clip_model import LoadedClip
    from models.ovavss.config import get_config
    from models.ovavss.model import build_ovavss
    from models.predictor import AVSegPredictor, PredictorOptions

    torch.manual_seed(0)
    network = build_ovavss("tiny").eval()
    frames = torch.randint(0, 256, (5, 3, 64, 96), dtype=torch.uint8)
    audio = torch.randn(5, 1, 96, 64)
    probabilities = {}
    for amp, amp_weights in (("off", True), ("bf16", False), ("bf16", True)):
        clip = LoadedClip(quick_gelu_clip().requires_grad_(False), open_clip.get_tokenizer("ViT-B-16"), "tiny", None,
                          image_size=32, quick_gelu=True)
        predictor = AVSegPredictor(copy.deepcopy(network), clip, get_config("tiny"), "cpu",
                                   PredictorOptions(amp=amp, amp_weights=amp_weights, templates=("a {}.",)))
        fused = isinstance(clip.model.visual.transformer.resblocks[0].mlp.gelu, QuickGELUAsSiLU)
        assert fused == (amp != "off" and amp_weights) == predictor.describe()["clip_image_tower_fused"]
        predictor.set_vocabulary(["dog", "violin", "man"])
        captured = []
        mean_over_frames = predictor.classifier.mean_over_frames
        predictor.classifier.mean_over_frames = lambda *a: captured.append(mean_over_frames(*a)) or captured[-1]
        predictor.predict_resized(frames, audio, (64, 96))
        probabilities[(amp, amp_weights)] = captured[0].probs
    reference, unfused, fused = probabilities[("off", True)], probabilities[("bf16", False)], probabilities[("bf16", True)]
    assert reference.shape[0] > 0
    errors = {name: float((p - reference).abs().max()) for name, p in (("unfused", unfused), ("fused", fused))}
    assert errors["fused"] < 0.1 and errors["fused"] < 1.5 * errors["unfused"] + 0.01, errors
