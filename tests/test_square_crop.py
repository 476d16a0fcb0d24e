"""Square crops: box geometry on hand-made masks and roi_align crops against a float64 reference (spec §7.3)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from models.ovavss.square_crop import crop_regions, mask_boxes, mask_probabilities, square_boxes, tight_boxes

torch.set_num_threads(1)


# ----------------------------------------------------------------------------- independent float64 reference


def reference_bilinear(image: np.ndarray, y: float, x: float) -> np.ndarray:
    """torchvision roi_align's bilinear sample of image (C, H, W) at (y, x), with its bounds rules."""
    channels, height, width = image.shape
    if y < -1.0 or y > height or x < -1.0 or x > width:
        return np.zeros(channels)
    y = max(y, 0.0)
    x = max(x, 0.0)
    y_low, x_low = int(y), int(x)
    if y_low >= height - 1:
        y_low = y_high = height - 1
        y = float(y_low)
    else:
        y_high = y_low + 1
    if x_low >= width - 1:
        x_low = x_high = width - 1
        x = float(x_low)
    else:
        x_high = x_low + 1
    ly, lx = y - y_low, x - x_low
    hy, hx = 1.0 - ly, 1.0 - lx
    return (
        hy * hx * image[:, y_low, x_low]
        + hy * lx * image[:, y_low, x_high]
        + ly * hx * image[:, y_high, x_low]
        + ly * lx * image[:, y_high, x_high]
    )


def reference_roi_align(image: np.ndarray, box: tuple[float, float, float, float], size: int) -> np.ndarray:
    """aligned=False, spatial_scale=1, adaptive sampling: bin p averages g x g samples at x1 + (p + (k+0.5)/g)·L/R."""
    x1, y1, x2, y2 = box
    roi_w, roi_h = max(x2 - x1, 1.0), max(y2 - y1, 1.0)
    bin_w, bin_h = roi_w / size, roi_h / size
    grid_w, grid_h = math.ceil(roi_w / size), math.ceil(roi_h / size)
    out = np.zeros((image.shape[0], size, size))
    for py in range(size):
        for px in range(size):
            total = np.zeros(image.shape[0])
            for iy in range(grid_h):
                y = y1 + py * bin_h + (iy + 0.5) * bin_h / grid_h
                for ix in range(grid_w):
                    x = x1 + px * bin_w + (ix + 0.5) * bin_w / grid_w
                    total += reference_bilinear(image, y, x)
            out[:, py, px] = total / (grid_h * grid_w)
    return out


def reference_regions(frames: np.ndarray, logits: np.ndarray, size: int, centered: bool = False):
    """Per valid (query, frame): float64 sigmoid > 0.5, tight box, square, two roi_aligns, product."""
    probs = 1.0 / (1.0 + np.exp(-logits))
    regions = {}
    for q in range(logits.shape[0]):
        for t in range(logits.shape[1]):
            ys, xs = np.nonzero(probs[q, t] > 0.5)
            if len(xs) == 0:
                continue
            x1, x2, y1, y2 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
            side = max(x2 - x1, y2 - y1)
            if centered:
                cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
                box = (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)
            else:
                box = (x1, y1, x1 + side, y1 + side)
            image_crop = reference_roi_align(frames[t], box, size)
            mask_crop = reference_roi_align(probs[q, t][None], box, size)
            regions[(q, t)] = mask_crop * image_crop
    return regions


# ----------------------------------------------------------------------------- box geometry


def test_tight_and_square_boxes_on_hand_made_masks():
    mask = torch.zeros(3, 10, 12, dtype=torch.bool)
    mask[0, 2:5, 3:9] = True  # rows 2..4, cols 3..8: wide box
    mask[1, 1:8, 10] = True  # one column, rows 1..7: tall box
    mask[1, 4, 11] = True
    valid, boxes = tight_boxes(mask)  # mask[2] empty
    assert valid.tolist() == [True, True, False]
    assert boxes.tolist() == [[3, 2, 9, 5], [10, 1, 12, 8], [0, 0, 0, 0]]

    official = square_boxes(boxes[:2], "official")
    assert official.tolist() == [[3, 2, 9, 8], [10, 1, 17, 8]]  # extends right/down, leaves the 12-wide canvas
    centered = square_boxes(boxes[:2], "centered")
    assert centered.tolist() == [[3, 0.5, 9, 6.5], [7.5, 1, 14.5, 8]]
    with pytest.raises(ValueError, match="unknown crop protocol"):
        square_boxes(boxes, "middle")


def test_mask_boxes_threshold_and_shapes():
    logits = torch.full((5, 2, 6, 7), -4.0)
    logits[0, 0, 1, 2] = 3.0
    logits[1, 1, 5, 6] = 0.0  # sigmoid = 0.5, not > 0.5
    logits[2, 0, 0, 0] = 1e-4  # > 0.5 in float32, rounds to 0.5 in float16
    logits[3, 1, 2:4, 1:3] = 2.0
    result = mask_boxes(logits, queries_per_chunk=2)
    assert result.valid.tolist() == [[True, False], [False, False], [True, False], [False, True], [False, False]]
    assert result.boxes[0, 0].tolist() == [2, 1, 3, 2]
    assert result.boxes[3, 1].tolist() == [1, 2, 3, 4]
    half = mask_boxes(logits, half_precision=True)
    assert half.valid[2, 0].item() is False and half.valid[0, 0].item() is True
    empty = mask_boxes(torch.zeros(0, 3, 4, 4))
    assert empty.valid.shape == (0, 3) and empty.boxes.shape == (0, 3, 4)


