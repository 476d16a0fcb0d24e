"""The training criterion: cross-entropy, point-sampled mask/dice losses, frame slicing, batching, deep supervision.

Reference values are computed here independently: dense per-pixel losses with F.interpolate, an explicit
numpy bilinear sampler, and a hand-written weighted cross-entropy.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import models.ovavss.criterion as criterion_module
from models.ovavss.criterion import SetCriterion, default_weight_dict, weighted_total
from models.ovavss.matcher import HungarianMatcher

torch.set_num_threads(1)


class FixedMatcher:
    """A matcher stub that returns given (pred_idx, tgt_idx) pairs and records its calls."""

    def __init__(self, pairs: list[tuple[list[int], list[int]]]) -> None:
        self.pairs = [(torch.tensor(p, dtype=torch.long), torch.tensor(t, dtype=torch.long)) for p, t in pairs]
        self.calls = 0

    def __call__(self, outputs, targets):
        self.calls += 1
        return self.pairs


def bilinear_zeros(image: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Sample an (H, W) image at normalised (x, y): pixel i has its centre at (i + 0.5) / size, zeros outside."""
    height, width = image.shape
    ix = np.asarray(xs, dtype=np.float64) * width - 0.5
    iy = np.asarray(ys, dtype=np.float64) * height - 0.5
    x0 = np.floor(ix).astype(np.int64)
    y0 = np.floor(iy).astype(np.int64)
    fx, fy = ix - x0, iy - y0
    out = np.zeros(ix.shape, dtype=np.float64)
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            yy, xx = y0 + dy, x0 + dx
            inside = (yy >= 0) & (yy < height) & (xx >= 0) & (xx < width)
            values = np.zeros(ix.shape, dtype=np.float64)
            values[inside] = image[yy[inside], xx[inside]]
            out += wy * wx * values
    return out


