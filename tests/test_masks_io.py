"""models.io.masks: PNG round trips in every accepted form, clear errors, torch-exact nearest resize."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from models.data.classes import PALETTE
from models.errors import AVSegError
from models.io.masks import (
    nearest_source_indices,
    read_index_mask,
    resize_nearest,
    write_colour_mask,
    write_index_mask,
)

torch.set_num_threads(1)


def random_index(seed=0, shape=(13, 17)):
    return np.random.default_rng(seed).integers(0, 71, size=shape).astype(np.uint8)


def test_index_png_round_trip_shows_palette_colours(tmp_path):
    index = random_index()
    path = tmp_path / "a" / "b" / "0.png"  # parents are created
    write_index_mask(path, index)
    np.testing.assert_array_equal(read_index_mask(path), index)
    with Image.open(path) as image:
        assert image.mode == "P" and image.size == (17, 13)
        np.testing.assert_array_equal(np.asarray(image), index)  # raw values are the class ids
        np.testing.assert_array_equal(np.asarray(image.convert("RGB")), PALETTE[index])  # and show the colours
    assert sorted(p.name for p in path.parent.iterdir()) == ["0.png"]  # no temporary file left


def test_colour_png_round_trip(tmp_path):
    index = random_index(1)
    write_colour_mask(tmp_path / "c.png", index)
    with Image.open(tmp_path / "c.png") as image:
        assert image.mode == "RGB"
    np.testing.assert_array_equal(read_index_mask(tmp_path / "c.png"), index)
    rgba = np.concatenate([PALETTE[index], np.full(index.shape + (1,), 255, np.uint8)], axis=2)
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    np.testing.assert_array_equal(read_index_mask(tmp_path / "rgba.png"), index)


@pytest.mark.parametrize("mode", ["L", "I;16"])
def test_single_channel_index_maps(tmp_path, mode):
    index = random_index(2)
    image = Image.fromarray(index.astype({"L": np.uint8, "I;16": np.uint16}[mode]))
    assert image.mode == mode
    image.save(tmp_path / "m.png")
    np.testing.assert_array_equal(read_index_mask(tmp_path / "m.png"), index)


def test_palettised_file_read_by_raw_index_whatever_its_palette(tmp_path):
    index = random_index(3)
    image = Image.frombytes("P", (index.shape[1], index.shape[0]), index.tobytes())
    image.putpalette([v for i in range(256) for v in (i, i, i)])  # a grey palette
    image.save(tmp_path / "p.png")
    np.testing.assert_array_equal(read_index_mask(tmp_path / "p.png"), index)


def test_unknown_colour_is_an_error_naming_the_file(tmp_path):
    rgb = PALETTE[random_index(4)]
    rgb[0, 0] = (1, 2, 3)
    rgb[1, 1] = (1, 2, 3)
    Image.fromarray(rgb).save(tmp_path / "bad.png")
    with pytest.raises(AVSegError, match=r"bad\.png: 2 pixels have colours that are not AVSBench"):
        read_index_mask(tmp_path / "bad.png")


def test_out_of_range_id_is_an_error(tmp_path):
    index = random_index(5)
    index[3, 3] = 71
    Image.fromarray(index).save(tmp_path / "big.png")
    with pytest.raises(AVSegError, match=r"big\.png: class id 71 out of range"):
        read_index_mask(tmp_path / "big.png")


def test_unreadable_missing_folder_and_unsupported_mode(tmp_path):
    (tmp_path / "junk.png").write_bytes(b"this is not a png")
    with pytest.raises(AVSegError, match=r"unreadable mask image: .*junk\.png"):
        read_index_mask(tmp_path / "junk.png")
    with pytest.raises(AVSegError, match=r"mask file not found: .*nope\.png"):
        read_index_mask(tmp_path / "nope.png")
    (tmp_path / "dir.png").mkdir()
    with pytest.raises(AVSegError, match="found a folder"):
        read_index_mask(tmp_path / "dir.png")
    Image.fromarray(np.zeros((4, 4, 2), np.uint8)).save(tmp_path / "la.png")
    with pytest.raises(AVSegError, match=r"la\.png: unsupported image mode 'LA'"):
        read_index_mask(tmp_path / "la.png")
    # a truncated PNG (valid header, cut data)
    write_index_mask(tmp_path / "full.png", random_index(6, (64, 64)))
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(AVSegError, match=r"cut\.png"):
        read_index_mask(tmp_path / "cut.png")


def test_write_rejects_bad_arrays(tmp_path):
    with pytest.raises(ValueError):
        write_index_mask(tmp_path / "x.png", np.zeros((2, 2, 3), np.uint8))
    with pytest.raises(ValueError):
        write_index_mask(tmp_path / "x.png", np.zeros((2, 2), np.float32))
    with pytest.raises(ValueError):
        write_colour_mask(tmp_path / "x.png", np.full((2, 2), 71))
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    "in_hw,out_hw",
    [((496, 360), (224, 224)), ((720, 1280), (224, 224)), ((75, 130), (224, 224)), ((224, 224), (224, 224)),
     ((112, 100), (224, 224)), ((9, 7), (31, 3))],
)
def test_resize_nearest_matches_torch_interpolate(in_hw, out_hw):
    source = np.random.default_rng(0).integers(0, 71, size=in_hw).astype(np.uint8)
    expected = F.interpolate(torch.from_numpy(source)[None, None].float(), size=out_hw, mode="nearest")
    np.testing.assert_array_equal(resize_nearest(source, *out_hw), expected[0, 0].byte().numpy())


def test_nearest_source_indices_float32_rule_differs_from_exact_fractions():
    # 496 -> 224: exact floor(14 * 496 / 224) = 31, torch's float32 product gives 30
    assert nearest_source_indices(496, 224)[14] == 30
    for n_in in range(1, 600, 7):
        t = F.interpolate(torch.arange(n_in, dtype=torch.float32)[None, None], size=224, mode="nearest")
        np.testing.assert_array_equal(nearest_source_indices(n_in, 224), t[0, 0].long().numpy())
