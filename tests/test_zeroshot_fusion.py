"""The zero-shot method's decision logic (models/zeroshot/fusion.py) against straightforward references."""

import math
import re

import numpy as np
import pytest
import torch

from models.zeroshot.config import ZeroShotConfig
from models.zeroshot.fusion import (
    MOTION_FLOOR,
    audio_probabilities,
    combine_scores,
    frame_candidates,
    paint_label_map,
    relative_motion,
    select_instances,
    sounding_classes,
    window_loudness_dbfs,
)


def test_loudness_of_a_full_scale_sine_and_of_silence():
    t = np.arange(16000) / 16000
    assert window_loudness_dbfs(np.sin(2 * np.pi * 440 * t)) == pytest.approx(20 * math.log10(1 / math.sqrt(2)), abs=1e-3)
    assert window_loudness_dbfs(0.01 * np.ones(100)) == pytest.approx(-40.0)
    assert window_loudness_dbfs(np.zeros(100)) == float("-inf")
    assert window_loudness_dbfs(np.zeros(0)) == float("-inf")


def test_audio_probabilities_are_the_softmax_over_classes_and_null_prompts():
    sims = np.array([[0.3, 0.1, 0.2, 0.25], [0.0, 0.5, -0.1, 0.0]])
    scale = 33.0
    probs = audio_probabilities(sims, scale, num_classes=2)
    for w in range(2):
        exps = [math.exp(scale * s) for s in sims[w]]
        expected = [e / sum(exps) for e in exps[:2]]
        np.testing.assert_allclose(probs[w], expected, rtol=1e-5)
    assert probs.shape == (2, 2) and probs.dtype == np.float32
    with pytest.raises(ValueError):
        audio_probabilities(np.zeros((2, 1)), scale, num_classes=2)


def test_sounding_classes_threshold_cap_and_silence():
    probs = np.array([[0.5, 0.3, 0.15, 0.05], [0.5, 0.3, 0.15, 0.05], [0.1, 0.1, 0.1, 0.1], [0.4, 0.4, 0.1, 0.1]])
    loud = np.array([-20.0, -80.0, -20.0, -20.0])
    result = sounding_classes(probs, loud, threshold=0.2, max_sounding=3, silence_dbfs=-60)
    np.testing.assert_array_equal(result, [[1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [1, 1, 0, 0]])
    capped = sounding_classes(probs, loud, threshold=0.2, max_sounding=1, silence_dbfs=-60)
    np.testing.assert_array_equal(capped[[0, 3]], [[1, 0, 0, 0], [1, 0, 0, 0]])  # tie keeps the lower index
    assert not sounding_classes(probs, np.full(4, -np.inf), 0.0, 3, -60).any()


def test_frame_candidates_assign_threshold_nms_and_cap():
    # vocabulary: 0 violin, 1 dog, 2 man; queried dog and violin (in that column order); dog and violin sound
    boxes = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [50, 50, 60, 60], [20, 20, 30, 30], [70, 0, 80, 10],
                      [90, 0, 99, 10]], dtype=np.float32)
    scores = np.array([  # columns: dog, violin
        [0.9, 0.1],   # dog
        [0.8, 0.0],   # dog, overlaps box 0 (IoU 0.81): suppressed
        [0.2, 0.7],   # violin
        [0.1, 0.25],  # violin under the 0.3 threshold: dropped
        [0.6, 0.0],   # dog
        [0.5, 0.0],   # dog, third one: beyond the cap of 2
    ], dtype=np.float32)
    sounding = np.array([True, True, False])
    found = frame_candidates(boxes, scores, np.array([1, 0]), sounding, box_threshold=0.3, nms_iou=0.5,
                             max_boxes_per_class=2)
    np.testing.assert_array_equal(found.class_index, [0, 1, 1])
    np.testing.assert_array_equal(found.boxes, boxes[[2, 0, 4]])
    np.testing.assert_allclose(found.detector_scores, [[0.7, 0.2, 0], [0.1, 0.9, 0], [0.0, 0.6, 0]])
    # a class that is queried but not sounding in this frame gives nothing
    only_violin = frame_candidates(boxes, scores, np.array([1, 0]), np.array([True, False, False]), 0.3, 0.5, 5)
    np.testing.assert_array_equal(only_violin.class_index, [0])
    assert only_violin.detector_scores[:, 1].max() == 0
    empty = frame_candidates(np.zeros((0, 4)), np.zeros((0, 2)), np.array([1, 0]), sounding, 0.3, 0.5, 2)
    assert len(empty) == 0 and empty.detector_scores.shape == (0, 3)


def test_combine_scores_is_the_weighted_geometric_mean_on_sounding_classes():
    det = np.array([[0.64, 0.2, 0.9]])
    clip = np.array([[0.25, 0.7, 0.05]])
    sounding = np.array([True, True, False])
    scores = combine_scores(det, clip, sounding, rescore_weight=0.5)
    np.testing.assert_allclose(scores, [[math.sqrt(0.64 * 0.25), math.sqrt(0.2 * 0.7), 0.0]], rtol=1e-6)
    np.testing.assert_allclose(combine_scores(det, clip, sounding, 0.0), [[0.64, 0.2, 0.0]], rtol=1e-6)
    np.testing.assert_allclose(combine_scores(det, clip, sounding, 1.0), [[0.25, 0.7, 0.0]], rtol=1e-6)
    np.testing.assert_allclose(combine_scores(det, None, sounding, 0.5), [[0.64, 0.2, 0.0]], rtol=1e-6)


