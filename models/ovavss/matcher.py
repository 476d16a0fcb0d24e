"""Hungarian matching of predicted mask tubes to target instances (official `VideoHungarianMatcher`).

Per clip, every query (a mask tube over the clip's frames) is compared with every target instance by

    C = cost_mask · mean BCE + cost_class · (−p(label)) + cost_dice · dice loss

where the mask terms use one set of `num_points` uniform random points, shared by all predictions, targets
and frames (ovavss-spec.md §6.2), and the one-to-one assignment minimising the total cost is found with
`scipy.optimize.linear_sum_assignment`. Predictions are first restricted to the frames the targets describe
(`frame_indices`), so a clip annotated only on frame 0 is matched on frame 0 alone.
"""

from __future__ import annotations

import torch
from scipy.optimize import linear_sum_assignment
from torch import nn

from models.errors import AVSegError
from models.ovavss.point_sample import point_sample


def pairwise_sigmoid_ce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy with logits between every prediction and every target.

    Args:
        logits: (Q, M) predicted logits at M sampled values.
        targets: (N, M) target values in [0, 1] at the same M values.

    Returns:
        (Q, N) cost, mean over the M values.
    """
    num_values = logits.shape[1]
    loss_if_positive = nn.functional.binary_cross_entropy_with_logits(
        logits, torch.ones_like(logits), reduction="none"
    )
    loss_if_negative = nn.functional.binary_cross_entropy_with_logits(
        logits, torch.zeros_like(logits), reduction="none"
    )
    cost = loss_if_positive @ targets.T + loss_if_negative @ (1 - targets).T
    return cost / num_values


def pairwise_dice_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Dice loss 1 − (2Σσ(p)t + 1) / (Σσ(p) + Σt + 1) between every prediction and every target.

    Args:
        logits: (Q, M) predicted logits.
        targets: (N, M) target values in [0, 1].

    Returns:
        (Q, N) cost; one dice over all M values (for a tube: all frames together).
    """
    probs = logits.sigmoid()
    numerator = 2 * probs @ targets.T
    denominator = probs.sum(-1)[:, None] + targets.sum(-1)[None, :]
    return 1 - (numerator + 1) / (denominator + 1)


def frames_of_target(pred_masks: torch.Tensor, target: dict) -> torch.Tensor:
    """Restrict one clip's predicted tubes to the frames its target masks describe.

    Args:
        pred_masks: (Q, T, h, w) mask logits of one clip.
        target: dict with `masks` (N, T_t, H, W) and `frame_indices` (T_t,) long (if absent, T_t must be T).

    Returns:
        (Q, T_t, h, w) mask logits of the annotated frames, in the order of `frame_indices`.
    """
    num_frames = pred_masks.shape[1]
    target_frames = target["masks"].shape[1]
    frame_indices = target.get("frame_indices")
    if frame_indices is None:
        if target_frames != num_frames:
            raise ValueError(
                f"target has {target_frames} mask frames but no frame_indices (predictions: {num_frames})"
            )
        return pred_masks
    frame_indices = torch.as_tensor(frame_indices, dtype=torch.long, device=pred_masks.device)
    if frame_indices.dim() != 1 or frame_indices.numel() != target_frames:
        raise ValueError(
            f"frame_indices {tuple(frame_indices.shape)} must list one frame per target mask frame ({target_frames})"
        )
    if frame_indices.numel() and (int(frame_indices.min()) < 0 or int(frame_indices.max()) >= num_frames):
        raise ValueError(f"frame_indices {frame_indices.tolist()} out of range for {num_frames} predicted frames")
    return pred_masks.index_select(1, frame_indices)


