"""CLAP audio tagger and SAM box segmenter wrappers, checked against the raw transformers models (tiny, random)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from scipy.signal import resample_poly

from models.errors import AVSegError
from models.zeroshot.audio_text import (
    CLAP_SAMPLE_RATE,
    DEFAULT_AUDIO_PROMPT,
    ClapAudioTagger,
    resample_to_clap_rate,
)
from models.zeroshot.segmenter import SamBoxSegmenter, clip_boxes_xyxy
from tiny_clap_sam import TINY_SAM_IMAGE_SIZE, save_tiny_clap, save_tiny_sam

torch.set_num_threads(1)
SR = 16_000


@pytest.fixture(autouse=True)
def offline_hub(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="module")
def clap_folder(tmp_path_factory):
    return save_tiny_clap(tmp_path_factory.mktemp("clap"), seed=0)


@pytest.fixture(scope="module")
def sam_folder(tmp_path_factory):
    return save_tiny_sam(tmp_path_factory.mktemp("sam"), seed=0)


@pytest.fixture(scope="module")
def tagger(clap_folder):
    return ClapAudioTagger.from_folder(clap_folder)


@pytest.fixture(scope="module")
def segmenter(sam_folder):
    return SamBoxSegmenter.from_folder(sam_folder)


def noise(seconds: float, seed: int) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(int(round(seconds * SR)))).astype(np.float32)


def random_frame(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


# ---------------------------------------------------------------- CLAP


def test_resampling_keeps_a_sine_at_its_frequency():
    t = np.arange(SR // 2) / SR  # 0.5 s
    sine = np.sin(2 * np.pi * 1000.0 * t).astype(np.float32)
    out = resample_to_clap_rate(sine)
    assert out.dtype == np.float32 and out.shape == (3 * len(sine),)
    spectrum = np.abs(np.fft.rfft(out))
    frequencies = np.fft.rfftfreq(len(out), d=1.0 / CLAP_SAMPLE_RATE)
    assert frequencies[np.argmax(spectrum)] == pytest.approx(1000.0, abs=2.0)
    middle = out[len(out) // 4 : 3 * len(out) // 4]  # away from the filter's edge effects
    assert np.abs(middle).max() == pytest.approx(1.0, abs=0.02)
    expected = np.sin(2 * np.pi * 1000.0 * np.arange(len(out)) / CLAP_SAMPLE_RATE)
    assert np.abs(out - expected)[len(out) // 4 : 3 * len(out) // 4].max() < 0.02


def test_resampling_edge_cases():
    empty = resample_to_clap_rate(np.zeros(0, np.float32))
    assert empty.shape == (4800,) and not empty.any()  # 0.1 s of silence at 48 kHz
    with pytest.raises(ValueError, match="mono"):
        resample_to_clap_rate(np.zeros((2, 100), np.float32))


def test_similarities_equal_the_clap_forward(tagger):
    windows = [noise(1.0, 1), noise(2.0, 2)]
    names = ["dog", "café piano", "lawn mower"]
    got = tagger.similarities(windows, names)

    model, processor = tagger.model, tagger.processor
    audio = processor(
        audio=[resample_poly(w, 3, 1).astype(np.float32) for w in windows],
        sampling_rate=CLAP_SAMPLE_RATE,
        return_tensors="pt",
    )
    text = processor.tokenizer([DEFAULT_AUDIO_PROMPT.format(n) for n in names], padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model(
            input_ids=text["input_ids"],
            attention_mask=text["attention_mask"],
            input_features=audio["input_features"],
        )
    scale = model.logit_scale_a.exp().item()
    expected = (out.logits_per_audio / scale).double().numpy()
    from_embeds = (out.audio_embeds.double() @ out.text_embeds.double().T).numpy()

    assert got.shape == (2, 3) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=1e-5)
    np.testing.assert_allclose(got, from_embeds, atol=1e-5)
    assert np.ptp(expected) > 1e-3  # the tiny model does tell the texts and windows apart
    assert tagger.logit_scale == pytest.approx(scale) and tagger.logit_scale == pytest.approx(1 / 0.07, rel=1e-5)


def test_windows_of_different_lengths_batched_equal_each_alone(clap_folder):
    tagger = ClapAudioTagger.from_folder(clap_folder)
    tagger.batch_size = 2  # 3 windows -> two forwards
    windows = [noise(0.5, 3), noise(1.0, 4), noise(3.0, 5)]
    together = tagger.encode_audio(windows)
    alone = np.concatenate([tagger.encode_audio([w]) for w in windows])
    assert together.shape == (3, tagger.embedding_dim) == (3, 16) and together.dtype == np.float32
    np.testing.assert_allclose(together, alone, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)
    assert np.abs(together[0] - together[2]).max() > 1e-4  # different sounds, different embeddings
    assert tagger.similarities(windows, ["a", "b"]).shape == (3, 2)
    assert tagger.encode_audio([]).shape == (0, 16)
    assert tagger.similarities([], ["a"]).shape == (0, 1)
    assert tagger.similarities(windows, []).shape == (3, 0)


def test_empty_and_long_windows_are_deterministic(tagger):
    empty = tagger.encode_audio([np.zeros(0, np.float32)])
    silence = tagger.encode_audio([np.zeros(int(0.1 * SR), np.float32)])
    np.testing.assert_allclose(empty, silence, atol=1e-6)

    long = noise(10.5, 6)  # longer than CLAP's 10 s: scored on its first 10 s, not a random crop
    np.random.seed(1)
    first = tagger.encode_audio([long])
    np.random.seed(2)
    second = tagger.encode_audio([long])
    np.testing.assert_array_equal(first, second)
    head = resample_poly(long, 3, 1).astype(np.float32)[: 10 * CLAP_SAMPLE_RATE]
    features = tagger.processor(audio=[head], sampling_rate=CLAP_SAMPLE_RATE, return_tensors="pt")
    with torch.no_grad():
        expected = tagger.model.get_audio_features(input_features=features["input_features"]).pooler_output
    np.testing.assert_allclose(first, expected.numpy(), atol=1e-6)
    # (resampling only the first 10 s differs from this slightly at the cut, by the filter's reach)
    np.testing.assert_allclose(first, tagger.encode_audio([long[: 10 * SR]]), atol=1e-3)


def test_fused_clap_is_deterministic_and_batch_independent(tmp_path):
    """A fusion model's feature extractor marks a random short item `is_longer`; the tagger never does."""
    tagger = ClapAudioTagger.from_folder(save_tiny_clap(tmp_path / "fused", fusion=True))
    windows = [noise(1.0, 7), noise(0.5, 8)]
    np.random.seed(0)
    together = tagger.encode_audio(windows)
    np.random.seed(5)
    alone = np.concatenate([tagger.encode_audio([w]) for w in windows])
    np.testing.assert_allclose(together, alone, atol=1e-5)

    processor, model = tagger.processor, tagger.model
    features = processor(audio=[resample_poly(w, 3, 1) for w in windows], sampling_rate=48_000, return_tensors="pt")
    assert features["input_features"].shape[1] == 4  # the fusion layout
    with torch.no_grad():
        expected = model.get_audio_features(
            input_features=features["input_features"], is_longer=torch.zeros(2, 1, dtype=torch.bool)
        ).pooler_output
    np.testing.assert_allclose(together, expected.numpy(), atol=1e-5)


