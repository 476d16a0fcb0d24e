"""Pixel decoder: Mask2Former's multi-scale deformable-attention encoder with audio-visual fusion (spec §4).

Per frame: the three coarsest backbone maps (res5, res4, res3) are projected to `conv_dim`, flattened and
concatenated; ONE bi-directional audio-visual attention block (`fusion.AudioVisualFusion`) updates them together
with the frame's audio vector; a stack of post-norm deformable self-attention layers refines them; the result
is split back into maps [s32, s16, s8], and a small FPN step adds res2 to give the stride-4 mask features.

Attribute names follow the official checkpoint (`sem_seg_head.pixel_decoder.` prefix removed).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from models.ovavss.conv import Conv2dNorm, c2_xavier_fill
from models.ovavss.deform_attn import MSDeformAttn
from models.ovavss.deform_sampling import SpatialShapes
from models.ovavss.fusion import AudioVisualFusion
from models.ovavss.device_constants import DeviceConstants, ModuleWithConstants
from models.ovavss.position_encoding import MAX_CACHED_ENCODINGS, PositionEmbeddingSine

GROUP_NORM_GROUPS = 32
"""Every GroupNorm of the pixel decoder uses 32 groups (conv_dim must be a multiple of it)."""


class PixelDecoderOutput(NamedTuple):
    """What the pixel decoder hands to the mask decoder (N = frames in the batch).

    mask_features: (N, mask_dim, H/common_stride, W/common_stride).
    multi_scale_features: coarse to fine, [s32, s16, s8] for the official config, each (N, conv_dim, h, w).
    audio: (N, audio_dim), the audio vector after fusion (LayerNorm-ed plus the visual update).
    """

    mask_features: torch.Tensor
    multi_scale_features: list[torch.Tensor]
    audio: torch.Tensor


def feature_stride(name: str) -> int:
    """Stride of a backbone feature named "res<k>": 2**k (res2 -> 4, ..., res5 -> 32)."""
    match = re.fullmatch(r"res(\d+)", name)
    if match is None:
        raise ValueError(f"backbone feature names must look like 'res2'..'res5', got {name!r}")
    return 2 ** int(match.group(1))


class MSDeformAttnEncoderLayer(nn.Module):
    """Post-norm deformable self-attention layer: x = LN1(x + MSDA(x + pos, ref, x)); x = LN2(x + FFN(x)).

    Args:
        d_model: token channels (C).
        d_ffn: FFN hidden width.
        dropout: dropout after attention, inside and after the FFN (0.0 in OV-AVSS).
        n_levels, n_heads, n_points: as for `MSDeformAttn`.
    """

    def __init__(self, d_model: int = 256, d_ffn: int = 1024, dropout: float = 0.0, n_levels: int = 3,
                 n_heads: int = 8, n_points: int = 4) -> None:
        super().__init__()
        self.self_attn = MSDeformAttn(d_model, n_levels, n_heads, n_points)
        self.dropout1 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, d_ffn)
        self.dropout2 = nn.Dropout(dropout)
        self.linear2 = nn.Linear(d_ffn, d_model)
        self.dropout3 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(d_model)

    def forward(self, x: torch.Tensor, pos: torch.Tensor, reference_points: torch.Tensor,
                spatial_shapes: SpatialShapes, level_start_index: torch.Tensor | None = None) -> torch.Tensor:
        """x, pos: (N, S, C); reference_points: (N, S, L, 2); spatial_shapes: [(h_l, w_l)] -> (N, S, C)."""
        attended = self.self_attn(x + pos, reference_points, x, spatial_shapes, level_start_index)
        x = self.norm1(x + self.dropout1(attended))
        hidden = self.dropout2(F.relu(self.linear1(x)))
        return self.norm2(x + self.dropout3(self.linear2(hidden)))


class FusionEncoder(ModuleWithConstants):
    """The fusion layer (`vl_layer`) applied once, then the deformable layers (`layers.{j}`)."""

    def __init__(self, vl_layer: AudioVisualFusion, layers: Sequence[MSDeformAttnEncoderLayer]) -> None:
        super().__init__()
        self.vl_layer = vl_layer
        self.layers = nn.ModuleList(layers)
        self._reference_points = DeviceConstants(MAX_CACHED_ENCODINGS)  # per input shape; not part of the state

    @staticmethod
    def reference_points(level_sizes: Sequence[tuple[int, int]], device: torch.device,
                         dtype: torch.dtype) -> torch.Tensor:
        """Pixel centres ((j + 0.5) / w_l, (i + 0.5) / h_l) of every token, the same point on every level.

        Returns (1, S, L, 2) (an expanded view; no padding, so all valid ratios are 1).
        """
        points = []
        for height, width in level_sizes:
            ys = (torch.arange(height, dtype=dtype, device=device) + 0.5) / height
            xs = (torch.arange(width, dtype=dtype, device=device) + 0.5) / width
            grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
            points.append(torch.stack((grid_x.reshape(-1), grid_y.reshape(-1)), dim=-1))
        flat = torch.cat(points, dim=0)  # (S, 2)
        return flat[None, :, None, :].expand(1, -1, len(level_sizes), -1)

    def forward(self, visual: torch.Tensor, audio: torch.Tensor, pos: torch.Tensor,
                level_sizes: Sequence[tuple[int, int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """visual (N, S, C) without positions, audio (N, A, Ca), pos (N, S, C), level_sizes [(h_l, w_l)] Python
        ints -> (visual (N, S, C), audio)."""
        visual, audio = self.vl_layer(visual, audio)
        sizes, device, dtype = tuple(level_sizes), visual.device, visual.dtype
        reference = self._reference_points.computed(  # (1, S, L, 2), made once per input shape
            (sizes, dtype), lambda: self.reference_points(sizes, device, dtype), device)
        reference = reference.expand(visual.shape[0], -1, -1, -1)
        for layer in self.layers:
            visual = layer(visual, pos, reference, level_sizes)
        return visual, audio


class MSDeformAttnTransformerEncoder(nn.Module):
    """Flattens the projected levels, adds level embeddings to their positions and runs the `encoder`.

    Args:
        d_model: token channels (conv_dim).
        num_levels: feature levels L.
        num_layers: deformable encoder layers.
        ffn_dim, dropout, num_heads, num_points: encoder-layer sizes.
        audio_dim, fusion_embed_dim, fusion_heads, fusion_dropout: fusion-layer sizes.
    """

    def __init__(self, d_model: int, num_levels: int, num_layers: int, ffn_dim: int, dropout: float,
                 num_heads: int, num_points: int, audio_dim: int, fusion_embed_dim: int, fusion_heads: int,
                 fusion_dropout: float) -> None:
        super().__init__()
        self.d_model = d_model
        fusion = AudioVisualFusion(d_model, audio_dim, fusion_embed_dim, fusion_heads, fusion_dropout)
        layers = [MSDeformAttnEncoderLayer(d_model, ffn_dim, dropout, num_levels, num_heads, num_points)
                  for _ in range(num_layers)]
        self.encoder = FusionEncoder(fusion, layers)
        self.level_embed = nn.Parameter(torch.empty(num_levels, d_model))
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        """Xavier on every matrix, then each MSDeformAttn's own init, then a normal level embedding.

        (Vector parameters keep their module defaults: LayerNorm (1, 0), gammas 1/6, the fusion biases 0
        and the FFN biases PyTorch's Linear default, as in the official code.)
        """
        for parameter in self.parameters():
            if parameter.dim() > 1:
                nn.init.xavier_uniform_(parameter)
        for module in self.modules():
            if isinstance(module, MSDeformAttn):
                module._reset_parameters()
        nn.init.normal_(self.level_embed)

    def forward(self, sources: Sequence[torch.Tensor], positions: Sequence[torch.Tensor],
                audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[tuple[int, int]]]:
        """Encode the levels jointly.

        Args:
            sources: L maps (N, C, h_l, w_l), coarse to fine (level l uses `level_embed[l]`).
            positions: L positional maps of the same shapes.
            audio: (N, A, Ca).

        Returns:
            tokens (N, S, C) in the flattened level order, audio (N, A, Ca), level sizes [(h_l, w_l)] as Python
            ints (taken from the shapes, so nothing is read back from the device).
        """
        tokens = torch.cat([src.flatten(2).transpose(1, 2) for src in sources], dim=1)
        pos = torch.cat([p.flatten(2).transpose(1, 2) + self.level_embed[level][None, None, :]
                         for level, p in enumerate(positions)], dim=1)
        level_sizes = [(int(src.shape[-2]), int(src.shape[-1])) for src in sources]
        tokens, audio = self.encoder(tokens, audio, pos, level_sizes)
        return tokens, audio, level_sizes


class MSDeformAttnPixelDecoder(nn.Module):
    """Mask2Former's MSDeformAttn pixel decoder with OV-AVSS's audio-visual fusion before the encoder.

    Args:
        in_channels: backbone channels per feature, "res2".."res5" (R50 {256, 512, 1024, 2048}, Swin-B
            {128, 256, 512, 1024}).
        conv_dim: channels of the encoder tokens and of the multi-scale outputs.
        mask_dim: channels of the mask features.
        num_encoder_layers: deformable encoder layers (0 is allowed: fusion only).
        encoder_ffn_dim: encoder FFN width (1024, fixed in the official code).
        num_heads, num_points: MSDeformAttn heads and points per head and level.
        audio_dim: channels of the audio vector (128, VGGish).
        fusion_embed_dim, fusion_heads, fusion_dropout: fusion-block sizes (§3).
        transformer_in_features: backbone features that enter the encoder.
        common_stride: stride of the mask features; one FPN step per power of two between it and the finest
            transformer level.
        encoder_dropout: dropout in the encoder layers (the official MASK_FORMER.DROPOUT = 0.0).
        num_multi_scale_features: how many outputs, coarse first, go to the mask decoder (3).
    """

    def __init__(
        self,
        in_channels: Mapping[str, int],
        conv_dim: int = 256,
        mask_dim: int = 256,
        num_encoder_layers: int = 6,
        encoder_ffn_dim: int = 1024,
        num_heads: int = 8,
        num_points: int = 4,
        audio_dim: int = 128,
        fusion_embed_dim: int = 1024,
        fusion_heads: int = 8,
        fusion_dropout: float = 0.1,
        transformer_in_features: Sequence[str] = ("res3", "res4", "res5"),
        common_stride: int = 4,
        encoder_dropout: float = 0.0,
        num_multi_scale_features: int = 3,
    ) -> None:
        super().__init__()
        if conv_dim % GROUP_NORM_GROUPS != 0:
            raise ValueError(f"conv_dim ({conv_dim}) must be a multiple of {GROUP_NORM_GROUPS} (GroupNorm groups)")
        missing = [name for name in transformer_in_features if name not in in_channels]
        if missing:
            raise ValueError(f"transformer_in_features {missing} are not in in_channels {sorted(in_channels)}")
        self.audio_dim = audio_dim
        self.num_multi_scale_features = num_multi_scale_features
        # All features fine to coarse; the encoder levels coarse to fine (res5, res4, res3).
        self.in_features = sorted(in_channels, key=feature_stride)
        self.transformer_in_features = sorted(transformer_in_features, key=feature_stride, reverse=True)

        self.input_proj = nn.ModuleList()
        for name in self.transformer_in_features:
            projection = nn.Sequential(nn.Conv2d(in_channels[name], conv_dim, kernel_size=1),
                                       nn.GroupNorm(GROUP_NORM_GROUPS, conv_dim))
            nn.init.xavier_uniform_(projection[0].weight, gain=1)
            nn.init.zeros_(projection[0].bias)
            self.input_proj.append(projection)

        self.transformer = MSDeformAttnTransformerEncoder(
            d_model=conv_dim, num_levels=len(self.transformer_in_features), num_layers=num_encoder_layers,
            ffn_dim=encoder_ffn_dim, dropout=encoder_dropout, num_heads=num_heads, num_points=num_points,
            audio_dim=audio_dim, fusion_embed_dim=fusion_embed_dim, fusion_heads=fusion_heads,
            fusion_dropout=fusion_dropout)
        self.pe_layer = PositionEmbeddingSine(conv_dim // 2)

        self.mask_features = nn.Conv2d(conv_dim, mask_dim, kernel_size=1)
        c2_xavier_fill(self.mask_features)

        finest_stride = min(feature_stride(name) for name in self.transformer_in_features)
        num_fpn_levels = round(math.log2(finest_stride) - math.log2(common_stride))
        finer = [name for name in self.in_features if feature_stride(name) < finest_stride]
        if num_fpn_levels < 0 or len(finer) < num_fpn_levels:
            raise ValueError(f"common_stride {common_stride} needs {num_fpn_levels} backbone features finer than "
                             f"stride {finest_stride}, in_channels has {finer}")
        self.fpn_features = finer[:num_fpn_levels]  # fine to coarse; adapter_1 <-> the finest
        for index, name in enumerate(self.fpn_features, start=1):
            adapter = Conv2dNorm(in_channels[name], conv_dim, 1, bias=False,
                                 norm=nn.GroupNorm(GROUP_NORM_GROUPS, conv_dim))
            layer = Conv2dNorm(conv_dim, conv_dim, 3, padding=1, bias=False,
                               norm=nn.GroupNorm(GROUP_NORM_GROUPS, conv_dim), activation=nn.ReLU())
            c2_xavier_fill(adapter)
            c2_xavier_fill(layer)
            self.add_module(f"adapter_{index}", adapter)
            self.add_module(f"layer_{index}", layer)

    def forward(self, features: Mapping[str, torch.Tensor], audio: torch.Tensor) -> PixelDecoderOutput:
        """Decode one batch of frames.

        Args:
            features: backbone maps "res2".."res5", each (N, C_l, h_l, w_l), any float dtype.
            audio: (N, audio_dim), one audio vector per frame.

        Runs with autocast disabled; inputs are cast to the decoder's parameter dtype (float32).
        """
        missing = [name for name in self.in_features if name not in features]
        if missing:
            raise ValueError(f"pixel decoder needs features {self.in_features}, missing {missing}")
        if audio.dim() != 2 or audio.shape[1] != self.audio_dim:
            raise ValueError(f"audio must be (N, {self.audio_dim}), got {tuple(audio.shape)}")
        device_type = audio.device.type
        with torch.autocast(device_type=device_type, enabled=False):
            return self._decode(features, audio)

    def _decode(self, features: Mapping[str, torch.Tensor], audio: torch.Tensor) -> PixelDecoderOutput:
        dtype = self.mask_features.weight.dtype
        sources, positions = [], []
        for projection, name in zip(self.input_proj, self.transformer_in_features):
            source = projection(features[name].to(dtype))
            sources.append(source)
            positions.append(self.pe_layer(source))

        tokens, fused_audio, level_sizes = self.transformer(sources, positions, audio.to(dtype)[:, None, :])

        batch = tokens.shape[0]
        outputs = [level.transpose(1, 2).reshape(batch, -1, h, w)
                   for level, (h, w) in zip(tokens.split([h * w for h, w in level_sizes], dim=1), level_sizes)]

        # Top-down FPN steps from the finest transformer level to common_stride (coarse to fine).
        for index in range(len(self.fpn_features), 0, -1):
            adapter = getattr(self, f"adapter_{index}")
            layer = getattr(self, f"layer_{index}")
            lateral = adapter(features[self.fpn_features[index - 1]].to(dtype))
            upsampled = F.interpolate(outputs[-1], size=lateral.shape[-2:], mode="bilinear", align_corners=False)
            outputs.append(layer(lateral + upsampled))

        return PixelDecoderOutput(
            mask_features=self.mask_features(outputs[-1]),
            multi_scale_features=outputs[: self.num_multi_scale_features],
            audio=fused_audio[:, 0, :],
        )
