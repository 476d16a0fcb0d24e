"""Sine positional encodings: 2-D for the pixel decoder, 3-D (frames x rows x cols) for the mask decoder.

Both follow DETR / Mask2Former (normalize=True, scale 2*pi, temperature 10000), computed from the feature
shape alone (no padding mask). That is why each module keeps its encodings per (shape, dtype, device)
(`DeviceConstants.computed`): computed on the device the first time, with exactly the values of computing them
at every call, and reused afterwards (they took ~190 small operations per r50 forward, launch-bound on a GPU).
"""

from __future__ import annotations

import math

import torch

from models.ovavss.device_constants import DeviceConstants, ModuleWithConstants

MAX_CACHED_ENCODINGS = 12
"""Encodings a module keeps: 3 feature levels x 4 input shapes (a video has at most two clip shapes)."""


def _sine(embed: torch.Tensor, num_feats: int, temperature: float) -> torch.Tensor:
    """(..., ) positions -> (..., num_feats) with sin on even and cos on odd channels, interleaved."""
    dim_t = torch.arange(num_feats, dtype=torch.float32, device=embed.device)
    dim_t = temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / num_feats)
    pos = embed[..., None] / dim_t
    return torch.stack((pos[..., 0::2].sin(), pos[..., 1::2].cos()), dim=-1).flatten(-2)


def sine_encoding_2d(height: int, width: int, num_feats: int, temperature: float, scale: float,
                     device: torch.device) -> torch.Tensor:
    """(2 * num_feats, H, W) float32, channels [pos_y, pos_x], positions (i + 1) / (size + 1e-6) * scale."""
    eps = 1e-6
    y = torch.arange(1, height + 1, dtype=torch.float32, device=device) / (height + eps) * scale
    x = torch.arange(1, width + 1, dtype=torch.float32, device=device) / (width + eps) * scale
    pos_y = _sine(y, num_feats, temperature)[:, None, :].expand(height, width, -1)
    pos_x = _sine(x, num_feats, temperature)[None, :, :].expand(height, width, -1)
    return torch.cat((pos_y, pos_x), dim=-1).permute(2, 0, 1)


class PositionEmbeddingSine(ModuleWithConstants):
    """2-D sine encoding: (N, C, H, W) feature -> (N, 2 * num_pos_feats, H, W), channels [pos_y, pos_x].

    The result is an expanded view over the batch of one kept (1, 2 * num_pos_feats, H, W) tensor: do not
    write into it.
    """

    def __init__(self, num_pos_feats: int = 128, temperature: float = 10000.0, scale: float = 2 * math.pi) -> None:
        super().__init__()
        self.num_pos_feats = num_pos_feats
        self.temperature = temperature
        self.scale = scale
        self._encodings = DeviceConstants(MAX_CACHED_ENCODINGS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape

        def make() -> torch.Tensor:
            pos = sine_encoding_2d(h, w, self.num_pos_feats, self.temperature, self.scale, x.device)
            return pos[None].to(x.dtype)

        return self._encodings.computed((h, w, x.dtype), make, x.device).expand(n, -1, -1, -1)


class PositionEmbeddingSine3D(ModuleWithConstants):
    """3-D sine encoding for a clip: (B, T, C, H, W) -> (B, T, 2 * num_pos_feats, H, W).

    pos = concat(pos_y, pos_x) + pos_z, where pos_z uses 2 * num_pos_feats channels and its own
    frequency schedule (10000^(2 floor(i/2) / (2 num_pos_feats))), as in Mask2Former's video decoder.
    The result is an expanded view over the batch of one kept tensor: do not write into it.
    """

    def __init__(self, num_pos_feats: int = 128, temperature: float = 10000.0, scale: float = 2 * math.pi) -> None:
        super().__init__()
        self.num_pos_feats = num_pos_feats
        self.temperature = temperature
        self.scale = scale
        self._encodings = DeviceConstants(MAX_CACHED_ENCODINGS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _, h, w = x.shape

        def make() -> torch.Tensor:
            eps = 1e-6
            z = torch.arange(1, t + 1, dtype=torch.float32, device=x.device) / (t + eps) * self.scale
            pos_z = _sine(z, 2 * self.num_pos_feats, self.temperature)  # (T, 2F)
            # the 2-D part rounded to x's dtype before the float32 sum, as Mask2Former's video decoder does
            spatial = sine_encoding_2d(h, w, self.num_pos_feats, self.temperature, self.scale, x.device).to(x.dtype)
            pos = spatial[None] + pos_z[:, :, None, None]  # (T, 2F, H, W), float32
            return pos[None].to(x.dtype)

        return self._encodings.computed((t, h, w, x.dtype), make, x.device).expand(b, -1, -1, -1, -1)
