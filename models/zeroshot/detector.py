"""Text-conditioned box detectors for the zero-shot method: Grounding DINO and OWLv2 through `transformers`.

A detector takes RGB frames and class names and returns, per frame, boxes in the frame's pixels with a score for
every queried name (`Detections`). Thresholding by `min_score` and the `max_boxes` cap happen here; NMS does not
(the fusion does it per class).

* `GroundingDinoDetector` (`models.zeroshot.grounding_dino`): one prompt "name1. name2. ..." per forward,
  split into chunks that fit the model's text length;
* `Owlv2Detector` (`models.zeroshot.owlv2`): one text query per name.

This module holds what both share: `Detections`, the `TextBoxDetector` protocol, `load_detector`, the
`TransformersDetector` base (model, processor, device and checked box options) and the box selection.

Boxes that keep no area once clipped to the frame (e.g. OWLv2 boxes wholly in the padding) are dropped.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from models.errors import AVSegError
from models.zeroshot.hf_folder import load_model_folder

DETECTOR_KINDS = ("grounding-dino", "owlv2")
"""The `kind` values `load_detector` accepts."""


@dataclass
class Detections:
    """Boxes found in one frame for the queried class names.

    boxes: (N, 4) float32 xyxy in the frame's pixels (clipped to the frame);
    class_scores: (N, K) float32 in [0, 1], score of each box for each queried name (K = len(names)).
    Rows are ordered by max class score, highest first.
    """

    boxes: np.ndarray
    class_scores: np.ndarray

    @classmethod
    def empty(cls, num_names: int) -> Detections:
        """No boxes: boxes (0, 4), class_scores (0, num_names)."""
        return cls(np.zeros((0, 4), np.float32), np.zeros((0, num_names), np.float32))


class TextBoxDetector(Protocol):
    """Finds boxes for class names in RGB frames."""

    name: str
    """"grounding-dino" or "owlv2"."""

    def detect(self, frames: Sequence[np.ndarray], names: Sequence[str]) -> list[Detections]:
        """frames: uint8 (H, W, 3) RGB each (sizes may differ); names: K class names -> one `Detections` per frame."""
        ...


def load_detector(
    kind: str, folder: str | os.PathLike, device: torch.device | str = "cpu", **kwargs: Any
) -> TextBoxDetector:
    """The detector `kind` ("grounding-dino" or "owlv2") loaded from `folder`; kwargs go to its constructor."""
    if kind == "grounding-dino":
        from models.zeroshot.grounding_dino import GroundingDinoDetector

        return GroundingDinoDetector.from_folder(folder, device=device, **kwargs)
    if kind == "owlv2":
        from models.zeroshot.owlv2 import Owlv2Detector

        return Owlv2Detector.from_folder(folder, device=device, **kwargs)
    raise AVSegError(f"unknown detector {kind!r}: expected one of {', '.join(DETECTOR_KINDS)}", exit_code=2)


def select_boxes(
    boxes: np.ndarray, class_scores: np.ndarray, height: int, width: int, min_score: float, max_boxes: int
) -> Detections:
    """Clip (Q, 4) xyxy boxes to the frame, drop empty ones and those below `min_score`, keep the best `max_boxes`."""
    boxes = np.asarray(boxes, dtype=np.float32).copy()
    class_scores = np.asarray(class_scores, dtype=np.float32)
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, width)
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, height)
    best = class_scores.max(axis=1) if class_scores.shape[1] else np.zeros(len(boxes), np.float32)
    keep = (best >= min_score) & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    order = np.flatnonzero(keep)
    order = order[np.argsort(-best[order], kind="stable")][:max_boxes]
    return Detections(boxes[order], class_scores[order])


def cxcywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    """(..., 4) (cx, cy, w, h) -> (..., 4) (x0, y0, x1, y1)."""
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1)


def indices_by_size(frames: Sequence[np.ndarray]) -> list[list[int]]:
    """Indices of `frames` grouped by (H, W), groups in order of first appearance."""
    groups: dict[tuple[int, int], list[int]] = {}
    for index, frame in enumerate(frames):
        groups.setdefault(frame.shape[:2], []).append(index)
    return list(groups.values())


def check_frames(frames: Sequence[np.ndarray]) -> list[np.ndarray]:
    """The frames as a list, each checked to be uint8 (H, W, 3) with H, W > 0."""
    frames = list(frames)
    for index, frame in enumerate(frames):
        if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            described = f"{frame.dtype} {frame.shape}" if isinstance(frame, np.ndarray) else type(frame).__name__
            raise ValueError(f"frame {index} must be a uint8 (H, W, 3) RGB array, got {described}")
        if frame.shape[0] == 0 or frame.shape[1] == 0:
            raise ValueError(f"frame {index} is empty: {frame.shape}")
    return frames


class TransformersDetector:
    """What every detector here holds: a `transformers` model and its processor on a device, and the box options.

    Args:
        model: the detection model, in eval mode.
        processor: its processor (image processor + tokenizer).
        device: where the model runs.
        min_score: a box is kept when its max class score is at least this.
        max_boxes: at most this many boxes per frame (highest max class score first).
        batch_size: frames per forward.

    Raises:
        AVSegError (exit code 2): an option out of range.
    """

    name = ""

    def __init__(self, model: Any, processor: Any, device: torch.device | str = "cpu", min_score: float = 0.1,
                 max_boxes: int = 50, batch_size: int = 4) -> None:
        if not 0.0 <= float(min_score) <= 1.0:
            raise AVSegError(f"detector min_score must be in [0, 1], got {min_score}", exit_code=2)
        if int(max_boxes) < 1:
            raise AVSegError(f"detector max_boxes must be at least 1, got {max_boxes}", exit_code=2)
        if int(batch_size) < 1:
            raise AVSegError(f"detector batch_size must be at least 1, got {batch_size}", exit_code=2)
        self.model = model
        self.processor = processor
        self.device = torch.device(device)
        self.min_score = float(min_score)
        self.max_boxes = int(max_boxes)
        self.batch_size = int(batch_size)


def load_detector_folder(
    folder: str | os.PathLike, label: str, model_type: str, model_class: Any, processor_class: Any, device: Any
) -> tuple[Any, Any]:
    """(model, processor) from a Hugging Face folder (`hf_folder.load_model_folder`), plus the tokenizer checks a
    detector needs; every failure -> one-line AVSegError naming the folder."""
    model, processor = load_model_folder(
        folder, label, model_type, model_class, processor_class, ("tokenizer", "image_processor"), device
    )
    path = Path(folder)
    # Without tokenizer files transformers builds a tokenizer that knows only its special tokens, without a word.
    if len(processor.tokenizer) <= len(processor.tokenizer.all_special_ids):
        raise AVSegError(f"{path} has no {label} tokenizer vocabulary (tokenizer.json or vocab files)")
    if not getattr(processor.tokenizer, "is_fast", False):
        raise AVSegError(f"{path} has a slow {label} tokenizer; a fast one (tokenizer.json) is needed for offsets")
    return model, processor
