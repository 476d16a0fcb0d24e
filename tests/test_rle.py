"""COCO RLE round trips, agreement with pycocotools, run lengths, boxes, instance records, malformed input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pycocotools import mask as coco_mask

from models.io.rle import (
    frame_record,
    instance_record,
    mask_bbox,
    mask_to_rle,
    record_mask,
    rle_to_mask,
    string_counts,
)


def random_masks(count: int = 60, seed: int = 0):
    rng = np.random.default_rng(seed)
    for _ in range(count):
        height, width = (int(v) for v in rng.integers(1, 50, 2))
        yield rng.random((height, width)) < rng.random()


def column_major_runs(mask: np.ndarray) -> list[int]:
    """Run lengths of the mask read column by column, starting with a (possibly empty) run of zeros."""
    values = mask.T.ravel().astype(int)
    runs, current, length = [], 0, 0
    for value in values:
        if value == current:
            length += 1
        else:
            runs.append(length)
            current, length = value, 1
    runs.append(length)
    return runs


def special_masks():
    full = np.ones((7, 5), bool)
    empty = np.zeros((7, 5), bool)
    single = np.zeros((7, 5), bool)
    single[6, 4] = True
    return [full, empty, single, np.ones((1, 9), bool), np.eye(6, dtype=bool)[:, :1]]


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # pycocotools vs numpy 2
@pytest.mark.parametrize("mask", list(random_masks()) + special_masks())
def test_round_trip_and_pycocotools_agreement(mask):
    rle = mask_to_rle(mask)
    assert rle["size"] == list(mask.shape)
    assert isinstance(rle["counts"], str)
    assert np.array_equal(rle_to_mask(rle), mask)
    reference = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    assert rle["counts"] == reference["counts"].decode("ascii")
    assert np.array_equal(coco_mask.decode({"size": rle["size"], "counts": rle["counts"].encode()}), mask)
    assert string_counts(rle["counts"]) == column_major_runs(mask)


def test_input_layout_and_dtype_do_not_matter():
    mask = next(random_masks(1, seed=5))
    expected = mask_to_rle(mask)
    assert mask_to_rle(np.ascontiguousarray(mask.T).T) == expected  # Fortran-ordered view
    assert mask_to_rle(mask.astype(np.uint8)) == expected
    assert mask_to_rle(mask.astype(np.float32)) == expected
    wide = np.zeros((mask.shape[0], mask.shape[1] * 2), bool)
    wide[:, ::2] = mask
    assert mask_to_rle(wide[:, ::2]) == expected  # strided view


def test_rle_is_json_ready():
    mask = next(random_masks(1, seed=7))
    rle = mask_to_rle(mask)
    assert np.array_equal(rle_to_mask(json.loads(json.dumps(rle))), mask)


def test_accepts_bytes_and_uncompressed_counts():
    mask = np.zeros((4, 3), bool)
    mask[1:3, 1] = True
    rle = mask_to_rle(mask)
    assert np.array_equal(rle_to_mask({"size": [4, 3], "counts": rle["counts"].encode()}), mask)
    assert np.array_equal(rle_to_mask({"size": [4, 3], "counts": [5, 2, 5]}), mask)


def test_empty_image():
    mask = np.zeros((0, 4), bool)
    assert rle_to_mask(mask_to_rle(mask)).shape == (0, 4)


@pytest.mark.parametrize(
    "rle, message",
    [
        ({"size": [5, 7], "counts": "0"}, "cover 0 pixels"),  # pycocotools alone returns garbage here
        ({"size": [5, 7], "counts": ";2300000"}, "cover 28 pixels"),
        ({"size": [5, 7], "counts": "abc"}, "ends in the middle"),
        ({"size": [5, 7], "counts": "0 "}, "invalid character"),
        ({"size": [5, 7], "counts": [30, 6]}, "cover 36 pixels"),
        ({"size": [5, 7], "counts": [40, -5]}, "non-negative"),
        ({"size": [5], "counts": "0"}, "size"),
        ({"size": [5, -1], "counts": "0"}, "size"),
        ({"size": [5, 7], "counts": 35}, "string or a list"),
        ({"counts": "0"}, "'size' and 'counts'"),
        ([5, 7], "'size' and 'counts'"),
    ],
)
def test_malformed_rle_is_rejected(rle, message):
    with pytest.raises(ValueError, match=message):
        rle_to_mask(rle)


def bbox_reference(mask: np.ndarray) -> list[int]:
    points = [(x, y) for y in range(mask.shape[0]) for x in range(mask.shape[1]) if mask[y, x]]
    if not points:
        return [0, 0, 0, 0]
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    return [min(xs), min(ys), max(xs) - min(xs) + 1, max(ys) - min(ys) + 1]


@pytest.mark.parametrize("mask", list(random_masks(20, seed=1)) + special_masks())
def test_bbox_matches_a_pixel_scan_and_pycocotools(mask):
    box = mask_bbox(mask)
    assert box == bbox_reference(mask)
    assert all(isinstance(v, int) for v in box)
    coco_box = coco_mask.toBbox(coco_mask.encode(np.asfortranarray(mask.astype(np.uint8))))
    assert box == [int(v) for v in coco_box]


def test_sparse_mask_bbox():
    mask = np.zeros((50, 80), bool)
    mask[10, 70] = mask[40, 5] = True
    assert mask_bbox(mask) == [5, 10, 66, 31]


def test_instance_and_frame_records():
    mask = np.zeros((30, 40), bool)
    mask[5:15, 10:30] = True
    mask[20, 35] = True
    record = instance_record("violin", 0.8765, mask, class_id=68)
    assert record["label"] == "violin" and record["score"] == 0.8765 and record["class_id"] == 68
    assert record["bbox"] == [10, 5, 26, 16]
    assert record["area"] == 201
    coco_rle = {"size": [30, 40], "counts": record["segmentation"]["counts"].encode()}
    assert record["area"] == int(coco_mask.area(coco_rle))
    frame = frame_record(3, 1.5, [record])
    restored = json.loads(json.dumps(frame))
    assert restored["frame"] == 3 and restored["time"] == 1.5
    (item,) = restored["instances"]
    assert np.array_equal(record_mask(item), mask)
    assert list(instance_record("x", np.float32(0.5), mask)) == ["label", "score", "bbox", "area", "segmentation"]
    assert isinstance(instance_record("x", np.float32(0.5), mask)["score"], float)
    # the objects of annotate's JSON: every field, in this order; scores that are not finite are null
    full = instance_record("pipa", float("nan"), mask, class_id=np.int64(2), sound_score=np.float32(0.25),
                           query=np.int64(7))
    assert list(full) == ["label", "class_id", "score", "sound_score", "query", "bbox", "area", "segmentation"]
    assert full["score"] is None and full["sound_score"] == 0.25 and full["query"] == 7
    assert json.loads(json.dumps(full)) == full
    assert instance_record("x", 0.5, mask, sound_score=float("inf"))["sound_score"] is None
    assert frame_record(np.int64(4), 1 / 3, [])["time"] == 0.333333


def test_record_without_segmentation():
    with pytest.raises(ValueError, match="segmentation"):
        record_mask({"label": "x"})


def test_masks_must_be_two_dimensional():
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        mask_to_rle(np.zeros((2, 3, 4), bool))
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        mask_bbox(np.zeros(5, bool))
