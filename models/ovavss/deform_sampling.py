"""Bilinear sampling of multi-scale feature maps at deformable-attention locations, two ways.

Both functions compute the same thing as the official MSDeformAttn CUDA kernel (bilinear, zero padding,
align_corners=False): a normalised location (x, y) on an h x w map reads pixel coordinate
(x * w - 0.5, y * h - 0.5), pixel centres at integers, neighbours outside the map count as 0, and the samples
are summed with the attention weights.

- `sample_with_grid_sample`: one `F.grid_sample` per level, then a weighted sum. Simple; on the CPU it
  materialises every sample (N * heads, D, Lq, P) before summing.
- `sample_with_gather`: the four neighbours of every point become rows of one zero-bordered table and the
  bilinear coefficients times the attention weights become per-row weights, so the whole operation is a
  single `F.embedding_bag(mode="sum")` (a fused weighted gather-sum). About 7x faster on a 2-core CPU at
  the r50 360p shapes (`benchmarks/bench_model.py --sampling`, RESULTS.md); differentiable in values,
  locations and weights.

`multi_scale_deformable_attn(..., method="auto")` uses the gather form on the CPU and grid_sample elsewhere.
"""

from __future__ import annotations

from typing import Sequence, Tuple, Union

import torch
import torch.nn.functional as F

SAMPLING_METHODS = ("auto", "gather", "grid_sample")


def check_sampling_method(method: str) -> None:
    """ValueError unless `method` is one of `SAMPLING_METHODS`."""
    if method not in SAMPLING_METHODS:
        raise ValueError(f"unknown sampling method {method!r}; choose one of {', '.join(SAMPLING_METHODS)}")


SpatialShapes = Union[torch.Tensor, Sequence[Tuple[int, int]]]


def as_level_sizes(spatial_shapes: SpatialShapes) -> list[tuple[int, int]]:
    """[(h_l, w_l), ...] as Python ints from an (L, 2) integer tensor or a sequence of (h, w) pairs.

    The model passes Python pairs (taken from the maps' shapes): reading a tensor's values is a host read,
    which on CUDA waits for the GPU and stops `torch.compile` from capturing one graph.
    """
    if isinstance(spatial_shapes, torch.Tensor):
        if spatial_shapes.dim() != 2 or spatial_shapes.shape[1] != 2:
            raise ValueError(f"spatial_shapes must be (L, 2), got {tuple(spatial_shapes.shape)}")
        return [(int(h), int(w)) for h, w in spatial_shapes.tolist()]
    return [(int(h), int(w)) for h, w in spatial_shapes]


def _level_sizes(value: torch.Tensor, spatial_shapes: SpatialShapes, num_levels: int) -> list[tuple[int, int]]:
    level_sizes = as_level_sizes(spatial_shapes)
    if len(level_sizes) != num_levels:
        raise ValueError(f"spatial_shapes has {len(level_sizes)} levels but sampling_locations has {num_levels}")
    covered = sum(h * w for h, w in level_sizes)
    if covered != value.shape[1]:
        raise ValueError(f"spatial_shapes {level_sizes} cover {covered} values, value has {value.shape[1]}")
    return level_sizes