def test_text_embeddings_are_memoised_per_name(clap_folder, monkeypatch):
    tagger = ClapAudioTagger.from_folder(clap_folder)
    calls = []
    original = tagger.model.get_text_features

    def counting(**inputs):
        calls.append(inputs["input_ids"].shape[0])
        return original(**inputs)

    monkeypatch.setattr(tagger.model, "get_text_features", counting)
    first = tagger.encode_classes(["dog", "cat"])
    assert calls == [2] and first.shape == (2, 16)
    again = tagger.encode_classes(["cat", "dog"])
    assert calls == [2]  # nothing re-encoded
    np.testing.assert_array_equal(again, first[::-1])
    more = tagger.encode_classes(["bird", "dog", "bird"])
    assert calls == [2, 1]  # only "bird", once
    np.testing.assert_array_equal(more[1], first[0])
    np.testing.assert_array_equal(more[0], more[2])
    assert tagger.encode_classes([]).shape == (0, 16) and calls == [2, 1]
    np.testing.assert_allclose(np.linalg.norm(more, axis=1), 1.0, atol=1e-5)

    # one name alone gives the same row as within a padded batch
    fresh = ClapAudioTagger.from_folder(clap_folder)
    np.testing.assert_allclose(fresh.encode_classes(["cat"])[0], first[1], atol=1e-5)


def test_prompt_and_unusual_names(clap_folder):
    verbatim = ClapAudioTagger.from_folder(clap_folder, prompt="{}")
    prompted = ClapAudioTagger.from_folder(clap_folder)
    np.testing.assert_allclose(
        verbatim.encode_classes(["This is a sound of dog."]), prompted.encode_classes(["dog"]), atol=1e-6
    )
    long_name = "very " * 60 + "loud ambulance siren"  # far past the tiny model's 126 tokens: truncated
    out = prompted.encode_classes([long_name, "Straßenbahn 🚋", ""])
    assert out.shape == (3, 16) and np.isfinite(out).all()
    with pytest.raises(ValueError, match="prompt"):
        ClapAudioTagger(prompted.model, prompted.processor, prompt="no placeholder")