class HungarianMatcher(nn.Module):
    """One-to-one assignment of queries to target instances per clip (no parameters, no gradients).

    Args:
        cost_class: weight of −softmax(logits)[label].
        cost_mask: weight of the mean sigmoid BCE over the sampled points of all annotated frames.
        cost_dice: weight of the dice loss over the same values (one dice per tube).
        num_points: uniform random points per clip (shared by all frames, queries and targets).
    """

    def __init__(
        self, cost_class: float = 2.0, cost_mask: float = 5.0, cost_dice: float = 5.0, num_points: int = 12544
    ) -> None:
        super().__init__()
        if cost_class == 0 and cost_mask == 0 and cost_dice == 0:
            raise ValueError("all matching costs are 0")
        if num_points < 1:
            raise ValueError(f"num_points must be >= 1, got {num_points}")
        self.cost_class = cost_class
        self.cost_mask = cost_mask
        self.cost_dice = cost_dice
        self.num_points = num_points

    @torch.no_grad()
    def cost_matrix(
        self,
        pred_logits: torch.Tensor,
        pred_masks: torch.Tensor,
        labels: torch.Tensor,
        target_masks: torch.Tensor,
        point_coords: torch.Tensor,
    ) -> torch.Tensor:
        """The matching cost of one clip at given points.

        Args:
            pred_logits: (Q, K+1) class logits (K = 1 here: sounding object, then no-object).
            pred_masks: (Q, T_t, h, w) mask logits, already restricted to the annotated frames.
            labels: (N,) long target classes.
            target_masks: (N, T_t, H, W) target masks (bool or float in [0, 1]).
            point_coords: (P, 2) points (x, y) in [0, 1]².

        Returns:
            (Q, N) float32 cost.
        """
        with torch.autocast(device_type=pred_masks.device.type, enabled=False):
            pred_logits = pred_logits.float()
            pred_masks = pred_masks.float()
            target_masks = target_masks.to(device=pred_masks.device, dtype=torch.float32)
            point_coords = point_coords.to(device=pred_masks.device, dtype=torch.float32)
            cost_class = -pred_logits.softmax(-1)[:, labels.to(pred_logits.device)]  # (Q, N)
            pred_points = point_sample(
                pred_masks, point_coords[None].expand(pred_masks.shape[0], -1, -1), align_corners=False
            ).flatten(1)  # (Q, T_t * P)
            target_points = point_sample(
                target_masks, point_coords[None].expand(target_masks.shape[0], -1, -1), align_corners=False
            ).flatten(1)  # (N, T_t * P)
            cost_mask = pairwise_sigmoid_ce(pred_points, target_points)
            cost_dice = pairwise_dice_loss(pred_points, target_points)
            return self.cost_mask * cost_mask + self.cost_class * cost_class + self.cost_dice * cost_dice

    @torch.no_grad()
    def forward(self, outputs: dict, targets: list[dict]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Match every clip of the batch.

        Args:
            outputs: `pred_logits` (B, Q, 2) and `pred_masks` (B, Q, T, h, w) mask logits.
            targets: B dicts with `labels` (N,) long, `masks` (N, T_t, H, W) at the padded input resolution,
                `frame_indices` (T_t,) long: the frames of the clip the masks describe. N may be 0.

        Returns:
            B pairs (pred_idx (K,), tgt_idx (K,)) of int64 CPU tensors, K = min(Q, N), pred_idx ascending:
            query pred_idx[k] is matched to target instance tgt_idx[k].
        """
        pred_logits = outputs["pred_logits"]
        pred_masks = outputs["pred_masks"]
        if len(targets) != pred_logits.shape[0]:
            raise ValueError(f"{len(targets)} targets for a batch of {pred_logits.shape[0]} predictions")
        indices = []
        for b, target in enumerate(targets):
            num_targets = target["labels"].shape[0]
            if num_targets == 0:
                empty = torch.empty(0, dtype=torch.int64)
                indices.append((empty, empty.clone()))
                continue
            clip_masks = frames_of_target(pred_masks[b], target)
            point_coords = torch.rand(1, self.num_points, 2, device=pred_masks.device)[0]
            cost = self.cost_matrix(pred_logits[b], clip_masks, target["labels"], target["masks"], point_coords)
            cost = cost.cpu()
            if not torch.isfinite(cost).all():
                raise AVSegError(
                    "the matching cost is not finite (the predictions contain NaN or inf): training diverged"
                )
            pred_idx, tgt_idx = linear_sum_assignment(cost.numpy())
            indices.append(
                (torch.as_tensor(pred_idx, dtype=torch.int64), torch.as_tensor(tgt_idx, dtype=torch.int64))
            )
        return indices

    def extra_repr(self) -> str:
        return (f"cost_class={self.cost_class}, cost_mask={self.cost_mask}, cost_dice={self.cost_dice}, "
                f"num_points={self.num_points}")
