"""Point sampling, PointRend importance sampling and the Hungarian matcher.

References are written independently here: bilinear sampling with zero padding in numpy float64, matching
costs in numpy, and the optimal assignment by brute force over all permutations.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from models.errors import AVSegError
from models.ovavss.matcher import HungarianMatcher, pairwise_dice_loss, pairwise_sigmoid_ce
from models.ovavss.point_sample import (
    calculate_uncertainty,
    get_uncertain_point_coords_with_randomness,
    point_sample,
)

torch.set_num_threads(1)


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


def sample_tube(tube: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(T, H, W) tube, (P, 2) points -> (T * P,) values, frame-major (frame 0's P points first)."""
    return np.concatenate([bilinear_zeros(frame, points[:, 0], points[:, 1]) for frame in tube])


def reference_cost(logits, pred_tubes, labels, target_tubes, points, weights=(2.0, 5.0, 5.0)) -> np.ndarray:
    """(Q, N) matching cost from first principles (float64)."""
    w_class, w_mask, w_dice = weights
    logits = np.asarray(logits, dtype=np.float64)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    cost = np.zeros((len(pred_tubes), len(target_tubes)))
    for q, pred_tube in enumerate(pred_tubes):
        p = sample_tube(pred_tube, points)
        sig = 1 / (1 + np.exp(-p))
        for n, target_tube in enumerate(target_tubes):
            t = sample_tube(target_tube, points)
            bce = -(t * np.log(sig) + (1 - t) * np.log(1 - sig)).mean()
            dice = 1 - (2 * (sig * t).sum() + 1) / (sig.sum() + t.sum() + 1)
            cost[q, n] = w_mask * bce + w_dice * dice - w_class * probs[q, labels[n]]
    return cost


def brute_force_assignment(cost: np.ndarray) -> tuple[float, dict[int, int]]:
    """Minimum total cost and its assignment {target: query}, trying every injective map."""
    num_queries, num_targets = cost.shape
    best = (np.inf, {})
    if num_targets <= num_queries:
        for queries in itertools.permutations(range(num_queries), num_targets):
            total = sum(cost[q, n] for n, q in enumerate(queries))
            if total < best[0]:
                best = (total, {n: q for n, q in enumerate(queries)})
    else:
        for targets in itertools.permutations(range(num_targets), num_queries):
            total = sum(cost[q, n] for q, n in enumerate(targets))
            if total < best[0]:
                best = (total, {n: q for q, n in enumerate(targets)})
    return best


# ---------------------------------------------------------------------------------------------- point_sample


def test_point_sample_matches_explicit_bilinear_with_zero_padding():
    generator = torch.Generator().manual_seed(0)
    image = torch.randn(2, 3, 5, 7, dtype=torch.float64, generator=generator)
    points = torch.rand(2, 50, 2, dtype=torch.float64, generator=generator) * 1.2 - 0.1  # some outside [0, 1]
    sampled = point_sample(image, points)
    assert sampled.shape == (2, 3, 50) and sampled.dtype == torch.float64
    for n in range(2):
        for c in range(3):
            expected = bilinear_zeros(image[n, c].numpy(), points[n, :, 0].numpy(), points[n, :, 1].numpy())
            np.testing.assert_allclose(sampled[n, c].numpy(), expected, rtol=0, atol=1e-12)
    # a grid of points (N, Hg, Wg, 2) gives (N, C, Hg, Wg) with the same values
    grid = points.reshape(2, 5, 10, 2)
    np.testing.assert_allclose(point_sample(image, grid).reshape(2, 3, 50).numpy(), sampled.numpy(), atol=1e-12)


def test_point_sample_at_pixel_centres_returns_pixels():
    image = torch.arange(12, dtype=torch.float64).reshape(1, 1, 3, 4)
    rows = (torch.arange(3, dtype=torch.float64) + 0.5) / 3
    cols = (torch.arange(4, dtype=torch.float64) + 0.5) / 4
    ys, xs = torch.meshgrid(rows, cols, indexing="ij")
    points = torch.stack((xs, ys), dim=-1).reshape(1, 12, 2)
    assert point_sample(image, points)[0, 0].tolist() == pytest.approx(list(range(12)), abs=1e-12)


