"""MaskCanvas upsamples only what is read, with exactly the values of upsampling everything at once; the
classifier's crop selection reads only the masks it needs and picks what a brute-force reference picks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from models.ovavss.classifier import ClassifierConfig, OpenVocabularyClassifier
from models.ovavss.mask_canvas import MaskCanvas
from models.ovavss.square_crop import mask_boxes

torch.set_num_threads(1)


def random_logits(num_queries=20, num_frames=3, size=(6, 10), seed=0):
    gen = torch.Generator().manual_seed(seed)
    # Mostly negative logits with a few positive blobs: some pairs valid, many not.
    logits = torch.randn(num_queries, num_frames, *size, generator=gen) * 3 - 4
    logits[torch.rand(num_queries, num_frames, generator=gen) < 0.5] += 6
    return logits


def test_indexing_equals_upsampling_everything():
    low = random_logits()
    size = (24, 40)
    full = F.interpolate(low, size=size, mode="bilinear", align_corners=False)
    canvas = MaskCanvas(low, size)
    assert canvas.shape == full.shape and canvas.device == low.device and canvas.dtype == low.dtype
    assert torch.equal(canvas.materialize(), full)
    assert torch.equal(canvas[2:7], full[2:7])
    index = torch.tensor([5, 0, 19, 5])
    assert torch.equal(canvas[index], full[index])
    queries, frames = torch.tensor([3, 3, 11, 0]), torch.tensor([0, 2, 1, 1])
    assert torch.equal(canvas[queries, frames], full[queries, frames])
    assert torch.equal(canvas[4], full[4])
    assert torch.equal(canvas[-1], full[-1]) and torch.equal(canvas[-20], full[-20])  # as a tensor indexes
    with pytest.raises(IndexError):
        canvas[20]
    with pytest.raises(IndexError):
        canvas[-21]
    assert canvas[torch.tensor([], dtype=torch.long)].shape == (0, 3, 24, 40)
    assert canvas[torch.tensor([], dtype=torch.long), torch.tensor([], dtype=torch.long)].shape == (0, 24, 40)
    with pytest.raises(ValueError, match=r"\(Q, T, h, w\)"):
        MaskCanvas(low[0], size)


class CountingCanvas(MaskCanvas):
    """Counts the (query, frame) planes it upsamples."""

    planes = 0

    def _upsample(self, planes):
        self.planes += planes.shape[0] * planes.shape[1]
        return super()._upsample(planes)


def reference_pairs(full, sounding, gate, cap):
    """Brute force: every pair's validity, then the gate, then per frame the `cap` most sounding valid ones."""
    found = mask_boxes(full)
    keep = found.valid.clone()
    if gate is not None:
        keep &= (sounding >= gate)[:, None]
    if cap is not None:
        for t in range(keep.shape[1]):
            candidates = [q for q in sorted(range(keep.shape[0]), key=lambda q: -sounding[q].item()) if keep[q, t]]
            for q in candidates[cap:]:
                keep[q, t] = False
    return keep, found.boxes * keep[..., None]


@pytest.mark.parametrize("gate,cap", [(None, 1), (None, 3), (0.4, None), (0.4, 2), (0.95, 5), (None, 50)])
@pytest.mark.parametrize("seed", [0, 1])
def test_pairs_to_crop_matches_brute_force_and_reads_little(gate, cap, seed):
    low = random_logits(num_queries=40, seed=seed)
    size = (24, 40)
    full = F.interpolate(low, size=size, mode="bilinear", align_corners=False)
    sound_logits = torch.randn(40, 2, generator=torch.Generator().manual_seed(seed + 10))
    sounding = sound_logits.softmax(-1)[:, 0]
    classifier = OpenVocabularyClassifier(torch.nn.Identity(), 8,
                                          config=ClassifierConfig(sound_gate=gate, max_crops_per_frame=cap))
    canvas = CountingCanvas(low, size)
    valid, boxes = classifier.pairs_to_crop(canvas, sound_logits)
    want_valid, want_boxes = reference_pairs(full, sounding, gate, cap)
    assert valid.any() and torch.equal(valid, want_valid)
    assert torch.equal(boxes, want_boxes)
    if cap is not None and cap <= 3 and gate is None:
        assert canvas.planes <= 16 * 3  # one chunk of 16 queries held every frame's quota
    # the same with the whole tensor given
    valid_full, boxes_full = classifier.pairs_to_crop(full, sound_logits)
    assert torch.equal(valid_full, valid) and torch.equal(boxes_full, boxes)


def test_classify_and_paint_are_the_same_with_a_canvas():
    low = random_logits(num_queries=12, num_frames=2, size=(5, 6), seed=3)
    size = (20, 24)
    full = F.interpolate(low, size=size, mode="bilinear", align_corners=False)
    gen = torch.Generator().manual_seed(4)
    frames = torch.rand(2, 3, 18, 22, generator=gen) * 255
    sound_logits = torch.randn(12, 2, generator=gen)
    text = F.normalize(torch.randn(4, 3, generator=gen), dim=-1)

    class MeanColourClip(torch.nn.Module):
        def encode_image(self, images):
            return images.mean(dim=(2, 3))

    for config in (ClassifierConfig(), ClassifierConfig(max_crops_per_frame=2), ClassifierConfig(sound_gate=0.3)):
        classifier = OpenVocabularyClassifier(MeanColourClip(), 8, config=config)
        a = classifier.classify(frames, full, sound_logits, text)
        b = classifier.classify(frames, MaskCanvas(low, size), sound_logits, text)
        assert a.query_index.numel() > 0
        for name in ("query_index", "probs", "logits", "valid"):
            assert torch.equal(getattr(a, name), getattr(b, name)), name
        painted_a = classifier.paint(a, full, (18, 22), (36, 44))
        painted_b = classifier.paint(b, MaskCanvas(low, size), (18, 22), (36, 44))
        assert torch.equal(painted_a.semantic_maps, painted_b.semantic_maps)
        assert torch.equal(painted_a.masks, painted_b.masks)
