"""render_overlay: alpha blend values, contours, tags, legend, sizes, errors."""

from __future__ import annotations

import numpy as np
import pytest

from models.data.classes import CLASS_INDEX, PALETTE
from models.io.render import (
    DEFAULT_PALETTE,
    OverlayInstance,
    contour_thickness,
    label_font_size,
    mask_boundary,
    render_overlay,
)

VIOLIN, PIANO = CLASS_INDEX["violin"], CLASS_INDEX["piano"]


def random_frame(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def blend_reference(pixel: np.ndarray, colour: np.ndarray, alpha: float) -> np.ndarray:
    """Per pixel, in float64: round half up of (1 - alpha) * pixel + alpha * colour."""
    return np.array([int(np.floor((1 - alpha) * float(p) + alpha * float(c) + 0.5)) for p, c in zip(pixel, colour)])


def rectangle_map(height: int, width: int, box: tuple[int, int, int, int], class_id: int) -> np.ndarray:
    top, bottom, left, right = box
    label_map = np.zeros((height, width), dtype=np.int64)
    label_map[top:bottom, left:right] = class_id
    return label_map


@pytest.mark.parametrize("alpha", [0.5, 0.3, 1.0, 0.0])
def test_fill_is_the_alpha_blend_and_background_is_untouched(alpha):
    frame = random_frame(40, 60)
    label_map = rectangle_map(40, 60, (5, 30, 10, 50), VIOLIN)
    label_map[20:25, 12:20] = PIANO
    output = render_overlay(frame, label_map, alpha=alpha, contours=False, tags=False, legend=False)
    assert output.dtype == np.uint8 and output.shape == frame.shape
    for y in range(40):
        for x in range(60):
            class_id = label_map[y, x]
            if class_id == 0:
                assert np.array_equal(output[y, x], frame[y, x])
            else:
                assert np.array_equal(output[y, x], blend_reference(frame[y, x], PALETTE[class_id], alpha))


def test_input_frame_is_not_modified():
    frame = random_frame(30, 30)
    before = frame.copy()
    label_map = rectangle_map(30, 30, (5, 20, 5, 20), VIOLIN)
    render_overlay(frame, label_map, [("violin", 0.9, VIOLIN, label_map > 0)])
    assert np.array_equal(frame, before)


def test_contours_are_opaque_class_colour_on_region_edges_only():
    frame = random_frame(40, 60)
    label_map = rectangle_map(40, 60, (10, 30, 15, 45), VIOLIN)
    output = render_overlay(frame, label_map, tags=False, legend=False)
    colour = PALETTE[VIOLIN]
    # the rectangle's one-pixel rim is the class colour
    rim = np.zeros((40, 60), dtype=bool)
    rim[10:30, 15:45] = True
    rim[11:29, 16:44] = False
    assert (output[rim] == colour).all()
    # inside the rim: blended; outside the rectangle: untouched
    inner = np.zeros((40, 60), dtype=bool)
    inner[11:29, 16:44] = True
    expected = np.floor(0.5 * frame[inner].astype(np.float64) + 0.5 * colour + 0.5)
    assert np.array_equal(output[inner], expected.astype(np.uint8))
    assert np.array_equal(output[label_map == 0], frame[label_map == 0])


def test_region_on_the_image_border_has_no_contour_there():
    frame = random_frame(20, 20)
    label_map = rectangle_map(20, 20, (0, 10, 0, 20), PIANO)  # top half, touching three borders
    output = render_overlay(frame, label_map, tags=False, legend=False)
    colour = PALETTE[PIANO]
    assert (output[9] == colour).all()  # the only inner edge
    expected = np.floor(0.5 * frame[0:9].astype(np.float64) + 0.5 * colour + 0.5).astype(np.uint8)
    assert np.array_equal(output[0:9], expected)


def test_instance_masks_get_contours_in_their_colour():
    frame = np.zeros((30, 30, 3), dtype=np.uint8)
    mask = np.zeros((30, 30), dtype=bool)
    mask[8:20, 8:20] = True
    output = render_overlay(frame, None, [OverlayInstance("thing", 0.5, (10, 200, 30), mask)], tags=False, legend=False)
    rim = mask_boundary(mask)
    assert rim.sum() == 4 * 12 - 4
    assert (output[rim] == (10, 200, 30)).all()
    assert (output[~rim] == 0).all()  # no fill from instances, only the label map fills


def test_mask_boundary_against_a_direct_definition():
    rng = np.random.default_rng(3)
    mask = rng.random((15, 17)) < 0.5
    boundary = mask_boundary(mask)
    for y in range(15):
        for x in range(17):
            neighbours = [(y + dy, x + dx) for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1))]
            inside = [mask[a, b] for a, b in neighbours if 0 <= a < 15 and 0 <= b < 17]
            assert boundary[y, x] == (mask[y, x] and not all(inside))


