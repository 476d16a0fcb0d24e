"""Backbones: FrozenBN, ResNet-50 (vs torchvision), Swin-B (vs timm and a dense reference), tiny ResNet."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from models.errors import AVSegError
from models.ovavss.backbone import (
    Backbone,
    build_backbone,
    build_resnet50,
    build_swin_base,
    build_tiny_backbone,
)
from models.ovavss.frozen_bn import FrozenBatchNorm2d
from models.ovavss.resnet import fold_frozen_batchnorm_
from models.ovavss.swin import SwinBlock, SwinConfig, SwinTransformer, shifted_window_mask

torch.set_num_threads(1)

FEATURES = ("res2", "res3", "res4", "res5")


def _randomize_bn_buffers(module: torch.nn.Module, generator: torch.Generator) -> None:
    """Give every (Frozen)BatchNorm non-trivial statistics and affine values."""
    for m in module.modules():
        if isinstance(m, (torch.nn.BatchNorm2d, FrozenBatchNorm2d)):
            c = m.weight.shape[0]
            with torch.no_grad():
                m.weight.copy_(torch.rand(c, generator=generator) * 0.5 + 0.5)
                m.bias.copy_(torch.randn(c, generator=generator) * 0.1)
                m.running_mean.copy_(torch.randn(c, generator=generator) * 0.1)
                m.running_var.copy_(torch.rand(c, generator=generator) + 0.5)


# --------------------------------------------------------------------------------------------- FrozenBN


def test_frozen_bn_matches_formula_in_float64() -> None:
    g = torch.Generator().manual_seed(0)
    bn = FrozenBatchNorm2d(6).double()
    _randomize_bn_buffers(bn, g)
    x = torch.randn(2, 6, 5, 7, generator=g, dtype=torch.float64)
    w, b, rm, rv = (bn.weight, bn.bias, bn.running_mean, bn.running_var)
    expected = torch.empty_like(x)
    for c in range(6):
        expected[:, c] = (x[:, c] - rm[c]) / math.sqrt(rv[c].item() + 1e-5) * w[c] + b[c]
    torch.testing.assert_close(bn(x), expected, rtol=1e-12, atol=1e-12)


def _frozen_bn_formula(bn: FrozenBatchNorm2d, x: torch.Tensor) -> torch.Tensor:
    """(x - mean) / sqrt(var + eps) * weight + bias, channel by channel in float64."""
    x = x.double()
    out = torch.empty_like(x)
    for c in range(x.shape[1]):
        std = math.sqrt(float(bn.running_var[c]) + bn.eps)
        out[:, c] = (x[:, c] - float(bn.running_mean[c])) / std * float(bn.weight[c]) + float(bn.bias[c])
    return out


def test_frozen_bn_keeps_its_folded_affine_until_a_buffer_changes() -> None:
    """scale / shift are folded once per dtype and reused; every way a buffer can change (load_state_dict,
    an in-place edit, a replaced buffer, .to(dtype)) gives the new values at the next call."""
    g = torch.Generator().manual_seed(2)
    bn = FrozenBatchNorm2d(5).double()
    _randomize_bn_buffers(bn, g)
    x = torch.randn(2, 5, 3, 4, generator=g, dtype=torch.float64)
    first = bn(x)
    torch.testing.assert_close(first, _frozen_bn_formula(bn, x), rtol=1e-12, atol=1e-12)
    kept = bn._folded
    assert torch.equal(bn(x), first) and bn._folded is kept  # reused, not refolded

    other = FrozenBatchNorm2d(5).double()
    _randomize_bn_buffers(other, g)
    bn.load_state_dict(other.state_dict())  # copies into the same tensors
    loaded = bn(x)
    assert not torch.allclose(loaded, first)
    torch.testing.assert_close(loaded, _frozen_bn_formula(other, x), rtol=1e-12, atol=1e-12)

    with torch.no_grad():
        bn.running_var.mul_(4.0)  # an in-place edit
    torch.testing.assert_close(bn(x), _frozen_bn_formula(bn, x), rtol=1e-12, atol=1e-12)
    for _ in range(3):  # replaced buffers (a new tensor may reuse a freed one's memory: still seen as new)
        bn.bias = torch.randn(5, generator=g, dtype=torch.float64)
        torch.testing.assert_close(bn(x), _frozen_bn_formula(bn, x), rtol=1e-12, atol=1e-12)
    bn.running_mean.data = torch.randn(5, generator=g, dtype=torch.float64)  # memory swapped, version unchanged
    torch.testing.assert_close(bn(x), _frozen_bn_formula(bn, x), rtol=1e-12, atol=1e-12)

    bn.float()
    y = bn(x.float())
    assert y.dtype == torch.float32
    torch.testing.assert_close(y.double(), _frozen_bn_formula(bn, x), rtol=1e-5, atol=1e-5)
    half = bn(x.half())  # the folded affine of another input dtype is kept on its own
    assert half.dtype == torch.float16 and torch.equal(bn(x.float()), y)


def test_frozen_bn_with_inference_mode_buffers_folds_at_every_call() -> None:
    """Buffers made in inference mode have no version counter: nothing is kept, values stay right."""
    g = torch.Generator().manual_seed(3)
    with torch.inference_mode():
        bn = FrozenBatchNorm2d(4)
        _randomize_bn_buffers(bn, g)
        x = torch.randn(1, 4, 2, 2, generator=g)
        torch.testing.assert_close(bn(x).double(), _frozen_bn_formula(bn, x), rtol=1e-5, atol=1e-5)
        bn.running_mean.add_(1.0)
        torch.testing.assert_close(bn(x).double(), _frozen_bn_formula(bn, x), rtol=1e-5, atol=1e-5)
    assert bn._folded is None


def test_frozen_bn_folded_in_inference_mode_does_not_reach_autograd() -> None:
    """A forward in inference mode, then one with autograd (training after a prediction) works."""
    bn = FrozenBatchNorm2d(3)
    with torch.inference_mode():
        bn(torch.randn(1, 3, 2, 2))
    x = torch.randn(1, 3, 2, 2, requires_grad=True)
    (bn(x) * 2).sum().backward()
    torch.testing.assert_close(x.grad, torch.full_like(x, 2.0))  # fresh: scale 1)


def test_frozen_bn_is_identity_when_fresh_and_keeps_channels_last() -> None:
    bn = FrozenBatchNorm2d(4)
    x = torch.randn(2, 4, 3, 5).contiguous(memory_format=torch.channels_last)
    y = bn(x)
    torch.testing.assert_close(y, x, rtol=0, atol=1e-6)
    assert y.is_contiguous(memory_format=torch.channels_last)


def test_frozen_bn_has_four_buffers_and_no_parameters() -> None:
    bn = FrozenBatchNorm2d(8)
    assert list(bn.parameters()) == []
    assert sorted(bn.state_dict()) == ["bias", "running_mean", "running_var", "weight"]
    assert bn.eps == 1e-5


def test_frozen_bn_equals_batchnorm_eval_and_loads_its_state_dict() -> None:
    g = torch.Generator().manual_seed(1)
    ref = torch.nn.BatchNorm2d(5).eval()
    _randomize_bn_buffers(ref, g)
    bn = FrozenBatchNorm2d(5)
    bn.load_state_dict(ref.state_dict(), strict=True)  # carries num_batches_tracked, which is dropped
    x = torch.randn(3, 5, 4, 4, generator=g)
    torch.testing.assert_close(bn(x), ref(x), rtol=1e-6, atol=1e-6)
    assert "num_batches_tracked" not in bn.state_dict()


# --------------------------------------------------------------------------------------------- ResNet-50


def _expected_resnet50_keys() -> set[str]:
    """Keys from spec section 10.1 (without the `backbone.` prefix)."""
    norm = ("weight", "bias", "running_mean", "running_var")

    def conv(name: str) -> list[str]:
        return [f"{name}.weight"] + [f"{name}.norm.{n}" for n in norm]

    keys = conv("stem.conv1")
    for stage, blocks in zip(FEATURES, (3, 4, 6, 3)):
        keys += conv(f"{stage}.0.shortcut")
        for k in range(blocks):
            for j in (1, 2, 3):
                keys += conv(f"{stage}.{k}.conv{j}")
    return set(keys)


def test_resnet50_keys_counts_and_shapes() -> None:
    with torch.device("meta"):
        model = build_resnet50()
    state = model.state_dict()
    assert set(state) == _expected_resnet50_keys()
    assert sum(p.numel() for p in model.parameters()) == 23_454_912
    assert sum(b.numel() for b in model.buffers()) == 106_240
    params = dict(model.named_parameters())
    assert all(name.endswith(".weight") and ".norm." not in name for name in params)  # convs only, no biases
    assert all(p.requires_grad for p in params.values())  # FREEZE_AT 0
    # spot shapes from the spec (bottleneck b, in, out)
    assert state["stem.conv1.weight"].shape == (64, 3, 7, 7)
    assert state["res2.0.conv1.weight"].shape == (64, 64, 1, 1)
    assert state["res3.0.conv2.weight"].shape == (128, 128, 3, 3)
    assert state["res4.1.conv1.weight"].shape == (256, 1024, 1, 1)
    assert state["res5.0.shortcut.weight"].shape == (2048, 1024, 1, 1)
    assert state["res5.2.conv3.norm.running_var"].shape == (2048,)
    assert model.res3[0].conv1.stride == (1, 1) and model.res3[0].conv2.stride == (2, 2)  # STRIDE_IN_1X1 False
    assert model.out_channels == {"res2": 256, "res3": 512, "res4": 1024, "res5": 2048}
    assert model.out_strides == {"res2": 4, "res3": 8, "res4": 16, "res5": 32}


def _torchvision_to_ours(tv_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in tv_state.items():
        if key.startswith("fc.") or key.endswith("num_batches_tracked"):
            continue
        parts = key.split(".")
        if parts[0] in ("conv1", "bn1"):
            name = "stem.conv1" + (".norm" if parts[0] == "bn1" else "")
            out[f"{name}.{parts[-1]}"] = value
            continue
        stage = f"res{int(parts[0][len('layer'):]) + 1}"
        block, layer = parts[1], parts[2]
        if layer == "downsample":
            name = f"{stage}.{block}.shortcut" + (".norm" if parts[3] == "1" else "")
        elif layer.startswith("bn"):
            name = f"{stage}.{block}.conv{layer[2:]}.norm"
        else:
            name = f"{stage}.{block}.{layer}"
        out[f"{name}.{parts[-1]}"] = value
    return out


def _torchvision_features(tv, x: torch.Tensor) -> dict[str, torch.Tensor]:
    x = tv.maxpool(tv.relu(tv.bn1(tv.conv1(x))))
    feats = {}
    for i, name in enumerate(FEATURES):
        x = getattr(tv, f"layer{i + 1}")(x)
        feats[name] = x
    return feats


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_resnet50_matches_torchvision(dtype: torch.dtype) -> None:
    torchvision = pytest.importorskip("torchvision")
    g = torch.Generator().manual_seed(2)
    tv = torchvision.models.resnet50(weights=None).eval()
    _randomize_bn_buffers(tv, g)
    model = build_resnet50()
    model.load_state_dict(_torchvision_to_ours(tv.state_dict()), strict=True)
    tv, model = tv.to(dtype), model.to(dtype)
    x = torch.randn(2, 3, 64, 96, generator=g).to(dtype)
    with torch.no_grad():
        ours, ref = model(x), _torchvision_features(tv, x)
        ours_cl = model.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last))
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    for name in FEATURES:
        assert ours[name].shape == ref[name].shape
        scale = ref[name].abs().max().item()
        assert scale > 0
        assert (ours[name] - ref[name]).abs().max().item() <= tol * scale, name
        assert (ours_cl[name] - ref[name]).abs().max().item() <= tol * scale, name


def test_fold_frozen_batchnorm_keeps_outputs() -> None:
    g = torch.Generator().manual_seed(5)
    model = build_resnet50().eval()
    _randomize_bn_buffers(model, g)
    x = torch.randn(1, 3, 64, 64, generator=g)
    with torch.no_grad():
        before = model(x)
        fold_frozen_batchnorm_(model.to(memory_format=torch.channels_last))
        after = model(x.contiguous(memory_format=torch.channels_last))
    assert not any(isinstance(m, FrozenBatchNorm2d) for m in model.modules())
    assert "res3.0.conv2.bias" in model.state_dict() and "res3.0.conv2.norm.weight" not in model.state_dict()
    assert model.res3[0].conv2.weight.is_contiguous(memory_format=torch.channels_last)
    for name in FEATURES:
        scale = before[name].abs().max().item()
        assert (after[name] - before[name]).abs().max().item() <= 1e-5 * scale, name
    tiny = build_tiny_backbone()
    assert fold_frozen_batchnorm_(tiny).res2[0].conv1.norm is not None  # GroupNorm is not folded


def test_resnet50_stem_and_stage_output_sizes() -> None:
    model = build_resnet50().eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 96, 128))
    for name in FEATURES:
        stride = model.out_strides[name]
        assert out[name].shape == (1, model.out_channels[name], 96 // stride, 128 // stride)


# --------------------------------------------------------------------------------------------- Swin-B


def _expected_swin_base_keys() -> set[str]:
    keys = {"patch_embed.proj.weight", "patch_embed.proj.bias", "patch_embed.norm.weight", "patch_embed.norm.bias"}
    for layer, depth in enumerate((2, 2, 18, 2)):
        for k in range(depth):
            p = f"layers.{layer}.blocks.{k}"
            keys |= {f"{p}.attn.relative_position_bias_table", f"{p}.attn.relative_position_index"}
            for lin in ("norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2"):
                keys |= {f"{p}.{lin}.weight", f"{p}.{lin}.bias"}
        if layer < 3:
            keys |= {f"layers.{layer}.downsample.reduction.weight", f"layers.{layer}.downsample.norm.weight",
                     f"layers.{layer}.downsample.norm.bias"}
    for i in range(4):
        keys |= {f"norm{i}.weight", f"norm{i}.bias"}
    return keys


@pytest.fixture(scope="module")
def swin_base() -> SwinTransformer:
    """Swin-B on the meta device: keys, shapes and attributes without the cost of initialising 87 M values."""
    with torch.device("meta"):
        return build_swin_base()


def test_swin_base_keys_counts_and_shapes(swin_base: SwinTransformer) -> None:
    state = swin_base.state_dict()
    assert set(state) == _expected_swin_base_keys()
    assert sum(p.numel() for p in swin_base.parameters()) == 86_880_376
    index_keys = [k for k in state if k.endswith("relative_position_index")]
    assert len(index_keys) == 24
    assert all(state[k].shape == (144, 144) and state[k].dtype == torch.int64 for k in index_keys)
    assert state["layers.2.blocks.5.attn.relative_position_bias_table"].shape == (529, 16)
    assert state["layers.3.blocks.0.attn.qkv.weight"].shape == (3072, 1024)
    assert state["layers.1.downsample.reduction.weight"].shape == (512, 1024)
    assert state["layers.1.downsample.norm.weight"].shape == (1024,)
    assert state["patch_embed.proj.weight"].shape == (128, 3, 4, 4)
    shifts = [blk.shift for layer in swin_base.layers for blk in layer.blocks]
    assert shifts == [0, 6] * 12
    rates = [blk.drop_path.p for layer in swin_base.layers for blk in layer.blocks]
    assert rates == pytest.approx([0.3 * i / 23 for i in range(24)], abs=1e-6)
    assert swin_base.out_channels == {"res2": 128, "res3": 256, "res4": 512, "res5": 1024}
    assert swin_base.out_strides == {"res2": 4, "res3": 8, "res4": 16, "res5": 32}


def test_relative_position_index_definition() -> None:
    index = SwinBlock(dim=8, num_heads=2, window_size=12, shift=0).attn.relative_position_index
    s = 12
    for i, j in [(0, 0), (0, 143), (143, 0), (13, 50), (77, 2)]:
        (yi, xi), (yj, xj) = divmod(i, s), divmod(j, s)
        assert index[i, j].item() == (yi - yj + s - 1) * (2 * s - 1) + (xi - xj + s - 1)


def _timm_to_ours(timm_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm keeps PatchMerging at the start of stage i (1..3); Mask2Former at the end of stage i-1."""
    out = {}
    for key, value in timm_state.items():
        if key.startswith("layers_"):  # features_only flattens `layers.i` to `layers_i`
            key = "layers." + key[len("layers_"):]
        parts = key.split(".")
        if parts[0] == "layers" and parts[2] == "downsample":
            parts[1] = str(int(parts[1]) - 1)
        out[".".join(parts)] = value
    return out