# ----------------------------------------------------------------------------- crops against the reference


def random_clip(seed: int):
    """Frames (T, 3, 13, 17) smaller than the canvas (16, 20); blobs including ones that leave the frame."""
    generator = torch.Generator().manual_seed(seed)
    num_queries, num_frames, canvas_h, canvas_w = 5, 2, 16, 20
    frames = torch.randint(0, 256, (num_frames, 3, 13, 17), generator=generator).float()
    logits = torch.randn(num_queries, num_frames, canvas_h, canvas_w, generator=generator, dtype=torch.float64) - 6
    logits[0, 0, 2:6, 3:15] += 10  # wide: square extends down
    logits[0, 1, 9:16, 15:18] += 10  # tall at the right: square leaves frame and canvas
    logits[1, 0, 1:15, 1:19] += 8  # large: L > R, several samples per bin
    logits[1, 1, 14:16, 18:20] += 10  # entirely in the padding
    logits[2, 0, 7, 8] += 10  # one pixel: L = 1
    logits[3] += torch.randn(num_frames, canvas_h, canvas_w, generator=generator, dtype=torch.float64) * 6
    # query 4: stays far below 0 (no valid frame)
    return frames, logits


@pytest.mark.parametrize("centered", [False, True])
@pytest.mark.parametrize("size", [7, 4])
def test_crop_regions_match_float64_reference(centered, size):
    frames, logits64 = random_clip(seed=size + 10 * centered)
    logits = logits64.float()
    boxes = mask_boxes(logits)
    query_index, frame_index = boxes.valid.nonzero(as_tuple=True)
    squares = square_boxes(boxes.boxes[query_index, frame_index], "centered" if centered else "official")
    regions = crop_regions(frames, logits, query_index, frame_index, squares, size)

    expected = reference_regions(frames.double().numpy(), logits64.numpy(), size, centered)
    assert sorted(expected) == list(zip(query_index.tolist(), frame_index.tolist()))
    assert regions.shape == (len(expected), 3, size, size) and regions.dtype == torch.float32
    for row, key in enumerate(zip(query_index.tolist(), frame_index.tolist())):
        np.testing.assert_allclose(regions[row].double().numpy(), expected[key], rtol=1e-5, atol=2e-3)
    # The crop of the region lying in the padding only sees the frame's clamped last row/column or zeros.
    assert (1, 1) in expected


def test_crop_regions_uint8_frames_and_black_outside():
    frames = torch.full((1, 3, 8, 8), 200, dtype=torch.uint8)
    logits = torch.full((1, 1, 8, 8), -30.0)
    logits[0, 0, 0:2, 0:8] = 30.0  # top two rows: square 8 x 8 covers the whole frame, mask only the top quarter
    boxes = mask_boxes(logits)
    squares = square_boxes(boxes.boxes[boxes.valid], "official")
    assert squares.tolist() == [[0, 0, 8, 8]]
    regions = crop_regions(frames, logits, torch.tensor([0]), torch.tensor([0]), squares, 8)
    # aligned=False: output row p samples y = p + 0.5, i.e. halfway between mask rows p and p + 1.
    assert torch.allclose(regions[0, :, 0], torch.full((3, 8), 200.0), atol=1e-4)
    assert torch.allclose(regions[0, :, 1], torch.full((3, 8), 100.0), atol=1e-4)
    assert regions[0, :, 2:].abs().max() < 1e-4  # outside the soft mask: black


def test_crop_regions_half_precision_rounds_like_fp16():
    frames, logits64 = random_clip(seed=3)
    logits = logits64.float()
    boxes = mask_boxes(logits)
    query_index, frame_index = boxes.valid.nonzero(as_tuple=True)
    squares = square_boxes(boxes.boxes[query_index, frame_index])
    full = crop_regions(frames, logits, query_index, frame_index, squares, 7)
    half = crop_regions(frames, logits, query_index, frame_index, squares, 7, half_precision=True)
    assert torch.equal(half, half.half().float())
    assert torch.allclose(half, full, rtol=4e-3, atol=0.5)
    assert not torch.equal(half, full)


def test_no_pairs_gives_empty_batch():
    frames = torch.zeros(2, 3, 4, 4)
    logits = torch.zeros(3, 2, 4, 4)
    empty = torch.zeros(0, dtype=torch.long)
    out = crop_regions(frames, logits, empty, empty, torch.zeros(0, 4), 5)
    assert out.shape == (0, 3, 5, 5)


def test_mask_probabilities():
    logits = torch.tensor([-2.0, 0.0, 1e-4, 3.0])
    assert torch.allclose(mask_probabilities(logits), torch.sigmoid(logits))
    assert mask_probabilities(logits, half_precision=True)[2].item() == 0.5
