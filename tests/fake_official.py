"""Fake official OV-AVSS / Mask2Former checkpoints, built only from ovavss-spec.md §10 (test utility).

This is the independent reference for the checkpoint reader and converter: the key names and shapes
below are transcribed from the spec's tables, not derived from our model code. Values are random.

Shapes for the two configurations (R50 + ViT-B/16 CLIP, Swin-B + ViT-L/14@336 CLIP):
- `backbone.*`                  ResNet-50 with FrozenBN (4 buffers per norm) or Swin-B (§10.1, §10.5)
- `sem_seg_head.pixel_decoder.*` input projections, fusion `vl_layer`, 6 MSDeformAttn layers, FPN (§10.2)
- `sem_seg_head.predictor.*`    9 decoder layers (+ audio cross-attention), heads, audio parts (§10.3)
- `criterion.empty_weight` (2,), `clip_adapter.pixel_mean/pixel_std` (1, 3, 1, 1)      (§10.4)
- optional `audio_encoder.audio_backbone.*` (VGGish) and a few `clip_adapter.clip_model.*` keys.

`compact=True` stores every tensor as one random row of its last dimension broadcast over the other
dimensions (stride 0): names, shapes and dtypes are exact while the file stays a few MB, so tests can
use full-size key tables without writing hundreds of MB.
"""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import numpy as np
import torch

HIDDEN = 256
NUM_QUERIES = 100
DEC_LAYERS = 9
ENC_LAYERS = 6
AUDIO_DIM = 128
FUSION_DIM = 1024

# (key, shape, is_buffer). A list keeps the registration order.
Entry = tuple[str, tuple[int, ...], bool]


# --------------------------------------------------------------------------------------------- backbones
def _resnet50_entries() -> list[Entry]:
    """§10.1: stem + res2..res5 bottlenecks; convs have no bias; every FrozenBN has 4 buffers."""
    entries: list[Entry] = []

    def conv_norm(name: str, out_ch: int, in_ch: int, k: int) -> None:
        entries.append((f"backbone.{name}.weight", (out_ch, in_ch, k, k), False))
        for stat in ("weight", "bias", "running_mean", "running_var"):
            entries.append((f"backbone.{name}.norm.{stat}", (out_ch,), True))

    conv_norm("stem.conv1", 64, 3, 7)
    stages = [("res2", 3, 64, 64, 256), ("res3", 4, 256, 128, 512), ("res4", 6, 512, 256, 1024),
              ("res5", 3, 1024, 512, 2048)]
    for stage, blocks, in_ch, bottleneck, out_ch in stages:
        for k in range(blocks):
            if k == 0:
                conv_norm(f"{stage}.0.shortcut", out_ch, in_ch, 1)
            conv_norm(f"{stage}.{k}.conv1", bottleneck, in_ch if k == 0 else out_ch, 1)
            conv_norm(f"{stage}.{k}.conv2", bottleneck, bottleneck, 3)
            conv_norm(f"{stage}.{k}.conv3", out_ch, bottleneck, 1)
    return entries


def _swin_base_entries() -> list[Entry]:
    """§2.2 / §10.5: D2SwinTransformer, embed 128, depths [2, 2, 18, 2], heads [4, 8, 16, 32], window 12."""
    entries: list[Entry] = []

    def linear(name: str, out_f: int, in_f: int, bias: bool = True) -> None:
        entries.append((f"{name}.weight", (out_f, in_f), False))
        if bias:
            entries.append((f"{name}.bias", (out_f,), False))

    def layer_norm(name: str, dim: int) -> None:
        entries.append((f"{name}.weight", (dim,), False))
        entries.append((f"{name}.bias", (dim,), False))

    window = 12
    entries.append(("backbone.patch_embed.proj.weight", (128, 3, 4, 4), False))
    entries.append(("backbone.patch_embed.proj.bias", (128,), False))
    layer_norm("backbone.patch_embed.norm", 128)
    dims, depths, heads = (128, 256, 512, 1024), (2, 2, 18, 2), (4, 8, 16, 32)
    for layer, (d, depth, h) in enumerate(zip(dims, depths, heads)):
        for k in range(depth):
            block = f"backbone.layers.{layer}.blocks.{k}"
            layer_norm(f"{block}.norm1", d)
            entries.append((f"{block}.attn.relative_position_bias_table", ((2 * window - 1) ** 2, h), False))
            entries.append((f"{block}.attn.relative_position_index", (window * window, window * window), True))
            linear(f"{block}.attn.qkv", 3 * d, d)
            linear(f"{block}.attn.proj", d, d)
            layer_norm(f"{block}.norm2", d)
            linear(f"{block}.mlp.fc1", 4 * d, d)
            linear(f"{block}.mlp.fc2", d, 4 * d)
        if layer < 3:
            linear(f"backbone.layers.{layer}.downsample.reduction", 2 * d, 4 * d, bias=False)
            layer_norm(f"backbone.layers.{layer}.downsample.norm", 4 * d)
    for i, d in enumerate(dims):
        layer_norm(f"backbone.norm{i}", d)
    return entries