def test_swin_base_matches_timm_at_384() -> None:
    timm = pytest.importorskip("timm")
    # always_partition: timm otherwise disables the shift when a stage is no larger than one window (12x12
    # at res5 for 384 inputs); Mask2Former always shifts. At 384 no stage needs padding, where timm and
    # Mask2Former also differ (timm rolls before padding).
    ref = timm.create_model("swin_base_patch4_window12_384", pretrained=False, features_only=True,
                            img_size=384, always_partition=True).eval()
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in ref.parameters():  # non-trivial LayerNorm and bias values
            p.add_(torch.randn(p.shape, generator=g) * 0.02)
    ours = SwinTransformer(SwinConfig())
    missing, unexpected = ours.load_state_dict(_timm_to_ours(ref.state_dict()), strict=False)
    assert unexpected == []
    # timm has neither the output norms nor persistent relative_position_index buffers
    assert all(k.startswith("norm") or k.endswith("relative_position_index") for k in missing)
    for i in range(4):
        norm = getattr(ours, f"norm{i}")
        with torch.no_grad():
            norm.weight.copy_(1 + 0.1 * torch.randn(norm.weight.shape, generator=g))
            norm.bias.copy_(0.1 * torch.randn(norm.bias.shape, generator=g))
    ours.eval()
    x = torch.randn(1, 3, 384, 384, generator=g)
    with torch.no_grad():
        got = ours(x)
        expected = ref(x)  # NHWC stage outputs
    for i, name in enumerate(FEATURES):
        norm = getattr(ours, f"norm{i}")
        with torch.no_grad():
            want = norm(expected[i]).permute(0, 3, 1, 2)
        assert got[name].shape == want.shape == (1, 128 * 2**i, 96 // 2**i, 96 // 2**i)
        torch.testing.assert_close(got[name], want, rtol=1e-5, atol=2e-5)  # measured max 5e-6 (1e-14 in float64)


def _dense_block_reference(block: SwinBlock, x: torch.Tensor) -> torch.Tensor:
    """Straightforward float64 reference of one Swin block as dense masked attention over the padded map.

    Every padded position (r, c) goes to (r', c') = ((r - s) mod Hp, (c - s) mod Wp); tokens attend only to
    tokens of the same S x S window of the shifted grid; inside a window the bias is indexed by in-window
    coordinates; with a shift, tokens from different 3 x 3 regions of the shifted grid get -100.
    """
    b, h, w, c = x.shape
    s_win, shift, heads = block.window_size, block.shift, block.attn.num_heads
    hp, wp = math.ceil(h / s_win) * s_win, math.ceil(w / s_win) * s_win
    y = torch.zeros(b, hp, wp, c, dtype=x.dtype)
    y[:, :h, :w] = F.layer_norm(x, (c,), block.norm1.weight, block.norm1.bias, block.norm1.eps)
    rows, cols = torch.meshgrid(torch.arange(hp), torch.arange(wp), indexing="ij")
    r2, c2 = ((rows - shift) % hp).flatten(), ((cols - shift) % wp).flatten()
    window = (r2 // s_win) * (wp // s_win) + (c2 // s_win)
    iy, ix = r2 % s_win, c2 % s_win

    def region(v: torch.Tensor, size: int) -> torch.Tensor:
        return (v >= size - s_win).long() + (v >= size - shift).long()

    label = region(r2, hp) * 3 + region(c2, wp)
    table = block.attn.relative_position_bias_table.double()
    rel = (iy[:, None] - iy[None] + s_win - 1) * (2 * s_win - 1) + (ix[:, None] - ix[None] + s_win - 1)
    bias = table[rel].permute(2, 0, 1)  # (heads, L, L)
    if shift:
        bias = bias + torch.where(label[:, None] != label[None], -100.0, 0.0).double()
    bias = bias.masked_fill(window[:, None] != window[None], float("-inf"))
    tokens = y.reshape(b, hp * wp, c)
    qkv = F.linear(tokens, block.attn.qkv.weight, block.attn.qkv.bias).view(b, -1, 3, heads, c // heads)
    q, k, v = qkv.permute(2, 0, 3, 1, 4)
    scores = q @ k.transpose(-1, -2) / math.sqrt(c // heads) + bias
    attended = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, hp * wp, c)
    attended = F.linear(attended, block.attn.proj.weight, block.attn.proj.bias).view(b, hp, wp, c)
    x = x + attended[:, :h, :w]
    hidden = F.gelu(F.linear(F.layer_norm(x, (c,), block.norm2.weight, block.norm2.bias), block.mlp.fc1.weight,
                             block.mlp.fc1.bias))
    return x + F.linear(hidden, block.mlp.fc2.weight, block.mlp.fc2.bias)


@pytest.mark.parametrize(
    ("window", "shift", "height", "width"),
    [(4, 2, 6, 7), (4, 0, 6, 7), (4, 2, 8, 8), (12, 6, 16, 20), (12, 6, 2, 3), (12, 0, 16, 20)],
)
def test_swin_block_padding_and_shift_match_dense_reference(window: int, shift: int, height: int,
                                                            width: int) -> None:
    g = torch.Generator().manual_seed(4)
    block = SwinBlock(dim=16, num_heads=2, window_size=window, shift=shift).double().eval()
    with torch.no_grad():
        for p in block.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64) * 0.3)
    x = torch.randn(2, height, width, 16, generator=g, dtype=torch.float64)
    hp, wp = math.ceil(height / window) * window, math.ceil(width / window) * window
    mask = shifted_window_mask(hp, wp, window, shift).double() if shift else None
    with torch.no_grad():
        got = block(x, mask)
        want = _dense_block_reference(block, x)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_shifted_window_mask_regions() -> None:
    mask = shifted_window_mask(12, 12, 12, 6)  # one window, four regions of 6 x 6
    assert mask.shape == (1, 144, 144)
    label = torch.tensor([(r >= 6) * 3 + (c >= 6) for r in range(12) for c in range(12)])
    expected = torch.where(label[:, None] == label[None], 0.0, -100.0)
    assert torch.equal(mask[0], expected)
    assert torch.equal(shifted_window_mask(24, 24, 12, 6)[0], torch.zeros(144, 144))  # top-left window: one region


def test_swin_patch_merging_order() -> None:
    from models.ovavss.swin import PatchMerging

    merge = PatchMerging(1)
    with torch.no_grad():
        merge.norm.weight.fill_(1.0)
        merge.norm.bias.zero_()
        merge.reduction.weight.copy_(torch.eye(2, 4))  # keep the first two of the four concatenated values
    x = torch.arange(16.0).view(1, 4, 4, 1)
    captured = {}
    merge.norm.register_forward_hook(lambda m, i, o: captured.update(inp=i[0]))
    merge(x)
    # position (0, 0) concatenates x[0,0], x[1,0], x[0,1], x[1,1]
    assert captured["inp"][0, 0, 0].tolist() == [0.0, 4.0, 1.0, 5.0]
    assert captured["inp"].shape == (1, 2, 2, 4)


@pytest.mark.parametrize(("height", "width"), [(64, 96), (96, 160)])
def test_small_swin_any_multiple_of_32(height: int, width: int) -> None:
    config = SwinConfig(embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4), window_size=12)
    model = SwinTransformer(config).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, height, width))
    for name in FEATURES:
        stride = model.out_strides[name]
        assert out[name].shape == (2, model.out_channels[name], height // stride, width // stride)
        assert out[name].is_contiguous()
        assert torch.isfinite(out[name]).all()


def test_swin_drop_path_only_in_training() -> None:
    config = SwinConfig(embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4), drop_path_rate=0.5)
    model = SwinTransformer(config)
    x = torch.randn(4, 3, 64, 64)
    model.eval()
    with torch.no_grad():
        a, b = model(x)["res5"], model(x)["res5"]
    assert torch.equal(a, b)
    model.train()
    torch.manual_seed(0)
    with torch.no_grad():
        c, d = model(x)["res5"], model(x)["res5"]
    assert not torch.equal(c, d)