def bce(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    return np.logaddexp(0, logits) - targets * logits


def dice(logits: np.ndarray, targets: np.ndarray) -> float:
    probs = 1 / (1 + np.exp(-logits))
    return float(1 - (2 * (probs * targets).sum() + 1) / (probs.sum() + targets.sum() + 1))


def target(masks: torch.Tensor, frame_indices=None) -> dict:
    frames = torch.arange(masks.shape[1]) if frame_indices is None else torch.tensor(frame_indices)
    return {"labels": torch.zeros(masks.shape[0], dtype=torch.long), "masks": masks, "frame_indices": frames}


def smooth_logits(generator, num_queries, num_frames, size, amplitude=4.0) -> torch.Tensor:
    """(Q, T, h, w) low-frequency logits that fade to 0 at the border (where zero padding would bias sampling)."""
    coarse = torch.randn(num_queries * num_frames, 1, 4, 4, generator=generator, dtype=torch.float64)
    field = F.interpolate(coarse, size=size, mode="bicubic", align_corners=True).reshape(num_queries, num_frames, *size)
    ys = torch.sin(math.pi * (torch.arange(size[0], dtype=torch.float64) + 0.5) / size[0])
    xs = torch.sin(math.pi * (torch.arange(size[1], dtype=torch.float64) + 0.5) / size[1])
    return (amplitude * field * ys[:, None] * xs[None, :]).float()


def ellipse_masks(generator, num, num_frames, size) -> torch.Tensor:
    """(N, T, H, W) binary ellipses away from the border, moving a little from frame to frame."""
    height, width = size
    yy, xx = torch.meshgrid(torch.arange(height) + 0.5, torch.arange(width) + 0.5, indexing="ij")
    masks = torch.zeros(num, num_frames, height, width)
    for n in range(num):
        cy, cx, ry, rx = (torch.rand(4, generator=generator) * torch.tensor([0.3, 0.3, 0.15, 0.15])
                          + torch.tensor([0.35, 0.35, 0.1, 0.1])).tolist()
        for t in range(num_frames):
            shift = 0.02 * t
            inside = ((yy / height - cy - shift) / ry) ** 2 + ((xx / width - cx) / rx) ** 2 <= 1
            masks[n, t] = inside.float()
    return masks


def dense_mask_losses(pred_masks, targets, pairs, num_masks) -> tuple[float, float]:
    """Σ over matched frame-masks of per-pixel mean BCE / dice at target resolution, / num_masks (float64)."""
    total_bce, total_dice = 0.0, 0.0
    for b, (pred_idx, tgt_idx) in enumerate(pairs):
        frames = targets[b]["frame_indices"]
        height, width = targets[b]["masks"].shape[-2:]
        for q, n in zip(pred_idx, tgt_idx):
            logits = F.interpolate(pred_masks[b, q, frames].double()[None], size=(height, width), mode="bilinear",
                                   align_corners=False)[0].numpy()
            truth = targets[b]["masks"][n].double().numpy()
            for t in range(len(frames)):
                total_bce += bce(logits[t], truth[t]).mean()
                total_dice += dice(logits[t], truth[t])
    return total_bce / num_masks, total_dice / num_masks


# ---------------------------------------------------------------------------------------------------- weights


def test_empty_weight_buffer_is_persistent_and_official():
    criterion = SetCriterion(num_classes=1, matcher=FixedMatcher([]), weight_dict={"loss_ce": 1.0})
    assert list(criterion.state_dict()) == ["empty_weight"]
    assert criterion.state_dict()["empty_weight"].tolist() == pytest.approx([1.0, 0.1])
    assert SetCriterion(num_classes=3, eos_coef=0.25).empty_weight.tolist() == [1.0, 1.0, 1.0, 0.25]


def test_default_weight_dict_and_weighted_total():
    weights = default_weight_dict(9)
    assert len(weights) == 30
    assert weights["loss_ce"] == 2.0 and weights["loss_mask"] == 5.0 and weights["loss_dice"] == 5.0
    assert weights["loss_ce_8"] == 2.0 and weights["loss_mask_0"] == 5.0 and "loss_dice_9" not in weights
    assert default_weight_dict(2, class_weight=1.0, mask_weight=3.0, dice_weight=4.0) == {
        "loss_ce": 1.0, "loss_mask": 3.0, "loss_dice": 4.0,
        "loss_ce_0": 1.0, "loss_mask_0": 3.0, "loss_dice_0": 4.0,
        "loss_ce_1": 1.0, "loss_mask_1": 3.0, "loss_dice_1": 4.0,
    }
    losses = {"loss_ce": torch.tensor(0.5), "loss_mask": torch.tensor(0.25), "loss_dice_0": torch.tensor(2.0)}
    assert float(weighted_total(losses, weights)) == pytest.approx(2 * 0.5 + 5 * 0.25 + 5 * 2.0)
    assert float(SetCriterion(weight_dict=weights).weighted_total(losses)) == pytest.approx(12.25)
    with pytest.raises(ValueError, match="loss_ce_9"):
        weighted_total({"loss_ce_9": torch.tensor(1.0)}, weights)


# ---------------------------------------------------------------------------------------------------- loss_ce


def test_loss_ce_matches_hand_computation():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 2, generator=generator)
    pairs = [([3, 1], [0, 1]), ([], [])]
    targets = [target(torch.ones(2, 1, 8, 8)), target(torch.zeros(0, 1, 8, 8))]
    criterion = SetCriterion(matcher=FixedMatcher(pairs), weight_dict=default_weight_dict(0), num_points=16)
    losses = criterion({"pred_logits": logits, "pred_masks": torch.zeros(2, 4, 1, 2, 2)}, targets)

    numerator, denominator = 0.0, 0.0
    for b in range(2):
        for q in range(4):
            matched = q in pairs[b][0]
            cls, weight = (0, 1.0) if matched else (1, 0.1)
            l0, l1 = float(logits[b, q, 0]), float(logits[b, q, 1])
            log_prob = (l0 if cls == 0 else l1) - math.log(math.exp(l0) + math.exp(l1))
            numerator += -weight * log_prob
            denominator += weight
    assert float(losses["loss_ce"]) == pytest.approx(numerator / denominator, rel=1e-6)


