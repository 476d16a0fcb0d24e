"""AVSBench label PNGs -> class-index maps, exactly as the official code does it, plus what it hides.

The official conversion (`color_mask_to_label`) converts the PNG to RGB, optionally resizes it with
PIL NEAREST, and maps each pixel to the palette index whose colour matches exactly; pixels of any other
colour silently become background. Here they also become background (so numbers match the official
evaluator) but are counted and reported.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image, UnidentifiedImageError

from models.data.classes import NUM_CLASSES, PALETTE
from models.errors import AVSegError

# RGB packed into one int32 per colour -> class index.
_PACKED_PALETTE = (
    PALETTE[:, 0].astype(np.int64) << 16 | PALETTE[:, 1].astype(np.int64) << 8 | PALETTE[:, 2].astype(np.int64)
)
_SORT = np.argsort(_PACKED_PALETTE)
_SORTED_PACKED = _PACKED_PALETTE[_SORT]


@dataclass(frozen=True)
class DecodedLabel:
    """A decoded label: `index` (H, W) uint8 class ids, `unknown_pixels` = pixels of non-palette colours."""

    index: np.ndarray
    unknown_pixels: int


def rgb_to_index(rgb: np.ndarray) -> DecodedLabel:
    """(H, W, 3) uint8 colours -> (H, W) uint8 palette indices; unknown colours -> 0 and counted."""
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) array, got {rgb.shape}")
    packed = rgb[..., 0].astype(np.int64) << 16 | rgb[..., 1].astype(np.int64) << 8 | rgb[..., 2].astype(np.int64)
    pos = np.searchsorted(_SORTED_PACKED, packed)
    pos = np.clip(pos, 0, len(_SORTED_PACKED) - 1)
    known = _SORTED_PACKED[pos] == packed
    index = np.where(known, _SORT[pos], 0).astype(np.uint8)
    return DecodedLabel(index=index, unknown_pixels=int((~known).sum()))


@contextlib.contextmanager
def image_read_errors(path: Path, what: str) -> Iterator[None]:
    """Turn every way reading the image `path` can fail into one `AVSegError` naming it.

    `what` names the file for the user ("label", "frame", "mask"): "<what> file not found: P",
    "expected a <what> image, found a folder: P", "unreadable <what> image: P (reason)".
    """
    try:
        yield
    except FileNotFoundError as error:
        raise AVSegError(f"{what} file not found: {path}") from error
    except IsADirectoryError as error:
        raise AVSegError(f"expected a {what} image, found a folder: {path}") from error
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise AVSegError(f"unreadable {what} image: {path} ({error})") from error


def read_rgb_image(path: Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """Read an image as (H, W, 3) uint8 RGB, optionally resized with NEAREST to `size` = (width, height).

    Palettised ('P') and greyscale files are converted to RGB colours first, as the official code does.
    """
    path = Path(path)
    with image_read_errors(path, "label"), Image.open(path) as image:
        image = image.convert("RGB")
        if size is not None and image.size != tuple(size):
            image = image.resize(tuple(size), Image.NEAREST)
        return np.asarray(image, dtype=np.uint8).copy()


def read_label(path: Path, size: tuple[int, int] | None = None) -> DecodedLabel:
    """Read a `labels_rgb` PNG into class indices (optionally NEAREST-resized to `size` = (w, h))."""
    return rgb_to_index(read_rgb_image(path, size))


def apply_aobj_filter(index: np.ndarray, allowed_ids: list[int] | tuple[int, ...]) -> np.ndarray:
    """Set every pixel whose class is not in `allowed_ids` (background always allowed) to 0.

    This is the official OV evaluator's GT cleaning, and the same filter is applied to training targets
    so stray pixels of unlisted classes never become tiny bogus objects.
    """
    keep = np.zeros(max(NUM_CLASSES, int(index.max(initial=0)) + 1), dtype=bool)
    keep[0] = True
    keep[[i for i in allowed_ids if 0 <= i < len(keep)]] = True
    return np.where(keep[index], index, 0).astype(index.dtype)


def index_to_rgb(index: np.ndarray) -> np.ndarray:
    """(H, W) class indices -> (H, W, 3) uint8 palette colours."""
    return PALETTE[index]
