"""Hungarian matching of predicted mask tubes to target instances (official `VideoHungarianMatcher`).

Per clip, every query (a mask tube over the clip's frames) is compared with every target instance by

    C = cost_mask · mean BCE + cost_class · (−p(label)) + cost_dice · dice loss

where the mask terms use one set of `num_points` uniform random points, shared by all predictions, targets
and frames (ovavss-spec.md §6.2), and the one-to-one assignment minimising the total cost is found with
`scipy.optimize.linear_sum_assignment`. Predictions are first restricted to the frames the targets describe
(`frame_indices`), so a clip annotated only on frame 0 is matched on frame 0 alone.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import nn

from models.errors import AVSegError
from models.ovavss.point_sample import point_sample


def pairwise_sigmoid_ce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy with logits between every prediction and every target.

    BCE(x, t) = softplus(x) − t·x, so the (Q, N) table is a row sum of softplus(x) minus one product
    x @ tᵀ (one transcendental pass; the official code evaluates BCE against all-ones and all-zeros targets).

    Args:
        logits: (..., Q, M) predicted logits at M sampled values.
        targets: (..., N, M) target values in [0, 1] at the same M values (same leading dims).

    Returns:
        (..., Q, N) cost, mean over the M values.
    """
    num_values = logits.shape[-1]
    cost = F.softplus(logits).sum(-1, keepdim=True) - torch.matmul(logits, targets.transpose(-1, -2))
    return cost / num_values