# ------------------------------------------------------------------------------------------------- head
def _pixel_decoder_entries(in_channels: tuple[int, int, int], res2_channels: int,
                           with_fusion: bool = True) -> list[Entry]:
    """§10.2. `in_channels` of input_proj.{0,1,2} = res5, res4, res3 channels."""
    p = "sem_seg_head.pixel_decoder."
    c = HIDDEN
    entries: list[Entry] = []
    for i, ch in enumerate(in_channels):
        entries += [(f"{p}input_proj.{i}.0.weight", (c, ch, 1, 1), False), (f"{p}input_proj.{i}.0.bias", (c,), False),
                    (f"{p}input_proj.{i}.1.weight", (c,), False), (f"{p}input_proj.{i}.1.bias", (c,), False)]
    entries.append((f"{p}transformer.level_embed", (3, c), False))
    if with_fusion:
        f = f"{p}transformer.encoder.vl_layer.b_attn."
        entries += [(f"{f}layer_norm_v.weight", (c,), False), (f"{f}layer_norm_v.bias", (c,), False),
                    (f"{f}layer_norm_l.weight", (AUDIO_DIM,), False), (f"{f}layer_norm_l.bias", (AUDIO_DIM,), False)]
        for name, out_f, in_f in (("v_proj", FUSION_DIM, c), ("l_proj", FUSION_DIM, AUDIO_DIM),
                                  ("values_v_proj", FUSION_DIM, c), ("values_l_proj", FUSION_DIM, AUDIO_DIM),
                                  ("out_v_proj", c, FUSION_DIM), ("out_l_proj", AUDIO_DIM, FUSION_DIM)):
            entries += [(f"{f}attn.{name}.weight", (out_f, in_f), False), (f"{f}attn.{name}.bias", (out_f,), False)]
        entries += [(f"{f}gamma_v", (c,), False), (f"{f}gamma_l", (AUDIO_DIM,), False)]
    for i in range(ENC_LAYERS):
        e = f"{p}transformer.encoder.layers.{i}."
        for name, out_f, in_f in (("self_attn.sampling_offsets", 192, c), ("self_attn.attention_weights", 96, c),
                                  ("self_attn.value_proj", c, c), ("self_attn.output_proj", c, c)):
            entries += [(f"{e}{name}.weight", (out_f, in_f), False), (f"{e}{name}.bias", (out_f,), False)]
        entries += [(f"{e}norm1.weight", (c,), False), (f"{e}norm1.bias", (c,), False),
                    (f"{e}linear1.weight", (1024, c), False), (f"{e}linear1.bias", (1024,), False),
                    (f"{e}linear2.weight", (c, 1024), False), (f"{e}linear2.bias", (c,), False),
                    (f"{e}norm2.weight", (c,), False), (f"{e}norm2.bias", (c,), False)]
    entries += [(f"{p}mask_features.weight", (c, c, 1, 1), False), (f"{p}mask_features.bias", (c,), False),
                (f"{p}adapter_1.weight", (c, res2_channels, 1, 1), False),
                (f"{p}adapter_1.norm.weight", (c,), False), (f"{p}adapter_1.norm.bias", (c,), False),
                (f"{p}layer_1.weight", (c, c, 3, 3), False),
                (f"{p}layer_1.norm.weight", (c,), False), (f"{p}layer_1.norm.bias", (c,), False)]
    return entries


