"""Frame and mask transforms of the official pipeline: read, resize shortest edge, flip, normalise, pad.

Everything follows detectron2 as OV-AVSS uses it (ovavss-spec.md §1.1):

- frames are read as RGB with the EXIF orientation applied and resized with PIL bilinear on uint8
  (PIL's bilinear filter is antialiased when downscaling, so only PIL gives the official pixels);
- label maps are resized with PIL nearest (a pure pixel selection, so resizing an index map equals
  resizing the RGB label and decoding it afterwards);
- the network input is (x - mean) / std in float32 on the 0..255 scale, THEN zero-padded at the
  bottom/right to a multiple of 32 (padding value 0.0 = the mean colour).

Sizes are (height, width) throughout this module, unlike PIL's (width, height).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from models.data.labels import image_read_errors

PIXEL_MEAN: tuple[float, float, float] = (123.675, 116.28, 103.53)
"""Per-channel RGB mean on the 0..255 scale (`MODEL.PIXEL_MEAN`)."""

PIXEL_STD: tuple[float, float, float] = (58.395, 57.12, 57.375)
"""Per-channel RGB standard deviation on the 0..255 scale (`MODEL.PIXEL_STD`)."""

SIZE_DIVISIBILITY = 32
"""Padded inputs are a multiple of this in both directions (`MASK_FORMER.SIZE_DIVISIBILITY`)."""

MAX_SIZE = 1333
"""Cap on the long side after the shortest-edge resize (`INPUT.MAX_SIZE_TRAIN` / `_TEST`)."""


def resize_shortest_edge_size(height: int, width: int, short: int, max_size: int = MAX_SIZE) -> tuple[int, int]:
    """detectron2 `ResizeShortestEdge.get_output_shape`: the (new_h, new_w) for a short side of `short`.

    scale = short / min(h, w); the short side becomes `short`, the other `scale` times its length; if the
    long side then exceeds `max_size` both are scaled down so that it equals `max_size`; finally both are
    rounded with int(x + 0.5). Example: 224x224 with short=360 -> (360, 360); 480x640 -> (360, 480).
    """
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    size = float(short)
    scale = size / min(height, width)
    if height < width:
        new_h, new_w = size, scale * width
    else:
        new_h, new_w = scale * height, size
    if max(new_h, new_w) > max_size:
        scale = max_size * 1.0 / max(new_h, new_w)
        new_h = new_h * scale
        new_w = new_w * scale
    return int(new_h + 0.5), int(new_w + 0.5)


def read_frame(path: Path) -> np.ndarray:
    """Read one frame as (H, W, 3) uint8 RGB, EXIF orientation applied (detectron2 `read_image`)."""
    path = Path(path)
    with image_read_errors(path, "frame"), Image.open(path) as image:
        image = ImageOps.exif_transpose(image)
        return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()


def resize_frame(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) uint8 -> (h, w, 3) uint8 with PIL bilinear, `size` = (h, w); a no-op at the same size."""
    height, width = size
    if frame.shape[:2] == (height, width):
        return frame
    return np.asarray(Image.fromarray(frame).resize((width, height), Image.BILINEAR), dtype=np.uint8)


def resize_index_map(index: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W) uint8 class indices -> (h, w) uint8 with PIL nearest, `size` = (h, w)."""
    height, width = size
    if index.shape == (height, width):
        return index
    return np.asarray(Image.fromarray(index).resize((width, height), Image.NEAREST), dtype=np.uint8)


def frames_to_tensor(frames: Sequence[np.ndarray]) -> torch.Tensor:
    """List of T (H, W, 3) uint8 frames of one size -> (T, 3, H, W) uint8 tensor."""
    stacked = np.stack([np.ascontiguousarray(frame) for frame in frames])
    return torch.from_numpy(stacked).permute(0, 3, 1, 2).contiguous()


def hflip(tensor: torch.Tensor) -> torch.Tensor:
    """Mirror left-right along the last (width) axis; works for (T, 3, H, W) frames and (..., H, W) masks."""
    return torch.flip(tensor, dims=(-1,))


def padded_size(sizes: Sequence[tuple[int, int]], size_divisibility: int = SIZE_DIVISIBILITY) -> tuple[int, int]:
    """The smallest (Hp, Wp) that holds every (h, w) in `sizes` and is a multiple of `size_divisibility`."""
    if not sizes:
        raise ValueError("need at least one size")
    max_h = max(h for h, _ in sizes)
    max_w = max(w for _, w in sizes)
    if size_divisibility > 1:
        max_h = -(-max_h // size_divisibility) * size_divisibility
        max_w = -(-max_w // size_divisibility) * size_divisibility
    return max_h, max_w


def pad_bottom_right(tensor: torch.Tensor, size: tuple[int, int], value: float = 0.0) -> torch.Tensor:
    """Pad the last two axes of (..., h, w) at the bottom/right to `size` = (Hp, Wp) with `value`."""
    height, width = tensor.shape[-2:]
    target_h, target_w = size
    if target_h < height or target_w < width:
        raise ValueError(f"cannot pad {height}x{width} to the smaller {target_h}x{target_w}")
    out = tensor.new_full((*tensor.shape[:-2], target_h, target_w), value)
    out[..., :height, :width] = tensor
    return out


def normalize(frames: torch.Tensor) -> torch.Tensor:
    """(..., 3, H, W) uint8 RGB -> float32 (x - PIXEL_MEAN) / PIXEL_STD, per channel, in float32 arithmetic."""
    mean = torch.tensor(PIXEL_MEAN, dtype=torch.float32, device=frames.device).view(3, 1, 1)
    std = torch.tensor(PIXEL_STD, dtype=torch.float32, device=frames.device).view(3, 1, 1)
    return (frames.to(torch.float32) - mean) / std


def normalize_and_pad(
    frames: torch.Tensor | Sequence[torch.Tensor], size_divisibility: int = SIZE_DIVISIBILITY
) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """Normalise clips, then zero-pad them at the bottom/right to one common size (detectron2 `ImageList`).

    Args:
        frames: uint8 (N, T, 3, H, W), or a list of N uint8 clips (T, 3, H_i, W_i) of possibly
            different sizes (same T).
        size_divisibility: the padded height and width are multiples of this (32 officially).

    Returns:
        images: float32 (N, T, 3, Hp, Wp), (x - mean) / std inside each clip's (h_i, w_i) region and
            exactly 0.0 in the padding.
        image_sizes: the N unpadded (h_i, w_i).
    """
    clips = list(frames.unbind(0)) if isinstance(frames, torch.Tensor) else list(frames)
    if not clips:
        raise ValueError("normalize_and_pad needs at least one clip")
    for clip in clips:
        if clip.dim() != 4 or clip.shape[1] != 3:
            raise ValueError(f"expected clips of shape (T, 3, H, W), got {tuple(clip.shape)}")
        if clip.dtype != torch.uint8:
            raise ValueError(f"expected uint8 frames, got {clip.dtype}")
    image_sizes = [(int(clip.shape[-2]), int(clip.shape[-1])) for clip in clips]
    target = padded_size(image_sizes, size_divisibility)
    images = torch.stack([pad_bottom_right(normalize(clip), target) for clip in clips])
    return images, image_sizes
