"""Open-vocabulary classifier: scoring (spec §7.4) and painting (§8) on hand-computed cases, then a tiny CLIP."""

from __future__ import annotations

import math

import numpy as np
import open_clip
import pytest
import torch
from open_clip.model import CLIP

from models.ovavss.classifier import ClassifiedQueries, ClassifierConfig, OpenVocabularyClassifier
from models.ovavss.clip_model import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, LoadedClip
from models.ovavss.postprocess import masks_at_output_size, paint_semantic_maps, select_pairs
from models.ovavss.square_crop import crop_regions, mask_boxes, square_boxes
from models.ovavss.text_embeddings import class_name_embeddings

torch.set_num_threads(1)

BIG = 30.0  # |logit| making sigmoid exactly 0 or 1 in float32 for practical purposes


class CentrePixelClip(torch.nn.Module):
    """A stand-in CLIP whose image feature is the normalised colour at crop pixel (3, 3) (D = 3).

    With the blocks used below, that pixel's bilinear samples lie inside the mask and the frame, so the
    feature is the block's colour; border pixels of a crop mix in the mask edge (aligned=False sampling).
    """

    def __init__(self) -> None:
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))
        self.batch_sizes: list[int] = []
        self.inputs: list[torch.Tensor] = []

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        self.batch_sizes.append(images.shape[0])
        self.inputs.append(images.clone())
        return images[:, :, 3, 3]


def expected_feature(rgb: tuple[int, int, int]) -> torch.Tensor:
    """float64 unit feature of a uniformly coloured crop: (c / 255 - mean) / std, normalised."""
    values = [(c / 255.0 - m) / s for c, m, s in zip(rgb, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)]
    vector = torch.tensor(values, dtype=torch.float64)
    return vector / vector.norm()


def block_logits(num_queries: int, num_frames: int, size: int, blocks: dict) -> torch.Tensor:
    """Mask logits -BIG everywhere except the square blocks {(q, t): (y0, x0, side)} set to +BIG."""
    logits = torch.full((num_queries, num_frames, size, size), -BIG)
    for (q, t), (y0, x0, side) in blocks.items():
        logits[q, t, y0 : y0 + side, x0 : x0 + side] = BIG
    return logits


TEXT = torch.eye(3)  # K = 3 classes with orthogonal unit embeddings


def scoring_case():
    """2 frames 12 x 12 (canvas 16 x 16), uniform colour blocks; query 1 valid nowhere."""
    frames = torch.zeros(2, 3, 12, 12)
    red, green = (250, 20, 30), (10, 240, 60)
    frames[0] = torch.tensor(red, dtype=torch.float32).view(3, 1, 1)
    frames[1] = torch.tensor(green, dtype=torch.float32).view(3, 1, 1)
    blocks = {(0, 0): (1, 1, 4), (0, 1): (6, 5, 4), (2, 1): (2, 2, 3)}
    return frames, block_logits(3, 2, 16, blocks), red, green


def test_scores_are_mean_logits_over_valid_frames_then_softmax():
    frames, logits, red, green = scoring_case()
    clip = CentrePixelClip()
    classifier = OpenVocabularyClassifier(clip, image_size=8, config=ClassifierConfig(crop_batch_size=2))
    result = classifier.classify(frames, logits, None, TEXT)

    assert result.valid.tolist() == [[True, True], [False, False], [False, True]]
    assert result.query_index.tolist() == [0, 2]  # query 1 (valid nowhere) is dropped
    assert clip.batch_sizes == [2, 1]  # 3 crops in batches of at most 2

    text64 = TEXT.double()
    logits_q0 = 100 * (expected_feature(red) @ text64.T + expected_feature(green) @ text64.T) / 2
    logits_q2 = 100 * expected_feature(green) @ text64.T
    expected_logits = torch.stack([logits_q0, logits_q2])
    torch.testing.assert_close(result.logits.double(), expected_logits, rtol=1e-5, atol=1e-3)
    torch.testing.assert_close(result.probs.double(), expected_logits.softmax(-1), rtol=1e-4, atol=1e-5)
    # The CLIP input is the normalised crop: /255, then (x - mean) / std.
    first = clip.inputs[0][0, :, 3, 3].double()
    expected_pixel = torch.tensor([(c / 255 - m) / s for c, m, s in zip(red, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)])
    torch.testing.assert_close(first, expected_pixel.double(), rtol=1e-5, atol=1e-5)


