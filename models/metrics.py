"""Segmentation metrics of AVSBench-OV (the numbers OV-AVSS reports) and of AVSBench, in plain numpy.

Three accumulators, each fed one frame at a time with `update(gt, pred)`:

* `ConfusionMatrix` - the **reported** AVSBench-OV metric (official `scores_gzsl`): one 71 x 71 confusion
  matrix summed over all pixels of all frames, per-class IoU from it, mIoU over all 71 ids (background
  included), base / novel mIoU over the 40 / 30 ids of `BASE_IDS` / `NOVEL_IDS`, and their harmonic mean.
* `AVSBenchFrameMetrics` - **secondary**: AVSBench's per-frame per-class IoU and F-score
  (`calc_color_miou_fscore`), which the OV-AVSS test script computes but never prints.
* `BinaryMetrics` - class-agnostic foreground mIoU and F-score per frame, AVSBench S4 / MS3 style.

Label maps are (H, W) integer arrays of class ids in [0, num_classes); GT and prediction of a frame must
have the same shape (the evaluator resizes both to 224 x 224 first).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from models.data.classes import BASE_IDS, NOVEL_IDS, NUM_CLASSES

FSCORE_BETA2 = 0.3
"""beta^2 of the AVSBench F-score (precision weighted more than recall)."""


def _check_pair(gt: np.ndarray, pred: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    gt = np.asarray(gt)
    pred = np.asarray(pred)
    if gt.shape != pred.shape:
        raise ValueError(f"GT and prediction shapes differ: {gt.shape} vs {pred.shape}")
    if gt.ndim != 2:
        raise ValueError(f"expected (H, W) label maps, got shape {gt.shape}")
    gt = gt.astype(np.int64, copy=False)
    pred = pred.astype(np.int64, copy=False)
    for name, array in (("GT", gt), ("prediction", pred)):
        if array.size and (array.min() < 0 or array.max() >= num_classes):
            raise ValueError(f"{name} ids must lie in [0, {num_classes}), got {array.min()}..{array.max()}")
    return gt, pred


def _nanmean(values: np.ndarray) -> float:
    """Mean over the non-NaN entries; NaN when there are none (without numpy's RuntimeWarning)."""
    values = np.asarray(values, dtype=np.float64)
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else math.nan


def harmonic_mean(base: float, novel: float) -> float:
    """2BN / (B + N); 0 when either is NaN or both are 0 (the official code's `if isnan: 0`)."""
    if math.isnan(base) or math.isnan(novel) or base + novel == 0:
        return 0.0
    return 2.0 * base * novel / (base + novel)


@dataclass(frozen=True)
class GZSLScores:
    """The reported AVSBench-OV numbers, all in [0, 1] or NaN.

    Attributes:
        per_class_iou: (num_classes,) float64; NaN for a class with no GT pixel and no predicted pixel.
        miou: nan-mean over all classes, background included ("Mean IoU").
        base_miou: nan-mean over `BASE_IDS` ("Mean IoU Seen").
        novel_miou: nan-mean over `NOVEL_IDS` ("Mean IoU Unseen").
        harmonic_miou: 2 * base * novel / (base + novel), 0 if either is NaN ("Mean IoU Harmonic").
    """

    per_class_iou: np.ndarray
    miou: float
    base_miou: float
    novel_miou: float
    harmonic_miou: float


class ConfusionMatrix:
    """Dataset-level confusion matrix, the AVSBench-OV metric (official `scores_gzsl`).

    `matrix[g, p]` counts pixels with GT class g predicted as p, summed over every pixel of every frame
    (`np.bincount(num_classes * gt + pred)`). From it, per class c:

        IoU_c = matrix[c, c] / (sum_p matrix[c, p] + sum_g matrix[g, c] - matrix[c, c])

    0 / 0 (no GT pixel and no predicted pixel of c anywhere) is NaN and skipped by every mean; a class
    absent from the GT but predicted somewhere has IoU 0 and counts. Note that the overall `miou` includes
    background, which belongs to neither base nor novel, so it is not a weighted mean of those two.
    """

    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        self.num_classes = num_classes
        self.matrix = np.zeros((num_classes, num_classes), dtype=np.int64)

    def update(self, gt: np.ndarray, pred: np.ndarray) -> None:
        """Add one frame: `gt`, `pred` (H, W) integer class ids in [0, num_classes)."""
        gt, pred = _check_pair(gt, pred, self.num_classes)
        n = self.num_classes
        counts = np.bincount((n * gt + pred).ravel(), minlength=n * n)
        self.matrix += counts.reshape(n, n)

    def merge(self, other: "ConfusionMatrix") -> None:
        """Add the counts of another matrix (e.g. from a parallel worker)."""
        if other.num_classes != self.num_classes:
            raise ValueError("cannot merge confusion matrices of different sizes")
        self.matrix += other.matrix

    @property
    def per_class_iou(self) -> np.ndarray:
        """(num_classes,) float64 IoU per class, NaN where the class has no GT and no prediction."""
        true_positive = np.diag(self.matrix).astype(np.float64)
        union = self.matrix.sum(axis=1) + self.matrix.sum(axis=0) - np.diag(self.matrix)
        iou = np.full(self.num_classes, np.nan)
        present = union > 0
        iou[present] = true_positive[present] / union[present]
        return iou

    @property
    def miou(self) -> float:
        return _nanmean(self.per_class_iou)

    @property
    def base_miou(self) -> float:
        return _nanmean(self.per_class_iou[list(BASE_IDS)])

    @property
    def novel_miou(self) -> float:
        return _nanmean(self.per_class_iou[list(NOVEL_IDS)])

    @property
    def harmonic(self) -> float:
        return harmonic_mean(self.base_miou, self.novel_miou)

    def scores(self) -> GZSLScores:
        """All reported numbers at once."""
        iou = self.per_class_iou
        base = _nanmean(iou[list(BASE_IDS)])
        novel = _nanmean(iou[list(NOVEL_IDS)])
        return GZSLScores(
            per_class_iou=iou,
            miou=_nanmean(iou),
            base_miou=base,
            novel_miou=novel,
            harmonic_miou=harmonic_mean(base, novel),
        )


@dataclass(frozen=True)
class FrameMetricScores:
    """Results of `AVSBenchFrameMetrics` (secondary numbers, never printed by OV-AVSS).

    Attributes:
        per_class_iou: (num_classes,) mean per-frame IoU of bin b (= class b + 1), 0 for unseen bins.
        per_class_fscore: (num_classes,) mean per-frame F-score of bin b, 0 for unseen bins.
        frame_counts: (num_classes,) number of frames in which bin b had a non-empty union.
        miou, fscore: mean over all `num_classes` bins (the official `miou`, `f_score`).
        miou_no_bg, fscore_no_bg: mean over the first num_classes - 1 bins (the official `*_noBg`,
            which are in fact "all 70 classes": background never has a bin).
    """

    per_class_iou: np.ndarray
    per_class_fscore: np.ndarray
    frame_counts: np.ndarray
    miou: float
    fscore: float
    miou_no_bg: float
    fscore_no_bg: float


class AVSBenchFrameMetrics:
    """AVSBench's per-frame per-class IoU and F-score, exactly as OV-AVSS's `calc_color_miou_fscore`.

    Secondary metric: OV-AVSS computes it but reports only `ConfusionMatrix`'s numbers. For each frame:

    1. `pred` is zeroed wherever the GT is background, so false positives on background pixels are
       ignored; only pixels inside GT objects can be wrong.
    2. Per-class areas come from `torch.histc(bins=71, min=1, max=71)` in the official code: id 0 is
       outside the range (background has no bin) and the bin width is 70/71, so class c lands in bin c-1
       and the last bin (index 70) stays empty for ever. Here bin b simply counts class b + 1.
    3. inter_b = pixels with pred == gt == b+1; union_b = pred_b + gt_b - inter_b;
       IoU_b = inter_b / union_b (0 when union_b = 0; the official `+ 2.22e-16` vanishes in float32);
       the frame counts for bin b only when union_b > 0, but IoU is summed for every bin.
    4. precision = inter / pred_area, recall = inter / gt_area,
       F = (1 + beta^2) P R / (beta^2 P + R) with beta^2 = 0.3; any 0/0 makes F NaN, which becomes 0
       (so a class that is in the GT but not predicted, or predicted but not in the GT, scores 0).

    Final per bin: sum over frames / number of counted frames (0 if never counted). `miou` and `fscore`
    average all 71 bins, including the always-empty last bin and every class absent from the data, so a
    perfect prediction of a split containing k classes scores k / 71, not 1.
    """

    def __init__(self, num_classes: int = NUM_CLASSES, beta2: float = FSCORE_BETA2) -> None:
        self.num_classes = num_classes
        self.beta2 = beta2
        self.iou_sum = np.zeros(num_classes, dtype=np.float64)
        self.fscore_sum = np.zeros(num_classes, dtype=np.float64)
        self.frame_counts = np.zeros(num_classes, dtype=np.int64)

    def _bin_areas(self, label: np.ndarray) -> np.ndarray:
        """(num_classes,) pixel counts of classes 1..num_classes-1 in bins 0..num_classes-2; last bin 0."""
        counts = np.bincount(label.ravel(), minlength=self.num_classes)[: self.num_classes]
        areas = np.zeros(self.num_classes, dtype=np.float64)
        areas[: self.num_classes - 1] = counts[1:]
        return areas

    def update(self, gt: np.ndarray, pred: np.ndarray) -> None:
        """Add one frame: `gt`, `pred` (H, W) integer class ids in [0, num_classes)."""
        gt, pred = _check_pair(gt, pred, self.num_classes)
        pred = np.where(gt > 0, pred, 0)
        intersection = np.where(pred == gt, pred, 0)
        area_inter = self._bin_areas(intersection)
        area_pred = self._bin_areas(pred)
        area_gt = self._bin_areas(gt)
        area_union = area_pred + area_gt - area_inter
        counted = area_union > 0
        iou = np.zeros(self.num_classes)
        iou[counted] = area_inter[counted] / area_union[counted]
        with np.errstate(divide="ignore", invalid="ignore"):
            precision = area_inter / area_pred
            recall = area_inter / area_gt
            fscore = (1 + self.beta2) * precision * recall / (self.beta2 * precision + recall)
        fscore[np.isnan(fscore)] = 0.0
        self.iou_sum += iou
        self.fscore_sum += fscore
        self.frame_counts += counted

    def scores(self) -> FrameMetricScores:
        counts = self.frame_counts.astype(np.float64)
        per_iou = np.divide(self.iou_sum, counts, out=np.zeros(self.num_classes), where=counts > 0)
        per_f = np.divide(self.fscore_sum, counts, out=np.zeros(self.num_classes), where=counts > 0)
        return FrameMetricScores(
            per_class_iou=per_iou,
            per_class_fscore=per_f,
            frame_counts=self.frame_counts.copy(),
            miou=float(per_iou.mean()),
            fscore=float(per_f.mean()),
            miou_no_bg=float(per_iou[:-1].mean()),
            fscore_no_bg=float(per_f[:-1].mean()),
        )


@dataclass(frozen=True)
class BinaryScores:
    """Results of `BinaryMetrics`: `miou` over all frames, `fscore` over frames with a non-empty GT
    (NaN when there is no such frame), and the two frame counts."""

    miou: float
    fscore: float
    num_frames: int
    num_fscore_frames: int


class BinaryMetrics:
    """Class-agnostic foreground metrics per frame, as AVSBench S4 / MS3 (`mask_iou`, `Eval_Fmeasure`).

    Foreground = any non-zero id (pass boolean masks or label maps). Per frame:

    * IoU = |pred & gt| / |pred | gt| when the GT has foreground. When the GT is empty, AVSBench scores
      the background instead: IoU = |~pred| / (H * W), the fraction of pixels correctly left empty - so
      empty GT with empty prediction gives 1, and an empty GT with everything predicted gives 0.
      `miou` is the plain mean over all frames (the official `eps = 1e-7` is omitted). AVSBench's test loop
      averages per video (one batch) and then over videos: the same number when every video has 5 labelled
      frames (S4, MS3), while here each of AVSBench-OV's 10-frame v2 videos weighs twice a 5-frame v1s one.
    * F = (1 + beta^2) P R / (beta^2 P + R), beta^2 = 0.3, P = |pred & gt| / |pred|,
      R = |pred & gt| / |gt|, 0 when P or R is 0 or undefined. Frames whose GT is empty are skipped (as
      AVSBench does). `fscore` is the mean over the remaining frames. AVSBench itself feeds sigmoid
      probabilities and takes the best of 255 thresholds; for binary masks that search only adds the
      "everything is foreground" candidate, which this binary version does not consider.
    """

    def __init__(self, beta2: float = FSCORE_BETA2) -> None:
        self.beta2 = beta2
        self.iou_sum = 0.0
        self.num_frames = 0
        self.fscore_sum = 0.0
        self.num_fscore_frames = 0

    def update(self, gt: np.ndarray, pred: np.ndarray) -> None:
        """Add one frame: `gt`, `pred` (H, W) boolean masks or label maps (non-zero = foreground)."""
        gt = np.asarray(gt) != 0
        pred = np.asarray(pred) != 0
        if gt.shape != pred.shape or gt.ndim != 2:
            raise ValueError(f"expected two (H, W) masks of one shape, got {gt.shape} and {pred.shape}")
        if gt.size == 0:
            raise ValueError("empty masks")
        inter = int(np.count_nonzero(gt & pred))
        gt_area = int(np.count_nonzero(gt))
        pred_area = int(np.count_nonzero(pred))
        if gt_area == 0:
            self.iou_sum += (gt.size - pred_area) / gt.size
        else:
            self.iou_sum += inter / (gt_area + pred_area - inter)
            if inter > 0:
                precision = inter / pred_area
                recall = inter / gt_area
                self.fscore_sum += (1 + self.beta2) * precision * recall / (self.beta2 * precision + recall)
            self.num_fscore_frames += 1
        self.num_frames += 1

    def scores(self) -> BinaryScores:
        return BinaryScores(
            miou=self.iou_sum / self.num_frames if self.num_frames else math.nan,
            fscore=self.fscore_sum / self.num_fscore_frames if self.num_fscore_frames else math.nan,
            num_frames=self.num_frames,
            num_fscore_frames=self.num_fscore_frames,
        )