def test_no_targets_gives_zero_mask_losses_and_finite_gradients():
    logits = torch.randn(1, 5, 2, requires_grad=True)
    masks = torch.randn(1, 5, 2, 4, 4, requires_grad=True)
    criterion = SetCriterion(matcher=HungarianMatcher(num_points=20), weight_dict=default_weight_dict(0), num_points=20)
    losses = criterion({"pred_logits": logits, "pred_masks": masks}, [target(torch.zeros(0, 2, 16, 16))])
    assert float(losses["loss_mask"].detach()) == 0.0 and float(losses["loss_dice"].detach()) == 0.0
    expected_ce = F.cross_entropy(logits[0].detach(), torch.ones(5, dtype=torch.long))  # all no-object, equal weights
    assert float(losses["loss_ce"].detach()) == pytest.approx(float(expected_ce), rel=1e-6)
    criterion.weighted_total(losses).backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    assert masks.grad is not None and float(masks.grad.abs().sum()) == 0.0


# ------------------------------------------------------------------------------------------------ mask losses


def _two_clip_problem(seed=0, num_frames=3, pred_size=(24, 24), target_size=(96, 96)):
    generator = torch.Generator().manual_seed(seed)
    num_queries = 4
    pred_masks = torch.stack([smooth_logits(generator, num_queries, num_frames, pred_size) for _ in range(2)])
    targets = [target(ellipse_masks(generator, 2, num_frames, target_size)),
               target(ellipse_masks(generator, 1, num_frames, target_size))]
    pairs = [([0, 2], [1, 0]), ([3], [0])]
    logits = torch.randn(2, num_queries, 2, generator=generator)
    return {"pred_logits": logits, "pred_masks": pred_masks}, targets, pairs


def test_mask_losses_at_fixed_points_match_explicit_sampling(monkeypatch):
    """With the point choice fixed, loss_mask / loss_dice are exactly the per-frame sums / instances."""
    outputs, targets, pairs = _two_clip_problem()
    generator = torch.Generator().manual_seed(5)
    points = torch.rand(300, 2, generator=generator)
    monkeypatch.setattr(criterion_module, "get_uncertain_point_coords_with_randomness",
                        lambda logits, *args: points[None].expand(logits.shape[0], -1, -1))
    criterion = SetCriterion(matcher=FixedMatcher(pairs), weight_dict=default_weight_dict(0), num_points=300)
    losses = criterion(outputs, targets)

    xs, ys = points[:, 0].numpy(), points[:, 1].numpy()
    total_bce, total_dice = 0.0, 0.0
    for b, (pred_idx, tgt_idx) in enumerate(pairs):
        for q, n in zip(pred_idx, tgt_idx):
            for t in range(3):
                p = bilinear_zeros(outputs["pred_masks"][b, q, t].double().numpy(), xs, ys)
                g = bilinear_zeros(targets[b]["masks"][n, t].double().numpy(), xs, ys)
                total_bce += bce(p, g).mean()
                total_dice += dice(p, g)
    assert float(losses["loss_mask"]) == pytest.approx(total_bce / 3, rel=1e-5)  # 3 instances, 9 frame-masks
    assert float(losses["loss_dice"]) == pytest.approx(total_dice / 3, rel=1e-5)