def test_clap_from_folder_errors(tmp_path, clap_folder, sam_folder):
    missing = tmp_path / "absent"
    with pytest.raises(AVSegError) as caught:
        ClapAudioTagger.from_folder(missing)
    assert str(caught.value) == f"CLAP folder not found: {missing}"

    with pytest.raises(AVSegError) as caught:
        ClapAudioTagger.from_folder(sam_folder)
    assert str(caught.value) == f"{sam_folder} holds model_type 'sam', not a CLAP model ('clap')"

    corrupt = tmp_path / "corrupt"
    shutil.copytree(clap_folder, corrupt)
    (corrupt / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(AVSegError) as caught:
        ClapAudioTagger.from_folder(corrupt)
    assert str(caught.value).startswith(f"cannot load the CLAP model from {corrupt}: ")

    no_tokenizer = tmp_path / "no_tokenizer"
    shutil.copytree(clap_folder, no_tokenizer)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt"):
        (no_tokenizer / name).unlink()
    with pytest.raises(AVSegError, match="has no CLAP tokenizer vocabulary") as caught:
        ClapAudioTagger.from_folder(no_tokenizer)

    bad_json = tmp_path / "bad_json"
    bad_json.mkdir()
    (bad_json / "config.json").write_text("{ not json")
    with pytest.raises(AVSegError) as caught_json:
        ClapAudioTagger.from_folder(bad_json)
    assert str(caught_json.value).startswith(f"CLAP config.json is unreadable: {bad_json / 'config.json'}")

    for error in (caught.value, caught_json.value):
        assert "\n" not in str(error)


# ---------------------------------------------------------------- SAM


def reference_sam(segmenter, frame, boxes):
    """The straightforward SAM call: processor -> SamModel(pixel_values, input_boxes) -> post_process_masks logits."""
    processor, model = segmenter.processor, segmenter.model
    inputs = processor(
        images=frame, input_boxes=[boxes.tolist()], input_data_format="channels_last", return_tensors="pt"
    )
    with torch.no_grad():
        out = model(pixel_values=inputs["pixel_values"], input_boxes=inputs["input_boxes"], multimask_output=False)
    logits = processor.post_process_masks(
        out.pred_masks, inputs["original_sizes"], inputs["reshaped_input_sizes"], binarize=False
    )[0][:, 0]
    return logits.double().numpy(), out.iou_scores[0, :, 0].numpy()


def test_segment_equals_the_sam_forward(sam_folder):
    frame = random_frame(48, 80)
    boxes = np.array([[5, 5, 40, 30], [10, 2, 79, 47], [50.5, 10.25, 70.75, 40.5]], np.float32)
    probe = SamBoxSegmenter.from_folder(sam_folder)
    logits, iou = reference_sam(probe, frame, boxes)
    threshold = float(np.median(logits))  # both sides non-empty whatever the random weights
    segmenter = SamBoxSegmenter(probe.model, probe.processor, mask_threshold=threshold)

    masks, scores = segmenter.segment(frame, boxes)
    assert masks.shape == (3, 48, 80) and masks.dtype == bool
    assert scores.shape == (3,) and scores.dtype == np.float32
    np.testing.assert_allclose(scores, iou, rtol=1e-4, atol=1e-6)
    clear = np.abs(logits - threshold) > 1e-3 * logits.std()  # pixels not within rounding of the threshold
    assert clear.mean() > 0.95
    np.testing.assert_array_equal(masks[clear], (logits > threshold)[clear])
    assert 0.1 < masks.mean() < 0.9
    assert np.abs(logits[0] - logits[1]).max() > 1e-3 * logits.std()  # different boxes, different masks


@pytest.mark.parametrize("height, width", [(48, 80), (80, 48), (64, 64), (30, 200), (3, 40)])
def test_masks_have_the_frame_size(segmenter, height, width):
    frame = random_frame(height, width, seed=height)
    boxes = np.array([[0, 0, width / 2, height / 2], [width / 4, height / 4, width, height]], np.float32)
    masks, scores = segmenter.segment(frame, boxes)
    assert masks.shape == (2, height, width) and masks.dtype == bool and scores.shape == (2,)
    logits, iou = reference_sam(segmenter, frame, boxes)
    clear = np.abs(logits) > 1e-3 * logits.std()
    np.testing.assert_array_equal(masks[clear], (logits > 0)[clear])
    np.testing.assert_allclose(scores, iou, rtol=1e-4, atol=1e-6)


def test_no_boxes_runs_nothing(sam_folder, monkeypatch):
    segmenter = SamBoxSegmenter.from_folder(sam_folder)

    def fail(*args, **kwargs):
        raise AssertionError("SAM must not run without boxes")

    monkeypatch.setattr(segmenter.model, "get_image_embeddings", fail)
    monkeypatch.setattr(segmenter, "processor", None)
    masks, scores = segmenter.segment(random_frame(30, 50), np.zeros((0, 4), np.float32))
    assert masks.shape == (0, 30, 50) and masks.dtype == bool
    assert scores.shape == (0,) and scores.dtype == np.float32


def test_boxes_are_clipped_to_the_frame(segmenter):
    boxes = np.array([[-20, -10, 200, 300], [10, 5, 30, 20], [100, 100, 150, 120]], np.float32)
    np.testing.assert_array_equal(
        clip_boxes_xyxy(boxes, 48, 80), [[0, 0, 80, 48], [10, 5, 30, 20], [80, 48, 80, 48]]
    )
    frame = random_frame(48, 80, seed=3)
    outside, outside_scores = segmenter.segment(frame, boxes[:2])
    inside, inside_scores = segmenter.segment(frame, np.array([[0, 0, 80, 48], [10, 5, 30, 20]], np.float32))
    np.testing.assert_array_equal(outside, inside)
    np.testing.assert_allclose(outside_scores, inside_scores, rtol=1e-6)
    masks, _ = segmenter.segment(frame, boxes)  # a box wholly outside still gives a mask of the frame's size
    assert masks.shape == (3, 48, 80)


def test_segment_rejects_bad_inputs(segmenter):
    with pytest.raises(ValueError, match="frame must be uint8"):
        segmenter.segment(np.zeros((10, 10), np.uint8), np.zeros((1, 4)))
    with pytest.raises(ValueError, match="frame must be uint8"):
        segmenter.segment(np.zeros((10, 10, 3), np.float32), np.zeros((1, 4)))
    with pytest.raises(ValueError, match=r"boxes must be \(N, 4\)"):
        segmenter.segment(random_frame(10, 10), np.zeros((4,)))


def test_sam_from_folder_errors(tmp_path, clap_folder, sam_folder):
    with pytest.raises(AVSegError) as caught:
        SamBoxSegmenter.from_folder(tmp_path / "absent")
    assert str(caught.value) == f"SAM folder not found: {tmp_path / 'absent'}"

    with pytest.raises(AVSegError) as caught:
        SamBoxSegmenter.from_folder(clap_folder)
    assert str(caught.value) == f"{clap_folder} holds model_type 'clap', not a SAM model ('sam')"

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(AVSegError) as caught:
        SamBoxSegmenter.from_folder(empty)
    assert str(caught.value) == f"SAM folder has no config.json: {empty}"

    no_weights = tmp_path / "no_weights"
    shutil.copytree(sam_folder, no_weights)
    (no_weights / "model.safetensors").unlink()
    with pytest.raises(AVSegError) as caught_weights:
        SamBoxSegmenter.from_folder(no_weights)
    assert str(caught_weights.value).startswith(f"cannot load the SAM model from {no_weights}: ")

    no_processor = tmp_path / "no_processor"
    shutil.copytree(sam_folder, no_processor)
    (no_processor / "processor_config.json").unlink()
    with pytest.raises(AVSegError) as caught_processor:
        SamBoxSegmenter.from_folder(no_processor)
    assert str(caught_processor.value).startswith(f"cannot load the SAM processor from {no_processor}: ")
    for error in (caught_weights.value, caught_processor.value):
        assert "\n" not in str(error)


def test_tiny_sam_processor_matches_the_model(segmenter):
    size = segmenter.processor.image_processor.size
    assert size.longest_edge == TINY_SAM_IMAGE_SIZE == segmenter.model.config.vision_config.image_size
    assert segmenter.processor.image_processor.pad_size.height == TINY_SAM_IMAGE_SIZE


def test_loading_hides_and_restores_transformers_progress_bars(sam_folder):
    from transformers.utils import logging as transformers_logging

    before = transformers_logging.is_progress_bar_enabled()
    try:
        for state in (True, False):
            (transformers_logging.enable_progress_bar if state else transformers_logging.disable_progress_bar)()
            SamBoxSegmenter.from_folder(sam_folder)
            assert transformers_logging.is_progress_bar_enabled() is state
    finally:
        (transformers_logging.enable_progress_bar if before else transformers_logging.disable_progress_bar)()