def test_point_sample_rejects_bad_coordinates():
    with pytest.raises(ValueError, match="point_coords"):
        point_sample(torch.zeros(1, 1, 4, 4), torch.zeros(1, 5, 3))


# ---------------------------------------------------------------------------- uncertain point selection


def _half_maps() -> torch.Tensor:
    """Two 16x16 logit maps: map 0 is 0 (uncertain) on the left half, 10 on the right; map 1 is 0 on the top
    half and −10 on the bottom."""
    maps = torch.zeros(2, 1, 16, 16)
    maps[0, 0, :, 8:] = 10.0
    maps[1, 0, 8:, :] = -10.0
    return maps


def test_uncertain_points_concentrate_where_logits_are_small():
    torch.manual_seed(0)
    num_points = 400
    coords = get_uncertain_point_coords_with_randomness(_half_maps(), calculate_uncertainty, num_points, 3.0, 0.75)
    assert coords.shape == (2, num_points, 2)
    assert float(coords.min()) >= 0 and float(coords.max()) <= 1
    chosen, fresh = coords[:, :300], coords[:, 300:]
    # every importance-sampled point lies where |logit| is exactly 0 (left half of map 0, top half of map 1,
    # excluding the half-pixel band where bilinear interpolation already blends in the other value)
    assert bool((chosen[0, :, 0] < 0.5 - 0.5 / 16).all())
    assert bool((chosen[1, :, 1] < 0.5 - 0.5 / 16).all())
    # the 100 fresh points are uniform: about half of them on either side
    for share in ((fresh[0, :, 0] < 0.5).float().mean(), (fresh[1, :, 1] < 0.5).float().mean()):
        assert 0.3 < float(share) < 0.7
    # uniform only: no concentration
    uniform = get_uncertain_point_coords_with_randomness(_half_maps(), calculate_uncertainty, 4000, 3.0, 0.0)
    assert 0.45 < float((uniform[0, :, 0] < 0.5).float().mean()) < 0.55


def test_uncertain_points_are_the_top_k_of_the_oversampled_candidates():
    generator = torch.Generator().manual_seed(1)
    maps = torch.randn(3, 1, 6, 5, generator=generator)  # distinct values: no ties
    num_points, oversample, ratio = 20, 2.5, 0.6
    torch.manual_seed(7)
    coords = get_uncertain_point_coords_with_randomness(maps, calculate_uncertainty, num_points, oversample, ratio)
    torch.manual_seed(7)
    candidates = torch.rand(3, 50, 2)  # the function draws its 2.5 x 20 candidates first
    for n in range(3):
        values = bilinear_zeros(maps[n, 0].double().numpy(), candidates[n, :, 0].numpy(), candidates[n, :, 1].numpy())
        top = np.argsort(np.abs(values))[:12]  # 0.6 x 20 most uncertain
        expected = {tuple(p) for p in candidates[n, top].tolist()}
        assert {tuple(p) for p in coords[n, :12].tolist()} == expected
        assert coords[n, 12:].shape == (8, 2)
        assert not {tuple(p) for p in coords[n, 12:].tolist()} & {tuple(p) for p in candidates[n].tolist()}


def test_uncertain_points_reject_bad_ratios():
    with pytest.raises(ValueError, match="importance_sample_ratio"):
        get_uncertain_point_coords_with_randomness(torch.zeros(1, 1, 4, 4), calculate_uncertainty, 10, 3.0, 1.5)
    with pytest.raises(ValueError, match="oversample_ratio"):
        get_uncertain_point_coords_with_randomness(torch.zeros(1, 1, 4, 4), calculate_uncertainty, 10, 0.5, 0.5)


# ---------------------------------------------------------------------------------------------------- matcher