def pairwise_dice_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Dice loss 1 − (2Σσ(p)t + 1) / (Σσ(p) + Σt + 1) between every prediction and every target.

    Args:
        logits: (..., Q, M) predicted logits.
        targets: (..., N, M) target values in [0, 1] (same leading dims).

    Returns:
        (..., Q, N) cost; one dice over all M values (for a tube: all frames together).
    """
    probs = logits.sigmoid()
    numerator = 2 * torch.matmul(probs, targets.transpose(-1, -2))
    denominator = probs.sum(-1)[..., :, None] + targets.sum(-1)[..., None, :]
    return 1 - (numerator + 1) / (denominator + 1)


def target_frame_indices(target: dict, num_frames: int) -> torch.Tensor | None:
    """The validated frame indices of one clip's target, as a CPU long tensor (None: all `num_frames` frames).

    Args:
        target: dict with `masks` (N, T_t, H, W) and optional `frame_indices` (T_t,) long.
        num_frames: T, the predicted frames of the clip.

    Indices held on an accelerator are read back once to be checked; `train` keeps them on the CPU, so the
    training step does not wait for the GPU here.
    """
    target_frames = target["masks"].shape[1]
    frame_indices = target.get("frame_indices")
    if frame_indices is None:
        if target_frames != num_frames:
            raise ValueError(
                f"target has {target_frames} mask frames but no frame_indices (predictions: {num_frames})"
            )
        return None
    frame_indices = torch.as_tensor(frame_indices, dtype=torch.long).cpu()
    if frame_indices.dim() != 1 or frame_indices.numel() != target_frames:
        raise ValueError(
            f"frame_indices {tuple(frame_indices.shape)} must list one frame per target mask frame ({target_frames})"
        )
    if frame_indices.numel() and (int(frame_indices.min()) < 0 or int(frame_indices.max()) >= num_frames):
        raise ValueError(f"frame_indices {frame_indices.tolist()} out of range for {num_frames} predicted frames")
    return frame_indices


def select_frames(pred_masks: torch.Tensor, frame_indices: torch.Tensor | None) -> torch.Tensor:
    """(Q, T, h, w) mask logits of one clip -> (Q, T_t, h, w) at `frame_indices` (None: unchanged)."""
    if frame_indices is None or torch.equal(frame_indices, torch.arange(pred_masks.shape[1])):
        return pred_masks
    return pred_masks.index_select(1, frame_indices.to(pred_masks.device, non_blocking=True))


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
        return self.stacked_cost_matrices(pred_logits[None], [pred_masks], labels, target_masks, point_coords[None])[0]

    @torch.no_grad()
    def stacked_cost_matrices(
        self,
        pred_logits: torch.Tensor,
        pred_masks: Sequence[torch.Tensor],
        labels: torch.Tensor,
        target_masks: torch.Tensor,
        point_coords: torch.Tensor,
    ) -> torch.Tensor:
        """The matching costs of one clip for L predictions of it at once (the final one and the aux ones).

        Args:
            pred_logits: (L, Q, K+1) class logits.
            pred_masks: L tensors (Q, T_t, h, w): mask logits restricted to the annotated frames.
            labels: (N,) long target classes.
            target_masks: (N, T_t, H, W) target masks (bool or float in [0, 1]).
            point_coords: (L, P, 2) points (x, y) in [0, 1]²: prediction l is compared at its own set.

        Returns:
            (L, Q, N) float32 costs; [l] equals `cost_matrix` of prediction l at point_coords[l].
        """
        num_outputs, num_points = point_coords.shape[:2]
        device = pred_logits.device
        with torch.autocast(device_type=device.type, enabled=False):
            point_coords = point_coords.to(device=device, dtype=torch.float32)
            num_targets, target_frames = target_masks.shape[:2]
            # every target at every prediction's points in one call: (N, T_t, L * P) -> (L, N, T_t * P)
            target_points = point_sample(
                target_masks.to(device=device, dtype=torch.float32),
                point_coords.reshape(1, -1, 2).expand(num_targets, -1, -1), align_corners=False,
            ).reshape(num_targets, target_frames, num_outputs, num_points).permute(2, 0, 1, 3)
            labels = labels.to(device)
            costs = []
            for output, masks in enumerate(pred_masks):
                # batched over queries (one thread per query block on the CPU, no (L, Q, T_t * P) stack)
                pred_points = point_sample(
                    masks.float(), point_coords[output][None].expand(masks.shape[0], -1, -1), align_corners=False
                ).flatten(1)  # (Q, T_t * P), frame-major
                points = target_points[output].flatten(1)  # (N, T_t * P)
                cost_class = -pred_logits[output].float().softmax(-1)[:, labels]  # (Q, N)
                costs.append(self.cost_mask * pairwise_sigmoid_ce(pred_points, points)
                             + self.cost_class * cost_class + self.cost_dice * pairwise_dice_loss(pred_points, points))
            return torch.stack(costs)

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
        return self.match_predictions([outputs], targets)[0]

    def sample_points(self, num_clips: int, num_outputs: int, device: torch.device) -> torch.Tensor:
        """(num_clips, num_outputs, num_points, 2) uniform random points in [0, 1]², from torch's generator."""
        return torch.rand(num_clips, num_outputs, self.num_points, 2, device=device)

    @torch.no_grad()
    def match_predictions(
        self, predictions: Sequence[dict], targets: list[dict]
    ) -> list[list[tuple[torch.Tensor, torch.Tensor]]]:
        """Match L predictions of the same batch (deep supervision) with one transfer of costs to the host.

        Every prediction and clip gets its own `num_points` uniform random points, drawn for all of them
        at once; the costs of all predictions and clips are computed on the device and read back together,
        so a training step waits for the device once here instead of once per prediction and clip.

        Args:
            predictions: L dicts as `forward`'s `outputs`, all with the same shapes.
            targets: as in `forward`.

        Returns:
            L lists (one per prediction) of B pairs as `forward` returns.
        """
        first = predictions[0]["pred_logits"]
        num_outputs, batch = len(predictions), first.shape[0]
        if len(targets) != batch:
            raise ValueError(f"{len(targets)} targets for a batch of {batch} predictions")
        for prediction in predictions:
            if prediction["pred_logits"].shape != first.shape or \
                    prediction["pred_masks"].shape != predictions[0]["pred_masks"].shape:
                raise ValueError("all predictions matched together must have the same shapes")
        device = first.device
        annotated = [b for b, target in enumerate(targets) if target["labels"].shape[0] > 0]
        point_coords = self.sample_points(len(annotated), num_outputs, device)
        costs = []
        for slot, b in enumerate(annotated):
            frame_indices = target_frame_indices(targets[b], predictions[0]["pred_masks"].shape[2])
            clip_masks = [select_frames(prediction["pred_masks"][b], frame_indices) for prediction in predictions]
            clip_logits = torch.stack([prediction["pred_logits"][b] for prediction in predictions])
            costs.append(self.stacked_cost_matrices(clip_logits, clip_masks, targets[b]["labels"],
                                                    targets[b]["masks"], point_coords[slot]))
        host = torch.cat([cost.flatten() for cost in costs]).cpu() if costs else torch.empty(0)
        if not torch.isfinite(host).all():
            raise AVSegError("the matching cost is not finite (the predictions contain NaN or inf): training diverged")
        empty = torch.empty(0, dtype=torch.int64)
        matches = [[(empty, empty.clone()) for _ in targets] for _ in predictions]
        offset = 0
        for slot, b in enumerate(annotated):
            shape = costs[slot].shape  # (L, Q, N)
            block = host[offset:offset + costs[slot].numel()].reshape(shape).numpy()
            offset += costs[slot].numel()
            for output in range(num_outputs):
                pred_idx, tgt_idx = linear_sum_assignment(block[output])
                matches[output][b] = (torch.as_tensor(pred_idx, dtype=torch.int64),
                                      torch.as_tensor(tgt_idx, dtype=torch.int64))
        return matches

    def extra_repr(self) -> str:
        return (f"cost_class={self.cost_class}, cost_mask={self.cost_mask}, cost_dice={self.cost_dice}, "
                f"num_points={self.num_points}")
