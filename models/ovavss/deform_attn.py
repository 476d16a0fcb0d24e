"""Multi-scale deformable attention (Deformable DETR), in pure PyTorch.

Every query looks at `n_points` learned locations on each of `n_levels` feature maps per head and returns
the attention-weighted sum of the bilinearly sampled values. Sampling is bilinear with zero padding and
align_corners=False (as `F.grid_sample`), i.e. a normalised location (x, y) in [0, 1] reads pixel coordinate
(x * W - 0.5, y * H - 0.5) with pixel centres at integers, and neighbours outside the map count as 0. This
equals the official CUDA kernel up to float rounding; no compiled extension is needed. The sampling itself
lives in `deform_sampling.py` (a fused gather on the CPU, `F.grid_sample` elsewhere).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from models.ovavss.deform_sampling import (
    SpatialShapes,
    as_level_sizes,
    check_sampling_method,
    multi_scale_deformable_attn,
)
from models.ovavss.device_constants import DeviceConstants, ModuleWithConstants

__all__ = ["MSDeformAttn", "multi_scale_deformable_attn"]

MAX_CACHED_SIZES = 64  # (resolution, device, dtype, mode) level-size divisors an MSDeformAttn keeps (tiny)


def softmax_over_samples(logits: torch.Tensor) -> torch.Tensor:
    """Softmax over the last dimension (the L * P samples of a head: 12 in OV-AVSS).

    On the CPU it is written out (exp of the shifted logits over their sum): PyTorch's softmax kernel
    vectorises along the reduced dimension, which for rows of 12 values made it 5x slower (24 ms instead
    of 4 ms per r50 pixel-decoder layer on 2 cores). Equal up to float rounding; the shift is detached (the
    softmax does not depend on it), so gradients are the softmax's. Elsewhere `torch.softmax` (one kernel).
    """
    if logits.device.type != "cpu":
        return logits.softmax(dim=-1)
    exponentials = (logits - logits.detach().amax(dim=-1, keepdim=True)).exp()
    return exponentials / exponentials.sum(dim=-1, keepdim=True)


class MSDeformAttn(ModuleWithConstants):
    """Multi-scale deformable attention with the official parameter names.

    Args:
        d_model: channels of queries and values (C).
        n_levels: number of feature levels (L).
        n_heads: attention heads; C must be divisible by it.
        n_points: sampling points per head and level (P).
        sampling: how the points are read: "auto" (a fused gather on the CPU, grid_sample on other devices),
            "gather" or "grid_sample"; all three give the same result up to float rounding.

    Parameters: `sampling_offsets` Linear(C -> heads*L*P*2), `attention_weights` Linear(C -> heads*L*P),
    `value_proj` and `output_proj` Linear(C -> C).
    """

    def __init__(self, d_model: int = 256, n_levels: int = 3, n_heads: int = 8, n_points: int = 4,
                 sampling: str = "auto") -> None:
        super().__init__()
        if d_model % n_heads != 0:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        check_sampling_method(sampling)
        self.sampling = sampling
        self.d_model = d_model
        self.n_levels = n_levels
        self.n_heads = n_heads
        self.n_points = n_points
        self.sampling_offsets = nn.Linear(d_model, n_heads * n_levels * n_points * 2)
        self.attention_weights = nn.Linear(d_model, n_heads * n_levels * n_points)
        self.value_proj = nn.Linear(d_model, d_model)
        self.output_proj = nn.Linear(d_model, d_model)
        self._constants = DeviceConstants(MAX_CACHED_SIZES)  # see `_size_divisor`; not part of the state
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        """Deformable-DETR init: at start every head samples points on a ray in its own direction."""
        nn.init.zeros_(self.sampling_offsets.weight)
        angles = torch.arange(self.n_heads, dtype=torch.float32) * (2.0 * math.pi / self.n_heads)
        directions = torch.stack([angles.cos(), angles.sin()], dim=-1)  # (heads, 2) as (x, y)
        directions = directions / directions.abs().amax(dim=-1, keepdim=True)  # onto the unit square
        point_scale = torch.arange(1, self.n_points + 1, dtype=torch.float32)  # point p sits p+1 pixels away
        pattern = directions[:, None, None, :] * point_scale[None, None, :, None]  # (heads, 1, P, 2)
        pattern = pattern.expand(self.n_heads, self.n_levels, self.n_points, 2)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(pattern.reshape(-1))
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.zeros_(self.value_proj.bias)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.zeros_(self.output_proj.bias)

    def _size_divisor(self, level_sizes: list[tuple[int, int]], like: torch.Tensor) -> torch.Tensor:
        """(L, 2) [w_l, h_l] with `like`'s device and dtype, copied to the device once per resolution
        (`DeviceConstants`: no blocking copy per call, none inside CUDA-graph capture)."""
        sizes = tuple(level_sizes)
        return self._constants.get(sizes, lambda: torch.tensor([(w, h) for h, w in sizes]), like.device,
                                   like.dtype)

    def forward(
        self,
        query: torch.Tensor,
        reference_points: torch.Tensor,
        input_flatten: torch.Tensor,
        spatial_shapes: SpatialShapes,
        level_start_index: torch.Tensor | None = None,
        input_padding_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Attend from each query to P points per head on every level around its reference point.

        Args:
            query: (N, Lq, C) (positional embedding already added by the caller).
            reference_points: (N, Lq, L, 2) normalised (x, y) per level, in [0, 1].
            input_flatten: (N, S, C) the levels flattened row-major and concatenated.
            spatial_shapes: [h_l, w_l] per level: Python pairs (what the model passes: no host read), or an
                (L, 2) integer tensor as in the official code (its values are read on the host).
            level_start_index: (L,) long, offset of each level in S, or None (kept for API compatibility; the
                split is derived from `spatial_shapes`).
            input_padding_mask: optional (N, S) bool, True where the input is padding (its value is zeroed).

        Returns:
            (N, Lq, C).
        """
        del level_start_index  # implied by spatial_shapes
        batch, num_queries, _ = query.shape
        _, num_values, _ = input_flatten.shape
        value = self.value_proj(input_flatten)
        if input_padding_mask is not None:
            value = value.masked_fill(input_padding_mask[..., None], 0.0)
        value = value.view(batch, num_values, self.n_heads, self.d_model // self.n_heads)

        offsets = self.sampling_offsets(query).view(
            batch, num_queries, self.n_heads, self.n_levels, self.n_points, 2)
        weights = self.attention_weights(query).view(batch, num_queries, self.n_heads, self.n_levels * self.n_points)
        weights = softmax_over_samples(weights).view(batch, num_queries, self.n_heads, self.n_levels, self.n_points)

        # Offsets are in pixels of each level: divide by (w_l, h_l) to get normalised (x, y).
        level_sizes = as_level_sizes(spatial_shapes)
        size_xy = self._size_divisor(level_sizes, offsets)  # (L, 2) as (w, h)
        locations = reference_points[:, :, None, :, None, :] + offsets / size_xy[None, None, None, :, None, :]
        output = multi_scale_deformable_attn(value, level_sizes, locations, weights, self.sampling)
        return self.output_proj(output)