def _random_problem(generator, num_queries, num_targets, num_frames, frame_indices, size=(6, 6), target_size=(12, 12)):
    logits = torch.randn(num_queries, 2, generator=generator) * 2
    pred_masks = torch.randn(num_queries, num_frames, *size, generator=generator) * 3
    target_masks = (torch.rand(num_targets, len(frame_indices), *target_size, generator=generator) > 0.6).float()
    target = {
        "labels": torch.zeros(num_targets, dtype=torch.long),
        "masks": target_masks,
        "frame_indices": torch.tensor(frame_indices, dtype=torch.long),
    }
    return logits, pred_masks, target


@pytest.mark.parametrize(
    "num_queries,num_targets,frame_indices",
    [(5, 1, [0, 1, 2]), (5, 3, [0, 2]), (6, 4, [1]), (4, 4, [2, 0]), (3, 5, [0, 1, 2])],
)
def test_matcher_finds_the_brute_force_optimum(num_queries, num_targets, frame_indices):
    generator = torch.Generator().manual_seed(num_queries * 10 + num_targets)
    batch = [_random_problem(generator, num_queries, num_targets, 3, frame_indices) for _ in range(2)]
    outputs = {
        "pred_logits": torch.stack([logits for logits, _, _ in batch]),
        "pred_masks": torch.stack([masks for _, masks, _ in batch]),
    }
    targets = [target for _, _, target in batch]
    num_points = 64
    matcher = HungarianMatcher(num_points=num_points)
    torch.manual_seed(123)
    indices = matcher(outputs, targets)
    torch.manual_seed(123)
    drawn = torch.rand(len(batch), 1, num_points, 2)  # `sample_points`: (clips, predictions, P, 2) in one draw
    points = [drawn[b, 0].double().numpy() for b in range(len(batch))]

    for (logits, pred_masks, target), (pred_idx, tgt_idx), clip_points in zip(batch, indices, points):
        pred_tubes = pred_masks[:, target["frame_indices"]].double().numpy()
        cost = reference_cost(logits.numpy(), pred_tubes, target["labels"].numpy(), target["masks"].double().numpy(),
                              clip_points)
        np.testing.assert_allclose(
            matcher.cost_matrix(logits, pred_masks[:, target["frame_indices"]], target["labels"], target["masks"],
                                torch.from_numpy(clip_points).float()).double().numpy(),
            cost, rtol=1e-5, atol=1e-5,
        )
        best_total, best = brute_force_assignment(cost)
        assert pred_idx.dtype == torch.int64 and tgt_idx.dtype == torch.int64
        assert len(pred_idx) == min(num_queries, num_targets)
        assert pred_idx.tolist() == sorted(pred_idx.tolist())
        assert {int(n): int(q) for q, n in zip(pred_idx, tgt_idx)} == best
        assert float(cost[pred_idx.numpy(), tgt_idx.numpy()].sum()) == pytest.approx(best_total, rel=1e-9)


def test_matcher_pairs_identical_masks():
    generator = torch.Generator().manual_seed(3)
    num_frames, num_targets, num_queries = 2, 3, 7
    target_masks = torch.zeros(num_targets, num_frames, 32, 32)
    boxes = [(2, 12, 3, 14), (16, 30, 4, 12), (8, 20, 18, 30)]  # y0, y1, x0, x1 (distinct, overlapping a little)
    for n, (y0, y1, x0, x1) in enumerate(boxes):
        target_masks[n, 0, y0:y1, x0:x1] = 1
        target_masks[n, 1, y0 + 2:y1, x0:x1 - 2] = 1  # the object moves between frames
    # queries 5, 1, 3 predict targets 0, 1, 2 as confident logits at stride 4; the others are noise
    pred_masks = torch.randn(num_queries, num_frames, 8, 8, generator=generator)
    permutation = [5, 1, 3]
    for n, q in enumerate(permutation):
        pooled = torch.nn.functional.avg_pool2d(target_masks[n], 4)
        pred_masks[q] = 12.0 * (2 * pooled - 1)
    outputs = {"pred_logits": torch.zeros(1, num_queries, 2), "pred_masks": pred_masks[None]}
    target = {"labels": torch.zeros(num_targets, dtype=torch.long), "masks": target_masks,
              "frame_indices": torch.arange(num_frames)}
    torch.manual_seed(0)
    ((pred_idx, tgt_idx),) = HungarianMatcher(num_points=1000)(outputs, [target])
    assert {int(n): int(q) for q, n in zip(pred_idx, tgt_idx)} == dict(enumerate(permutation))


