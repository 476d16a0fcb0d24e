"""The 71 AVSBench-semantic classes, their palette colours and the AVSBench-OV base/novel split.

Index 0 is background; 1..70 are the 70 category names in alphabetical order. The colour of index j is
the PASCAL-VOC bit-interleaved palette. OV-AVSS uses the same ids (its class j, 0-based over the 70
names, is written as j + 1). The 40 base / 30 novel split is fixed by the official evaluator's id lists
(see `../shared/reference/avsbench-data.md` §5.1); it is not derivable from counts.
"""

from __future__ import annotations

import numpy as np

CLASS_NAMES: tuple[str, ...] = (
    "background",
    "accordion", "airplane", "axe", "baby", "bassoon", "bell", "bird", "boat", "boy", "bus",
    "car", "cat", "cello", "clarinet", "clipper", "clock", "dog", "donkey", "drum", "duck",
    "elephant", "emergency-car", "erhu", "flute", "frying-food", "girl", "goose", "guitar", "gun", "guzheng",
    "hair-dryer", "handpan", "harmonica", "harp", "helicopter", "hen", "horse", "keyboard", "leopard", "lion",
    "man", "marimba", "missile-rocket", "motorcycle", "mower", "parrot", "piano", "pig", "pipa", "saw",
    "saxophone", "sheep", "sitar", "sorna", "squirrel", "tabla", "tank", "tiger", "tractor", "train",
    "trombone", "truck", "trumpet", "tuba", "ukulele", "utv", "vacuum-cleaner", "violin", "wolf", "woman",
)  # fmt: skip
"""Index -> name, background first, then the 70 categories alphabetically."""

NUM_CLASSES = len(CLASS_NAMES)  # 71, background included

CLASS_INDEX: dict[str, int] = {name: i for i, name in enumerate(CLASS_NAMES)}

BASE_IDS: tuple[int, ...] = (
    2, 4, 6, 7, 8, 9, 10, 11, 12, 16, 17, 18, 19, 20, 21, 26, 27, 28, 29, 31,
    35, 36, 37, 38, 40, 41, 43, 44, 46, 47, 48, 52, 55, 58, 59, 60, 62, 63, 67, 70,
)  # fmt: skip
"""The 40 base ("seen") class ids of AVSBench-OV."""

NOVEL_IDS: tuple[int, ...] = (
    1, 3, 5, 13, 14, 15, 22, 23, 24, 25, 30, 32, 33, 34, 39, 42, 45, 49, 50, 51,
    53, 54, 56, 57, 61, 64, 65, 66, 68, 69,
)  # fmt: skip
"""The 30 novel ("unseen") class ids of AVSBench-OV."""

BASE_NAMES: frozenset[str] = frozenset(CLASS_NAMES[i] for i in BASE_IDS)
NOVEL_NAMES: frozenset[str] = frozenset(CLASS_NAMES[i] for i in NOVEL_IDS)


def palette_color(index: int) -> tuple[int, int, int]:
    """PASCAL-VOC palette colour of a class index: bits 3i, 3i+1, 3i+2 of `index` set bit 7-i of R, G, B."""
    r = g = b = 0
    value = index
    for shift in range(8):
        r |= ((value >> 0) & 1) << (7 - shift)
        g |= ((value >> 1) & 1) << (7 - shift)
        b |= ((value >> 2) & 1) << (7 - shift)
        value >>= 3
        if value == 0:
            break
    return r, g, b


def palette(num_classes: int = 256) -> np.ndarray:
    """(num_classes, 3) uint8 array of palette colours, index 0 = black."""
    return np.array([palette_color(i) for i in range(num_classes)], dtype=np.uint8)


PALETTE: np.ndarray = palette(NUM_CLASSES)
"""(71, 3) uint8 colours of the AVSBench-semantic classes."""


_FLAT_PALETTE: tuple[int, ...] = tuple(palette(256).reshape(-1).tolist())


def flat_palette() -> list[int]:
    """768 ints (256 RGB triples) for `PIL.Image.putpalette`, so index PNGs show the AVSBench colours.

    Computed once at import (every mask PNG needs it; building it is 256 Python-level colour computations).
    """
    return list(_FLAT_PALETTE)
