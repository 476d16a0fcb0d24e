"""models.metrics against straightforward float64 loops, a torch.histc re-statement and hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from models.data.classes import BASE_IDS, NOVEL_IDS
from models.metrics import (
    AVSBenchFrameMetrics,
    BinaryMetrics,
    ConfusionMatrix,
    harmonic_mean,
)

torch.set_num_threads(1)
N = 71


# ---------------------------------------------------------------- independent references (plain loops)


def reference_gzsl(frames):
    """Dataset-level IoU per class by explicit counting; returns (iou list, miou, base, novel, harmonic)."""
    iou = []
    for c in range(N):
        tp = gt_area = pred_area = 0
        for gt, pred in frames:
            tp += int(np.sum((gt == c) & (pred == c)))
            gt_area += int(np.sum(gt == c))
            pred_area += int(np.sum(pred == c))
        union = gt_area + pred_area - tp
        iou.append(float("nan") if union == 0 else tp / union)

    def mean_of(ids):
        vals = [iou[i] for i in ids if not math.isnan(iou[i])]
        return sum(vals) / len(vals) if vals else float("nan")

    base, novel = mean_of(BASE_IDS), mean_of(NOVEL_IDS)
    if math.isnan(base) or math.isnan(novel) or base + novel == 0:
        harmonic = 0.0
    else:
        harmonic = 2 * base * novel / (base + novel)
    return iou, mean_of(range(N)), base, novel, harmonic


def reference_frame_metrics(frames, beta2=0.3):
    """AVSBench per-frame metrics by loops: classes 1..70 in bins 0..69, bin 70 always 0."""
    iou_sum = [0.0] * N
    f_sum = [0.0] * N
    count = [0] * N
    for gt, pred in frames:
        pred = pred * (gt > 0)
        for c in range(1, N):
            inter = int(np.sum((pred == c) & (gt == c)))
            p_area = int(np.sum(pred == c))
            g_area = int(np.sum(gt == c))
            union = p_area + g_area - inter
            if union > 0:
                count[c - 1] += 1
                iou_sum[c - 1] += inter / union
            if inter > 0:
                precision, recall = inter / p_area, inter / g_area
                f_sum[c - 1] += (1 + beta2) * precision * recall / (beta2 * precision + recall)
    per_iou = [s / n if n else 0.0 for s, n in zip(iou_sum, count)]
    per_f = [s / n if n else 0.0 for s, n in zip(f_sum, count)]
    return per_iou, per_f, count


def official_style_histc(frames, beta2=0.3):
    """The OV-AVSS per-frame procedure re-stated with torch.histc(bins=71, min=1, max=71), float32."""
    ious = torch.zeros(N)
    fscores = torch.zeros(N)
    counts = torch.zeros(N)
    for gt, pred in frames:
        target = torch.from_numpy(gt).float()
        predict = torch.from_numpy(pred).float() * (target > 0).float()
        intersection = predict * (predict == target).float()
        a_inter = torch.histc(intersection, bins=N, min=1, max=N)
        a_pred = torch.histc(predict, bins=N, min=1, max=N)
        a_lab = torch.histc(target, bins=N, min=1, max=N)
        a_union = a_pred + a_lab - a_inter
        ious += a_inter / (2.220446049250313e-16 + a_union)
        counts[a_union > 0] += 1
        precision = a_inter / a_pred
        recall = a_inter / a_lab
        f = (1 + beta2) * precision * recall / (beta2 * precision + recall)
        f[torch.isnan(f)] = 0
        fscores += f
    miou_pc = ious / counts
    miou_pc[torch.isnan(miou_pc)] = 0
    f_pc = fscores / counts
    f_pc[torch.isnan(f_pc)] = 0
    return miou_pc.double().numpy(), f_pc.double().numpy()


def random_frames(seed, num_frames=6, shape=(20, 24)):
    """Random maps with a few GT classes, one class only predicted (55) and many classes absent."""
    rng = np.random.default_rng(seed)
    gt_classes = np.array([0, 0, 3, 7, 12, 40])
    pred_classes = np.array([0, 3, 7, 12, 40, 55])
    frames = []
    for _ in range(num_frames):
        gt = rng.choice(gt_classes, size=shape)
        pred = np.where(rng.random(shape) < 0.6, gt, rng.choice(pred_classes, size=shape))
        frames.append((gt.astype(np.uint8), pred.astype(np.uint8)))
    return frames


# ---------------------------------------------------------------- ConfusionMatrix


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_confusion_matrix_matches_reference(seed):
    frames = random_frames(seed)
    cm = ConfusionMatrix()
    for gt, pred in frames:
        cm.update(gt, pred)
    iou, miou, base, novel, harmonic = reference_gzsl(frames)
    np.testing.assert_allclose(cm.per_class_iou, iou, rtol=0, atol=1e-12, equal_nan=True)
    assert cm.miou == pytest.approx(miou, abs=1e-12)
    assert cm.base_miou == pytest.approx(base, abs=1e-12)
    assert cm.novel_miou == pytest.approx(novel, abs=1e-12)
    assert cm.harmonic == pytest.approx(harmonic, abs=1e-12)
    scores = cm.scores()
    assert (scores.miou, scores.base_miou, scores.novel_miou) == (cm.miou, cm.base_miou, cm.novel_miou)
    # absent classes are NaN, the predicted-only class 55 is 0 and counts
    assert math.isnan(cm.per_class_iou[1]) and math.isnan(cm.per_class_iou[70])
    assert cm.per_class_iou[55] == 0.0
    assert cm.matrix.sum() == sum(gt.size for gt, _ in frames)


def test_confusion_matrix_perfect_prediction():
    frames = [(gt, gt.copy()) for gt, _ in random_frames(3)]
    cm = ConfusionMatrix()
    for gt, pred in frames:
        cm.update(gt, pred)
    present = {0, 3, 7, 12, 40}
    for c in range(N):
        assert cm.per_class_iou[c] == 1.0 if c in present else math.isnan(cm.per_class_iou[c])
    assert cm.miou == cm.base_miou == cm.novel_miou == cm.harmonic == 1.0


def test_all_background_prediction_hand_computed():
    gt = np.zeros((10, 10), dtype=np.uint8)
    gt[:2, :] = 2  # airplane (base), 20 px
    gt[2:5, :] = 1  # accordion (novel), 30 px; background 50 px
    pred = np.zeros_like(gt)
    cm = ConfusionMatrix()
    cm.update(gt, pred)
    assert cm.per_class_iou[0] == 0.5  # 50 / (50 + 50)
    assert cm.per_class_iou[1] == 0.0 and cm.per_class_iou[2] == 0.0
    assert cm.miou == pytest.approx(0.5 / 3)
    assert cm.base_miou == 0.0 and cm.novel_miou == 0.0 and cm.harmonic == 0.0
    frame = AVSBenchFrameMetrics()
    frame.update(gt, pred)
    scores = frame.scores()
    assert scores.fscore == 0.0 and scores.miou == 0.0
    assert scores.frame_counts[0] == 1 and scores.frame_counts[1] == 1  # bins of classes 1 and 2


def test_predicted_but_absent_class_counts_zero():
    gt = np.zeros((10, 10), dtype=np.uint8)
    gt[5:, :] = 2  # airplane, 50 px
    pred = gt.copy()
    pred[0, :] = 5  # bassoon (novel) predicted on 10 background pixels
    cm = ConfusionMatrix()
    cm.update(gt, pred)
    assert cm.per_class_iou[0] == pytest.approx(40 / 50)
    assert cm.per_class_iou[2] == 1.0 and cm.per_class_iou[5] == 0.0
    assert cm.miou == pytest.approx((0.8 + 1 + 0) / 3)
    assert cm.base_miou == 1.0 and cm.novel_miou == 0.0 and cm.harmonic == 0.0
    # per-frame metric zeroes predictions on GT background: the bassoon pixels are ignored there
    frame = AVSBenchFrameMetrics()
    frame.update(gt, pred)
    scores = frame.scores()
    assert scores.frame_counts[4] == 0 and scores.per_class_fscore[1] == 1.0
    assert scores.fscore == pytest.approx(1 / 71) and scores.fscore_no_bg == pytest.approx(1 / 70)


def test_undefined_novel_gives_nan_and_harmonic_zero():
    gt = np.zeros((4, 4), dtype=np.uint8)
    gt[0] = 2
    cm = ConfusionMatrix()
    cm.update(gt, gt)
    assert math.isnan(cm.novel_miou) and cm.base_miou == 1.0 and cm.harmonic == 0.0
    assert harmonic_mean(0.5, 0.25) == pytest.approx(2 * 0.5 * 0.25 / 0.75)
    assert harmonic_mean(0.0, 0.0) == 0.0


def test_merge_equals_single_pass_and_input_checks():
    frames = random_frames(4)
    whole, first, second = ConfusionMatrix(), ConfusionMatrix(), ConfusionMatrix()
    for i, (gt, pred) in enumerate(frames):
        whole.update(gt, pred)
        (first if i % 2 else second).update(gt, pred)
    first.merge(second)
    np.testing.assert_array_equal(first.matrix, whole.matrix)
    with pytest.raises(ValueError, match="shapes differ"):
        whole.update(np.zeros((3, 3), int), np.zeros((3, 4), int))
    with pytest.raises(ValueError, match=r"\[0, 71\)"):
        whole.update(np.zeros((3, 3), int), np.full((3, 3), 71))


# ---------------------------------------------------------------- AVSBench per-frame metrics


@pytest.mark.parametrize("seed", [0, 5])
def test_frame_metrics_match_loops_and_histc(seed):
    frames = random_frames(seed, num_frames=7)
    # frames where a GT class is missed entirely and one that is all background
    gt, pred = frames[0]
    frames[0] = (gt, np.where(gt == 7, 0, pred).astype(np.uint8))
    frames.append((np.zeros((20, 24), np.uint8), frames[1][1]))
    metric = AVSBenchFrameMetrics()
    for gt, pred in frames:
        metric.update(gt, pred)
    scores = metric.scores()
    per_iou, per_f, count = reference_frame_metrics(frames)
    np.testing.assert_allclose(scores.per_class_iou, per_iou, atol=1e-12)
    np.testing.assert_allclose(scores.per_class_fscore, per_f, atol=1e-12)
    np.testing.assert_array_equal(scores.frame_counts, count)
    assert scores.miou == pytest.approx(sum(per_iou) / 71, abs=1e-12)
    assert scores.fscore == pytest.approx(sum(per_f) / 71, abs=1e-12)
    assert scores.miou_no_bg == pytest.approx(sum(per_iou[:70]) / 70, abs=1e-12)
    assert scores.per_class_iou[70] == 0.0 and scores.frame_counts[70] == 0
    histc_iou, histc_f = official_style_histc(frames)
    np.testing.assert_allclose(scores.per_class_iou, histc_iou, atol=1e-6)
    np.testing.assert_allclose(scores.per_class_fscore, histc_f, atol=1e-6)


def test_frame_metrics_perfect_prediction_is_k_over_71():
    frames = [(gt, gt.copy()) for gt, _ in random_frames(6)]  # classes 3, 7, 12, 40 present
    metric = AVSBenchFrameMetrics()
    for gt, pred in frames:
        metric.update(gt, pred)
    scores = metric.scores()
    assert scores.fscore == pytest.approx(4 / 71) and scores.miou == pytest.approx(4 / 71)
    assert set(np.nonzero(scores.per_class_fscore)[0]) == {2, 6, 11, 39}


# ---------------------------------------------------------------- binary


def test_binary_metrics_hand_computed():
    metric = BinaryMetrics()
    gt = np.zeros((4, 4), bool)
    gt[0] = True
    pred = np.zeros((4, 4), bool)
    pred[0, :2] = True
    pred[1, :2] = True
    metric.update(gt, pred)  # inter 2, union 6; P = R = 0.5 -> F = 0.5
    metric.update(np.zeros((4, 4)), np.zeros((4, 4)))  # empty / empty -> IoU 1, no F
    empty_gt_pred = np.zeros((4, 4), int)
    empty_gt_pred[3] = 9
    metric.update(np.zeros((4, 4)), empty_gt_pred)  # empty GT, 4 px predicted -> IoU 12 / 16
    scores = metric.scores()
    assert scores.miou == pytest.approx((1 / 3 + 1 + 0.75) / 3)
    assert scores.fscore == pytest.approx(0.5)
    assert (scores.num_frames, scores.num_fscore_frames) == (3, 1)


def test_binary_metrics_random_against_loops():
    rng = np.random.default_rng(7)
    metric = BinaryMetrics()
    ious, fs = [], []
    for i in range(8):
        gt = rng.random((9, 11)) < (0.0 if i == 3 else 0.3)
        pred = rng.random((9, 11)) < (0.0 if i == 5 else 0.4)
        metric.update(gt, pred)
        inter = sum(1 for a, b in zip(gt.ravel(), pred.ravel()) if a and b)
        union = sum(1 for a, b in zip(gt.ravel(), pred.ravel()) if a or b)
        if gt.sum() == 0:
            ious.append(float((~pred).sum()) / pred.size)
            continue
        ious.append(inter / union)
        p = inter / pred.sum() if pred.sum() else 0.0
        r = inter / gt.sum()
        fs.append(1.3 * p * r / (0.3 * p + r) if p + r > 0 else 0.0)
    scores = metric.scores()
    assert scores.miou == pytest.approx(sum(ious) / len(ious), abs=1e-12)
    assert scores.fscore == pytest.approx(sum(fs) / len(fs), abs=1e-12)
    assert math.isnan(BinaryMetrics().scores().fscore)