def test_uniform_point_losses_agree_with_dense_losses():
    """Uniform random points (importance_sample_ratio=0) estimate the dense per-pixel losses.

    Tolerance: 1.5 % relative (measured: at most 0.4 % over 4 problems x 3 seeds). Sources of difference:
    Monte-Carlo noise of 50 000 points per frame-mask, the target being bilinearly interpolated at the points instead of read per pixel (only within
    one target pixel of an ellipse edge), and zero padding in the outer half prediction pixel (logits fade to
    0 there by construction).
    """
    outputs, targets, pairs = _two_clip_problem()
    criterion = SetCriterion(matcher=FixedMatcher(pairs), weight_dict=default_weight_dict(0), num_points=50_000,
                             oversample_ratio=1.0, importance_sample_ratio=0.0)
    torch.manual_seed(0)
    losses = criterion(outputs, targets)
    dense_bce, dense_dice = dense_mask_losses(outputs["pred_masks"], targets, criterion.matcher.pairs, num_masks=3)
    assert float(losses["loss_mask"]) == pytest.approx(dense_bce, rel=0.015)
    assert float(losses["loss_dice"]) == pytest.approx(dense_dice, rel=0.015)


# ---------------------------------------------------------------------------------------------- frame slicing


def test_single_annotated_frame_ignores_other_predicted_frames():
    """A v1s-like clip (target frame_indices [0]) sees only frame 0 of the 5 predicted frames."""
    generator = torch.Generator().manual_seed(2)
    pred_masks = torch.randn(1, 6, 5, 8, 8, generator=generator)
    aux_masks = torch.randn(1, 6, 5, 8, 8, generator=generator)
    logits = torch.randn(1, 6, 2, generator=generator)
    clip_target = target((torch.rand(2, 1, 32, 32, generator=generator) > 0.5).float(), frame_indices=[0])
    criterion = SetCriterion(matcher=HungarianMatcher(num_points=200), weight_dict=default_weight_dict(1),
                             num_points=200)

    def run(masks, aux):
        torch.manual_seed(11)
        outputs = {"pred_logits": logits, "pred_masks": masks,
                   "aux_outputs": [{"pred_logits": logits, "pred_masks": aux}]}
        return {k: float(v) for k, v in criterion(outputs, [clip_target]).items()}

    reference = run(pred_masks, aux_masks)
    changed, changed_aux = pred_masks.clone(), aux_masks.clone()
    changed[:, :, 1:] = torch.randn(1, 6, 4, 8, 8, generator=generator) * 5
    changed_aux[:, :, 1:] = torch.randn(1, 6, 4, 8, 8, generator=generator) * 5
    assert run(changed, changed_aux) == reference
    changed[:, :, 0] += 1.0
    changed_aux[:, :, 0] += 1.0
    moved = run(changed, changed_aux)
    assert moved["loss_mask"] != reference["loss_mask"] and moved["loss_mask_0"] != reference["loss_mask_0"]


def test_frame_indices_select_the_annotated_frames():
    generator = torch.Generator().manual_seed(4)
    pred_masks = torch.randn(1, 5, 5, 8, 8, generator=generator)
    logits = torch.randn(1, 5, 2, generator=generator)
    masks = (torch.rand(3, 2, 32, 32, generator=generator) > 0.5).float()
    criterion = SetCriterion(matcher=HungarianMatcher(num_points=100), weight_dict=default_weight_dict(0),
                             num_points=100)
    torch.manual_seed(1)
    picked = criterion({"pred_logits": logits, "pred_masks": pred_masks}, [target(masks, frame_indices=[4, 1])])
    torch.manual_seed(1)
    sliced = criterion({"pred_logits": logits, "pred_masks": pred_masks[:, :, [4, 1]]}, [target(masks)])
    assert {k: float(v) for k, v in picked.items()} == {k: float(v) for k, v in sliced.items()}


# ------------------------------------------------------------------------------------------------- batching


