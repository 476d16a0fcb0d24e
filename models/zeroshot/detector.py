"""Text-conditioned box detectors for the zero-shot method: Grounding DINO and OWLv2 through `transformers`.

A detector takes RGB frames and class names and returns, per frame, boxes in the frame's pixels with a score for
every queried name (`Detections`). Thresholding by `min_score` and the `max_boxes` cap happen here; NMS does not
(the fusion does it per class).

* `GroundingDinoDetector`: one prompt "name1. name2. name3." per forward; a box's score for name k is the max over
  the prompt's token positions of name k (found from the fast tokenizer's character offsets) of sigmoid(logits).
  Vocabularies whose prompt would pass the model's `max_text_len` tokens are split into chunks that fit, one forward
  per chunk; a box from one chunk scores 0 for the other chunks' names. Frames of different sizes are run in
  separate forwards (see `GroundingDinoDetector.detect`).
* `Owlv2Detector`: one text query `prompt.format(name)` per name, encoded once per `detect` call; class scores =
  sigmoid(logits). OWLv2 pads each frame to a square (bottom/right) before resizing, so its normalised boxes are
  fractions of max(H, W).

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


class GroundingDinoDetector:
    """Grounding DINO (`GroundingDinoForObjectDetection` + `GroundingDinoProcessor`) as a `TextBoxDetector`.

    On the CPU the model's deformable-attention kernels are replaced in place by the fused-gather form
    (`models.zeroshot.deformable_attention`; same values, ~30 % less time per forward).

    Args:
        model: a GroundingDinoForObjectDetection in eval mode.
        processor: its GroundingDinoProcessor (image processor + fast BERT tokenizer).
        device: where the model runs.
        min_score: a box is kept when its max class score is at least this.
        max_boxes: at most this many boxes per frame (highest max class score first).
        batch_size: frames per forward.
        input_short_side: resize frames to this shortest edge (longest edge <= 1333/800 of it) instead of the
            processor's own size (800 for the released model); smaller is faster and coarser.
    """

    name = "grounding-dino"

    def __init__(
        self,
        model: Any,
        processor: Any,
        device: torch.device | str = "cpu",
        min_score: float = 0.1,
        max_boxes: int = 50,
        batch_size: int = 4,
        input_short_side: int | None = None,
    ) -> None:
        _check_options(min_score, max_boxes, batch_size)
        if input_short_side is not None and input_short_side < 32:
            raise ValueError(f"input_short_side must be >= 32 or None, got {input_short_side}")
        self.input_short_side = input_short_side
        self.model = model
        self.processor = processor
        self.device = torch.device(device)
        if self.device.type == "cpu":
            # transformers' grid_sample kernel is ~30 % of a CPU forward; the fused gather computes the same
            from models.zeroshot.deformable_attention import use_gather_deformable_attention

            use_gather_deformable_attention(model)
        self.min_score = float(min_score)
        self.max_boxes = int(max_boxes)
        self.batch_size = int(batch_size)

    @classmethod
    def from_folder(
        cls, folder: str | os.PathLike, device: torch.device | str = "cpu", **kwargs: Any
    ) -> GroundingDinoDetector:
        """Load model and processor saved in `folder` (a Hugging Face snapshot); kwargs go to `__init__`."""
        from transformers import AutoProcessor, GroundingDinoForObjectDetection

        model, processor = _load_folder(
            folder, "Grounding DINO", "grounding-dino", GroundingDinoForObjectDetection, AutoProcessor, device
        )
        return cls(model, processor, device=device, **kwargs)

    @property
    def max_text_len(self) -> int:
        """The most text tokens (with [CLS] and [SEP]) one prompt may have: the model's config.max_text_len."""
        return int(self.model.config.max_text_len)

    def detect(self, frames: Sequence[np.ndarray], names: Sequence[str]) -> list[Detections]:
        """Boxes for `names` in each of `frames`.

        Args:
            frames: uint8 (H, W, 3) RGB each.
            names: K class names (matched case-insensitively; surrounding spaces ignored).

        Returns:
            One `Detections` per frame: boxes (N, 4) xyxy pixels, class_scores (N, K).

        Frames are run `batch_size` at a time; frames of different sizes within a batch go through separate forwards,
        because the processor would pad them to a common size and the padding changes the backbone's features near
        it, so a frame's boxes would depend on which frames share its batch. (Video frames share one size: one forward
        per batch and per prompt chunk.)
        """
        frames = _check_frames(frames)
        names = [str(name) for name in names]
        if not frames or not names:
            return [Detections.empty(len(names)) for _ in frames]
        chunks = self.prompt_chunks(names)
        results: list[Detections] = []
        for start in range(0, len(frames), self.batch_size):
            batch = frames[start : start + self.batch_size]
            found: dict[int, Detections] = {}
            for group in _indices_by_size(batch):
                chunk_outputs = [self._run(np.stack([batch[i] for i in group]), chunk) for chunk in chunks]
                for row, index in enumerate(group):
                    boxes = np.concatenate([chunk_boxes[row] for chunk_boxes, _ in chunk_outputs])
                    scores = _block_diagonal([chunk_scores[row] for _, chunk_scores in chunk_outputs])
                    height, width = batch[index].shape[:2]
                    found[index] = _select_boxes(boxes, scores, height, width, self.min_score, self.max_boxes)
            results.extend(found[index] for index in range(len(batch)))
        return results

    def prompt_chunks(self, names: Sequence[str]) -> list[PromptChunk]:
        """Split `names` into prompts of at most `max_text_len` tokens each, in order (usually one chunk).

        A single name longer than the limit gets a chunk of its own, truncated to its first tokens.
        """
        lowered = [_prompt_name(name) for name in names]
        budget = self.max_text_len - 2  # [CLS] and [SEP]
        lengths = [len(ids) for ids in self.processor.tokenizer(lowered, add_special_tokens=False)["input_ids"]]
        chunks: list[PromptChunk] = []
        first, used = 0, 0
        for index, length in enumerate(lengths):
            cost = length + 1  # the name's tokens and its "."
            if index > first and used + cost > budget:
                chunks.append(self.prompt_chunk(lowered[first:index]))
                first, used = index, 0
            used += cost
        chunks.append(self.prompt_chunk(lowered[first:]))
        return chunks

    def prompt_chunk(self, names: Sequence[str]) -> PromptChunk:
        """Tokenize the prompt "name1. name2." of `names` and find each name's token positions from the offsets.

        Names are stripped and lower-cased. A name's positions are the tokens whose character span overlaps the
        name's span in the prompt; an empty name stays out of the prompt and has no positions (it scores 0).
        """
        spans: list[tuple[int, int] | None] = []
        parts: list[str] = []
        cursor = 0
        for name in map(_prompt_name, names):
            if not name:
                spans.append(None)
                continue
            spans.append((cursor, cursor + len(name)))
            parts.append(name + ".")
            cursor += len(name) + 2  # the name, its "." and the joining space
        prompt = " ".join(parts)
        encoding = self.processor.tokenizer(
            prompt, return_offsets_mapping=True, truncation=True, max_length=self.max_text_len
        )
        offsets = encoding["offset_mapping"]  # [CLS] and [SEP] have (0, 0): never inside a span
        positions = [
            []
            if span is None
            else [t for t, (start, end) in enumerate(offsets) if end > start and start < span[1] and end > span[0]]
            for span in spans
        ]
        input_ids = encoding["input_ids"]
        return PromptChunk(
            prompt=prompt,
            input_ids=torch.tensor(input_ids, dtype=torch.long),
            token_type_ids=torch.tensor(encoding.get("token_type_ids") or [0] * len(input_ids), dtype=torch.long),
            positions=positions,
        )

    def _run(self, frames: np.ndarray, chunk: PromptChunk) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """One forward of same-size frames (B, H, W, 3) with one prompt -> per frame boxes (Q, 4) px and scores (Q, k).

        A chunk whose names have no tokens at all (empty names) runs nothing and gives Q = 0.
        """
        height, width = frames.shape[1:3]
        if not any(chunk.positions):
            no_scores = np.zeros((0, len(chunk.positions)), np.float32)
            return [np.zeros((0, 4), np.float32)] * len(frames), [no_scores] * len(frames)
        resize = {}
        if self.input_short_side is not None:
            short = int(self.input_short_side)
            resize["size"] = {"shortest_edge": short, "longest_edge": int(round(short * 1333 / 800))}
        inputs = self.processor.image_processor(
            images=list(frames), return_tensors="pt", input_data_format="channels_last", device=self.device, **resize
        )
        batch = len(frames)
        text = {
            "input_ids": chunk.input_ids[None].expand(batch, -1),
            "token_type_ids": chunk.token_type_ids[None].expand(batch, -1),
            "attention_mask": torch.ones(batch, len(chunk.input_ids), dtype=torch.long),
        }
        dtype = next(self.model.parameters()).dtype
        with torch.inference_mode():
            outputs = self.model(
                pixel_values=inputs["pixel_values"].to(self.device, dtype),
                pixel_mask=inputs["pixel_mask"].to(self.device),
                **{key: value.to(self.device) for key, value in text.items()},
            )
            probabilities = outputs.logits.float().sigmoid()  # (B, Q, max_text_len), 0 past the prompt
            scores = torch.zeros(*probabilities.shape[:2], len(chunk.positions), device=probabilities.device)
            for k, positions in enumerate(chunk.positions):
                if positions:
                    scores[:, :, k] = probabilities[:, :, positions].amax(dim=-1)
            boxes = _cxcywh_to_xyxy(outputs.pred_boxes.float()) * torch.tensor(
                [width, height, width, height], dtype=torch.float32, device=probabilities.device
            )
        return list(boxes.cpu().numpy()), list(scores.cpu().numpy())


