"""Resize rule, PIL pixel identity, nearest resizing of label maps, flip, normalisation and padding."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from models.data.transforms import (
    PIXEL_MEAN,
    PIXEL_STD,
    hflip,
    normalize_and_pad,
    pad_bottom_right,
    padded_size,
    read_frame,
    resize_frame,
    resize_index_map,
    resize_shortest_edge_size,
)
from models.errors import AVSegError

torch.set_num_threads(1)


@pytest.mark.parametrize(
    ("height", "width", "short", "max_size", "expected"),
    [
        (224, 224, 360, 1333, (360, 360)),  # the spec's square example
        (480, 640, 360, 1333, (360, 480)),  # landscape
        (640, 480, 360, 1333, (480, 360)),  # portrait
        (720, 1280, 480, 1333, (480, 853)),  # 853.33 -> 853
        (1280, 720, 240, 1333, (427, 240)),  # 426.67 -> 427 (int(x + 0.5))
        (2, 3, 3, 1333, (3, 5)),  # 4.5 -> 5: rounds half up
        (100, 1000, 800, 1333, (133, 1333)),  # long side 8000 capped: 800 * 1333 / 8000 = 133.3
        (1000, 100, 800, 1333, (1333, 133)),  # same, portrait
        (360, 360, 360, 1333, (360, 360)),  # already the right size
    ],
)
def test_resize_shortest_edge_rule(height, width, short, max_size, expected):
    assert resize_shortest_edge_size(height, width, short, max_size) == expected


def test_resize_shortest_edge_rejects_empty_image():
    with pytest.raises(ValueError, match="positive"):
        resize_shortest_edge_size(0, 10, 360)


def _random_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)


@pytest.mark.parametrize("size", [(360, 360), (50, 70), (13, 9)])
def test_resize_frame_is_pil_bilinear(size):
    image = _random_image(224, 160)
    expected = np.asarray(Image.fromarray(image).resize((size[1], size[0]), Image.BILINEAR))
    out = resize_frame(image, size)
    assert out.dtype == np.uint8 and out.shape == (*size, 3)
    np.testing.assert_array_equal(out, expected)


def test_resize_frame_same_size_is_identity():
    image = _random_image(20, 30)
    np.testing.assert_array_equal(resize_frame(image, (20, 30)), image)


def _pil_nearest_sources(size_in: int, size_out: int) -> np.ndarray:
    """Independent nearest reference, PIL's arithmetic: start at scale / 2, add scale = in / out per
    output pixel in double precision, truncate (224 -> 360 puts output column 22 on input 13, not 14)."""
    scale = size_in / size_out
    position = scale * 0.5
    sources = []
    for _ in range(size_out):
        sources.append(min(int(position), size_in - 1))
        position += scale
    return np.array(sources)


@pytest.mark.parametrize(("src", "dst"), [((30, 40), (72, 96)), ((224, 224), (360, 360)), ((50, 70), (20, 28))])
def test_resize_index_map_is_nearest(src, dst):
    index = np.random.default_rng(1).integers(0, 71, size=src, dtype=np.uint8)
    out = resize_index_map(index, dst)
    rows = _pil_nearest_sources(src[0], dst[0])
    cols = _pil_nearest_sources(src[1], dst[1])
    np.testing.assert_array_equal(out, index[np.ix_(rows, cols)])
    assert set(np.unique(out)) <= set(np.unique(index))


def test_hflip_mirrors_width():
    x = torch.arange(2 * 3 * 2 * 4).reshape(2, 3, 2, 4)
    flipped = hflip(x)
    assert torch.equal(flipped[..., 0], x[..., 3]) and torch.equal(flipped[..., 3], x[..., 0])
    assert torch.equal(hflip(flipped), x)


def test_padded_size_and_pad():
    assert padded_size([(360, 360)]) == (384, 384)
    assert padded_size([(240, 320), (360, 480)]) == (384, 480)
    assert padded_size([(64, 32)]) == (64, 32)
    assert padded_size([(65, 1)]) == (96, 32)
    x = torch.ones(2, 3, 5)
    padded = pad_bottom_right(x, (4, 8))
    assert padded.shape == (2, 4, 8)
    assert padded[:, :3, :5].eq(1).all() and padded[:, 3:].eq(0).all() and padded[:, :, 5:].eq(0).all()
    with pytest.raises(ValueError, match="smaller"):
        pad_bottom_right(x, (2, 8))


def test_normalize_and_pad_values_and_padding():
    rng = np.random.default_rng(2)
    clip_a = torch.from_numpy(rng.integers(0, 256, size=(5, 3, 40, 50), dtype=np.uint8))
    clip_b = torch.from_numpy(rng.integers(0, 256, size=(5, 3, 70, 33), dtype=np.uint8))
    images, sizes = normalize_and_pad([clip_a, clip_b])
    assert images.dtype == torch.float32
    assert images.shape == (2, 5, 3, 96, 64)
    assert sizes == [(40, 50), (70, 33)]
    mean = np.array(PIXEL_MEAN, dtype=np.float64).reshape(3, 1, 1)
    std = np.array(PIXEL_STD, dtype=np.float64).reshape(3, 1, 1)
    for b, clip in enumerate((clip_a, clip_b)):
        h, w = sizes[b]
        reference = (clip.numpy().astype(np.float64) - mean) / std
        np.testing.assert_allclose(images[b, :, :, :h, :w].numpy(), reference, rtol=0, atol=1e-5)
        assert images[b, :, :, h:, :].eq(0).all()
        assert images[b, :, :, :, w:].eq(0).all()


def test_normalize_and_pad_tensor_input_and_mean_colour():
    frames = torch.zeros(1, 2, 3, 32, 32, dtype=torch.uint8)
    frames[..., 0, :, :] = 124  # close to the red mean
    images, sizes = normalize_and_pad(frames)
    assert images.shape == (1, 2, 3, 32, 32) and sizes == [(32, 32)]
    np.testing.assert_allclose(images[0, 0, 0].numpy(), (124 - 123.675) / 58.395, atol=1e-6)
    np.testing.assert_allclose(images[0, 0, 2].numpy(), (0 - 103.53) / 57.375, atol=1e-6)


def test_normalize_and_pad_rejects_bad_input():
    with pytest.raises(ValueError, match="uint8"):
        normalize_and_pad([torch.zeros(1, 3, 4, 4)])
    with pytest.raises(ValueError, match=r"\(T, 3, H, W\)"):
        normalize_and_pad([torch.zeros(3, 4, 4, dtype=torch.uint8)])


def test_read_frame_rgb_and_exif_orientation(tmp_path):
    image = _random_image(20, 30)
    plain = tmp_path / "0.png"
    Image.fromarray(image).save(plain)
    np.testing.assert_array_equal(read_frame(plain), image)

    rotated = tmp_path / "1.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    Image.fromarray(image).save(rotated, exif=exif, quality=95)
    assert read_frame(rotated).shape == (30, 20, 3)

    grey = tmp_path / "2.png"
    Image.fromarray(image[..., 0]).save(grey)
    out = read_frame(grey)
    assert out.shape == (20, 30, 3) and np.array_equal(out[..., 1], image[..., 0])


def test_read_frame_errors_name_the_path(tmp_path):
    with pytest.raises(AVSegError, match="frame file not found: .*missing.jpg"):
        read_frame(tmp_path / "missing.jpg")
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(AVSegError, match="unreadable frame image: .*bad.jpg"):
        read_frame(bad)