def _mha_norm(prefix: str, attn_name: str) -> list[Entry]:
    """nn.MultiheadAttention(256) named `attn_name` + LayerNorm `norm` under `prefix`."""
    c = HIDDEN
    a = f"{prefix}{attn_name}."
    return [(f"{a}in_proj_weight", (3 * c, c), False), (f"{a}in_proj_bias", (3 * c,), False),
            (f"{a}out_proj.weight", (c, c), False), (f"{a}out_proj.bias", (c,), False),
            (f"{prefix}norm.weight", (c,), False), (f"{prefix}norm.bias", (c,), False)]


def _predictor_entries(num_classes_plus_one: int = 2, with_audio: bool = True) -> list[Entry]:
    """§10.3. `num_classes_plus_one` = 2 for OV-AVSS (sound / no object), 81 for Mask2Former COCO."""
    p = "sem_seg_head.predictor."
    c = HIDDEN
    entries: list[Entry] = []
    for i in range(DEC_LAYERS):
        entries += _mha_norm(f"{p}transformer_self_attention_layers.{i}.", "self_attn")
    for i in range(DEC_LAYERS):
        entries += _mha_norm(f"{p}transformer_cross_attention_layers.{i}.", "multihead_attn")
    for i in range(DEC_LAYERS):
        f = f"{p}transformer_ffn_layers.{i}."
        entries += [(f"{f}linear1.weight", (2048, c), False), (f"{f}linear1.bias", (2048,), False),
                    (f"{f}linear2.weight", (c, 2048), False), (f"{f}linear2.bias", (c,), False),
                    (f"{f}norm.weight", (c,), False), (f"{f}norm.bias", (c,), False)]
    if with_audio:
        for i in range(DEC_LAYERS):
            entries += _mha_norm(f"{p}transformer_audio_cross_attention_layers.{i}.", "multihead_attn")
    entries += [(f"{p}decoder_norm.weight", (c,), False), (f"{p}decoder_norm.bias", (c,), False),
                (f"{p}query_feat.weight", (NUM_QUERIES, c), False), (f"{p}query_embed.weight", (NUM_QUERIES, c), False)]
    if with_audio:
        entries.append((f"{p}audio_query_embed.weight", (5, c), False))
    entries += [(f"{p}level_embed.weight", (3, c), False),
                (f"{p}class_embed.weight", (num_classes_plus_one, c), False),
                (f"{p}class_embed.bias", (num_classes_plus_one,), False)]
    for i in range(3):
        entries += [(f"{p}mask_embed.layers.{i}.weight", (c, c), False),
                    (f"{p}mask_embed.layers.{i}.bias", (c,), False)]
    if with_audio:
        entries += [(f"{p}audio_proj.layers.0.weight", (c, AUDIO_DIM), False),
                    (f"{p}audio_proj.layers.0.bias", (c,), False),
                    (f"{p}audio_proj.layers.1.weight", (c, c), False),
                    (f"{p}audio_proj.layers.1.bias", (c,), False)]
        entries += _mha_norm(f"{p}v2a.", "multihead_attn")
        entries += _mha_norm(f"{p}a2a.", "self_attn")
    return entries


# -------------------------------------------------------------------------------------- frozen extras
def _vggish_entries() -> list[Entry]:
    """§10.4: VGGish features.{0,3,6,8,11,13} (3x3 convs) + embeddings.{0,2,4}."""
    p = "audio_encoder.audio_backbone."
    entries: list[Entry] = []
    for index, (out_ch, in_ch) in zip((0, 3, 6, 8, 11, 13), ((64, 1), (128, 64), (256, 128), (256, 256),
                                                             (512, 256), (512, 512))):
        entries += [(f"{p}features.{index}.weight", (out_ch, in_ch, 3, 3), False),
                    (f"{p}features.{index}.bias", (out_ch,), False)]
    for index, (out_f, in_f) in zip((0, 2, 4), ((4096, 12288), (4096, 4096), (128, 4096))):
        entries += [(f"{p}embeddings.{index}.weight", (out_f, in_f), False),
                    (f"{p}embeddings.{index}.bias", (out_f,), False)]
    return entries


