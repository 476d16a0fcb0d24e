"""Training losses of OV-AVSS (official `VideoSetCriterion`, ovavss-spec.md §6.3).

For every prediction (the final one and each of the deep-supervision `aux_outputs`) the queries are
matched to the target instances (`HungarianMatcher`), then:

- `loss_ce`: 2-way cross-entropy (sounding object / no-object) over all queries of all clips; matched
  queries take their target's label (0), the others the no-object class; class weights `empty_weight`
  = [1, eos_coef], PyTorch weighted mean (divided by the sum of the weights of the targets).
- `loss_mask`, `loss_dice`: each matched tube is split into its annotated frames and **every frame is a
  separate mask**; per frame-mask, PointRend importance sampling picks `num_points` points on the predicted
  logits (no gradient through the choice), predictions and targets are sampled there, and the mean sigmoid
  BCE / the dice loss of that frame-mask is summed over all frame-masks of the batch and divided by
  `num_masks` = the number of target **instances** in the batch (clamped ≥ 1; averaged over processes when
  torch.distributed is initialised). Dividing a per-frame sum by instances makes video mask losses about
  T× an image-level loss; this is the official behaviour and is kept.

Keys: `loss_ce`, `loss_mask`, `loss_dice` for the final prediction and `loss_ce_{i}`, `loss_mask_{i}`,
`loss_dice_{i}` for `aux_outputs[i]`. The weighted training loss is the plain sum of weight × loss
(`weighted_total`; official weights ce 2, mask 5, dice 5 for every prediction).

Batches: with several clips, `loss_ce` is the weighted mean over all B·Q queries and the mask losses are
Σ over all frame-masks of all clips / total instances, i.e. (Σ_b n_b·L_b) / Σ_b n_b for per-clip losses L_b
with n_b instances (when every clip has at least one instance).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from models.ovavss.matcher import HungarianMatcher, select_frames, target_frame_indices
from models.ovavss.point_sample import (
    calculate_uncertainty,
    get_uncertain_point_coords_with_randomness,
    point_sample,
)

if TYPE_CHECKING:
    from models.ovavss.config import TrainConfig


def default_weight_dict(
    num_aux: int, class_weight: float = 2.0, mask_weight: float = 5.0, dice_weight: float = 5.0
) -> dict[str, float]:
    """Loss weights for the final prediction and `num_aux` deep-supervision outputs.

    Returns:
        {"loss_ce": class_weight, "loss_mask": mask_weight, "loss_dice": dice_weight} plus the same three
        with suffix `_{i}` for i in 0..num_aux-1 (official: num_aux = 9, i.e. 30 terms).
    """
    if num_aux < 0:
        raise ValueError(f"num_aux must be >= 0, got {num_aux}")
    base = {"loss_ce": class_weight, "loss_mask": mask_weight, "loss_dice": dice_weight}
    weights = dict(base)
    for i in range(num_aux):
        weights.update({f"{name}_{i}": value for name, value in base.items()})
    return weights


def weighted_total(losses: Mapping[str, torch.Tensor], weight_dict: Mapping[str, float]) -> torch.Tensor:
    """Σ weight_dict[k] · losses[k] over all losses (scalar tensor).

    Raises ValueError for a loss without a weight (e.g. a model with more aux outputs than the weights
    were made for); weights without a loss are ignored.
    """
    unweighted = sorted(set(losses) - set(weight_dict))
    if unweighted:
        raise ValueError(f"no weight for losses {unweighted}")
    if not losses:
        raise ValueError("no losses to sum")
    return sum(weight_dict[name] * value for name, value in losses.items())


def sigmoid_ce_per_mask(point_logits: torch.Tensor, point_labels: torch.Tensor) -> torch.Tensor:
    """(M, P) logits and labels of M masks at P points -> (M,) mean BCE-with-logits of each mask."""
    return F.binary_cross_entropy_with_logits(point_logits, point_labels, reduction="none").mean(1)


def dice_per_mask(point_logits: torch.Tensor, point_labels: torch.Tensor) -> torch.Tensor:
    """(M, P) logits and labels -> (M,) dice losses 1 − (2Σσ(p)t + 1) / (Σσ(p) + Σt + 1)."""
    probs = point_logits.sigmoid()
    numerator = 2 * (probs * point_labels).sum(-1)
    denominator = probs.sum(-1) + point_labels.sum(-1)
    return 1 - (numerator + 1) / (denominator + 1)


def count_target_instances(targets: list[dict], device: torch.device) -> float:
    """Number of target instances in the batch, averaged over processes if distributed, clamped ≥ 1.

    Counted on the host (shapes only); only the distributed average goes through the device.
    """
    count = float(sum(int(t["labels"].shape[0]) for t in targets))
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        total = torch.tensor(count, device=device)
        torch.distributed.all_reduce(total)
        count = float(total) / torch.distributed.get_world_size()
    return max(count, 1.0)


Matcher = Callable[[dict, list], list]


class SetCriterion(nn.Module):
    """Matching-based losses for one batch of clips (see the module docstring).

    Args:
        num_classes: foreground classes of the sound head (1: "sounding object"); logits have num_classes + 1.
        matcher: callable (outputs, targets) -> list of (pred_idx, tgt_idx); default `HungarianMatcher()`.
        weight_dict: loss weights used by `weighted_total`; default `default_weight_dict(9)` (the official
            decoder's 9 aux outputs).
        eos_coef: cross-entropy weight of the no-object class.
        num_points: sampled points per frame-mask.
        oversample_ratio, importance_sample_ratio: PointRend importance sampling
            (`get_uncertain_point_coords_with_randomness`); importance_sample_ratio = 0 gives uniform points.

    Buffers:
        empty_weight (num_classes + 1,) = [1, ..., 1, eos_coef] (persistent; official key
        `criterion.empty_weight`).
    """

    def __init__(
        self,
        num_classes: int = 1,
        matcher: Matcher | None = None,
        weight_dict: Mapping[str, float] | None = None,
        eos_coef: float = 0.1,
        num_points: int = 12544,
        oversample_ratio: float = 3.0,
        importance_sample_ratio: float = 0.75,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if num_points < 1:
            raise ValueError(f"num_points must be >= 1, got {num_points}")
        self.num_classes = num_classes
        self.matcher = matcher if matcher is not None else HungarianMatcher()
        self.weight_dict = dict(weight_dict) if weight_dict is not None else default_weight_dict(9)
        self.eos_coef = eos_coef
        self.num_points = num_points
        self.oversample_ratio = oversample_ratio
        self.importance_sample_ratio = importance_sample_ratio
        empty_weight = torch.ones(num_classes + 1)
        empty_weight[-1] = eos_coef
        self.register_buffer("empty_weight", empty_weight)

    def loss_labels(
        self,
        pred_logits: Sequence[torch.Tensor],
        targets: list[dict],
        indices: Sequence[list[tuple[torch.Tensor, torch.Tensor]]],
    ) -> torch.Tensor:
        """Weighted cross-entropy of L predictions: L tensors (B, Q, num_classes + 1) and their matches -> (L,).

        Unmatched queries target no-object. The target classes of all predictions are scattered with one
        index built on the host; the weighted mean of each prediction is PyTorch's: Σ w[y]·nll / Σ w[y] over
        its B·Q queries.
        """
        logits = torch.stack([p.float() for p in pred_logits])  # (L, B, Q, C)
        num_outputs, batch, num_queries, num_classes = logits.shape
        device = logits.device
        target_classes = torch.full((num_outputs * batch * num_queries,), self.num_classes, dtype=torch.int64,
                                    device=device)
        offsets = [0]
        for target in targets:
            offsets.append(offsets[-1] + int(target["labels"].shape[0]))
        positions, sources = [], []
        for output, matches in enumerate(indices):
            for b, (pred_idx, tgt_idx) in enumerate(matches):
                if pred_idx.numel():
                    positions.append((output * batch + b) * num_queries + pred_idx.cpu())
                    sources.append(offsets[b] + tgt_idx.cpu())
        if positions:
            all_labels = torch.cat([target["labels"] for target in targets]).to(device)
            target_classes[torch.cat(positions).to(device, non_blocking=True)] = \
                all_labels[torch.cat(sources).to(device, non_blocking=True)]
        nll = F.cross_entropy(logits.reshape(-1, num_classes), target_classes, weight=self.empty_weight,
                              reduction="none")
        weights = self.empty_weight[target_classes]
        return nll.reshape(num_outputs, -1).sum(1) / weights.reshape(num_outputs, -1).sum(1)

    def matched_frame_masks(
        self,
        pred_masks: Sequence[torch.Tensor],
        targets: list[dict],
        indices: Sequence[list[tuple[torch.Tensor, torch.Tensor]]],
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """Matched prediction/target pairs of L predictions as separate frame-masks.

        Args:
            pred_masks: L tensors (B, Q, T, h, w) of mask logits.

        Returns:
            (pred (M, 1, h, w), target (M, 1, H, W), output (M,) long) with M = Σ_l Σ_b K_b · T_t(b) rows
            ordered clip, prediction, matched pair, frame; the target in the prediction's dtype; `output[m]`
            is the prediction row m belongs to (on the device). None when nothing is matched.
        """
        preds, tgts, owners = [], [], []
        for b, target in enumerate(targets):
            frame_indices = target_frame_indices(target, pred_masks[0].shape[2])
            chosen = []
            for output, (masks, matches) in enumerate(zip(pred_masks, indices)):
                pred_idx, tgt_idx = matches[b]
                if pred_idx.numel() == 0:
                    continue
                clip = select_frames(masks[b], frame_indices)  # (Q, T_t, h, w)
                preds.append(clip[pred_idx.to(clip.device, non_blocking=True)].flatten(0, 1))
                chosen.append(tgt_idx.cpu())
                owners.append(torch.full((pred_idx.numel() * clip.shape[1],), output, dtype=torch.int64))
            if chosen:
                masks = target["masks"]
                tgts.append(masks[torch.cat(chosen).to(masks.device, non_blocking=True)].flatten(0, 1))
        if not preds:
            return None
        sizes = {tuple(t.shape[-2:]) for t in tgts}
        if len(sizes) > 1:
            raise ValueError(f"target masks of one batch must share the padded size, got {sorted(sizes)}")
        pred = torch.cat(preds)[:, None]
        tgt = torch.cat(tgts)[:, None].to(device=pred.device, dtype=pred.dtype)
        return pred, tgt, torch.cat(owners).to(pred.device, non_blocking=True)

    def loss_masks(
        self,
        pred_masks: Sequence[torch.Tensor],
        targets: list[dict],
        indices: Sequence[list[tuple[torch.Tensor, torch.Tensor]]],
        num_masks: float,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss_mask, loss_dice) of L predictions on importance-sampled points -> two (L,) tensors.

        All matched frame-masks of all predictions are importance-sampled, sampled and scored together;
        each prediction's per-mask losses are then summed into its own entry.
        """
        rows = self.matched_frame_masks(pred_masks, targets, indices)
        num_outputs = len(pred_masks)
        if rows is None:
            zero = sum(masks.sum() for masks in pred_masks) * 0.0  # keeps the graph connected
            return zero.expand(num_outputs).clone(), zero.expand(num_outputs).clone()
        pred, tgt, owner = rows
        with torch.no_grad():
            point_coords = get_uncertain_point_coords_with_randomness(
                pred, calculate_uncertainty, self.num_points, self.oversample_ratio, self.importance_sample_ratio
            )
            point_labels = point_sample(tgt, point_coords, align_corners=False)[:, 0]  # (M, P)
        point_logits = point_sample(pred, point_coords, align_corners=False)[:, 0]  # (M, P)
        per_output = pred.new_zeros((2, num_outputs))
        per_mask = torch.stack((sigmoid_ce_per_mask(point_logits, point_labels),
                                dice_per_mask(point_logits, point_labels)))  # (2, M)
        per_output = per_output.index_add(1, owner, per_mask) / num_masks
        return per_output[0], per_output[1]

    def losses_for_predictions(
        self, predictions: Sequence[dict], targets: list[dict], num_masks: float
    ) -> list[dict[str, torch.Tensor]]:
        """Match L predictions of the batch and return each one's three unsuffixed losses.

        A matcher with `match_predictions` (`HungarianMatcher`) matches them all with one read-back of
        the costs; any other matcher is called once per prediction. The losses of all predictions are
        computed together (a few dozen operations per training step instead of a few dozen per prediction).
        """
        plain = [{"pred_logits": p["pred_logits"], "pred_masks": p["pred_masks"]} for p in predictions]
        if hasattr(self.matcher, "match_predictions"):
            indices = self.matcher.match_predictions(plain, targets)
        else:
            indices = [self.matcher(prediction, targets) for prediction in plain]
        loss_ce = self.loss_labels([p["pred_logits"] for p in plain], targets, indices)
        loss_mask, loss_dice = self.loss_masks([p["pred_masks"] for p in plain], targets, indices, num_masks)
        return [{"loss_ce": loss_ce[i], "loss_mask": loss_mask[i], "loss_dice": loss_dice[i]}
                for i in range(len(plain))]

    def forward(self, outputs: dict, targets: list[dict]) -> dict[str, torch.Tensor]:
        """Unweighted losses of a batch.

        Args:
            outputs: `pred_logits` (B, Q, num_classes + 1), `pred_masks` (B, Q, T, h, w) mask logits at
                stride 4 of the padded input, optional `aux_outputs`: list of dicts with the same two keys.
            targets: B dicts: `labels` (N,) long in [0, num_classes), `masks` (N, T_t, H, W) bool/float at
                the padded input resolution, `frame_indices` (T_t,) long (the clip frames the masks
                describe). N = 0 is allowed (every query then targets no-object).

        Returns:
            {"loss_ce", "loss_mask", "loss_dice"} and `_{i}` copies for every aux output: scalar tensors.
            The final prediction and all aux predictions are matched and scored together
            (`losses_for_predictions`); each prediction still has its own matching and its own points.
        """
        self._check(outputs, targets)
        num_masks = count_target_instances(targets, outputs["pred_logits"].device)
        predictions = [outputs, *(outputs.get("aux_outputs") or [])]
        per_prediction = self.losses_for_predictions(predictions, targets, num_masks)
        losses = dict(per_prediction[0])
        for i, aux_losses in enumerate(per_prediction[1:]):
            losses.update({f"{name}_{i}": value for name, value in aux_losses.items()})
        return losses

    def weighted_total(self, losses: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Σ self.weight_dict[k] · losses[k] (see the module-level `weighted_total`)."""
        return weighted_total(losses, self.weight_dict)

    def _check(self, outputs: dict, targets: list[dict]) -> None:
        pred_logits, pred_masks = outputs["pred_logits"], outputs["pred_masks"]
        if pred_logits.dim() != 3 or pred_logits.shape[-1] != self.num_classes + 1:
            raise ValueError(f"pred_logits must be (B, Q, {self.num_classes + 1}), got {tuple(pred_logits.shape)}")
        if pred_masks.dim() != 5 or pred_masks.shape[:2] != pred_logits.shape[:2]:
            raise ValueError(f"pred_masks must be (B, Q, T, h, w) matching pred_logits, got {tuple(pred_masks.shape)}")
        if len(targets) != pred_logits.shape[0]:
            raise ValueError(f"{len(targets)} targets for a batch of {pred_logits.shape[0]} clips")
        for b, target in enumerate(targets):
            labels, masks = target["labels"], target["masks"]
            if labels.dim() != 1 or masks.dim() != 4 or masks.shape[0] != labels.shape[0]:
                raise ValueError(
                    f"target {b}: labels must be (N,) and masks (N, T_t, H, W), got {tuple(labels.shape)} "
                    f"and {tuple(masks.shape)}"
                )
            # checked where they are on the host (`train` moves targets to the device after the data loader
            # built them): reading them back from a GPU would make every training step wait for it here
            if labels.numel() and labels.device.type == "cpu" and \
                    (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
                raise ValueError(f"target {b}: labels must be in [0, {self.num_classes}), got {labels.tolist()}")

    def extra_repr(self) -> str:
        return (f"num_classes={self.num_classes}, eos_coef={self.eos_coef}, num_points={self.num_points}, "
                f"oversample_ratio={self.oversample_ratio}, importance_sample_ratio={self.importance_sample_ratio}")


def build_criterion(train_cfg: "TrainConfig", num_aux: int) -> SetCriterion:
    """The training criterion of a recipe (official: `VideoMaskFormer.from_config`): a Hungarian matcher and loss
    weights from `train_cfg`, deep supervision over `num_aux` auxiliary outputs (the model config's
    `dec_layers`), one foreground class ("sounding object")."""
    matcher = HungarianMatcher(cost_class=train_cfg.class_weight, cost_mask=train_cfg.mask_weight,
                               cost_dice=train_cfg.dice_weight, num_points=train_cfg.train_num_points)
    weight_dict = default_weight_dict(num_aux, class_weight=train_cfg.class_weight, mask_weight=train_cfg.mask_weight,
                                      dice_weight=train_cfg.dice_weight)
    return SetCriterion(num_classes=1, matcher=matcher, weight_dict=weight_dict, eos_coef=train_cfg.no_object_weight,
                        num_points=train_cfg.train_num_points, oversample_ratio=train_cfg.oversample_ratio,
                        importance_sample_ratio=train_cfg.importance_sample_ratio)