# --------------------------------------------------------------------------------------------- tiny, builders


def test_tiny_backbone_shapes_and_training_step() -> None:
    torch.manual_seed(0)
    model = build_tiny_backbone()
    assert isinstance(model, Backbone)
    assert model.out_channels == {"res2": 32, "res3": 64, "res4": 128, "res5": 256}
    assert sum(p.numel() for p in model.parameters()) < 1_000_000
    x = torch.randn(5, 3, 64, 96)
    out = model(x)
    for name in FEATURES:
        stride = model.out_strides[name]
        assert out[name].shape == (5, model.out_channels[name], 64 // stride, 96 // stride)
    # it learns: a few Adam steps fit the pooled res5 feature to a fixed target
    target = torch.randn(5, 256)
    optim = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(15):
        loss = F.mse_loss(model(x)["res5"].mean((2, 3)), target)
        optim.zero_grad()
        loss.backward()
        losses.append(loss.item())
        optim.step()
    assert losses[-1] < 0.5 * losses[0]
    assert all(p.grad is not None for p in model.parameters())


def test_build_backbone_by_name() -> None:
    assert build_backbone("tiny").out_channels["res5"] == 256
    with pytest.raises(AVSegError, match="unknown backbone 'r101'"):
        build_backbone("r101")
    assert isinstance(build_resnet50(), Backbone)
