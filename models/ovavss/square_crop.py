"""Square region crops of (frame, query) masks for CLIP (official `ClipAdapter._preprocess_image`).

Protocol "official" (ovavss-spec.md §7.3), per (frame t, query q) pair:
1. binary mask = sigmoid(mask logit) > 0.5 on the padded canvas; the pair is valid iff >= 1 pixel is on;
2. tight box x1 = first on column, x2 = last on column + 1 (same for y);
3. square side L = max(x2 - x1, y2 - y1), anchored at the top-left corner: (x1, y1, x1 + L, y1 + L);
4. image crop = `roi_align(frames, box, R, spatial_scale=1, sampling_ratio=-1, aligned=False)` on the
   unpadded frames (0..255): boxes leaving the frame are zero (black) filled;
5. mask crop = the same roi_align on the soft mask probabilities (padded canvas);
6. region = mask crop x image crop (black background).
Protocol "centered" (what the paper describes): the square is centred on the tight box's centre instead.

All crops of a batch of pairs come out of two roi_align calls; nothing is cropped one at a time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torchvision.ops import roi_align

CropProtocol = Literal["official", "centered"]
CROP_PROTOCOLS: tuple[str, ...] = ("official", "centered")


@dataclass(frozen=True)
class MaskBoxes:
    """Tight boxes of the binarised masks of every (query, frame) pair.

    Attributes:
        valid: (Q, T) bool, the mask has at least one pixel with probability > 0.5.
        boxes: (Q, T, 4) float32 (x1, y1, x2, y2) in padded-canvas pixels, x2/y2 exclusive; 0 where invalid.
    """

    valid: torch.Tensor
    boxes: torch.Tensor


def mask_probabilities(mask_logits: torch.Tensor, half_precision: bool = False) -> torch.Tensor:
    """sigmoid(logits) as float32; `half_precision` rounds through float16 like the official fp16 autocast."""
    probs = mask_logits.float().sigmoid()
    return probs.half().float() if half_precision else probs


def tight_boxes(binary: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Bounding boxes of binary masks (detectron2 `BitMasks.get_bounding_boxes`).

    Args:
        binary: (..., H, W) bool.

    Returns:
        valid (...) bool, boxes (..., 4) float32 (x1, y1, x2, y2) with x2 = last on column + 1; 0 if empty.
    """
    height, width = binary.shape[-2:]
    columns_on = binary.any(dim=-2)  # (..., W) bool
    valid = columns_on.any(dim=-1)
    columns = columns_on.to(torch.uint8)  # argmax needs numbers; it returns the first maximum
    rows = binary.any(dim=-1).to(torch.uint8)  # (..., H)
    x1 = columns.argmax(dim=-1)
    x2 = width - columns.flip(-1).argmax(dim=-1)
    y1 = rows.argmax(dim=-1)
    y2 = height - rows.flip(-1).argmax(dim=-1)
    boxes = torch.stack([x1, y1, x2, y2], dim=-1).float() * valid.unsqueeze(-1)
    return valid, boxes


def mask_boxes(mask_logits: torch.Tensor, half_precision: bool = False, queries_per_chunk: int = 16) -> MaskBoxes:
    """Validity and tight boxes of all (query, frame) masks, a few queries at a time to bound memory.

    Args:
        mask_logits: (Q, T, Hp, Wp) mask logits upsampled to the padded input size (or a `MaskCanvas`).
        half_precision: threshold float16-rounded probabilities (official fp16 behaviour).
        queries_per_chunk: queries binarised at once.
    """
    valid_parts, box_parts = [], []
    for start in range(0, mask_logits.shape[0], queries_per_chunk):
        probs = mask_probabilities(mask_logits[start : start + queries_per_chunk], half_precision)
        valid, boxes = tight_boxes(probs > 0.5)
        valid_parts.append(valid)
        box_parts.append(boxes)
    if not valid_parts:
        num_frames = mask_logits.shape[1]
        return MaskBoxes(
            valid=torch.zeros(0, num_frames, dtype=torch.bool, device=mask_logits.device),
            boxes=torch.zeros(0, num_frames, 4, device=mask_logits.device),
        )
    return MaskBoxes(valid=torch.cat(valid_parts), boxes=torch.cat(box_parts))


def square_boxes(boxes: torch.Tensor, protocol: CropProtocol = "official") -> torch.Tensor:
    """Square boxes of side L = max(w, h) around tight boxes.

    Args:
        boxes: (M, 4) float (x1, y1, x2, y2).
        protocol: "official" anchors the square at (x1, y1) and extends it right/down; "centered" centres it
            on the box centre (may give half-pixel coordinates).

    Returns:
        (M, 4) float32 square boxes.
    """
    if protocol not in CROP_PROTOCOLS:
        raise ValueError(f"unknown crop protocol {protocol!r}; expected one of {CROP_PROTOCOLS}")
    boxes = boxes.float()
    x1, y1, x2, y2 = boxes.unbind(-1)
    side = torch.maximum(x2 - x1, y2 - y1)
    if protocol == "official":
        return torch.stack([x1, y1, x1 + side, y1 + side], dim=-1)
    center_x, center_y = (x1 + x2) / 2, (y1 + y2) / 2
    half = side / 2
    return torch.stack([center_x - half, center_y - half, center_x + half, center_y + half], dim=-1)


def crop_regions(
    frames: torch.Tensor,
    mask_logits: torch.Tensor,
    query_index: torch.Tensor,
    frame_index: torch.Tensor,
    boxes: torch.Tensor,
    output_size: int,
    half_precision: bool = False,
) -> torch.Tensor:
    """Masked square crops of M (query, frame) pairs, black outside the frame and outside the soft mask.

    Args:
        frames: (T, 3, H, W) resized, unnormalised, unpadded RGB frames, uint8 or float in 0..255.
        mask_logits: (Q, T, Hp, Wp) mask logits on the padded canvas (Hp >= H, Wp >= W), or a `MaskCanvas`.
        query_index: (M,) long, the query of each pair.
        frame_index: (M,) long, the frame of each pair.
        boxes: (M, 4) float square boxes (x1, y1, x2, y2) in canvas pixels (see `square_boxes`).
        output_size: R, side of the crops (the CLIP input size).
        half_precision: round the crops and their product through float16 (official fp16 autocast).

    Returns:
        (M, 3, R, R) float32 regions in 0..255.
    """
    num_pairs = boxes.shape[0]
    device = mask_logits.device
    if num_pairs == 0:
        return torch.zeros(0, 3, output_size, output_size, device=device)
    frames = frames.to(device=device, dtype=torch.float32)
    boxes = boxes.to(device=device, dtype=torch.float32)
    image_rois = torch.cat([frame_index.to(device, torch.float32).unsqueeze(1), boxes], dim=1)
    image_crops = roi_align(
        frames, image_rois, output_size=(output_size, output_size), spatial_scale=1.0, sampling_ratio=-1, aligned=False
    )
    masks = mask_probabilities(mask_logits[query_index.to(device), frame_index.to(device)], half_precision)
    mask_rois = torch.cat([torch.arange(num_pairs, device=device, dtype=torch.float32).unsqueeze(1), boxes], dim=1)
    mask_crops = roi_align(
        masks.unsqueeze(1), mask_rois, output_size=(output_size, output_size), spatial_scale=1.0, sampling_ratio=-1,
        aligned=False,
    )
    if half_precision:
        image_crops, mask_crops = image_crops.half(), mask_crops.half()
        return (mask_crops * image_crops).float()
    return mask_crops * image_crops