def test_relative_motion_measures_change_inside_each_mask():
    rng = np.random.default_rng(1)
    frame = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)
    neighbour = frame.copy()
    neighbour[0:10, 0:10] = 255 - neighbour[0:10, 0:10]  # strong change in mask 0's area
    neighbour[20:30, 20:30] = np.clip(neighbour[20:30, 20:30].astype(int) + 40, 0, 255).astype(np.uint8)
    masks = np.zeros((3, 40, 60), dtype=bool)
    masks[0, 0:10, 0:10] = True
    masks[1, 20:30, 20:30] = True
    masks[2, 30:40, 40:60] = True  # static
    motion = relative_motion(masks, frame, neighbour)
    grey = np.array([0.299, 0.587, 0.114]) / 255
    change = np.abs(frame.astype(float) @ grey - neighbour.astype(float) @ grey)
    raw = np.array([change[m].mean() for m in masks])
    np.testing.assert_allclose(motion, raw / raw.max(), rtol=1e-5)
    assert motion[0] == pytest.approx(1.0) and motion[2] == 0.0
    assert relative_motion(masks, frame, frame) is None  # nothing moves
    assert relative_motion(masks, frame, None) is None
    tiny = frame.copy()
    tiny[0:10, 0:10] = np.clip(tiny[0:10, 0:10].astype(int) + 1, 0, 255).astype(np.uint8)
    assert MOTION_FLOOR > 1 / 255 and relative_motion(masks, frame, tiny) is None


def test_select_instances_policies():
    labels = np.array([0, 0, 0, 1, 1])
    scores = np.array([0.9, 0.6, 0.15, 0.5, 0.45])
    motion = np.array([0.1, 1.0, 1.0, 0.8, 0.0])
    common = dict(keep_ratio=0.5, motion_weight=1.0, score_threshold=0.2, max_instances=10)
    np.testing.assert_array_equal(select_instances(labels, scores, motion, "all", **common), [0, 1, 3, 4])
    np.testing.assert_array_equal(select_instances(labels, scores, motion, "best", **common), [0, 3])
    # motion: evidence 0.09, 0.6, (0.15 below threshold), 0.4, 0 -> the moving instance 1 wins for class 0;
    # instance 0's evidence 0.09 < 0.5 * 0.6; class 1 keeps 3 only; painting order = score order
    np.testing.assert_array_equal(select_instances(labels, scores, motion, "motion", **common), [1, 3])
    # without motion information "motion" keeps the best plus those within keep_ratio of it
    np.testing.assert_array_equal(select_instances(labels, scores, None, "motion", **common), [0, 1, 3, 4])
    np.testing.assert_array_equal(select_instances(labels, scores, motion, "all", **{**common, "max_instances": 2}),
                                  [0, 1])
    with pytest.raises(ValueError):
        select_instances(labels, scores, motion, "nope", **common)


def test_paint_label_map_first_come_first_served():
    masks = np.zeros((2, 4, 5), dtype=bool)
    masks[0, :2] = True
    masks[1, 1:3] = True
    label_map = paint_label_map(masks, np.array([4, 0]), (4, 5), vocabulary_size=5)
    expected = np.zeros((4, 5), dtype=np.uint8)
    expected[2] = 1
    expected[:2] = 5
    np.testing.assert_array_equal(label_map, expected)
    assert label_map.dtype == np.uint8
    assert paint_label_map(np.zeros((0, 4, 5), bool), np.zeros(0, np.int64), (4, 5), 5).sum() == 0
    # a vocabulary too big for uint8 gives uint16 maps, painted or empty
    assert paint_label_map(masks, np.array([300, 0]), (4, 5), 400)[0, 0] == 301
    assert paint_label_map(np.zeros((0, 4, 5), bool), np.zeros(0, np.int64), (4, 5), 400).dtype == np.uint16


def test_config_validation_and_defaults():
    config = ZeroShotConfig()
    assert config.effective_box_threshold == 0.3
    assert ZeroShotConfig(detector="owlv2").effective_box_threshold == 0.1
    assert ZeroShotConfig(box_threshold=0.5).effective_box_threshold == 0.5
    assert config.to_dict()["null_prompts"] == list(config.null_prompts)
    for bad in (dict(detector="yolo"), dict(instance_policy="random"), dict(audio_threshold=1.5),
                dict(max_sounding=0), dict(audio_prompt="no placeholder"), dict(audio_window_s=0),
                dict(detector="owlv2", detector_short_side=480), dict(detector_short_side=16)):
        with pytest.raises(ValueError):
            ZeroShotConfig(**bad)
    # the prompt is filled by replacing its one '{}', so other braces would have been a KeyError at prediction
    for prompt, problem in (("A {} near {place}.", "contains a '{' or '}' besides its one '{}'"),
                            ("{} and {}", "must contain exactly one '{}' (found 2)")):
        with pytest.raises(ValueError, match=re.escape(f"audio_prompt {prompt!r} {problem}")):
            ZeroShotConfig(audio_prompt=prompt)


def test_resolve_device_switches_subnormal_floats_off_on_the_cpu():
    from models.device import resolve_device

    tiny = torch.tensor([1e-39], dtype=torch.float32)  # subnormal in float32
    assert resolve_device("cpu") == torch.device("cpu")
    assert (tiny * 1.0).item() == 0.0  # flushed (FTZ/DAZ) in this thread