@dataclass(frozen=True)
class PromptChunk:
    """One Grounding DINO prompt: its text, token ids (L,), token types (L,), and each name's token positions."""

    prompt: str
    input_ids: torch.Tensor
    token_type_ids: torch.Tensor
    positions: list[list[int]]


class Owlv2Detector:
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
        _check_options(min_score, max_boxes, batch_size)
        if not _is_name_template(prompt):
            raise AVSegError(f"OWLv2 prompt needs one '{{}}' for the class name and no other braces: {prompt!r}")
        self.model = model
        self.processor = processor
        self.device = torch.device(device)
        self.min_score = float(min_score)
        self.max_boxes = int(max_boxes)
        self.batch_size = int(batch_size)
        self.prompt = prompt

    @classmethod
    def from_folder(
        cls, folder: str | os.PathLike, device: torch.device | str = "cpu", **kwargs: Any
    ) -> Owlv2Detector:
        """Load model and processor saved in `folder` (a Hugging Face snapshot); kwargs go to `__init__`."""
        from transformers import AutoProcessor, Owlv2ForObjectDetection

        model, processor = _load_folder(folder, "OWLv2", "owlv2", Owlv2ForObjectDetection, AutoProcessor, device)
        return cls(model, processor, device=device, **kwargs)

    def detect(self, frames: Sequence[np.ndarray], names: Sequence[str]) -> list[Detections]:
        """Boxes for `names` in each of `frames`.

        Args:
            frames: uint8 (H, W, 3) RGB each; sizes may differ (each is padded to its own square).
            names: K class names.

        Returns:
            One `Detections` per frame: boxes (N, 4) xyxy pixels, class_scores (N, K).
        """
        frames = _check_frames(frames)
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
                results.append(_select_boxes(frame_boxes, frame_scores, height, width, self.min_score, self.max_boxes))
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
            boxes = _cxcywh_to_xyxy(normalised.float()) * sides[:, None, None]
            scores = logits.float().sigmoid()
        return boxes.cpu().numpy(), scores.cpu().numpy()


