"""The class table, palette and base/novel split against the reference note's appendix."""

from __future__ import annotations

from models.data import classes


def test_names_alphabetical_and_counted():
    assert classes.NUM_CLASSES == 71
    assert classes.CLASS_NAMES[0] == "background"
    assert list(classes.CLASS_NAMES[1:]) == sorted(classes.CLASS_NAMES[1:])
    assert len(set(classes.CLASS_NAMES)) == 71


def test_palette_known_colours():
    # Values from avsbench-data.md's appendix.
    expected = {0: (0, 0, 0), 1: (128, 0, 0), 2: (0, 128, 0), 28: (64, 64, 128), 41: (192, 0, 64),
                63: (192, 192, 192), 64: (32, 0, 0), 70: (32, 128, 128)}
    for index, rgb in expected.items():
        assert classes.palette_color(index) == rgb
        assert tuple(classes.PALETTE[index]) == rgb
    assert len({tuple(c) for c in classes.PALETTE}) == 71  # colours are unique


def test_palette_matches_independent_formula():
    for j in range(256):
        bits = [(j >> k) & 1 for k in range(24)]
        r = sum(bits[3 * i] << (7 - i) for i in range(8))
        g = sum(bits[3 * i + 1] << (7 - i) for i in range(8))
        b = sum(bits[3 * i + 2] << (7 - i) for i in range(8))
        assert classes.palette_color(j) == (r, g, b)


def test_base_novel_split():
    assert len(classes.BASE_IDS) == 40 and len(classes.NOVEL_IDS) == 30
    assert set(classes.BASE_IDS) | set(classes.NOVEL_IDS) == set(range(1, 71))
    assert not set(classes.BASE_IDS) & set(classes.NOVEL_IDS)
    assert {"guitar", "man", "woman", "piano", "missile-rocket"} <= classes.BASE_NAMES
    assert {"violin", "pipa", "tabla", "utv", "emergency-car"} <= classes.NOVEL_NAMES