def _clip_entries(config: str) -> list[Entry]:
    """A few OpenAI-CLIP keys (§10.4): ViT-B/16 for r50, ViT-L/14@336px for swinb. Not the full model."""
    p = "clip_adapter.clip_model."
    if config == "r50":
        width, patch, positions, embed, text_width = 768, 16, 197, 512, 512
    else:
        width, patch, positions, embed, text_width = 1024, 14, 577, 768, 768
    return [(f"{p}positional_embedding", (77, text_width), False),
            (f"{p}text_projection", (text_width, embed), False),
            (f"{p}logit_scale", (), False),
            (f"{p}visual.class_embedding", (width,), False),
            (f"{p}visual.positional_embedding", (positions, width), False),
            (f"{p}visual.proj", (width, embed), False),
            (f"{p}visual.conv1.weight", (width, 3, patch, patch), False),
            (f"{p}visual.ln_pre.weight", (width,), False), (f"{p}visual.ln_pre.bias", (width,), False),
            (f"{p}visual.transformer.resblocks.0.attn.in_proj_weight", (3 * width, width), False),
            (f"{p}visual.transformer.resblocks.0.mlp.c_fc.weight", (4 * width, width), False),
            (f"{p}token_embedding.weight", (49408, text_width), False),
            (f"{p}ln_final.weight", (text_width,), False), (f"{p}ln_final.bias", (text_width,), False)]


def _other_entries() -> list[Entry]:
    return [("criterion.empty_weight", (2,), True),
            ("clip_adapter.pixel_mean", (1, 3, 1, 1), True), ("clip_adapter.pixel_std", (1, 3, 1, 1), True)]


def _official_entries(config: str, with_vggish: bool, with_clip: bool) -> list[Entry]:
    if config == "r50":
        entries = _resnet50_entries() + _pixel_decoder_entries((2048, 1024, 512), 256)
    elif config == "swinb":
        entries = _swin_base_entries() + _pixel_decoder_entries((1024, 512, 256), 128)
    else:
        raise ValueError(f"unknown config {config!r}: r50 or swinb")
    entries += _predictor_entries() + _other_entries()
    if with_clip:
        entries += _clip_entries(config)
    if with_vggish:
        entries += _vggish_entries()
    return entries


# ------------------------------------------------------------------------------------------- public API
def official_key_shapes(config: str = "r50", with_vggish: bool = False,
                        with_clip: bool = False) -> dict[str, tuple[int, ...]]:
    """Every key of the official model's state dict (trained part + criterion + CLIP pixel stats)."""
    return {key: shape for key, shape, _ in _official_entries(config, with_vggish, with_clip)}


def official_r50_key_shapes(with_vggish: bool = False, with_clip: bool = False) -> dict[str, tuple[int, ...]]:
    """`official_key_shapes("r50", ...)`."""
    return official_key_shapes("r50", with_vggish, with_clip)


def official_swinb_key_shapes(with_vggish: bool = False, with_clip: bool = False) -> dict[str, tuple[int, ...]]:
    """`official_key_shapes("swinb", ...)`."""
    return official_key_shapes("swinb", with_vggish, with_clip)


def official_buffer_keys(config: str = "r50", with_vggish: bool = False, with_clip: bool = False) -> set[str]:
    """Keys that are buffers, not parameters: FrozenBN weight/bias/running stats (ResNet),
    relative_position_index (Swin), criterion.empty_weight, clip_adapter.pixel_mean/std."""
    return {key for key, _, is_buffer in _official_entries(config, with_vggish, with_clip) if is_buffer}


