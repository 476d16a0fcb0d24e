"""COCO run-length encoding of masks and the JSON records of detected instances.

RLE is the COCO format (pycocotools): the mask is read in column-major (Fortran) order, as runs of 0s
and 1s starting with 0s, and the run lengths are packed into an ASCII string. `mask_to_rle` returns
`{"size": [height, width], "counts": "<string>"}`, JSON-ready (pycocotools gives bytes). Encoding
uses pycocotools; `rle_to_mask` validates the runs and expands them itself (pycocotools' decoder
reads uninitialised memory on short counts) and also accepts bytes counts and uncompressed RLE (a
list of run lengths).

Boxes are `[x, y, width, height]` in pixels, integers, covering the mask's pixels exactly (COCO's
convention; `[0, 0, 0, 0]` for an empty mask).

Instance record (`instance_record`, one per detected object per frame, the objects of `avseg annotate`'s JSON):
`{"label": str, "class_id": int, "score": float | null, "sound_score": float | null, "query": int,
"bbox": [x, y, w, h], "area": int, "segmentation": <RLE>}`; class_id, sound_score and query only when given, a
score that is not finite is null. A frame record (`frame_record`) is
`{"frame": int, "time": float (seconds, 6 decimals), "instances": [...]}`.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np
from pycocotools import mask as coco_mask


def _as_bool_mask(mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"expected an (H, W) mask, got shape {mask.shape}")
    return mask.astype(bool)


def mask_to_rle(mask: np.ndarray) -> dict:
    """Encode an (H, W) bool (or 0/1) mask as COCO RLE `{"size": [h, w], "counts": str}`."""
    mask = _as_bool_mask(mask)
    encoded = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(encoded["size"][0]), int(encoded["size"][1])], "counts": encoded["counts"].decode("ascii")}


def string_counts(counts: str | bytes) -> list[int]:
    """Unpack COCO's compressed counts string into run lengths (pycocotools' `rleFrString`).

    Every count is stored in 5-bit groups, least significant first, each as chr(48 + group), with bit
    0x20 meaning "more groups follow" and bit 0x10 of the last group the sign; from the third count
    on, the value stored is the difference to the count two places before.

    Raises:
        ValueError: a character outside the alphabet or a count cut off in the middle.
    """
    data = counts.encode("ascii") if isinstance(counts, str) else bytes(counts)
    runs: list[int] = []
    position = 0
    while position < len(data):
        value = shift = 0
        while True:
            if position >= len(data):
                raise ValueError("RLE counts string ends in the middle of a number")
            group = data[position] - 48
            if not 0 <= group < 64:
                raise ValueError(f"invalid character {chr(data[position])!r} in RLE counts")
            position += 1
            value |= (group & 0x1F) << shift
            shift += 5
            if not group & 0x20:
                if group & 0x10:
                    value |= -1 << shift
                break
        if len(runs) > 2:
            value += runs[-2]
        runs.append(value)
    return runs


def _runs(rle: Mapping[str, Any]) -> tuple[int, int, list[int]]:
    """Validated (height, width, run lengths) of an RLE dict in any accepted form.

    pycocotools itself does not check counts: too short a string decodes to uninitialised memory.
    """
    if not isinstance(rle, Mapping) or "size" not in rle or "counts" not in rle:
        raise ValueError(f"expected an RLE dict with 'size' and 'counts', got {type(rle).__name__}")
    size = rle["size"]
    if (
        not isinstance(size, Sequence)
        or len(size) != 2
        or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0 for v in size)
    ):
        raise ValueError(f"RLE 'size' must be [height, width], got {size!r}")
    height, width = int(size[0]), int(size[1])
    counts = rle["counts"]
    if isinstance(counts, list):
        runs = counts
    elif isinstance(counts, (str, bytes)):
        runs = string_counts(counts)
    else:
        raise ValueError(f"RLE 'counts' must be a string or a list, got {type(counts).__name__}")
    if any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0 for v in runs):
        raise ValueError("RLE counts must be non-negative integers")
    runs = [int(v) for v in runs]
    if sum(runs) != height * width:
        raise ValueError(f"RLE counts cover {sum(runs)} pixels, its size {height}x{width} has {height * width}")
    return height, width, runs


def rle_to_mask(rle: Mapping[str, Any]) -> np.ndarray:
    """Decode COCO RLE (compressed str/bytes counts or an uncompressed list) to an (H, W) bool mask.

    The runs are checked and expanded here (alternating 0s and 1s, column-major), which gives the same
    mask as `pycocotools.mask.decode` for every valid RLE.

    Raises:
        ValueError: malformed RLE (bad size, bad characters, counts that do not cover the size).
    """
    height, width, runs = _runs(rle)
    values = np.arange(len(runs)) % 2 == 1
    column_major = np.repeat(values, runs)
    return np.ascontiguousarray(column_major.reshape(width, height).T)


def mask_bbox(mask: np.ndarray) -> list[int]:
    """Tight box `[x, y, width, height]` around an (H, W) mask's pixels; `[0, 0, 0, 0]` when empty."""
    mask = _as_bool_mask(mask)
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return [0, 0, 0, 0]
    columns = np.flatnonzero(mask.any(axis=0))
    x, y = int(columns[0]), int(rows[0])
    return [x, y, int(columns[-1]) - x + 1, int(rows[-1]) - y + 1]


def instance_record(
    label: str,
    score: float,
    mask: np.ndarray,
    class_id: int | None = None,
    sound_score: float | None = None,
    query: int | None = None,
) -> dict:
    """The JSON record of one instance: label, class_id, score, sound_score, query (each of these three only when
    given), bbox, area and RLE segmentation of the (H, W) `mask`; NaN or infinite scores become None (null)."""
    mask = _as_bool_mask(mask)
    record: dict[str, Any] = {"label": str(label)}
    if class_id is not None:
        record["class_id"] = int(class_id)
    record["score"] = _finite_or_none(score)
    if sound_score is not None:
        record["sound_score"] = _finite_or_none(sound_score)
    if query is not None:
        record["query"] = int(query)
    record["bbox"] = mask_bbox(mask)
    record["area"] = int(mask.sum())
    record["segmentation"] = mask_to_rle(mask)
    return record


def record_mask(record: Mapping[str, Any]) -> np.ndarray:
    """The (H, W) bool mask of an instance record (its "segmentation" RLE)."""
    if "segmentation" not in record:
        raise ValueError("instance record has no 'segmentation'")
    return rle_to_mask(record["segmentation"])


def frame_record(index: int, timestamp: float, instances: Sequence[Mapping[str, Any]]) -> dict:
    """The JSON record of one analysed frame: index, time in seconds (rounded to 6 decimals), instance records."""
    return {"frame": int(index), "time": round(float(timestamp), 6), "instances": [dict(item) for item in instances]}


def _finite_or_none(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None