def test_contours_of_touching_regions_at_720p_match_a_distance_transform():
    """Thickness 2 at 720p: every pixel of class c within taxicab distance 2 of a non-c pixel (in the image)."""
    from scipy.ndimage import distance_transform_cdt

    rng = np.random.default_rng(4)
    label_map = np.zeros((720, 720), dtype=np.int64)
    for class_id in rng.choice(np.arange(1, 71), size=6, replace=False):
        top, left = rng.integers(0, 600, 2)
        height, width = rng.integers(20, 200, 2)
        label_map[top : top + height, left : left + width] = class_id
    label_map[700:, 100:300] = 9  # touching the bottom border
    assert contour_thickness(720, 720) == 2
    output = render_overlay(np.zeros((720, 720, 3), np.uint8), label_map, alpha=0.0, tags=False, legend=False)
    expected = np.zeros((720, 720), dtype=bool)
    for class_id in np.unique(label_map[label_map > 0]):
        region = label_map == class_id
        expected |= region & (distance_transform_cdt(region, metric="taxicab") <= 2)
    drawn = output.any(axis=2)  # alpha 0 leaves the black frame black except the contours
    assert np.array_equal(drawn, expected)
    assert np.array_equal(output[expected], PALETTE[label_map[expected]])


def test_sizes_scale_for_360p_and_720p():
    assert contour_thickness(360, 640) == 1 and contour_thickness(720, 1280) == 2
    assert label_font_size(360, 640) == 12 and label_font_size(720, 1280) == 24
    assert label_font_size(640, 360) == 12  # portrait: the short side counts
    assert label_font_size(48, 64) == 10


