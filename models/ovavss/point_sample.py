"""Point sampling of mask logits / masks at normalised coordinates (PointRend, as used by Mask2Former).

Coordinates are (x, y) in [0, 1]² over the whole map, so maps of different resolutions (predictions at
stride 4, targets at full padded resolution) are sampled at the same places. Sampling is bilinear
`grid_sample` with zero padding; `align_corners=False` puts pixel i's centre at (i + 0.5) / size.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F


def point_sample(input: torch.Tensor, point_coords: torch.Tensor, align_corners: bool = False) -> torch.Tensor:
    """Bilinearly sample `input` at normalised points.

    Args:
        input: (N, C, H, W) maps; the C channels (e.g. the frames of a mask tube) share the points.
        point_coords: (N, P, 2) or (N, Hg, Wg, 2) points (x, y) in [0, 1]² (outside reads zeros).
        align_corners: passed to `grid_sample`; the official code uses False.

    Returns:
        (N, C, P) for (N, P, 2) points, (N, C, Hg, Wg) for (N, Hg, Wg, 2) points; dtype of `input`.
    """
    if point_coords.dim() not in (3, 4) or point_coords.shape[-1] != 2:
        raise ValueError(f"point_coords must be (N, P, 2) or (N, Hg, Wg, 2), got {tuple(point_coords.shape)}")
    single_row = point_coords.dim() == 3
    grid = point_coords[:, :, None, :] if single_row else point_coords
    grid = 2.0 * grid.to(input.dtype) - 1.0
    output = F.grid_sample(input, grid, mode="bilinear", padding_mode="zeros", align_corners=align_corners)
    return output[..., 0] if single_row else output


def calculate_uncertainty(logits: torch.Tensor) -> torch.Tensor:
    """Uncertainty of binary mask logits: −|logit| (largest at the decision boundary). Same shape in and out."""
    return -logits.abs()


def get_uncertain_point_coords_with_randomness(
    coarse_logits: torch.Tensor,
    uncertainty_func: Callable[[torch.Tensor], torch.Tensor],
    num_points: int,
    oversample_ratio: float = 3.0,
    importance_sample_ratio: float = 0.75,
) -> torch.Tensor:
    """PointRend importance sampling: points biased towards where the prediction is uncertain.

    For each of the N maps: draw int(num_points · oversample_ratio) uniform points, point-sample the
    logits there, keep the int(importance_sample_ratio · num_points) with the highest
    `uncertainty_func`, and fill up to `num_points` with fresh uniform points (drawn after the
    oversampled ones, in that order, from the global torch RNG).

    Args:
        coarse_logits: (N, 1, H, W) mask logits (gradients are not needed; call under `torch.no_grad()`).
        uncertainty_func: (N, 1, P) logits -> (N, 1, P) uncertainty, e.g. `calculate_uncertainty`.
        num_points: points per map.
        oversample_ratio: ≥ 1; how many candidates to draw per kept point.
        importance_sample_ratio: in [0, 1]; share of the points chosen by uncertainty.

    Returns:
        (N, num_points, 2) coordinates (x, y) in [0, 1]², the uncertain ones first.
    """
    if oversample_ratio < 1:
        raise ValueError(f"oversample_ratio must be >= 1, got {oversample_ratio}")
    if not 0 <= importance_sample_ratio <= 1:
        raise ValueError(f"importance_sample_ratio must be in [0, 1], got {importance_sample_ratio}")
    num_maps = coarse_logits.shape[0]
    device = coarse_logits.device
    num_sampled = int(num_points * oversample_ratio)
    candidates = torch.rand(num_maps, num_sampled, 2, device=device)
    uncertainties = uncertainty_func(point_sample(coarse_logits, candidates, align_corners=False))  # (N, 1, M)
    num_uncertain = int(importance_sample_ratio * num_points)
    num_random = num_points - num_uncertain
    top = torch.topk(uncertainties[:, 0, :], k=num_uncertain, dim=1).indices  # (N, num_uncertain)
    coords = torch.gather(candidates, 1, top[:, :, None].expand(-1, -1, 2))
    if num_random > 0:
        coords = torch.cat((coords, torch.rand(num_maps, num_random, 2, device=device)), dim=1)
    return coords