def test_crops_follow_the_protocol_option():
    frames, logits, _, _ = scoring_case()
    logits[2, 1] = -BIG
    logits[2, 1, 4:6, 0:8] = BIG  # wide mask: official and centred squares differ
    for protocol in ("official", "centered"):
        clip = CentrePixelClip()
        classifier = OpenVocabularyClassifier(clip, 8, config=ClassifierConfig(crop_protocol=protocol))
        classifier.classify(frames, logits, None, TEXT)
        boxes = mask_boxes(logits)
        q, t = boxes.valid.nonzero(as_tuple=True)
        regions = crop_regions(frames, logits, q, t, square_boxes(boxes.boxes[q, t], protocol), 8)
        normalised = (regions / 255 - torch.tensor(OPENAI_CLIP_MEAN).view(1, 3, 1, 1)) / torch.tensor(
            OPENAI_CLIP_STD
        ).view(1, 3, 1, 1)
        torch.testing.assert_close(torch.cat(clip.inputs), normalised)


def test_sound_options():
    frames, logits, _, _ = scoring_case()
    logits[1, 1, 8:10, 8:10] = BIG  # query 1 now valid in frame 1
    sound_logits = torch.tensor([[2.0, 0.0], [0.0, 0.0], [-2.0, 0.0]])  # P(sounding) = 0.88, 0.5, 0.12

    gated = OpenVocabularyClassifier(CentrePixelClip(), 8, config=ClassifierConfig(sound_gate=0.5))
    result = gated.classify(frames, logits, sound_logits, TEXT)
    assert result.query_index.tolist() == [0, 1]
    assert result.valid.tolist() == [[True, True], [False, True], [False, False]]

    limited = OpenVocabularyClassifier(CentrePixelClip(), 8, config=ClassifierConfig(max_crops_per_frame=1))
    result = limited.classify(frames, logits, sound_logits, TEXT)
    assert result.valid.tolist() == [[True, True], [False, False], [False, False]]

    limited2 = OpenVocabularyClassifier(CentrePixelClip(), 8, config=ClassifierConfig(max_crops_per_frame=2))
    assert limited2.classify(frames, logits, sound_logits, TEXT).valid.tolist() == [
        [True, True], [False, True], [False, False]
    ]
    official = OpenVocabularyClassifier(CentrePixelClip(), 8)
    assert official.classify(frames, logits, sound_logits, TEXT).valid.tolist() == [
        [True, True], [False, True], [False, True]
    ]
    with pytest.raises(ValueError, match="need the sound-head logits"):
        gated.classify(frames, logits, None, TEXT)


def test_no_valid_query_gives_empty_result_and_background():
    frames = torch.zeros(2, 3, 8, 8)
    logits = torch.full((4, 2, 8, 8), -5.0)
    classifier = OpenVocabularyClassifier(CentrePixelClip(), 8)
    result = classifier.classify(frames, logits, None, TEXT)
    assert result.query_index.numel() == 0 and result.probs.shape == (0, 3) and not result.valid.any()
    painted = classifier.paint(result, logits, (8, 8), (16, 16))
    assert painted.semantic_maps.shape == (2, 16, 16) and not painted.semantic_maps.any()
    assert painted.masks.shape == (0, 2, 16, 16)


# ------------------------------------------------------------------------------------------------- painting


def classified(query_index: list[int], probs: list[list[float]], num_queries: int = 4) -> ClassifiedQueries:
    return ClassifiedQueries(
        query_index=torch.tensor(query_index),
        probs=torch.tensor(probs),
        logits=torch.zeros(len(probs), len(probs[0])),
        valid=torch.ones(num_queries, 1, dtype=torch.bool),
    )