@pytest.mark.parametrize("height, width, min_text_rows", [(360, 640, 8), (720, 1280, 16)])
def test_tag_is_drawn_above_the_object_and_readable(height, width, min_text_rows):
    frame = np.full((height, width, 3), 128, dtype=np.uint8)
    mask = np.zeros((height, width), dtype=bool)
    top, left = height // 2, width // 3
    mask[top : top + height // 4, left : left + width // 4] = True
    plain = render_overlay(frame, None, [("violin", 0.87, VIOLIN, mask)], tags=False, legend=False)
    tagged = render_overlay(frame, None, [("violin", 0.87, VIOLIN, mask)], legend=False)
    changed = np.any(tagged != plain, axis=2)
    rows, columns = np.flatnonzero(changed.any(axis=1)), np.flatnonzero(changed.any(axis=0))
    assert rows.max() < top  # the tag sits above the object
    assert columns.min() == left  # from its left edge
    assert rows.max() - rows.min() + 1 >= min_text_rows
    tag = tagged[rows.min() : rows.max() + 1, columns.min() : columns.max() + 1]
    box_colour = PALETTE[VIOLIN]  # dark blue: white text
    assert (tag == box_colour).all(axis=2).mean() > 0.4
    assert (tag.min(axis=2) > 160).sum() >= 4 * min_text_rows  # bright (anti-aliased) glyph pixels


def test_tag_at_the_top_right_corner_stays_inside_the_image():
    frame = np.zeros((100, 200, 3), dtype=np.uint8)
    mask = np.zeros((100, 200), dtype=bool)
    mask[0:50, 170:200] = True  # touches the top and right borders; the tag is wider than the object
    output = render_overlay(frame, None, [("saxophone", 1.0, PIANO, mask)], contours=False, legend=False)
    changed = np.any(output != 0, axis=2)
    rows, columns = np.flatnonzero(changed.any(axis=1)), np.flatnonzero(changed.any(axis=0))
    assert rows.min() == 0 and rows.max() < 50  # no room above: inside the object's box, at its top
    assert columns.max() == 199 and columns.min() < 170  # shifted left to fit


def test_empty_instance_mask_draws_nothing():
    frame = random_frame(20, 20)
    output = render_overlay(frame, None, [("ghost", 0.1, VIOLIN, np.zeros((20, 20), bool))], legend=False)
    assert np.array_equal(output, frame)


def test_legend_lists_present_classes_with_their_colours():
    height, width = 360, 640
    frame = np.full((height, width, 3), 200, dtype=np.uint8)
    label_map = rectangle_map(height, width, (200, 300, 50, 150), VIOLIN)
    label_map[200:300, 300:400] = PIANO
    without = render_overlay(frame, label_map, tags=False, legend=False)
    output = render_overlay(frame, label_map, tags=False)
    changed = np.any(output != without, axis=2)
    rows, columns = np.flatnonzero(changed.any(axis=1)), np.flatnonzero(changed.any(axis=0))
    assert rows.min() == 0 and columns.max() == width - 1  # top-right panel
    assert columns.min() > width // 2 and rows.max() < height // 4
    panel = output[: rows.max() + 1, columns.min() :]
    size = label_font_size(height, width)
    for class_id in (VIOLIN, PIANO):  # one solid swatch per class
        assert (panel == PALETTE[class_id]).all(axis=2).sum() >= (size - 2) ** 2
    assert not (panel == PALETTE[CLASS_INDEX["dog"]]).all(axis=2).any()
    # the rest of the panel is the darkened frame (200 * 2 // 5 = 80) or white text
    other = ~(panel == PALETTE[VIOLIN]).all(axis=2) & ~(panel == PALETTE[PIANO]).all(axis=2)
    values = panel[other]
    assert ((values == 80).all(axis=1) | (values > 80).all(axis=1)).all()


def test_legend_summarises_rows_that_do_not_fit():
    height, width = 40, 120
    frame = np.zeros((height, width, 3), dtype=np.uint8)
    label_map = np.zeros((height, width), dtype=np.int64)
    for number, class_id in enumerate(range(1, 9)):
        label_map[number * 5 : number * 5 + 5, :10] = class_id
    output = render_overlay(frame, label_map, contours=False, tags=False)
    shown = [c for c in range(1, 9) if (output[:, 10:] == PALETTE[c]).all(axis=2).sum() > 20]
    assert 0 < len(shown) < 8  # the rest became "+N more"
    assert shown == list(range(1, len(shown) + 1))


def test_custom_palette_and_class_names():
    frame = np.zeros((60, 200, 3), dtype=np.uint8)
    label_map = rectangle_map(60, 200, (10, 50, 10, 50), 1)
    palette = np.array([[0, 0, 0], [0, 255, 0]], dtype=np.uint8)
    output = render_overlay(frame, label_map, class_names=["background", "kazoo"], palette=palette, contours=False)
    assert np.array_equal(output[30, 30], [0, 128, 0])
    assert (output == (0, 255, 0)).all(axis=2).sum() > 20  # the legend swatch


def test_default_palette_extends_the_avsbench_one():
    assert np.array_equal(DEFAULT_PALETTE[: len(PALETTE)], PALETTE)
    assert len(DEFAULT_PALETTE) == 256


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"frame": np.zeros((4, 4), np.uint8)}, "frame"),
        ({"frame": np.zeros((4, 4, 3), np.float32)}, "frame"),
        ({"label_map": np.zeros((3, 4), np.int64)}, "label map shape"),
        ({"label_map": np.full((4, 4), 300)}, "label map ids"),
        ({"label_map": np.full((4, 4), -1)}, "label map ids"),
        ({"label_map": np.zeros((4, 4), np.float32)}, "integer class ids"),
        ({"instances": [("a", 1.0, 1, np.zeros((4, 5), bool))]}, "mask shape"),
        ({"instances": [("a", 1.0, 999, np.ones((4, 4), bool))]}, "palette"),
        ({"instances": [("a", 1.0, (1, 2), np.ones((4, 4), bool))]}, "triple"),
        ({"alpha": 1.5}, "alpha"),
    ],
)
def test_bad_arguments(kwargs, message):
    arguments = {"frame": np.zeros((4, 4, 3), np.uint8), "label_map": np.zeros((4, 4), np.int64)}
    arguments.update(kwargs)
    frame = arguments.pop("frame")
    label_map = arguments.pop("label_map")
    with pytest.raises(ValueError, match=message):
        render_overlay(frame, label_map, **arguments)