def test_matcher_with_no_targets():
    outputs = {"pred_logits": torch.randn(2, 4, 2), "pred_masks": torch.randn(2, 4, 1, 5, 5)}
    empty = {"labels": torch.zeros(0, dtype=torch.long), "masks": torch.zeros(0, 1, 20, 20),
             "frame_indices": torch.tensor([0])}
    one = {"labels": torch.zeros(1, dtype=torch.long), "masks": torch.ones(1, 1, 20, 20),
           "frame_indices": torch.tensor([0])}
    indices = HungarianMatcher(num_points=50)(outputs, [empty, one])
    assert [len(p) for p, _ in indices] == [0, 1]
    assert indices[0][0].dtype == torch.int64 and indices[0][1].dtype == torch.int64
    assert indices[1][1].tolist() == [0]


def test_matcher_rejects_non_finite_predictions_and_bad_frames():
    target = {"labels": torch.zeros(1, dtype=torch.long), "masks": torch.ones(1, 2, 8, 8),
              "frame_indices": torch.tensor([0, 1])}
    outputs = {"pred_logits": torch.zeros(1, 3, 2), "pred_masks": torch.full((1, 3, 2, 4, 4), float("nan"))}
    with pytest.raises(AVSegError, match="not finite"):
        HungarianMatcher(num_points=10)(outputs, [target])
    outputs["pred_masks"] = torch.zeros(1, 3, 2, 4, 4)
    with pytest.raises(ValueError, match="out of range"):
        HungarianMatcher(num_points=10)(outputs, [dict(target, frame_indices=torch.tensor([0, 2]))])
    with pytest.raises(ValueError, match="one frame per target mask frame"):
        HungarianMatcher(num_points=10)(outputs, [dict(target, frame_indices=torch.tensor([0]))])