def column_masks(num_queries: int, ranges: dict) -> torch.Tensor:
    """(Q, 1, 4, 8) logits: query q positive on columns ranges[q] = (start, stop)."""
    logits = torch.full((num_queries, 1, 4, 8), -1.0)
    for q, (start, stop) in ranges.items():
        logits[q, 0, :, start:stop] = 1.0
    return logits


def test_paint_overlap_threshold_and_two_labels():
    classifier = OpenVocabularyClassifier(CentrePixelClip(), 8)
    # query 3: class 2 at 0.9; query 1: class 0 at 0.5 and class 1 at 0.4 (two labels, the second paints only
    # leftovers, here none); query 0: class 2 at 0.43, its other entries (0.29, 0.28) are dropped.
    result = classified([0, 1, 3], [[0.29, 0.28, 0.43], [0.5, 0.4, 0.1], [0.05, 0.05, 0.9]])
    logits = column_masks(4, {0: (0, 8), 1: (2, 6), 3: (4, 8)})
    painted = classifier.paint(result, logits, (4, 8), (4, 8))
    assert painted.query_index.tolist() == [3, 1, 0, 1]
    assert painted.class_index.tolist() == [2, 0, 2, 1]
    torch.testing.assert_close(painted.scores, torch.tensor([0.9, 0.5, 0.43, 0.4]))
    # Row: columns 0-1 query 0 (label 3), 2-3 query 1 class 0 (label 1), 4-7 query 3 class 2 (label 3).
    assert painted.semantic_maps[0, 0].tolist() == [3, 3, 1, 1, 3, 3, 3, 3]
    assert (painted.semantic_maps[0] == painted.semantic_maps[0, :1]).all()


def test_paint_higher_score_wins_overlap_and_low_scores_drop():
    classifier = OpenVocabularyClassifier(CentrePixelClip(), 8)
    result = classified([0, 2], [[0.6, 0.2, 0.2], [0.1, 0.1, 0.8]])
    logits = column_masks(3, {0: (0, 6), 2: (3, 8)})
    painted = classifier.paint(result, logits, (4, 8), (4, 8))
    assert painted.semantic_maps[0, 0].tolist() == [1, 1, 1, 3, 3, 3, 3, 3]

    below = classified([0, 2], [[0.3, 0.3, 0.3], [0.25, 0.25, 0.25]])  # 0.3 is not > 0.3
    painted = classifier.paint(below, logits, (4, 8), (4, 8))
    assert len(painted.query_index) == 0 and not painted.semantic_maps.any()


def test_select_pairs_top_k_and_ties():
    probs = torch.full((6, 3), 0.0)
    probs[:, 0] = 0.5
    probs[:, 1] = 0.4
    probs[:, 2] = 0.1
    pairs = select_pairs(probs, torch.arange(10, 16), top_k=10, score_threshold=0.3)
    assert len(pairs) == 10
    assert pairs.query_index.tolist() == [10, 11, 12, 13, 14, 15, 10, 11, 12, 13]  # ties: lower index first
    assert pairs.class_index.tolist() == [0] * 6 + [1] * 4
    few = select_pairs(torch.tensor([[0.7, 0.3]]), torch.tensor([5]), top_k=10, score_threshold=0.3)
    assert few.query_index.tolist() == [5] and few.class_index.tolist() == [0]


def test_masks_at_output_size_crops_padding_then_resizes():
    logits = torch.full((1, 1, 8, 8), -1.0)
    logits[0, 0, 0:2, 0:3] = 1.0  # inside the 4 x 6 image
    logits[0, 0, 6:8, 6:8] = 1.0  # in the padding: cropped away
    masks = masks_at_output_size(logits, (4, 6), (8, 12))
    expected = torch.zeros(8, 12, dtype=torch.bool)
    expected[0:4, 0:6] = True  # exact 2x upsampling of a block
    assert masks.shape == (1, 1, 8, 12) and torch.equal(masks[0, 0], expected)
    same = masks_at_output_size(logits, (4, 6), (4, 6))
    assert same[0, 0, :2, :3].all() and same.sum() == 6


