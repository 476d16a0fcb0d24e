"""Grounding DINO through `transformers` as a `TextBoxDetector` (see `models.zeroshot.detector`).

One prompt "name1. name2. name3." per forward; a box's score for name k is the max over the prompt's token
positions of name k (found from the fast tokenizer's character offsets) of sigmoid(logits). Vocabularies whose
prompt would pass the model's `max_text_len` tokens are split into chunks that fit, one forward per chunk; a box
from one chunk scores 0 for the other chunks' names. Frames of different sizes are run in separate forwards.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from models.zeroshot.detector import (
    Detections,
    TransformersDetector,
    check_frames,
    cxcywh_to_xyxy,
    indices_by_size,
    load_detector_folder,
    select_boxes,
)


class GroundingDinoDetector(TransformersDetector):
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
        super().__init__(model, processor, device, min_score, max_boxes, batch_size)
        if input_short_side is not None and input_short_side < 32:
            raise ValueError(f"input_short_side must be >= 32 or None, got {input_short_side}")
        self.input_short_side = input_short_side
        if self.device.type == "cpu":
            # transformers' grid_sample kernel is ~30 % of a CPU forward; the fused gather computes the same
            from models.zeroshot.deformable_attention import use_gather_deformable_attention

            use_gather_deformable_attention(model)

    @classmethod
    def from_folder(
        cls, folder: str | os.PathLike, device: torch.device | str = "cpu", **kwargs: Any
    ) -> GroundingDinoDetector:
        """Load model and processor saved in `folder` (a Hugging Face snapshot); kwargs go to `__init__`."""
        from transformers import AutoProcessor, GroundingDinoForObjectDetection

        model, processor = load_detector_folder(
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
        frames = check_frames(frames)
        names = [str(name) for name in names]
        if not frames or not names:
            return [Detections.empty(len(names)) for _ in frames]
        chunks = self.prompt_chunks(names)
        results: list[Detections] = []
        for start in range(0, len(frames), self.batch_size):
            batch = frames[start : start + self.batch_size]
            found: dict[int, Detections] = {}
            for group in indices_by_size(batch):
                chunk_outputs = [self._run(np.stack([batch[i] for i in group]), chunk) for chunk in chunks]
                for row, index in enumerate(group):
                    boxes = np.concatenate([chunk_boxes[row] for chunk_boxes, _ in chunk_outputs])
                    scores = _block_diagonal([chunk_scores[row] for _, chunk_scores in chunk_outputs])
                    height, width = batch[index].shape[:2]
                    found[index] = select_boxes(boxes, scores, height, width, self.min_score, self.max_boxes)
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
        pixel_values, pixel_mask = pad_for_queries(inputs["pixel_values"], inputs["pixel_mask"],
                                                   int(self.model.config.num_queries))
        batch = len(frames)
        text = {
            "input_ids": chunk.input_ids[None].expand(batch, -1),
            "token_type_ids": chunk.token_type_ids[None].expand(batch, -1),
            "attention_mask": torch.ones(batch, len(chunk.input_ids), dtype=torch.long),
        }
        dtype = next(self.model.parameters()).dtype
        with torch.inference_mode():
            outputs = self.model(
                pixel_values=pixel_values.to(self.device, dtype),
                pixel_mask=pixel_mask.to(self.device),
                **{key: value.to(self.device) for key, value in text.items()},
            )
            probabilities = outputs.logits.float().sigmoid()  # (B, Q, max_text_len), 0 past the prompt
            scores = torch.zeros(*probabilities.shape[:2], len(chunk.positions), device=probabilities.device)
            for k, positions in enumerate(chunk.positions):
                if positions:
                    scores[:, :, k] = probabilities[:, :, positions].amax(dim=-1)
            boxes = cxcywh_to_xyxy(outputs.pred_boxes.float()) * torch.tensor(
                [width, height, width, height], dtype=torch.float32, device=probabilities.device
            )
        return list(boxes.cpu().numpy()), list(scores.cpu().numpy())


FEATURE_STRIDES = (8, 16, 32, 64)
"""Strides of Grounding DINO's four feature levels (three from the backbone, one more by a stride-2 conv)."""


def feature_positions(height: int, width: int) -> int:
    """A lower bound on the encoder positions of an (height, width) input, over the four feature levels."""
    return sum((height // stride) * (width // stride) for stride in FEATURE_STRIDES)


def pad_for_queries(pixel_values: torch.Tensor, pixel_mask: torch.Tensor,
                    num_queries: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 3, H, W) pixel values and (B, H, W) mask padded (masked out, bottom / right) until the input has at
    least `num_queries` encoder positions: Grounding DINO picks its `num_queries` proposals among them, and a
    small input (a tiny --detector-size, a very wide or tall frame) has fewer (`torch.topk` fails). The mask
    keeps the padding out of the image, as the processor's own batch padding does; unchanged when not needed."""
    height, width = pixel_values.shape[-2:]
    new_height, new_width = height, width
    while feature_positions(new_height, new_width) < num_queries:
        if new_height <= new_width:
            new_height += FEATURE_STRIDES[-1]
        else:
            new_width += FEATURE_STRIDES[-1]
    if (new_height, new_width) == (height, width):
        return pixel_values, pixel_mask
    padding = (0, new_width - width, 0, new_height - height)
    return torch.nn.functional.pad(pixel_values, padding), torch.nn.functional.pad(pixel_mask, padding)


@dataclass(frozen=True)
class PromptChunk:
    """One Grounding DINO prompt: its text, token ids (L,), token types (L,), and each name's token positions."""

    prompt: str
    input_ids: torch.Tensor
    token_type_ids: torch.Tensor
    positions: list[list[int]]


def _block_diagonal(blocks: Sequence[np.ndarray]) -> np.ndarray:
    """Stack per-chunk (Q_c, K_c) score blocks into (sum Q_c, sum K_c), zero outside each chunk's own block."""
    rows = sum(block.shape[0] for block in blocks)
    out = np.zeros((rows, sum(block.shape[1] for block in blocks)), np.float32)
    row = col = 0
    for block in blocks:
        out[row : row + block.shape[0], col : col + block.shape[1]] = block
        row, col = row + block.shape[0], col + block.shape[1]
    return out


def _prompt_name(name: str) -> str:
    """A class name as it goes into a Grounding DINO prompt: stripped and lower-cased."""
    return name.strip().lower()
