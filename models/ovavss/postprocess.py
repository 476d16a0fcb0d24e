"""From per-query class probabilities to per-frame semantic maps (ovavss-spec.md §8).

1. top-k (10) over all (query, class) entries of the probability matrix;
2. keep entries with probability > 0.3, sorted by probability, highest first;
3. their masks: logits cropped to the unpadded resized size, bilinearly resized to the output (original)
   size, binarised with logit > 0;
4. painted first-come-first-served: each mask fills only pixels no earlier (higher-scoring) mask took,
   with value = vocabulary index + 1; 0 = background.
A query can appear with two classes; the lower-scoring one only fills what is left.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class SelectedPairs:
    """Kept (query, class) pairs, highest probability first.

    Attributes:
        query_index: (P,) long, the query (0..Q-1) of each pair.
        class_index: (P,) long, the vocabulary index (0..K-1) of each pair.
        scores: (P,) float, the class probability of each pair.
    """

    query_index: torch.Tensor
    class_index: torch.Tensor
    scores: torch.Tensor

    def __len__(self) -> int:
        return int(self.query_index.numel())


def select_pairs(
    probs: torch.Tensor, query_index: torch.Tensor, top_k: int = 10, score_threshold: float = 0.3
) -> SelectedPairs:
    """The top-k (query, class) entries with probability > `score_threshold`, sorted descending.

    Args:
        probs: (N, K) class probabilities of the N classified queries.
        query_index: (N,) long, which query each row of `probs` belongs to.
        top_k: entries considered (official 10); fewer when N x K is smaller.
        score_threshold: strict lower bound on the kept probabilities (official 0.3).

    Ties are broken by the lower flat index (row-major), so results are deterministic.
    """
    num_classes = probs.shape[1]
    flat = probs.flatten()
    k = min(top_k, flat.numel())
    scores, order = torch.sort(flat, descending=True, stable=True)
    scores, order = scores[:k], order[:k]
    keep = scores > score_threshold
    scores, order = scores[keep], order[keep]
    return SelectedPairs(
        query_index=query_index.to(probs.device)[order // num_classes],
        class_index=order % num_classes,
        scores=scores,
    )


def masks_at_output_size(
    mask_logits: torch.Tensor, image_size: tuple[int, int], output_size: tuple[int, int]
) -> torch.Tensor:
    """Binary masks at the output resolution.

    Args:
        mask_logits: (P, T, Hp, Wp) logits on the padded canvas.
        image_size: (h, w) of the resized, unpadded frames (the top-left part of the canvas).
        output_size: (H, W) wanted, e.g. the original frame size.

    Returns:
        (P, T, H, W) bool, bilinear (align_corners=False) resize of the cropped logits, then logit > 0.
    """
    height, width = image_size
    cropped = mask_logits[..., :height, :width]
    if tuple(cropped.shape[-2:]) != tuple(output_size) and cropped.numel() > 0:
        num_pairs, num_frames = cropped.shape[:2]
        resized = F.interpolate(
            cropped.flatten(0, 1).unsqueeze(1), size=tuple(output_size), mode="bilinear", align_corners=False
        )
        cropped = resized.view(num_pairs, num_frames, *output_size)
    elif cropped.numel() == 0:
        cropped = cropped.new_zeros(*cropped.shape[:2], *output_size)
    return cropped > 0


def paint_semantic_maps(masks: torch.Tensor, class_index: torch.Tensor) -> torch.Tensor:
    """Per-frame label maps, masks painted in order, each only where nothing was painted yet.

    Args:
        masks: (P, T, H, W) bool, highest-priority first.
        class_index: (P,) long vocabulary indices.

    Returns:
        (T, H, W) long: class_index + 1 of the first mask covering the pixel, 0 where none does.

    One reduction over P instead of P passes over the maps: `max` over P returns the index of the *first*
    maximum (documented), i.e. the first mask covering each pixel.
    """
    if masks.shape[0] == 0:
        return torch.zeros(masks.shape[1:], dtype=torch.long, device=masks.device)
    covered, first = masks.max(dim=0)
    labels = (class_index.to(device=masks.device, dtype=torch.long) + 1)[first]
    return labels.masked_fill_(~covered, 0)