def test_batch_of_two_is_the_documented_combination_of_single_clips(monkeypatch):
    """loss_mask/dice(B=2) = (n0·L0 + n1·L1)/(n0 + n1); loss_ce(B=2) = (W0·CE0 + W1·CE1)/(W0 + W1)."""
    outputs, targets, pairs = _two_clip_problem(seed=1, pred_size=(10, 10), target_size=(40, 40))
    points = torch.rand(64, 2, generator=torch.Generator().manual_seed(9))
    monkeypatch.setattr(criterion_module, "get_uncertain_point_coords_with_randomness",
                        lambda logits, *args: points[None].expand(logits.shape[0], -1, -1))

    def run(clips):
        criterion = SetCriterion(matcher=FixedMatcher([pairs[b] for b in clips]), weight_dict=default_weight_dict(0))
        sub = {k: v[clips] for k, v in outputs.items()}
        return {k: float(v) for k, v in criterion(sub, [targets[b] for b in clips]).items()}

    both, first, second = run([0, 1]), run([0]), run([1])
    instances = [2, 1]
    ce_weights = [2 * 1.0 + 2 * 0.1, 1 * 1.0 + 3 * 0.1]  # matched queries weigh 1, the 4 - K others 0.1
    for name, weights in (("loss_mask", instances), ("loss_dice", instances), ("loss_ce", ce_weights)):
        expected = (weights[0] * first[name] + weights[1] * second[name]) / sum(weights)
        assert both[name] == pytest.approx(expected, rel=1e-6)
    assert first["loss_mask"] != pytest.approx(second["loss_mask"], rel=1e-3)  # the combination is informative


# ---------------------------------------------------------------------------------- deep supervision, gradients


def test_deep_supervision_keys_and_values(monkeypatch):
    outputs, targets, pairs = _two_clip_problem(seed=2, pred_size=(10, 10), target_size=(40, 40))
    points = torch.rand(64, 2, generator=torch.Generator().manual_seed(3))
    monkeypatch.setattr(criterion_module, "get_uncertain_point_coords_with_randomness",
                        lambda logits, *args: points[None].expand(logits.shape[0], -1, -1))
    generator = torch.Generator().manual_seed(8)
    aux = [{"pred_logits": torch.randn_like(outputs["pred_logits"]),
            "pred_masks": torch.randn(outputs["pred_masks"].shape, generator=generator)} for _ in range(3)]
    matcher = FixedMatcher(pairs)
    criterion = SetCriterion(matcher=matcher, weight_dict=default_weight_dict(3))
    losses = criterion(dict(outputs, aux_outputs=aux), targets)
    assert matcher.calls == 4  # matched separately for the final and every aux prediction
    assert set(losses) == {f"{name}{suffix}" for name in ("loss_ce", "loss_mask", "loss_dice")
                           for suffix in ("", "_0", "_1", "_2")}
    for i, aux_output in enumerate(aux):
        alone = criterion(aux_output, targets)
        for name in ("loss_ce", "loss_mask", "loss_dice"):
            assert float(losses[f"{name}_{i}"]) == pytest.approx(float(alone[name]), rel=1e-6)
    assert float(losses["loss_mask_0"]) != pytest.approx(float(losses["loss_mask"]), rel=1e-3)
    total = criterion.weighted_total(losses)
    assert float(total) == pytest.approx(sum(default_weight_dict(3)[k] * float(v) for k, v in losses.items()))


