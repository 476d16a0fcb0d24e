"""Sine positional encodings: 2-D for the pixel decoder, 3-D (frames x rows x cols) for the mask decoder.

Both follow DETR / Mask2Former (normalize=True, scale 2*pi, temperature 10000), computed from the feature
shape alone (no padding mask).
"""

from __future__ import annotations

import math

import torch
from torch import nn


def _sine(embed: torch.Tensor, num_feats: int, temperature: float) -> torch.Tensor:
    """(..., ) positions -> (..., num_feats) with sin on even and cos on odd channels, interleaved."""
    dim_t = torch.arange(num_feats, dtype=torch.float32, device=embed.device)
    dim_t = temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / num_feats)
    pos = embed[..., None] / dim_t
    return torch.stack((pos[..., 0::2].sin(), pos[..., 1::2].cos()), dim=-1).flatten(-2)


class PositionEmbeddingSine(nn.Module):
    """2-D sine encoding: (N, C, H, W) feature -> (N, 2 * num_pos_feats, H, W), channels [pos_y, pos_x]."""

    def __init__(self, num_pos_feats: int = 128, temperature: float = 10000.0, scale: float = 2 * math.pi) -> None:
        super().__init__()
        self.num_pos_feats = num_pos_feats
        self.temperature = temperature
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        eps = 1e-6
        y = torch.arange(1, h + 1, dtype=torch.float32, device=x.device) / (h + eps) * self.scale
        xs = torch.arange(1, w + 1, dtype=torch.float32, device=x.device) / (w + eps) * self.scale
        pos_y = _sine(y, self.num_pos_feats, self.temperature)[:, None, :].expand(h, w, -1)
        pos_x = _sine(xs, self.num_pos_feats, self.temperature)[None, :, :].expand(h, w, -1)
        pos = torch.cat((pos_y, pos_x), dim=-1).permute(2, 0, 1)
        return pos[None].expand(n, -1, -1, -1).to(x.dtype)


class PositionEmbeddingSine3D(nn.Module):
    """3-D sine encoding for a clip: (B, T, C, H, W) -> (B, T, 2 * num_pos_feats, H, W).

    pos = concat(pos_y, pos_x) + pos_z, where pos_z uses 2 * num_pos_feats channels and its own
    frequency schedule (10000^(2 floor(i/2) / (2 num_pos_feats))), as in Mask2Former's video decoder.
    """

    def __init__(self, num_pos_feats: int = 128, temperature: float = 10000.0, scale: float = 2 * math.pi) -> None:
        super().__init__()
        self.num_pos_feats = num_pos_feats
        self.temperature = temperature
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _, h, w = x.shape
        eps = 1e-6
        z = torch.arange(1, t + 1, dtype=torch.float32, device=x.device) / (t + eps) * self.scale
        pos_z = _sine(z, 2 * self.num_pos_feats, self.temperature)  # (T, 2F)
        spatial = PositionEmbeddingSine(self.num_pos_feats, self.temperature, self.scale)(x[:, 0])[0]  # (2F, H, W)
        pos = spatial[None] + pos_z[:, :, None, None]  # (T, 2F, H, W)
        return pos[None].expand(b, -1, -1, -1, -1).to(x.dtype)
