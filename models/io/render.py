"""Draw segmentation results over a video frame: class colours, contours, "label score" tags, a legend.

Drawing order, each step on top of the previous one:

1. **fill**: every pixel with a class id > 0 in the label map is blended with its class colour,
   `out = floor((1 - alpha) * frame + alpha * colour + 0.5)` (alpha 0.5 by default; round half up);
   background pixels (id 0) are left exactly as they were.
2. **contours**: the boundary pixels of every class region of the label map and of every instance mask,
   opaque in the class colour, `contour_thickness` pixels wide (1 px up to 539 px on the short side,
   2 px at 720p, ...). A region's side on the image border gets no contour.
3. **tags**: for every instance with a non-empty mask, "label 0.87" on a box of its colour at the
   top-left corner of its bounding box (above the box when there is room; moved down a row at a time when it
   would cover a tag drawn before it, e.g. of objects sharing a corner), black or white text for
   contrast. Pillow's default font (FreeType), `label_font_size` px: 12 px at 360p, 24 px at 720p. Each
   string is rasterised by Pillow once and then blended by its coverage (the same pixels as Pillow's own
   text drawing), and everything is drawn in place on one numpy array (no image copies).
4. **legend**: top-right, on a darkened panel, one row per class present in the label map or among
   the instances (a swatch of its colour and its name), in class-id order then instance order; rows
   that do not fit are summarised as "+N more".

Colours: a class id or an instance's colour index j means `palette[j]` (default: the AVSBench / PASCAL
VOC palette, `models.data.classes.palette(256)`), so ids of any vocabulary up to 255 get distinct
colours; an instance may give an RGB triple instead.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Sequence, Union

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from models.data.classes import CLASS_NAMES, palette as voc_palette

RGB = tuple[int, int, int]
DEFAULT_PALETTE: np.ndarray = voc_palette(256)
"""(256, 3) uint8: the AVSBench (PASCAL VOC) colour of every class id."""


@dataclass(frozen=True)
class OverlayInstance:
    """One detected object to tag.

    Attributes:
        label: text shown, e.g. "violin".
        score: confidence in [0, 1], shown with two decimals.
        colour: palette index (the class id) or an (R, G, B) triple.
        mask: (H, W) bool (or 0/1) mask of the object in frame coordinates.
    """

    label: str
    score: float
    colour: Union[int, RGB]
    mask: np.ndarray


InstanceLike = Union[OverlayInstance, tuple]


def contour_thickness(height: int, width: int) -> int:
    """Contour width in pixels: 1 below 540 px on the short side, 2 at 720p, 3 at 1080p, ..."""
    return max(1, round(min(height, width) / 360))


def label_font_size(height: int, width: int) -> int:
    """Font size in pixels for tags and legend: short side / 30, at least 10 (12 at 360p, 24 at 720p)."""
    return max(10, round(min(height, width) / 30))


@functools.lru_cache(maxsize=16)
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _colour(value: int | Sequence[int], palette: np.ndarray) -> np.ndarray:
    if isinstance(value, (int, np.integer)):
        if not 0 <= int(value) < len(palette):
            raise ValueError(f"colour index {value} outside the palette (0..{len(palette) - 1})")
        return palette[int(value)].astype(np.uint8)
    rgb = np.asarray(value)
    if rgb.shape != (3,) or rgb.min() < 0 or rgb.max() > 255:
        raise ValueError(f"expected a palette index or an (R, G, B) triple in 0..255, got {value!r}")
    return rgb.astype(np.uint8)


def _as_instance(item: InstanceLike) -> OverlayInstance:
    if isinstance(item, OverlayInstance):
        return item
    label, score, colour, mask = item
    return OverlayInstance(str(label), float(score), colour, mask)


def _eroded(mask: np.ndarray, steps: int) -> np.ndarray:
    """Erode a bool mask `steps` times with the 4-neighbourhood; outside the image repeats the edge."""
    result = mask
    for _ in range(steps):
        padded = np.pad(result, 1, mode="edge")
        result = (
            result
            & padded[:-2, 1:-1]
            & padded[2:, 1:-1]
            & padded[1:-1, :-2]
            & padded[1:-1, 2:]
        )
    return result


def mask_boundary(mask: np.ndarray, thickness: int = 1) -> np.ndarray:
    """(H, W) bool: pixels of `mask` within `thickness` 4-steps of a pixel outside it (not the image border)."""
    mask = np.asarray(mask, dtype=bool)
    return mask & ~_eroded(mask, thickness)


def _label_boundary(label_map: np.ndarray, thickness: int) -> np.ndarray:
    """(H, W) bool: foreground pixels within `thickness` 4-steps of a pixel with another label.

    The same as OR-ing `mask_boundary(label_map == c, thickness)` over the classes c > 0, in one pass:
    a pixel stays interior while its four neighbours have its label and are interior themselves.
    """
    interior = np.ones(label_map.shape, dtype=bool)
    padded_labels = np.pad(label_map, 1, mode="edge")
    same = (
        (padded_labels[:-2, 1:-1] == label_map)
        & (padded_labels[2:, 1:-1] == label_map)
        & (padded_labels[1:-1, :-2] == label_map)
        & (padded_labels[1:-1, 2:] == label_map)
    )
    for _ in range(thickness):
        padded = np.pad(interior, 1, mode="edge")
        interior = same & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return (label_map != 0) & ~interior


def _box(mask: np.ndarray, margin: int = 0) -> tuple[slice, slice] | None:
    """Slices of the bounding box of a bool mask grown by `margin` pixels (clipped), None when empty."""
    rows, columns = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    return _grown((slice(int(rows[0]), int(rows[-1]) + 1), slice(int(columns[0]), int(columns[-1]) + 1)), margin,
                  mask.shape)


def _grown(box: tuple[slice, slice], margin: int, shape: tuple[int, int]) -> tuple[slice, slice]:
    """`box` grown by `margin` pixels on every side, clipped to an image of `shape`."""
    rows, columns = box
    return (slice(max(0, rows.start - margin), min(shape[0], rows.stop + margin)),
            slice(max(0, columns.start - margin), min(shape[1], columns.stop + margin)))


def _blend_fill(
    output: np.ndarray,
    frame: np.ndarray,
    label_map: np.ndarray,
    foreground: np.ndarray,
    palette: np.ndarray,
    alpha: float,
    box: tuple[slice, slice],
) -> None:
    """Write floor((1 - alpha) * frame + alpha * colour + 0.5) into `output` where `foreground`.

    Works on `box`, the bounding box of the foreground, only; alpha 0.5 uses the exact integer form
    (frame + colour + 1) // 2, other alphas float64.
    """
    pixels = frame[box]
    colour = palette[label_map[box]]
    if alpha == 0.5:
        blended = pixels.astype(np.uint16)
        blended += colour
        blended += 1
        blended >>= 1
    else:
        blended = np.floor((1.0 - alpha) * pixels + alpha * colour.astype(np.float64) + 0.5)
    np.copyto(output[box], blended, casting="unsafe", where=foreground[box][..., None])


def _text_colour(background: np.ndarray) -> RGB:
    luma = 0.299 * background[0] + 0.587 * background[1] + 0.114 * background[2]
    return (0, 0, 0) if luma > 128 else (255, 255, 255)


@dataclass(frozen=True)
class _TextStamp:
    """One string rasterised once: its glyph coverage and where that sits relative to the draw origin.

    Attributes:
        coverage: (h, w) uint8 anti-aliased ink coverage (255 = full ink) of the ink box.
        left, top: offset of the ink box from the origin (Pillow's `textbbox((0, 0), text)` left / top).
        width: textbbox right - left; bottom: textbbox bottom (so `bottom - top` rows of ink).
    """

    coverage: np.ndarray
    left: int
    top: int
    width: int
    bottom: int


@functools.lru_cache(maxsize=4096)
def _text_stamp(text: str, size: int) -> _TextStamp:
    """`text` in the default font at `size` px, rasterised by Pillow once and reused on every frame (tags repeat
    from frame to frame; rasterising them again cost ~40 % of an overlay at 360p)."""
    font = _font(size)
    left, top, right, bottom = font.getbbox(text)
    ink = Image.new("L", (max(1, right - left), max(1, bottom - top)), 0)
    ImageDraw.Draw(ink).text((-left, -top), text, fill=255, font=font)
    coverage = np.asarray(ink, dtype=np.uint8).copy()
    coverage.setflags(write=False)
    return _TextStamp(coverage, int(left), int(top), int(right - left), int(bottom))


def _draw_text(pixels: np.ndarray, x: int, y: int, stamp: _TextStamp, colour: Sequence[int]) -> None:
    """Blend `colour` into `pixels` (H, W, 3) uint8 by the stamp's coverage, origin at (x, y), clipped to the image:
    out = (dst * (255 - a) + colour * a + 127) // 255, as Pillow's text fill."""
    height, width = pixels.shape[:2]
    rows, columns = stamp.coverage.shape
    y0, x0 = y + stamp.top, x + stamp.left
    top, left = max(0, y0), max(0, x0)
    bottom, right = min(height, y0 + rows), min(width, x0 + columns)
    if bottom <= top or right <= left:
        return
    alpha = stamp.coverage[top - y0 : bottom - y0, left - x0 : right - x0, None].astype(np.uint16)
    region = pixels[top:bottom, left:right]
    ink = np.asarray(colour, dtype=np.uint16)
    region[...] = ((region * (255 - alpha) + ink * alpha + 127) // 255).astype(np.uint8)


def _fill_box(pixels: np.ndarray, left: int, top: int, right: int, bottom: int, colour: Sequence[int]) -> None:
    """Fill the pixels [top, bottom) x [left, right) (clipped) with `colour`."""
    height, width = pixels.shape[:2]
    pixels[max(0, top) : min(height, bottom), max(0, left) : min(width, right)] = np.asarray(colour, dtype=np.uint8)


def render_overlay(
    frame: np.ndarray,
    label_map: np.ndarray | None,
    instances: Sequence[InstanceLike] = (),
    *,
    class_names: Sequence[str] | None = CLASS_NAMES,
    palette: np.ndarray | None = None,
    alpha: float = 0.5,
    contours: bool = True,
    tags: bool = True,
    legend: bool = True,
) -> np.ndarray:
    """Draw a label map and tagged instances over a frame (the input is not modified).

    Args:
        frame: (H, W, 3) uint8 RGB.
        label_map: (H, W) int class ids, 0 = background (None: no fill, only the instances).
        instances: `OverlayInstance`s or (label, score, colour index or RGB, (H, W) mask) tuples.
        class_names: name of every class id, for the legend (default: the 71 AVSBench names; ids
            beyond it are called "class <id>").
        palette: (N, 3) uint8 colour of every class id (default `DEFAULT_PALETTE`).
        alpha: opacity of the fill, 0..1.
        contours, tags, legend: draw those layers (see the module docstring).

    Returns:
        (H, W, 3) uint8 RGB.
    """
    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 frame, got {frame.shape} {frame.dtype}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    height, width = frame.shape[:2]
    palette = DEFAULT_PALETTE if palette is None else np.asarray(palette, dtype=np.uint8)
    if palette.ndim != 2 or palette.shape[1] != 3:
        raise ValueError(f"expected an (N, 3) palette, got shape {palette.shape}")
    items = [_as_instance(item) for item in instances]
    masks = []
    for item in items:
        mask = np.asarray(item.mask).astype(bool)
        if mask.shape != (height, width):
            raise ValueError(f"instance {item.label!r}: mask shape {mask.shape} != frame size {(height, width)}")
        masks.append(mask)
    colours = [_colour(item.colour, palette) for item in items]

    output = frame.copy()
    present: list[int] = []
    if label_map is not None:
        label_map = np.asarray(label_map)
        if label_map.shape != (height, width):
            raise ValueError(f"label map shape {label_map.shape} != frame size {(height, width)}")
        if not np.issubdtype(label_map.dtype, np.integer):
            raise ValueError(f"label map must hold integer class ids, got {label_map.dtype}")
        low, high = (int(label_map.min()), int(label_map.max())) if label_map.size else (0, 0)
        if low < 0 or high >= len(palette):
            raise ValueError(f"label map ids must be in 0..{len(palette) - 1}, got {low}..{high}")
        foreground = label_map != 0
        fill_box = _box(foreground) if high else None
        if fill_box is not None:  # the classes present, counted inside the foreground's box only
            present = [int(i) + 1 for i in np.flatnonzero(np.bincount(label_map[fill_box].ravel())[1:])]
            _blend_fill(output, frame, label_map, foreground, palette, alpha, fill_box)

    thickness = contour_thickness(height, width)
    if contours:
        # boundaries only depend on pixels within `thickness` of the region: work on its padded box
        if label_map is not None and present:
            box = _grown(fill_box, thickness + 1, (height, width))
            labels = label_map[box]
            edge = _label_boundary(labels, thickness)
            output[box][edge] = palette[labels[edge]]
        for mask, colour in zip(masks, colours):
            box = _box(mask, thickness + 1)
            if box is not None:
                output[box][mask_boundary(mask[box], thickness)] = colour

    if not (tags and items) and not (legend and (present or items)):
        return output
    size = label_font_size(height, width)
    if tags:
        placed: list[tuple[int, int, int, int]] = []
        for item, mask, colour in zip(items, masks, colours):
            _draw_tag(output, item, mask, colour, size, placed)
    if legend:
        entries: list[tuple[str, np.ndarray]] = []
        for class_id in present:
            known = class_names is not None and class_id < len(class_names)
            name = class_names[class_id] if known else f"class {class_id}"
            entries.append((name, palette[class_id]))
        for item, colour in zip(items, colours):
            entries.append((item.label, colour))
        unique: dict[str, np.ndarray] = {}
        for name, colour in entries:
            unique.setdefault(name, colour)
        _draw_legend(output, list(unique.items()), size)
    return output


def _overlaps(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    """Whether two (left, top, right, bottom) boxes, right/bottom exclusive, share a pixel."""
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _draw_tag(pixels: np.ndarray, item: OverlayInstance, mask: np.ndarray, colour: np.ndarray, size: int,
              placed: list[tuple[int, int, int, int]]) -> None:
    """A "label score" tag at the top-left of the mask's bounding box (above it when there is room).

    A tag that would cover one already drawn (`placed`, updated here) moves down a row at a time to the first
    free place inside the image; if there is none it stays where it was first put.
    """
    box = _box(mask)
    if box is None:
        return
    height, width = pixels.shape[:2]
    y0, x0 = box[0].start, box[1].start
    stamp = _text_stamp(f"{item.label} {item.score:.2f}", size)
    pad = max(1, stamp.bottom // 6)
    box_width, box_height = stamp.width + 2 * pad, stamp.bottom - stamp.top + 2 * pad
    top = y0 - box_height if y0 - box_height >= 0 else y0
    left = min(x0, max(0, width - box_width))
    top = min(top, max(0, height - box_height))
    candidate = top
    while any(_overlaps((left, candidate, left + box_width, candidate + box_height), box) for box in placed):
        candidate += box_height
        if candidate + box_height > height:
            candidate = top
            break
    top = candidate
    placed.append((left, top, left + box_width, top + box_height))
    _fill_box(pixels, left, top, left + box_width, top + box_height, colour)
    _draw_text(pixels, left + pad, top + pad - stamp.top, stamp, _text_colour(colour))


def _draw_legend(pixels: np.ndarray, entries: list[tuple[str, np.ndarray]], size: int) -> None:
    """A panel at the top-right: one swatch + name per entry, "+N more" when they do not all fit."""
    if not entries:
        return
    height, width = pixels.shape[:2]
    text_height = _text_stamp("Ag", size).bottom
    pad = max(2, text_height // 4)
    row = text_height + pad
    max_rows = max(1, (height - 2 * pad) // row)
    if len(entries) > max_rows:
        shown = entries[: max_rows - 1]
        lines = [(name, colour) for name, colour in shown] + [(f"+{len(entries) - len(shown)} more", None)]
    else:
        lines = [(name, colour) for name, colour in entries]
    swatch = text_height
    stamps = [_text_stamp(name, size) for name, _ in lines]
    text_width = max(stamp.width for stamp in stamps)
    panel_width = min(width, pad + swatch + pad + text_width + pad)
    panel_height = min(height, pad + row * len(lines))
    left, top = width - panel_width, 0
    panel = pixels[top : top + panel_height, left : left + panel_width]
    panel[...] = (panel.astype(np.uint16) * 2 // 5).astype(np.uint8)
    for number, ((_, colour), stamp) in enumerate(zip(lines, stamps)):
        y = top + pad + number * row
        text_x = left + pad
        if colour is not None:
            _fill_box(pixels, left + pad, y, left + pad + swatch, y + swatch, colour)
            text_x = left + pad + swatch + pad
        text_y = y - stamp.top + (swatch - (text_height - stamp.top)) // 2  # ink centred on the swatch
        _draw_text(pixels, text_x, text_y, stamp, (255, 255, 255))