def mask2former_key_shapes(config: str = "r50") -> dict[str, tuple[int, ...]]:
    """Keys of a Mask2Former COCO-instance checkpoint (§9): backbone, pixel decoder without `vl_layer`,
    predictor without the audio parts, 81-way `class_embed`, `criterion.empty_weight` (81,)."""
    if config == "r50":
        entries = _resnet50_entries() + _pixel_decoder_entries((2048, 1024, 512), 256, with_fusion=False)
    elif config == "swinb":
        entries = _swin_base_entries() + _pixel_decoder_entries((1024, 512, 256), 128, with_fusion=False)
    else:
        raise ValueError(f"unknown config {config!r}: r50 or swinb")
    entries += _predictor_entries(num_classes_plus_one=81, with_audio=False)
    entries.append(("criterion.empty_weight", (81,), True))
    return {key: shape for key, shape, _ in entries}


def numel(shape: tuple[int, ...]) -> int:
    return math.prod(shape)


def _random_tensor(key: str, shape: tuple[int, ...], generator: torch.Generator, compact: bool) -> torch.Tensor:
    if key.endswith("relative_position_index"):
        return torch.randint(0, 529, shape, generator=generator, dtype=torch.int64)
    if key.endswith("running_var"):
        make = lambda s: torch.rand(s, generator=generator) + 0.5  # noqa: E731 - positive variances
    else:
        make = lambda s: torch.randn(s, generator=generator)  # noqa: E731
    if compact and len(shape) >= 2:
        return make((shape[-1],)).expand(shape)
    return make(shape)


def make_fake_official_state_dict(config: str = "r50", with_clip: bool = False, with_vggish: bool = True,
                                  seed: int = 0, compact: bool = False) -> dict[str, torch.Tensor]:
    """Random tensors with the official names and shapes (buffers with their real fixed values where
    the spec gives them: `criterion.empty_weight` = [1, 0.1], CLIP pixel mean/std = 255 x CLIP's)."""
    generator = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    for key, shape, _ in _official_entries(config, with_vggish, with_clip):
        state[key] = _random_tensor(key, shape, generator, compact)
    state["criterion.empty_weight"] = torch.tensor([1.0, 0.1])
    state["clip_adapter.pixel_mean"] = (255 * torch.tensor([0.48145466, 0.4578275, 0.40821073])).view(1, 3, 1, 1)
    state["clip_adapter.pixel_std"] = (255 * torch.tensor([0.26862954, 0.26130258, 0.27577711])).view(1, 3, 1, 1)
    return state


def make_fake_official_checkpoint(path: str | Path, config: str = "r50", with_clip: bool = False,
                                  with_vggish: bool = True, module_prefix: bool = False, wrap_in_model: bool = True,
                                  seed: int = 0, compact: bool = False) -> dict[str, torch.Tensor]:
    """Write a detectron2-style official checkpoint with torch.save; returns the state dict (no prefix).

    wrap_in_model: `{"model": sd, "iteration": 96227}` (detectron2 checkpointer) instead of a bare sd.
    module_prefix: every key starts with `module.` (saved from a DistributedDataParallel wrapper).
    """
    state = make_fake_official_state_dict(config, with_clip, with_vggish, seed, compact)
    stored = {f"module.{k}" if module_prefix else k: v for k, v in state.items()}
    torch.save({"model": stored, "iteration": 96227} if wrap_in_model else stored, path)
    return state


def make_fake_mask2former_pkl(path: str | Path, config: str = "r50", seed: int = 0,
                              protocol: int = 4) -> dict[str, np.ndarray]:
    """Write a Mask2Former model-zoo style pickle: `{"model": {name: ndarray}, "__author__": "Mask2Former",
    "matching_heuristics": True}`; float32 arrays (int64 for Swin's relative_position_index).

    protocol: pickle protocol; 2 and 4 reconstruct arrays with `numpy...multiarray._reconstruct`, 5 with
    `numpy...numeric._frombuffer`.
    """
    rng = np.random.default_rng(seed)
    arrays: dict[str, np.ndarray] = {}
    for key, shape in mask2former_key_shapes(config).items():
        if key.endswith("relative_position_index"):
            arrays[key] = rng.integers(0, 529, size=shape, dtype=np.int64)
        else:
            arrays[key] = rng.standard_normal(size=shape, dtype=np.float32)
    with open(path, "wb") as handle:
        pickle.dump({"model": arrays, "__author__": "Mask2Former", "matching_heuristics": True}, handle,
                    protocol=protocol)
    return arrays
