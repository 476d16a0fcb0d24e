"""How the zero-shot method decides what is sounding and where: pure array logic, no networks.

The pipeline per analysed frame (`ZeroShotPredictor`):

1. **Audio gate.** The frame's sound window (its timestamp + `audio_window_s`) is compared by CLAP with one
   prompt per class name and with `null_prompts` ("silence", "background noise"). CLAP's logit scale turns
   the cosine similarities into a softmax over names + null prompts (`audio_probabilities`). A class is
   *sounding* in the frame when its probability is >= `audio_threshold` (at most `max_sounding` classes, the
   most probable); a window quieter than `silence_dbfs` RMS, or a video without sound, has none
   (`sounding_classes`). Frames without a sounding class get an empty prediction and cost no vision work.
2. **Boxes.** The detector is asked for the sounding names only. Each box takes the sounding class it
   scores highest for; boxes under `box_threshold` are dropped, then per-class NMS (`nms_iou`) and at most
   `max_boxes_per_class` per class (`frame_candidates`).
3. **Masks.** SAM turns each box into a mask; masks under `min_mask_pixels` are dropped.
4. **Naming.** With `rescore`, the OV-AVSS CLIP classifier scores each masked square crop against the whole
   vocabulary; the final class score is detector^(1 - w) x CLIP^w over the sounding classes
   (`combine_scores`, w = `rescore_weight`), and the label is the best sounding class, so both methods name
   objects with the same classifier.
5. **Which instance sounds** (`select_instances`). Audio says *which class* sounds, not which of several
   visible instances of it. Policies:
   - "all": every instance scoring >= `score_threshold`;
   - "best": only the top-scoring instance per class;
   - "motion" (default): sounding things tend to move (strummed strings, bowing arms, talking faces,
     engines), the cue the SSP line of work gets from optical flow. Each mask's motion is the mean absolute
     grey-level difference inside it between the frame and its neighbour in the clip (the previous analysed
     frame; the next for the first), divided by the largest in the frame (`relative_motion`). Evidence =
     score x motion^`motion_weight`; per class the instance with the most evidence is kept, plus any other
     whose evidence is >= `keep_ratio` x the best. When nothing in the frame moves more than
     `MOTION_FLOOR` (a static shot, or a clip of one frame), motion is ignored and evidence = score.
   `benchmarks/bench_zeroshot_fusion.py` measures the policies on synthetic scenes.
6. **Painting.** Kept instances are painted in descending score order, first come first served, like
   OV-AVSS (`paint_label_map`); at most `max_instances` per frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torchvision

MOTION_FLOOR = 2.0 / 255.0
"""Mean absolute grey-level change (0..1 scale) under which a mask counts as not moving."""


def window_loudness_dbfs(window: np.ndarray) -> float:
    """RMS level of a float waveform (full scale 1.0) in dB; -inf for an empty or all-zero window."""
    samples = np.asarray(window, dtype=np.float64)
    if samples.size == 0:
        return float("-inf")
    rms = float(np.sqrt(np.mean(samples * samples)))
    return 20.0 * np.log10(rms) if rms > 0 else float("-inf")


def audio_probabilities(similarities: np.ndarray, logit_scale: float, num_classes: int) -> np.ndarray:
    """Softmax of CLAP similarities over class names and null prompts; the class columns are returned.

    Args:
        similarities: (W, K + N) cosine similarities of W windows to K class prompts then N null prompts.
        logit_scale: CLAP's audio-text temperature (exp of `logit_scale_a`).
        num_classes: K.

    Returns:
        (W, K) float32 probabilities (rows sum to 1 minus the null prompts' share).
    """
    sims = np.asarray(similarities, dtype=np.float64)
    if sims.ndim != 2 or sims.shape[1] < num_classes:
        raise ValueError(f"similarities must be (W, >= {num_classes}), got {sims.shape}")
    logits = logit_scale * sims
    logits = logits - logits.max(axis=1, keepdims=True) if logits.shape[1] else logits
    weights = np.exp(logits)
    probs = weights / weights.sum(axis=1, keepdims=True)
    return probs[:, :num_classes].astype(np.float32)


def sounding_classes(
    probabilities: np.ndarray, loudness_dbfs: np.ndarray, threshold: float, max_sounding: int, silence_dbfs: float
) -> np.ndarray:
    """Which classes sound in each window.

    Args:
        probabilities: (W, K) class probabilities (`audio_probabilities`).
        loudness_dbfs: (W,) RMS level of each window.
        threshold: minimum probability of a sounding class.
        max_sounding: at most this many per window (the most probable; ties keep the lower class index).
        silence_dbfs: windows below this level have no sounding class.

    Returns:
        (W, K) bool.
    """
    probs = np.asarray(probabilities, dtype=np.float64)
    loud = np.asarray(loudness_dbfs, dtype=np.float64)
    sounding = np.zeros(probs.shape, dtype=bool)
    for w in range(probs.shape[0]):
        if not loud[w] >= silence_dbfs:  # also catches -inf / NaN
            continue
        order = np.argsort(-probs[w], kind="stable")[:max_sounding]
        chosen = order[probs[w, order] >= threshold]
        sounding[w, chosen] = True
    return sounding


@dataclass
class Candidates:
    """Boxes of one frame that may become instances.

    Attributes:
        boxes: (N, 4) float32 xyxy pixels.
        class_index: (N,) int64 vocabulary index of the sounding class each box was assigned.
        detector_scores: (N, V) float32 detector score of each box for every vocabulary class (0 where the
            class was not queried or is not sounding).
    """

    boxes: np.ndarray
    class_index: np.ndarray
    detector_scores: np.ndarray

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    def take(self, keep: np.ndarray) -> "Candidates":
        """The candidates at indices `keep`, in that order."""
        keep = np.asarray(keep, dtype=np.int64)
        return Candidates(self.boxes[keep], self.class_index[keep], self.detector_scores[keep])


def frame_candidates(
    boxes: np.ndarray,
    class_scores: np.ndarray,
    queried: np.ndarray,
    sounding: np.ndarray,
    box_threshold: float,
    nms_iou: float,
    max_boxes_per_class: int,
) -> Candidates:
    """Assign each detected box to a sounding class, threshold, per-class NMS and cap.

    Args:
        boxes: (N, 4) xyxy pixels from the detector.
        class_scores: (N, Q) detector scores for the Q queried names.
        queried: (Q,) int vocabulary index of each queried name.
        sounding: (V,) bool, the frame's sounding classes.
        box_threshold, nms_iou, max_boxes_per_class: see `ZeroShotConfig`.

    Returns:
        Candidates ordered by class index, then detector score (highest first).
    """
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    queried = np.asarray(queried, dtype=np.int64).reshape(-1)
    class_scores = np.asarray(class_scores, dtype=np.float32).reshape(boxes.shape[0], queried.shape[0])
    vocabulary_size = int(np.asarray(sounding).shape[0])
    full = np.zeros((boxes.shape[0], vocabulary_size), dtype=np.float32)
    for column, vocab_index in enumerate(queried):
        full[:, vocab_index] = np.maximum(full[:, vocab_index], class_scores[:, column])
    full[:, ~np.asarray(sounding, dtype=bool)] = 0.0
    empty = Candidates(np.zeros((0, 4), np.float32), np.zeros(0, np.int64), np.zeros((0, vocabulary_size), np.float32))
    if boxes.shape[0] == 0 or not np.any(sounding):
        return empty
    assigned = full.argmax(axis=1)
    best = full[np.arange(boxes.shape[0]), assigned]
    keep_parts = []
    for vocab_index in np.flatnonzero(sounding):
        members = np.flatnonzero((assigned == vocab_index) & (best >= box_threshold) & (best > 0))
        if members.size == 0:
            continue
        order = torchvision.ops.nms(torch.from_numpy(boxes[members]), torch.from_numpy(best[members]), nms_iou)
        kept = members[order.numpy()][:max_boxes_per_class]
        keep_parts.append(kept)
    if not keep_parts:
        return empty
    keep = np.concatenate(keep_parts)
    return Candidates(boxes[keep], assigned[keep].astype(np.int64), full[keep])


def combine_scores(
    detector_scores: np.ndarray, clip_probabilities: np.ndarray | None, sounding: np.ndarray, rescore_weight: float
) -> np.ndarray:
    """(N, V) final class scores: detector^(1 - w) x CLIP^w on sounding classes, 0 elsewhere.

    Without CLIP probabilities the detector score is used as is.
    """
    det = np.clip(np.asarray(detector_scores, dtype=np.float64), 0.0, 1.0)
    if clip_probabilities is None:
        scores = det
    else:
        clip = np.clip(np.asarray(clip_probabilities, dtype=np.float64), 0.0, 1.0)
        scores = det ** (1.0 - rescore_weight) * clip**rescore_weight
    scores = np.where(np.asarray(sounding, dtype=bool)[None, :], scores, 0.0)
    return scores.astype(np.float32)


def relative_motion(masks: np.ndarray, frame: np.ndarray, neighbour: np.ndarray | None) -> np.ndarray | None:
    """How much each mask's pixels change between `frame` and `neighbour`, relative to the most moving one.

    Args:
        masks: (N, H, W) bool.
        frame, neighbour: uint8 (H, W, 3) RGB (neighbour None: no motion information).

    Returns:
        (N,) float32 in [0, 1] (1 for the most moving mask), or None when there is no neighbour, no mask, or
        nothing moves more than `MOTION_FLOOR` (motion then carries no evidence).
    """
    if neighbour is None or masks.shape[0] == 0 or neighbour.shape != frame.shape:
        return None
    grey_weights = np.array([0.299, 0.587, 0.114], dtype=np.float32) / 255.0
    change = np.abs(frame.astype(np.float32) @ grey_weights - neighbour.astype(np.float32) @ grey_weights)
    counts = masks.reshape(masks.shape[0], -1).sum(axis=1)
    sums = masks.reshape(masks.shape[0], -1).astype(np.float32) @ change.reshape(-1)
    motion = np.where(counts > 0, sums / np.maximum(counts, 1), 0.0)
    top = float(motion.max())
    if top <= MOTION_FLOOR:
        return None
    return (motion / top).astype(np.float32)


def select_instances(
    class_index: np.ndarray,
    scores: np.ndarray,
    motion: np.ndarray | None,
    policy: str,
    keep_ratio: float,
    motion_weight: float,
    score_threshold: float,
    max_instances: int,
) -> np.ndarray:
    """Which candidates become instances, in painting order (highest score first).

    Args:
        class_index: (N,) the class of each candidate.
        scores: (N,) its final score.
        motion: (N,) relative motion in [0, 1] (`relative_motion`) or None.
        policy: "all", "best" or "motion" (see the module docstring).
        keep_ratio, motion_weight, score_threshold, max_instances: see `ZeroShotConfig`.

    Returns:
        (M,) int64 indices into the candidates.
    """
    class_index = np.asarray(class_index, dtype=np.int64)
    scores = np.asarray(scores, dtype=np.float64)
    eligible = np.flatnonzero(scores >= score_threshold)
    if policy == "all":
        chosen = eligible
    elif policy in ("best", "motion"):
        if policy == "motion" and motion is not None:
            evidence = scores * np.power(np.clip(np.asarray(motion, dtype=np.float64), 0.0, 1.0), motion_weight)
        else:
            evidence = scores
        chosen_parts = []
        for label in np.unique(class_index[eligible]):
            members = eligible[class_index[eligible] == label]
            order = members[np.argsort(-evidence[members], kind="stable")]
            if policy == "best":
                chosen_parts.append(order[:1])
            else:
                top = evidence[order[0]]
                chosen_parts.append(order[evidence[order] >= keep_ratio * top] if top > 0 else order[:1])
        chosen = np.concatenate(chosen_parts) if chosen_parts else np.zeros(0, dtype=np.int64)
    else:
        raise ValueError(f"unknown instance policy {policy!r}")
    ordered = chosen[np.argsort(-scores[chosen], kind="stable")]
    return ordered[:max_instances].astype(np.int64)


def paint_label_map(masks: np.ndarray, class_index: np.ndarray, shape: tuple[int, int], vocabulary_size: int
                    ) -> np.ndarray:
    """(H, W) label map (class index + 1, 0 = background) painted first come first served, like OV-AVSS
    (`models.ovavss.postprocess.paint_semantic_maps`).

    Args:
        masks: (M, H, W) bool in painting order.
        class_index: (M,) vocabulary indices.
        shape: (H, W).
        vocabulary_size: V; the map is uint8 when V < 255, else uint16 (as the OV-AVSS predictor's).
    """
    from models.ovavss.postprocess import paint_semantic_maps

    dtype = np.uint8 if vocabulary_size < 255 else np.uint16
    if len(masks) == 0:
        return np.zeros(shape, dtype=dtype)
    painted = paint_semantic_maps(torch.from_numpy(np.asarray(masks, dtype=bool))[:, None],
                                  torch.as_tensor(np.asarray(class_index), dtype=torch.long))
    return painted[0].numpy().astype(dtype)