def test_pairwise_bce_identity_matches_the_definition_in_float64():
    """softplus(x)·1 − x·t summed = Σ [t·BCE(x, 1) + (1 − t)·BCE(x, 0)], also for fractional targets and large
    logits; leading (batch) dimensions are carried through."""
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 40, generator=generator, dtype=torch.float64) * 8
    logits[0, 0, :4] = torch.tensor([40.0, -40.0, 90.0, -90.0], dtype=torch.float64)
    targets = torch.rand(3, 4, 40, generator=generator, dtype=torch.float64)
    targets[1] = (targets[1] > 0.5).double()
    x, t = logits.numpy(), targets.numpy()
    positive, negative = np.logaddexp(0, -x), np.logaddexp(0, x)
    expected = (np.einsum("lqm,lnm->lqn", positive, t) + np.einsum("lqm,lnm->lqn", negative, 1 - t)) / x.shape[-1]
    # the identity subtracts two sums of up to 90 per value: float64 cancellation leaves ~1e-11
    np.testing.assert_allclose(pairwise_sigmoid_ce(logits, targets).numpy(), expected, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(pairwise_sigmoid_ce(logits[2], targets[2]).numpy(), expected[2], rtol=1e-10,
                               atol=1e-10)
    sig = 1 / (1 + np.exp(-x))
    dice = 1 - (2 * np.einsum("lqm,lnm->lqn", sig, t) + 1) / (sig.sum(-1)[:, :, None] + t.sum(-1)[:, None, :] + 1)
    np.testing.assert_allclose(pairwise_dice_loss(logits, targets).numpy(), dice, rtol=1e-12, atol=1e-12)


def test_matching_several_predictions_at_once_equals_matching_each_alone(monkeypatch):
    """`match_predictions` (deep supervision: one read-back for all) = `forward` of every prediction with the
    same points; its stacked costs equal `cost_matrix` per prediction and the float64 reference."""
    generator = torch.Generator().manual_seed(21)
    num_outputs, num_points = 3, 48
    frame_indices = [[0, 2], [1]]
    clips = [[_random_problem(generator, 6, n, 3, frames) for _ in range(num_outputs)]
             for n, frames in zip((3, 2), frame_indices)]
    empty = {"labels": torch.zeros(0, dtype=torch.long), "masks": torch.zeros(0, 1, 12, 12),
             "frame_indices": torch.tensor([0])}
    targets = [clips[0][0][2], empty, clips[1][0][2]]  # the middle clip has nothing to match
    predictions = []
    for output in range(num_outputs):
        logits = [clips[0][output][0], torch.randn(6, 2, generator=generator), clips[1][output][0]]
        masks = [clips[0][output][1], torch.randn(6, 3, 6, 6, generator=generator), clips[1][output][1]]
        predictions.append({"pred_logits": torch.stack(logits), "pred_masks": torch.stack(masks)})
    points = torch.rand(2, num_outputs, num_points, 2, generator=generator)  # 2 annotated clips
    matcher = HungarianMatcher(num_points=num_points)
    current = [0]  # the prediction matched alone

    def fixed_points(num_clips, outputs_, device):
        assert num_clips == 2  # only annotated clips get points
        return points if outputs_ == num_outputs else points[:, current[0]:current[0] + 1]

    monkeypatch.setattr(matcher, "sample_points", fixed_points)
    together = matcher.match_predictions(predictions, targets)
    assert len(together) == num_outputs and all(len(matches) == 3 for matches in together)
    for output, prediction in enumerate(predictions):
        current[0] = output
        alone = matcher(prediction, targets)
        for (p1, t1), (p2, t2) in zip(together[output], alone):
            assert torch.equal(p1, p2) and torch.equal(t1, t2)
        assert together[output][1][0].numel() == 0
        for slot, b in enumerate((0, 2)):
            target = targets[b]
            selected = prediction["pred_masks"][b][:, target["frame_indices"]]
            reference = reference_cost(prediction["pred_logits"][b].numpy(), selected.double().numpy(),
                                       target["labels"].numpy(), target["masks"].double().numpy(),
                                       points[slot, output].double().numpy())
            single = matcher.cost_matrix(prediction["pred_logits"][b], selected, target["labels"], target["masks"],
                                         points[slot, output])
            np.testing.assert_allclose(single.double().numpy(), reference, rtol=1e-5, atol=1e-5)
            best_total, best = brute_force_assignment(reference)
            pred_idx, tgt_idx = together[output][b]
            assert {int(n): int(q) for q, n in zip(pred_idx, tgt_idx)} == best
    stacked = matcher.stacked_cost_matrices(
        torch.stack([p["pred_logits"][0] for p in predictions]),
        [p["pred_masks"][0][:, [0, 2]] for p in predictions], targets[0]["labels"], targets[0]["masks"], points[0])
    for output, prediction in enumerate(predictions):
        single = matcher.cost_matrix(prediction["pred_logits"][0], prediction["pred_masks"][0][:, [0, 2]],
                                     targets[0]["labels"], targets[0]["masks"], points[0, output])
        torch.testing.assert_close(stacked[output], single, rtol=1e-6, atol=1e-6)


def test_matching_predictions_of_different_shapes_is_refused():
    target = {"labels": torch.zeros(1, dtype=torch.long), "masks": torch.ones(1, 1, 8, 8),
              "frame_indices": torch.tensor([0])}
    first = {"pred_logits": torch.zeros(1, 3, 2), "pred_masks": torch.zeros(1, 3, 1, 4, 4)}
    second = {"pred_logits": torch.zeros(1, 3, 2), "pred_masks": torch.zeros(1, 3, 1, 2, 2)}
    with pytest.raises(ValueError, match="same shapes"):
        HungarianMatcher(num_points=10).match_predictions([first, second], [target])
