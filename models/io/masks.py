"""Class-index masks on disk: read prediction PNGs, write AVSBench-palette PNGs, resize like torch.

A mask PNG holds one class id (0 = background, 1..70 = `CLASS_NAMES`) per pixel, in one of two forms:

* an **index map**: single channel (mode 'L', 'P', 'I' or 'I;16'), the pixel value is the class id;
* a **colour map**: RGB(A), the pixel colour is the class's AVSBench palette colour (`PALETTE`), as in
  AVSBench's `labels_rgb`.

`write_index_mask` writes mode 'P' with the AVSBench palette, so one file is both: an index map for
programs and the familiar colours in an image viewer.

A 'P' (palettised) file is read by its raw indices, whatever its palette says, so an index map saved
with any palette works; an RGB file must use exactly the AVSBench colours (anything else is an error,
never silently background).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from models.atomic import atomic_path
from models.data.classes import NUM_CLASSES, PALETTE, flat_palette
from models.data.labels import image_read_errors, rgb_to_index
from models.errors import AVSegError

INDEX_MODES = ("L", "P", "I", "I;16", "I;16B", "I;16L")
COLOUR_MODES = ("RGB", "RGBA")


def read_index_mask(path: str | os.PathLike, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """Read a mask PNG (index map or AVSBench colour map) as (H, W) uint8 class ids.

    Raises:
        AVSegError: the file is missing or unreadable, has an unsupported mode, contains a colour that
            is not an AVSBench palette colour, or a class id >= `num_classes`; the message names the file.
    """
    path = Path(path)
    with image_read_errors(path, "mask"), Image.open(path) as image:
        image.load()
        mode = image.mode
        if mode in INDEX_MODES:
            index = np.asarray(image).astype(np.int64)
        elif mode in COLOUR_MODES:
            rgb = np.asarray(image.convert("RGB"), dtype=np.uint8)
            decoded = rgb_to_index(rgb)
            if decoded.unknown_pixels:
                raise AVSegError(
                    f"{path}: {decoded.unknown_pixels} pixels have colours that are not AVSBench class "
                    "colours (write index maps, or RGB maps in the AVSBench palette)"
                )
            index = decoded.index
        else:
            raise AVSegError(
                f"{path}: unsupported image mode {mode!r} (expected a single-channel index map "
                "or an RGB map in the AVSBench palette)"
            )
    if index.ndim != 2:
        raise AVSegError(f"{path}: expected a single-channel mask, got an array of shape {index.shape}")
    if index.size and int(index.max()) >= num_classes:
        raise AVSegError(f"{path}: class id {int(index.max())} out of range (ids are 0..{num_classes - 1})")
    if index.size and int(index.min()) < 0:
        raise AVSegError(f"{path}: negative class id {int(index.min())}")
    return index.astype(np.uint8)


def _check_index(index: np.ndarray) -> np.ndarray:
    index = np.asarray(index)
    if index.ndim != 2:
        raise ValueError(f"expected an (H, W) class-index map, got shape {index.shape}")
    if not np.issubdtype(index.dtype, np.integer):
        raise ValueError(f"expected integer class ids, got dtype {index.dtype}")
    if index.size and (index.min() < 0 or index.max() >= 256):
        raise ValueError(f"class ids must lie in 0..255, got {index.min()}..{index.max()}")
    return index.astype(np.uint8)


def write_index_mask(path: str | os.PathLike, index: np.ndarray) -> None:
    """Write (H, W) class ids as a mode 'P' PNG with the AVSBench palette (atomic: temp file + rename)."""
    index = np.ascontiguousarray(_check_index(index))
    image = Image.frombytes("P", (index.shape[1], index.shape[0]), index.tobytes())
    image.putpalette(flat_palette())
    with atomic_path(path, suffix=".png") as tmp:
        image.save(tmp, format="PNG")


def write_colour_mask(path: str | os.PathLike, index: np.ndarray) -> None:
    """Write (H, W) class ids as an RGB PNG of AVSBench palette colours, like `labels_rgb` (atomic)."""
    index = _check_index(index)
    if index.size and index.max() >= NUM_CLASSES:
        raise ValueError(f"class ids must lie in 0..{NUM_CLASSES - 1} for colour masks, got {index.max()}")
    with atomic_path(path, suffix=".png") as tmp:
        Image.fromarray(PALETTE[index]).save(tmp, format="PNG")


def nearest_source_indices(input_size: int, output_size: int) -> np.ndarray:
    """Source index of each output index for a nearest resize, exactly as torch computes it.

    torch (`F.interpolate(mode="nearest")`, `nn.Upsample(mode="nearest")`, CPU and CUDA) takes
    src = min(floor(dst * scale), input_size - 1) with scale = float32(input_size) / float32(output_size)
    and the product in float32. Exact rational arithmetic (floor(dst * in / out)) differs for some sizes
    (e.g. 496 -> 224 at dst = 14), so the float32 steps are kept. PIL's NEAREST samples pixel centres
    instead and differs for non-integer ratios.
    """
    if input_size <= 0 or output_size <= 0:
        raise ValueError(f"sizes must be positive, got {input_size} -> {output_size}")
    if input_size == output_size:
        return np.arange(output_size)
    scale = np.float32(input_size) / np.float32(output_size)
    source = np.floor(np.arange(output_size, dtype=np.float32) * scale).astype(np.int64)
    return np.minimum(source, input_size - 1)


def resize_nearest(index: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize an (H, W) map to (height, width) with torch's nearest-neighbour rule (see above)."""
    index = np.asarray(index)
    if index.ndim != 2:
        raise ValueError(f"expected an (H, W) map, got shape {index.shape}")
    if index.shape == (height, width):
        return index
    rows = nearest_source_indices(index.shape[0], height)
    cols = nearest_source_indices(index.shape[1], width)
    return index[rows[:, None], cols[None, :]]