def sample_with_grid_sample(
    value: torch.Tensor,
    level_sizes: list[tuple[int, int]],
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """grid_sample form. Shapes as in `multi_scale_deformable_attn`; returns (N, Lq, heads * D)."""
    batch, _, num_heads, head_dim = value.shape
    num_queries = sampling_locations.shape[1]
    per_level_values = value.split([h * w for h, w in level_sizes], dim=1)
    # grid_sample wants [-1, 1]; fold heads into the batch: L x (N * heads, Lq, P, 2). `unbind` rather than
    # indexing per level: its backward is one stack, where L index selections are 2L kernels (zeros + copy).
    grids = (2 * sampling_locations - 1).transpose(1, 2).flatten(0, 1).unbind(2)
    weights = attention_weights.transpose(1, 2).flatten(0, 1).unsqueeze(1).unbind(3)  # L x (N * heads, 1, Lq, P)

    output = value.new_zeros(batch * num_heads, head_dim, num_queries)
    for level, (height, width) in enumerate(level_sizes):
        # (N, h*w, heads, D) -> (N, heads, D, h*w) -> (N * heads, D, h, w)
        level_map = per_level_values[level].permute(0, 2, 3, 1).reshape(batch * num_heads, head_dim, height, width)
        sampled = F.grid_sample(level_map, grids[level], mode="bilinear", padding_mode="zeros",
                                align_corners=False)  # (N * heads, D, Lq, P)
        output = output + (sampled * weights[level]).sum(-1)
    # (N * heads, D, Lq) -> (N, Lq, heads * D)
    return output.view(batch, num_heads, head_dim, num_queries).permute(0, 3, 1, 2).reshape(
        batch, num_queries, num_heads * head_dim)


def sample_with_gather(
    value: torch.Tensor,
    level_sizes: list[tuple[int, int]],
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """Fused gather form. Shapes as in `multi_scale_deformable_attn`; returns (N, Lq, heads * D).

    Every level gets a one-pixel border of zeros, so a neighbour just outside the map reads a real zero row
    instead of needing a validity mask; pixel coordinates are clamped to [-1, size] first, which changes
    nothing (a point further out has only zero neighbours, and its gradient is zero either way); NaN counts
    as outside. The index arithmetic runs level by level on contiguous (N, heads, Lq, P) blocks with
    Python-number sizes, which keeps it vectorised (broadcasting per-level sizes over the small trailing
    dimensions is several times slower on the CPU), and writes straight into the final (bag-major) layout.
    """
    batch, _, num_heads, head_dim = value.shape
    _, num_queries, _, num_levels, num_points, _ = sampling_locations.shape

    # Table rows: (N, heads, sum_l (h_l + 2) * (w_l + 2), D), flattened to (rows, D).
    bordered = [
        F.pad(level.reshape(batch, h, w, num_heads, head_dim).permute(0, 3, 1, 2, 4), (0, 0, 1, 1, 1, 1)).flatten(2, 3)
        for level, (h, w) in zip(value.split([h * w for h, w in level_sizes], dim=1), level_sizes)
    ]
    table = torch.cat(bordered, dim=2)
    rows_per_map = table.shape[2]
    table = table.reshape(batch * num_heads * rows_per_map, head_dim)
    index_dtype = torch.int32 if table.shape[0] < 2**31 - 1 else torch.int64
    map_start = (torch.arange(batch * num_heads, device=value.device, dtype=index_dtype) * rows_per_map).view(
        batch, num_heads, 1, 1)

    # (L, 2, N, heads, Lq, P) and (L, N, heads, Lq, P): one contiguous block per level and coordinate.
    locations = sampling_locations.permute(3, 5, 0, 2, 1, 4).contiguous()
    attention = attention_weights.permute(3, 0, 2, 1, 4).contiguous()
    # Per (n, head, query): L * P * 4 rows and weights, written level by level into their final place.
    index_shape = (batch, num_heads, num_queries, num_levels, num_points, 4)
    corners = torch.empty(index_shape, device=value.device, dtype=index_dtype)
    coefficients = torch.empty(index_shape, device=value.device, dtype=table.dtype)
    level_start = 0
    for level, (height, width) in enumerate(level_sizes):
        # NaN (e.g. from a diverged or corrupt model) reads the zero border, as grid_sample skips it.
        x = (locations[level, 0] * width - 0.5).clamp(-1.0, width).nan_to_num(-1.0)
        y = (locations[level, 1] * height - 0.5).clamp(-1.0, height).nan_to_num(-1.0)
        x0 = x.detach().floor().clamp_(max=width - 1)  # x0 = w only at x = w exactly: use w - 1, fx = 1
        y0 = y.detach().floor().clamp_(max=height - 1)
        fx, fy = x - x0, y - y0
        row_stride = width + 2
        top_left = (y0.to(index_dtype) * row_stride + x0.to(index_dtype)).add_(
            level_start + row_stride + 1).add_(map_start)  # (N, heads, Lq, P)
        level_corners = corners[:, :, :, level]
        level_corners[..., 0].copy_(top_left)
        level_corners[..., 1].copy_(top_left + 1)
        level_corners[..., 2].copy_(top_left + row_stride)
        level_corners[..., 3].copy_(top_left + (row_stride + 1))
        upper = (1 - fy) * attention[level]
        lower = fy * attention[level]
        level_coefficients = coefficients[:, :, :, level]
        level_coefficients[..., 0].copy_(upper * (1 - fx))
        level_coefficients[..., 1].copy_(upper * fx)
        level_coefficients[..., 2].copy_(lower * (1 - fx))
        level_coefficients[..., 3].copy_(lower * fx)
        level_start += (height + 2) * row_stride

    samples_per_query = num_levels * num_points * 4
    output = F.embedding_bag(
        corners.view(-1, samples_per_query), table,
        per_sample_weights=coefficients.view(-1, samples_per_query), mode="sum",
    )  # (N * heads * Lq, D)
    return output.view(batch, num_heads, num_queries, head_dim).permute(0, 2, 1, 3).reshape(
        batch, num_queries, num_heads * head_dim)


def multi_scale_deformable_attn(
    value: torch.Tensor,
    spatial_shapes: SpatialShapes,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
    method: str = "auto",
) -> torch.Tensor:
    """Sample every level at the given locations and sum with the given weights.

    Args:
        value: (N, S, heads, head_dim), the levels flattened row-major and concatenated, S = sum h_l * w_l.
        spatial_shapes: [h_l, w_l] per level, in the order the levels appear in `value`: Python pairs, or an
            (L, 2) integer tensor (its values are read on the host).
        sampling_locations: (N, Lq, heads, L, P, 2) normalised (x, y); (0, 0) is the top-left corner of the
            map, (1, 1) the bottom-right corner. Locations outside [0, 1] are allowed (they read zeros).
        attention_weights: (N, Lq, heads, L, P), used as given (normalise them beforehand).
        method: "gather", "grid_sample", or "auto" (gather on the CPU, grid_sample on other devices).

    Returns:
        (N, Lq, heads * head_dim), heads concatenated in order.
    """
    check_sampling_method(method)
    level_sizes = _level_sizes(value, spatial_shapes, sampling_locations.shape[3])
    if method == "auto":
        method = "gather" if value.device.type == "cpu" else "grid_sample"
    if method == "gather":
        return sample_with_gather(value, level_sizes, sampling_locations, attention_weights)
    return sample_with_grid_sample(value, level_sizes, sampling_locations, attention_weights)
