"""OWLv2 through `transformers` as a `TextBoxDetector` (see `models.zeroshot.detector`).

One text query `prompt.format(name)` per name, encoded once per `detect` call; class scores = sigmoid(logits).
OWLv2 pads each frame to a square (bottom/right) before resizing, so its normalised boxes are fractions of
max(H, W); boxes wholly in the padding are dropped.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from models.errors import AVSegError
from models.zeroshot.detector import (
    Detections,
    TransformersDetector,
    check_frames,
    cxcywh_to_xyxy,
    load_detector_folder,
    select_boxes,
)


class Owlv2Detector(TransformersDetector):
    """OWLv2 (`Owlv2ForObjectDetection` + `Owlv2Processor`) as a `TextBoxDetector`.

    Args:
        model: an Owlv2ForObjectDetection in eval mode.
        processor: its Owlv2Processor (image processor + CLIP tokenizer).
        device: where the model runs.
        min_score: a box is kept when its max class score is at least this.
        max_boxes: at most this many boxes per frame (highest max class score first).
        batch_size: frames per forward.
        prompt: text query per name; "{}" is replaced by the name.
    """

    name = "owlv2"

    def __init__(
        self,
        model: Any,
        processor: Any,
        device: torch.device | str = "cpu",
        min_score: float = 0.05,
        max_boxes: int = 50,
        batch_size: int = 4,
        prompt: str = "a photo of a {}",
    ) -> None:
        super().__init__(model, processor, device, min_score, max_boxes, batch_size)
        if not _is_name_template(prompt):
            raise AVSegError(f"OWLv2 prompt needs one '{{}}' for the class name and no other braces: {prompt!r}")
        self.prompt = prompt

    @classmethod
    def from_folder(
        cls, folder: str | os.PathLike, device: torch.device | str = "cpu", **kwargs: Any
    ) -> Owlv2Detector:
        """Load model and processor saved in `folder` (a Hugging Face snapshot); kwargs go to `__init__`."""
        from transformers import AutoProcessor, Owlv2ForObjectDetection

        model, processor = load_detector_folder(folder, "OWLv2", "owlv2", Owlv2ForObjectDetection, AutoProcessor, device)
        return cls(model, processor, device=device, **kwargs)

    def detect(self, frames: Sequence[np.ndarray], names: Sequence[str]) -> list[Detections]:
        """Boxes for `names` in each of `frames`.

        Args:
            frames: uint8 (H, W, 3) RGB each; sizes may differ (each is padded to its own square).
            names: K class names.

        Returns:
            One `Detections` per frame: boxes (N, 4) xyxy pixels, class_scores (N, K).
        """
        frames = check_frames(frames)
        names = [str(name) for name in names]
        if not frames or not names:
            return [Detections.empty(len(names)) for _ in frames]
        queries = self.text_queries(names)
        results: list[Detections] = []
        for start in range(0, len(frames), self.batch_size):
            batch = frames[start : start + self.batch_size]
            boxes, scores = self._run(batch, queries)
            for frame, frame_boxes, frame_scores in zip(batch, boxes, scores):
                height, width = frame.shape[:2]
                results.append(select_boxes(frame_boxes, frame_scores, height, width, self.min_score, self.max_boxes))
        return results

    def text_queries(self, names: Sequence[str]) -> torch.Tensor:
        """(K, D) normalised text embeddings of `prompt.format(name)` for each name, as OWLv2's forward makes them."""
        max_length = int(self.model.config.text_config.max_position_embeddings)
        tokens = self.processor.tokenizer(
            [self.prompt.format(name) for name in names],
            padding="max_length",
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
        )
        with torch.inference_mode():
            output = self.model.owlv2.get_text_features(
                input_ids=tokens["input_ids"].to(self.device), attention_mask=tokens["attention_mask"].to(self.device)
            )
            embeddings = output.pooler_output
            return embeddings / torch.linalg.norm(embeddings, ord=2, dim=-1, keepdim=True)

    def _run(self, frames: list[np.ndarray], queries: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """One forward of B frames -> boxes (B, P, 4) in pixels of each frame's padded square, scores (B, P, K)."""
        inputs = self.processor.image_processor(
            images=frames, return_tensors="pt", input_data_format="channels_last", device=self.device
        )
        dtype = next(self.model.parameters()).dtype
        with torch.inference_mode():
            feature_map, _ = self.model.image_embedder(pixel_values=inputs["pixel_values"].to(self.device, dtype))
            batch, rows, cols, width = feature_map.shape
            image_features = feature_map.reshape(batch, rows * cols, width)
            text = queries.to(image_features.dtype)[None].expand(batch, -1, -1)
            logits, _ = self.model.class_predictor(image_features, text, None)
            normalised = self.model.box_predictor(image_features, feature_map)
            sides = torch.tensor([max(frame.shape[:2]) for frame in frames], dtype=torch.float32, device=logits.device)
            boxes = cxcywh_to_xyxy(normalised.float()) * sides[:, None, None]
            scores = logits.float().sigmoid()
        return boxes.cpu().numpy(), scores.cpu().numpy()


def _is_name_template(prompt: str) -> bool:
    """Whether `prompt.format(name)` works and puts the name in."""
    try:
        return prompt.format("\0").count("\0") == 1 + prompt.count("\0")
    except (IndexError, KeyError, ValueError):
        return False