def load_detector(
    kind: str, folder: str | os.PathLike, device: torch.device | str = "cpu", **kwargs: Any
) -> TextBoxDetector:
    """The detector `kind` ("grounding-dino" or "owlv2") loaded from `folder`; kwargs go to its constructor."""
    if kind == "grounding-dino":
        return GroundingDinoDetector.from_folder(folder, device=device, **kwargs)
    if kind == "owlv2":
        return Owlv2Detector.from_folder(folder, device=device, **kwargs)
    raise AVSegError(f"unknown detector {kind!r}: expected one of {', '.join(DETECTOR_KINDS)}", exit_code=2)


def _select_boxes(
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


def _block_diagonal(blocks: Sequence[np.ndarray]) -> np.ndarray:
    """Stack per-chunk (Q_c, K_c) score blocks into (sum Q_c, sum K_c), zero outside each chunk's own block."""
    rows = sum(block.shape[0] for block in blocks)
    out = np.zeros((rows, sum(block.shape[1] for block in blocks)), np.float32)
    row = col = 0
    for block in blocks:
        out[row : row + block.shape[0], col : col + block.shape[1]] = block
        row, col = row + block.shape[0], col + block.shape[1]
    return out


def _is_name_template(prompt: str) -> bool:
    """Whether `prompt.format(name)` works and puts the name in."""
    try:
        return prompt.format("\0").count("\0") == 1 + prompt.count("\0")
    except (IndexError, KeyError, ValueError):
        return False


def _prompt_name(name: str) -> str:
    """A class name as it goes into a Grounding DINO prompt: stripped and lower-cased."""
    return name.strip().lower()


def _cxcywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    """(..., 4) (cx, cy, w, h) -> (..., 4) (x0, y0, x1, y1)."""
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1)


def _indices_by_size(frames: Sequence[np.ndarray]) -> list[list[int]]:
    """Indices of `frames` grouped by (H, W), groups in order of first appearance."""
    groups: dict[tuple[int, int], list[int]] = {}
    for index, frame in enumerate(frames):
        groups.setdefault(frame.shape[:2], []).append(index)
    return list(groups.values())


def _check_frames(frames: Sequence[np.ndarray]) -> list[np.ndarray]:
    """The frames as a list, each checked to be uint8 (H, W, 3) with H, W > 0."""
    frames = list(frames)
    for index, frame in enumerate(frames):
        if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            described = f"{frame.dtype} {frame.shape}" if isinstance(frame, np.ndarray) else type(frame).__name__
            raise ValueError(f"frame {index} must be a uint8 (H, W, 3) RGB array, got {described}")
        if frame.shape[0] == 0 or frame.shape[1] == 0:
            raise ValueError(f"frame {index} is empty: {frame.shape}")
    return frames


def _check_options(min_score: float, max_boxes: int, batch_size: int) -> None:
    if not 0.0 <= float(min_score) <= 1.0:
        raise AVSegError(f"detector min_score must be in [0, 1], got {min_score}", exit_code=2)
    if int(max_boxes) < 1:
        raise AVSegError(f"detector max_boxes must be at least 1, got {max_boxes}", exit_code=2)
    if int(batch_size) < 1:
        raise AVSegError(f"detector batch_size must be at least 1, got {batch_size}", exit_code=2)


def _load_folder(
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