def test_gradients_are_finite_with_importance_sampling():
    generator = torch.Generator().manual_seed(6)
    num_frames = 5
    logits = torch.randn(2, 8, 2, generator=generator, requires_grad=True)
    masks = torch.randn(2, 8, num_frames, 12, 12, generator=generator, requires_grad=True)
    aux_masks = torch.randn(2, 8, num_frames, 12, 12, generator=generator, requires_grad=True)
    targets = [target(ellipse_masks(generator, 2, num_frames, (48, 48))),
               target(ellipse_masks(generator, 1, 1, (48, 48)), frame_indices=[0])]
    criterion = SetCriterion(matcher=HungarianMatcher(num_points=300), weight_dict=default_weight_dict(1),
                             num_points=300)
    torch.manual_seed(0)
    losses = criterion({"pred_logits": logits, "pred_masks": masks,
                        "aux_outputs": [{"pred_logits": logits, "pred_masks": aux_masks}]}, targets)
    assert all(torch.isfinite(v) and v.dim() == 0 for v in losses.values())
    criterion.weighted_total(losses).backward()
    for tensor in (logits, masks, aux_masks):
        assert torch.isfinite(tensor.grad).all() and float(tensor.grad.abs().sum()) > 0
    # only matched queries (clip 0: 2 of 8, clip 1: 1 of 8) receive mask gradients; clip 1 only on frame 0
    assert int((masks.grad[0].flatten(1).abs().sum(1) > 0).sum()) == 2
    assert int((masks.grad[1].flatten(1).abs().sum(1) > 0).sum()) == 1
    assert float(masks.grad[1, :, 1:].abs().sum()) == 0.0


def test_bad_targets_are_rejected():
    criterion = SetCriterion(matcher=FixedMatcher([([0], [0])]), weight_dict=default_weight_dict(0))
    outputs = {"pred_logits": torch.zeros(1, 2, 2), "pred_masks": torch.zeros(1, 2, 1, 4, 4)}
    bad_label = target(torch.ones(1, 1, 8, 8))
    bad_label["labels"] = torch.tensor([1])
    with pytest.raises(ValueError, match="labels must be in"):
        criterion(outputs, [bad_label])
    with pytest.raises(ValueError, match="pred_logits"):
        criterion({"pred_logits": torch.zeros(1, 2, 3), "pred_masks": outputs["pred_masks"]},
                  [target(torch.ones(1, 1, 8, 8))])


def test_final_and_aux_predictions_scored_together_equal_each_scored_alone(monkeypatch):
    """With the Hungarian matcher (matching all predictions with one read-back of the costs) and the points
    fixed, every prediction's three losses are those it gets alone, and the match differs per prediction."""
    outputs, targets, _ = _two_clip_problem(seed=3, pred_size=(10, 10), target_size=(40, 40))
    generator = torch.Generator().manual_seed(12)
    aux = [{"pred_logits": torch.randn(outputs["pred_logits"].shape, generator=generator),
            "pred_masks": torch.randn(outputs["pred_masks"].shape, generator=generator) * 3} for _ in range(2)]
    loss_points = torch.rand(64, 2, generator=generator)
    monkeypatch.setattr(criterion_module, "get_uncertain_point_coords_with_randomness",
                        lambda logits, *args: loss_points[None].expand(logits.shape[0], -1, -1))
    match_points = torch.rand(2, 3, 50, 2, generator=generator)
    matcher = HungarianMatcher(num_points=50)
    alone_index = [None]

    def fixed_points(num_clips, num_outputs, device):
        return match_points if alone_index[0] is None else match_points[:, alone_index[0]:alone_index[0] + 1]

    monkeypatch.setattr(matcher, "sample_points", fixed_points)
    criterion = SetCriterion(matcher=matcher, weight_dict=default_weight_dict(2), num_points=64)
    together = criterion(dict(outputs, aux_outputs=aux), targets)
    assert set(together) == {f"{name}{suffix}" for name in ("loss_ce", "loss_mask", "loss_dice")
                             for suffix in ("", "_0", "_1")}
    for index, (prediction, suffix) in enumerate(((outputs, ""), (aux[0], "_0"), (aux[1], "_1"))):
        alone_index[0] = index
        alone = criterion({"pred_logits": prediction["pred_logits"], "pred_masks": prediction["pred_masks"]},
                          targets)
        for name in ("loss_ce", "loss_mask", "loss_dice"):
            assert float(together[f"{name}{suffix}"]) == pytest.approx(float(alone[name]), rel=1e-6, abs=1e-7)
    assert float(together["loss_ce_0"]) != pytest.approx(float(together["loss_ce"]), rel=1e-3)
