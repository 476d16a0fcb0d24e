"""Stand-ins for the zero-shot method's networks, shared by its tests and `benchmarks/bench_zeroshot_fusion.py`."""

from __future__ import annotations

import numpy as np


class BoxMaskSegmenter:
    """SAM stand-in: each box's mask is the box itself (integer pixel bounds); counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def segment(self, frame: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """frame (H, W, 3), boxes (N, 4) xyxy -> masks (N, H, W) bool, quality (N,) ones."""
        self.calls += 1
        masks = np.zeros((len(boxes),) + frame.shape[:2], dtype=bool)
        for mask, (x1, y1, x2, y2) in zip(masks, np.asarray(boxes).astype(int)):
            mask[y1:y2, x1:x2] = True
        return masks, np.ones(len(boxes), np.float32)