@pytest.mark.parametrize("size", [10, 12, 24])
@pytest.mark.parametrize("origin", [(5, 7), (-6, -9), (280, 50)])  # inside, past the top-left, past the bottom-right
def test_cached_text_equals_pillows_own_text_drawing(size, origin):
    """Tags and legend rows are rasterised once and blended by coverage: the same pixels Pillow draws."""
    from PIL import Image, ImageDraw

    from models.io.render import _draw_text, _font, _text_stamp

    rng = np.random.default_rng(size)
    for text in ("violin 0.87", "acoustic guitar", "+3 more", "ñandú 1.00"):
        for colour in ((255, 255, 255), (0, 0, 0), (200, 30, 90)):
            background = rng.integers(0, 256, (60, 300, 3), dtype=np.uint8)
            reference = Image.fromarray(background)
            ImageDraw.Draw(reference).text(origin, text, fill=colour, font=_font(size))
            ours = background.copy()
            _draw_text(ours, *origin, _text_stamp(text, size), colour)
            assert np.array_equal(ours, np.asarray(reference)), (text, colour)
    assert _text_stamp("violin 0.87", size) is _text_stamp("violin 0.87", size)  # rasterised once


def test_a_class_covering_the_whole_frame_is_filled_and_listed():
    """(The class list once dropped the first class found, assuming it was the background: a sounding object
    filling the frame was neither filled nor in the legend.)"""
    frame = np.full((120, 200, 3), 100, dtype=np.uint8)
    label_map = np.full((120, 200), VIOLIN, dtype=np.int64)
    output = render_overlay(frame, label_map, contours=False)
    expected = (frame.astype(np.uint16) + PALETTE[VIOLIN] + 1) >> 1
    assert np.array_equal(output[-1, 0], expected[-1, 0])  # filled (bottom-left: away from the legend)
    assert (output == PALETTE[VIOLIN]).all(axis=2).sum() >= (label_font_size(120, 200) - 2) ** 2  # legend swatch


def test_tags_of_objects_sharing_a_corner_do_not_cover_each_other():
    height, width = 360, 640
    frame = np.zeros((height, width, 3), dtype=np.uint8)
    big = np.zeros((height, width), dtype=bool)
    big[100:300, 200:500] = True
    small = np.zeros((height, width), dtype=bool)
    small[100:150, 200:260] = True  # same top-left corner
    output = render_overlay(frame, None, [("violin", 0.9, VIOLIN, big), ("piano", 0.8, PIANO, small)],
                            contours=False, legend=False)
    boxes = {}
    for name, class_id in (("violin", VIOLIN), ("piano", PIANO)):
        solid = (output == PALETTE[class_id]).all(axis=2)
        rows, columns = np.flatnonzero(solid.any(axis=1)), np.flatnonzero(solid.any(axis=0))
        boxes[name] = (rows.min(), rows.max(), columns.min(), columns.max())
        assert columns.min() == 200  # both at the objects' left edge
    (v_top, v_bottom, _, _), (p_top, p_bottom, _, _) = boxes["violin"], boxes["piano"]
    assert v_bottom < p_top or p_bottom < v_top  # stacked, not overlapping
    assert v_bottom < 100  # the first keeps its place above the object


def test_a_tag_with_no_free_row_stays_where_it_was_put():
    frame = np.zeros((20, 200, 3), dtype=np.uint8)
    masks = []
    for _ in range(3):
        mask = np.zeros((20, 200), dtype=bool)
        mask[0:20, 10:80] = True
        masks.append(mask)
    output = render_overlay(frame, None, [("a", 0.5, VIOLIN, masks[0]), ("b", 0.5, PIANO, masks[1]),
                                          ("c", 0.5, CLASS_INDEX["dog"], masks[2])], contours=False, legend=False)
    assert output.shape == (20, 200, 3)  # no room for three rows of 12 px text: drawn over, no error
    assert (output == PALETTE[CLASS_INDEX["dog"]]).all(axis=2).any()