def test_paint_semantic_maps_first_come_first_served():
    masks = torch.zeros(3, 1, 1, 5, dtype=torch.bool)
    masks[0, 0, 0, 1:3] = True
    masks[1, 0, 0, 0:4] = True
    masks[2, 0, 0, 2:5] = True
    out = paint_semantic_maps(masks, torch.tensor([6, 0, 69]))
    assert out[0, 0].tolist() == [1, 7, 7, 1, 70]


@pytest.mark.parametrize("num_masks", [0, 1, 7])
def test_paint_semantic_maps_equals_painting_one_mask_after_another(num_masks):
    """Random overlapping masks against the rule written as a loop over pixels' first covering mask."""
    gen = torch.Generator().manual_seed(num_masks)
    masks = torch.rand(num_masks, 3, 17, 23, generator=gen) > 0.6
    class_index = torch.randint(0, 70, (num_masks,), generator=gen)
    want = np.zeros((3, 17, 23), dtype=np.int64)
    for mask, label in zip(masks.numpy(), class_index.tolist()):
        want[mask & (want == 0)] = label + 1
    out = paint_semantic_maps(masks, class_index)
    assert out.dtype == torch.long and out.shape == (3, 17, 23)
    np.testing.assert_array_equal(out.numpy(), want)


# ------------------------------------------------------------------------------------------------- tiny CLIP


def test_tiny_clip_end_to_end_and_batch_size_independence(tmp_path):
    torch.manual_seed(0)
    model = CLIP(
        embed_dim=16,
        vision_cfg=dict(image_size=32, layers=1, width=32, patch_size=8, head_width=16),
        text_cfg=dict(context_length=77, vocab_size=49408, width=32, heads=2, layers=1),
    ).eval().requires_grad_(False)
    clip = LoadedClip(model, open_clip.get_tokenizer("ViT-B-16"), "tiny", None, image_size=32)
    names = ["dog", "hair-dryer", "man", "guitar"]
    text = class_name_embeddings(clip, names)
    frames = torch.randint(0, 256, (3, 3, 40, 50), dtype=torch.uint8)
    logits = torch.randn(6, 3, 64, 64) * 3 - 2
    logits[5] = -10  # never valid

    results = []
    for batch in (64, 1):
        classifier = OpenVocabularyClassifier.from_loaded(clip, ClassifierConfig(crop_batch_size=batch))
        results.append(classifier.classify(frames, logits, None, text))
    first, second = results
    assert first.query_index.tolist() == [0, 1, 2, 3, 4]
    torch.testing.assert_close(first.logits, second.logits, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(first.probs.sum(-1), torch.ones(5))
    assert first.logits.abs().max() <= 100 + 1e-3  # 100 x cosine

    painted = classifier.paint(first, logits, (40, 50), (80, 100))
    assert painted.semantic_maps.shape == (3, 80, 100) and painted.semantic_maps.dtype == torch.long
    assert 1 <= len(painted.scores) <= 10 and (painted.scores > 0.3).all()
    assert (painted.scores[:-1] >= painted.scores[1:]).all()
    assert set(painted.semantic_maps.unique().tolist()) <= {0} | {c + 1 for c in painted.class_index.tolist()}
    keys = [k for k in classifier.state_dict() if not k.startswith("clip_model.")]
    assert keys == ["pixel_mean", "pixel_std"]
    torch.testing.assert_close(classifier.pixel_mean.flatten(), 255 * torch.tensor(OPENAI_CLIP_MEAN))
    assert math.isclose(float(classifier.pixel_std.flatten()[2]), 255 * OPENAI_CLIP_STD[2], rel_tol=1e-6)
