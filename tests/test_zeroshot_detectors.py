"""Grounding DINO and OWLv2 wrappers (models/zeroshot/detector.py) on tiny random models from tests/tiny_detectors.py.

References are computed here from the raw transformers model and the processor's own post-processing, not from the
wrapper's helpers.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from models.errors import AVSegError
from models.zeroshot.detector import Detections, load_detector
from models.zeroshot.grounding_dino import GroundingDinoDetector
from models.zeroshot.owlv2 import Owlv2Detector
from tiny_detectors import save_tiny_grounding_dino, save_tiny_owlv2

torch.set_num_threads(1)

LANDSCAPE = (48, 80)
PORTRAIT = (90, 60)
ALL = {"min_score": 0.0, "max_boxes": 1000}  # keep every box, to compare with unfiltered references


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def gd_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        return save_tiny_grounding_dino(tmp_path_factory.mktemp("grounding_dino"))


@pytest.fixture(scope="module")
def owl_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        return save_tiny_owlv2(tmp_path_factory.mktemp("owlv2"))


@pytest.fixture(scope="module")
def gd_raw(gd_folder: Path):
    """(model, processor) loaded straight through transformers, for references."""
    from transformers import AutoProcessor, GroundingDinoForObjectDetection

    model = GroundingDinoForObjectDetection.from_pretrained(gd_folder, local_files_only=True).eval()
    return model, AutoProcessor.from_pretrained(gd_folder, local_files_only=True)


@pytest.fixture(scope="module")
def owl_raw(owl_folder: Path):
    from transformers import AutoProcessor, Owlv2ForObjectDetection

    model = Owlv2ForObjectDetection.from_pretrained(owl_folder, local_files_only=True).eval()
    return model, AutoProcessor.from_pretrained(owl_folder, local_files_only=True)


@pytest.fixture(scope="module")
def gd_all(gd_folder: Path) -> GroundingDinoDetector:
    return GroundingDinoDetector.from_folder(gd_folder, **ALL)


@pytest.fixture(scope="module")
def owl_all(owl_folder: Path) -> Owlv2Detector:
    return Owlv2Detector.from_folder(owl_folder, **ALL)


def frame(shape: tuple[int, int], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*shape, 3), dtype=np.uint8)


def reference_selection(boxes, scores, height, width, min_score=0.0, max_boxes=1000) -> tuple[np.ndarray, np.ndarray]:
    """Clip, drop empty boxes and boxes below min_score, order by best score (stable), cap: written independently."""
    boxes = np.array(boxes, dtype=np.float64)
    scores = np.array(scores, dtype=np.float64)
    boxes[:, [0, 2]] = np.minimum(np.maximum(boxes[:, [0, 2]], 0), width)
    boxes[:, [1, 3]] = np.minimum(np.maximum(boxes[:, [1, 3]], 0), height)
    best = scores.max(axis=1)
    non_empty = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    rows = [q for q in range(len(boxes)) if best[q] >= min_score and non_empty[q]]
    rows = sorted(rows, key=lambda q: -best[q])[:max_boxes]
    return boxes[rows], scores[rows]


def assert_same_detections(found: Detections, boxes: np.ndarray, scores: np.ndarray) -> None:
    assert found.boxes.dtype == np.float32 and found.class_scores.dtype == np.float32
    assert found.boxes.shape == boxes.shape and found.class_scores.shape == scores.shape
    np.testing.assert_allclose(found.class_scores, scores, atol=1e-5)
    np.testing.assert_allclose(found.boxes, boxes, atol=1e-3)


def count_forwards(module: torch.nn.Module) -> list[int]:
    calls = [0]
    module.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


# ---------------------------------------------------------------- Grounding DINO


def gd_reference(gd_raw, image: np.ndarray, names: list[str], positions: list[list[int]]):
    """Boxes from the processor's post-processing (target size = the frame) and per-name max-over-token scores."""
    model, processor = gd_raw
    inputs = processor(images=[image], text=names, return_tensors="pt")  # the processor joins "a. b." itself
    with torch.inference_mode():
        outputs = model(**inputs)
    post = processor.post_process_grounded_object_detection(
        outputs, inputs["input_ids"], threshold=0.0, text_threshold=0.0, target_sizes=[image.shape[:2]]
    )[0]
    assert len(post["boxes"]) == model.config.num_queries
    probabilities = outputs.logits[0].sigmoid().numpy()
    scores = np.stack([probabilities[:, p].max(axis=1) for p in positions], axis=1)
    return post["boxes"].numpy(), scores, inputs["input_ids"][0].tolist()


@pytest.mark.parametrize("shape", [LANDSCAPE, PORTRAIT], ids=["landscape", "portrait"])
def test_grounding_dino_matches_raw_model_and_post_processing(gd_all, gd_raw, shape):
    image = frame(shape, seed=1)
    names = ["Dog", "electric guitar"]
    [found] = gd_all.detect([image], names)
    # "dog. electric guitar.": [CLS] dog . e ##l ##e ##c ##t ##r ##i ##c guitar . [SEP]
    boxes, scores, input_ids = gd_reference(gd_raw, image, ["dog", "electric guitar"], [[1], list(range(3, 12))])
    [chunk] = gd_all.prompt_chunks(names)
    assert chunk.prompt == "dog. electric guitar."
    assert chunk.input_ids.tolist() == input_ids
    assert_same_detections(found, *reference_selection(boxes, scores, *shape))
    assert len(found.boxes) > 10  # the tiny model's boxes are mostly inside the frame: a real comparison
    assert (found.boxes[:, 2] <= shape[1]).all() and (found.boxes[:, 3] <= shape[0]).all()


def test_grounding_dino_token_positions_come_from_offsets(gd_all):
    tokenizer = gd_all.processor.tokenizer
    chunk = gd_all.prompt_chunk(["guitar", "electric guitar", "café-racer", "犬", "dog"])
    assert chunk.prompt == "guitar. electric guitar. café-racer. 犬. dog."
    tokens = tokenizer.convert_ids_to_tokens(chunk.input_ids.tolist())
    # hand-checked against this vocabulary: 'guitar' and 'dog' are words, the rest splits into characters;
    # "é" loses its accent, "-" is its own token, "犬" is unknown.
    assert [tokens[p] for p in chunk.positions[0]] == ["guitar"]
    assert [tokens[p] for p in chunk.positions[1]] == ["e", "##l", "##e", "##c", "##t", "##r", "##i", "##c", "guitar"]
    assert [tokens[p] for p in chunk.positions[2]] == ["c", "##a", "##f", "##e", "-", "r", "##a", "##c", "##e", "##r"]
    assert [tokens[p] for p in chunk.positions[3]] == ["[UNK]"]
    assert [tokens[p] for p in chunk.positions[4]] == ["dog"]
    assert chunk.positions[0] == [1] and chunk.positions[1] == list(range(3, 12)) and chunk.positions[4] == [26]
    # the first name's "guitar" is not mistaken for the second name's, and "." / [CLS] / [SEP] belong to nobody
    used = [p for positions in chunk.positions for p in positions]
    assert len(used) == len(set(used))
    assert all(tokens[p] not in (".", "[CLS]", "[SEP]") for p in used)


def test_grounding_dino_lowercases_and_strips_names(gd_all):
    upper = gd_all.prompt_chunk([" Café-Racer ".strip().lower()])
    assert gd_all.prompt_chunks([" Café-Racer ", "DOG"])[0].prompt == "café-racer. dog."
    assert gd_all.prompt_chunks([" Café-Racer ", "DOG"])[0].positions[0] == upper.positions[0]


def test_grounding_dino_chunks_a_long_vocabulary(gd_all, gd_raw, monkeypatch):
    names = ["dog", "electric guitar", "car", "man", "piano"]
    monkeypatch.setattr(gd_all.model.config, "max_text_len", 12)  # 10 tokens for names and dots
    chunks = gd_all.prompt_chunks(names)
    assert [c.prompt for c in chunks] == ["dog.", "electric guitar.", "car. man. piano."]
    assert all(len(c.input_ids) <= 12 for c in chunks)
    image = frame(LANDSCAPE, seed=2)
    [found] = gd_all.detect([image], names)
    # reference: run each chunk's prompt through the raw model; a box scores 0 for other chunks' names
    all_boxes, all_scores = [], []
    columns = [[0], [1], [2, 3, 4]]
    for chunk, chunk_columns in zip(chunks, columns):
        boxes, scores, _ = gd_reference(gd_raw, image, [names[c] for c in chunk_columns], chunk.positions)
        padded = np.zeros((len(boxes), len(names)))
        padded[:, chunk_columns] = scores
        all_boxes.append(boxes)
        all_scores.append(padded)
    reference = reference_selection(np.concatenate(all_boxes), np.concatenate(all_scores), *LANDSCAPE)
    assert_same_detections(found, *reference)
    assert len(found.boxes) > 40  # boxes from all three chunks
    # the last chunk's names score as they do in an unchunked pass of the same names
    monkeypatch.setattr(gd_all.model.config, "max_text_len", 256)
    [unchunked] = gd_all.detect([image], ["car", "man", "piano"])
    from_last_chunk = found.class_scores[:, :2].max(axis=1) == 0
    np.testing.assert_allclose(
        np.sort(found.class_scores[from_last_chunk][:, 2:], axis=0), np.sort(unchunked.class_scores, axis=0), atol=1e-5
    )


def test_grounding_dino_name_longer_than_the_text_limit_is_truncated(gd_all, monkeypatch):
    monkeypatch.setattr(gd_all.model.config, "max_text_len", 6)
    chunks = gd_all.prompt_chunks(["dog", "electric guitar"])
    assert [c.prompt for c in chunks] == ["dog.", "electric guitar."]
    assert len(chunks[1].input_ids) == 6 and chunks[1].positions == [[1, 2, 3, 4]]  # [CLS] e ##l ##e ##c [SEP]
    [found] = gd_all.detect([frame(LANDSCAPE, seed=3)], ["dog", "electric guitar"])
    assert found.class_scores.shape[1] == 2 and len(found.boxes) > 0


def test_grounding_dino_batches_by_frame_size(gd_folder):
    detector = GroundingDinoDetector.from_folder(gd_folder, batch_size=4, **ALL)
    calls = count_forwards(detector.model)
    a, b, c = frame(LANDSCAPE, 4), frame(PORTRAIT, 5), frame(LANDSCAPE, 6)
    names = ["dog", "piano"]
    mixed = detector.detect([a, b, c], names)
    assert calls[0] == 2  # one forward for the two landscape frames, one for the portrait one
    alone = [detector.detect([image], names)[0] for image in (a, b, c)]
    for together, single in zip(mixed, alone):
        np.testing.assert_allclose(together.boxes, single.boxes, atol=1e-4)
        np.testing.assert_allclose(together.class_scores, single.class_scores, atol=1e-5)
    calls[0] = 0
    detector.batch_size = 2
    detector.detect([a, c, a], names)
    assert calls[0] == 2  # [a, c] then [a]


def test_grounding_dino_empty_name_scores_zero_and_only_empty_names_run_nothing(gd_all):
    image = frame(LANDSCAPE, seed=7)
    [with_empty] = gd_all.detect([image], ["dog", "  "])
    [alone] = gd_all.detect([image], ["dog"])
    assert (with_empty.class_scores[:, 1] == 0).all()
    np.testing.assert_allclose(with_empty.class_scores[:, :1], alone.class_scores, atol=1e-6)
    calls = count_forwards(gd_all.model)
    [nothing] = gd_all.detect([image], [""])
    assert calls[0] == 0 and nothing.boxes.shape == (0, 4) and nothing.class_scores.shape == (0, 1)


# ---------------------------------------------------------------- OWLv2


def test_owlv2_matches_raw_model_and_post_processing(owl_all, owl_raw):
    """A landscape and a portrait frame in one batch; boxes are fractions of each frame's padded square."""
    model, processor = owl_raw
    images = [frame(LANDSCAPE, seed=8), frame(PORTRAIT, seed=9)]
    names = ["dog", "cat", "bird"]
    found = owl_all.detect(images, names)
    queries = [f"a photo of a {name}" for name in names]
    inputs = processor(text=[queries, queries], images=images, return_tensors="pt")
    with torch.inference_mode():
        outputs = model(**inputs)
    sides = [max(image.shape[:2]) for image in images]
    squares = [(side, side) for side in sides]
    post = processor.post_process_grounded_object_detection(outputs, threshold=0.0, target_sizes=squares)
    for index, image in enumerate(images):
        assert len(post[index]["boxes"]) == 16
        scores = outputs.logits[index].sigmoid().numpy()
        boxes, scores = reference_selection(post[index]["boxes"].numpy(), scores, *image.shape[:2])
        assert_same_detections(found[index], boxes, scores)
        assert 4 <= len(boxes) < 16  # some boxes lie wholly in the padding and are dropped
        height, width = image.shape[:2]
        assert (found[index].boxes[:, 2] <= width).all() and (found[index].boxes[:, 3] <= height).all()
    # the padding is on the long side's complement: boxes reach the far edge of the short side after clipping
    assert found[0].boxes[:, 3].max() == LANDSCAPE[0] and found[1].boxes[:, 2].max() == PORTRAIT[1]


def test_owlv2_prompt_is_applied(owl_folder, owl_raw):
    model, processor = owl_raw
    image = frame(LANDSCAPE, seed=10)
    detector = Owlv2Detector.from_folder(owl_folder, prompt="{}", **ALL)
    [found] = detector.detect([image], ["dog", "piano"])
    inputs = processor(text=[["dog", "piano"]], images=[image], return_tensors="pt")
    with torch.inference_mode():
        scores = model(**inputs).logits[0].sigmoid().numpy()
    post = processor.post_process_grounded_object_detection(model(**inputs), threshold=0.0, target_sizes=[(80, 80)])[0]
    assert_same_detections(found, *reference_selection(post["boxes"].detach().numpy(), scores, *LANDSCAPE))
    for bad in ("a photo", "a {0} photo {1}", "a {name}", "{} {", "{{}}", "{} and {}"):
        with pytest.raises(AVSegError, match="needs one '{}'"):
            Owlv2Detector(model, processor, prompt=bad)


def test_owlv2_batch_equals_frames_alone_and_encodes_text_once(owl_folder):
    detector = Owlv2Detector.from_folder(owl_folder, batch_size=2, **ALL)
    vision = count_forwards(detector.model.owlv2.vision_model)
    text = count_forwards(detector.model.owlv2.text_model)
    images = [frame(LANDSCAPE, 11), frame(PORTRAIT, 12), frame((30, 30), 13)]
    together = detector.detect(images, ["dog", "cat"])
    assert vision[0] == 2 and text[0] == 1  # batches [landscape, portrait], [square]; names encoded once
    for image, batched in zip(images, together):
        [single] = detector.detect([image], ["dog", "cat"])
        np.testing.assert_allclose(batched.boxes, single.boxes, atol=1e-4)
        np.testing.assert_allclose(batched.class_scores, single.class_scores, atol=1e-5)


# ---------------------------------------------------------------- both


@pytest.mark.parametrize("kind", ["grounding-dino", "owlv2"])
def test_min_score_and_max_boxes(kind, gd_folder, owl_folder):
    folder = gd_folder if kind == "grounding-dino" else owl_folder
    image = frame(PORTRAIT, seed=14)
    names = ["dog", "piano"]
    [every] = load_detector(kind, folder, **ALL).detect([image], names)
    best = every.class_scores.max(axis=1)
    assert (np.diff(best) <= 0).all()  # highest first
    threshold = float(np.median(best))
    [kept] = load_detector(kind, folder, min_score=threshold).detect([image], names)
    assert len(kept.boxes) == int((best >= threshold).sum()) and 0 < len(kept.boxes) < len(every.boxes)
    np.testing.assert_array_equal(kept.boxes, every.boxes[best >= threshold])
    [capped] = load_detector(kind, folder, min_score=0.0, max_boxes=3).detect([image], names)
    np.testing.assert_array_equal(capped.boxes, every.boxes[:3])
    np.testing.assert_array_equal(capped.class_scores, every.class_scores[:3])
    assert ((every.class_scores >= 0) & (every.class_scores <= 1)).all()


class Exploding(torch.nn.Module):
    def forward(self, *args, **kwargs):
        raise AssertionError("the model must not run")


@pytest.mark.parametrize("detector_class", [GroundingDinoDetector, Owlv2Detector])
def test_no_names_or_no_frames_run_nothing(detector_class):
    detector = detector_class(Exploding(), processor=None)
    found = detector.detect([frame(LANDSCAPE, 0), frame(PORTRAIT, 1)], [])
    assert len(found) == 2
    for detections in found:
        assert detections.boxes.shape == (0, 4) and detections.class_scores.shape == (0, 0)
        assert detections.boxes.dtype == np.float32
    assert detector.detect([], ["dog"]) == []


@pytest.mark.parametrize("detector_class", [GroundingDinoDetector, Owlv2Detector])
def test_frames_must_be_uint8_rgb(detector_class):
    detector = detector_class(Exploding(), processor=None)
    with pytest.raises(ValueError, match="frame 1 must be a uint8"):
        detector.detect([frame(LANDSCAPE, 0), np.zeros((4, 4, 3), np.float32)], ["dog"])
    with pytest.raises(ValueError, match="frame 0 must be a uint8"):
        detector.detect([np.zeros((4, 4), np.uint8)], ["dog"])


def test_from_folder_loads_for_inference(gd_folder, owl_folder):
    for detector in (load_detector("grounding-dino", gd_folder), load_detector("owlv2", owl_folder)):
        assert not detector.model.training
        assert not any(p.requires_grad for p in detector.model.parameters())
    assert load_detector("owlv2", owl_folder).name == "owlv2"
    assert load_detector("grounding-dino", gd_folder, max_boxes=7).max_boxes == 7


def assert_one_line_error(call, *fragments: str) -> None:
    with pytest.raises(AVSegError) as caught:
        call()
    message = str(caught.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message


def test_from_folder_errors_are_one_line(gd_folder, owl_folder, tmp_path):
    missing = tmp_path / "nowhere"
    assert_one_line_error(lambda: GroundingDinoDetector.from_folder(missing), "folder not found", str(missing))
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_one_line_error(lambda: Owlv2Detector.from_folder(empty), "no config.json", str(empty))
    assert_one_line_error(lambda: GroundingDinoDetector.from_folder(owl_folder), str(owl_folder), "'owlv2'")
    assert_one_line_error(lambda: Owlv2Detector.from_folder(gd_folder), str(gd_folder), "'grounding-dino'")
    broken_config = shutil.copytree(owl_folder, tmp_path / "broken_config")
    (broken_config / "config.json").write_text("{not json", encoding="utf-8")
    assert_one_line_error(lambda: Owlv2Detector.from_folder(broken_config), "unreadable", str(broken_config))
    corrupt = shutil.copytree(owl_folder, tmp_path / "corrupt")
    (corrupt / "model.safetensors").write_bytes(b"\x00" * 64)
    assert_one_line_error(lambda: Owlv2Detector.from_folder(corrupt), "cannot load the OWLv2 model", str(corrupt))
    no_weights = shutil.copytree(gd_folder, tmp_path / "no_weights")
    (no_weights / "model.safetensors").unlink()
    assert_one_line_error(
        lambda: GroundingDinoDetector.from_folder(no_weights), "cannot load the Grounding DINO model", str(no_weights)
    )
    no_tokenizer = shutil.copytree(gd_folder, tmp_path / "no_tokenizer")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (no_tokenizer / name).unlink()
    assert_one_line_error(
        lambda: GroundingDinoDetector.from_folder(no_tokenizer), str(no_tokenizer), "no Grounding DINO tokenizer"
    )
    specials_only = shutil.copytree(gd_folder, tmp_path / "specials_only")
    (specials_only / "tokenizer.json").unlink()
    (specials_only / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n", encoding="utf-8")
    assert_one_line_error(
        lambda: GroundingDinoDetector.from_folder(specials_only), str(specials_only), "no Grounding DINO tokenizer"
    )
    bad_tokenizer = shutil.copytree(owl_folder, tmp_path / "bad_tokenizer")
    (bad_tokenizer / "tokenizer.json").write_text("{]", encoding="utf-8")
    assert_one_line_error(
        lambda: Owlv2Detector.from_folder(bad_tokenizer), "cannot load the OWLv2 processor", str(bad_tokenizer)
    )


def test_grounding_dino_runs_on_inputs_with_fewer_positions_than_queries(tmp_path):
    """A small --detector-size or a very wide frame: fewer encoder positions than the 900 proposals Grounding DINO
    picks (here 60 of a 32x32 input's ~22) failed in torch.topk; the input is padded (masked out) instead."""
    from models.zeroshot.grounding_dino import GroundingDinoDetector, feature_positions, pad_for_queries

    folder = save_tiny_grounding_dino(tmp_path / "gd60", num_queries=60)
    detector = GroundingDinoDetector.from_folder(folder, input_short_side=32, min_score=0.0, max_boxes=100)
    frame = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    wide = np.random.default_rng(1).integers(0, 256, (8, 200, 3), dtype=np.uint8)
    for found in detector.detect([frame], ["dog", "cat"]) + detector.detect([wide], ["dog"]):
        assert 0 < len(found.boxes) <= 60 and np.isfinite(found.boxes).all()
    values, mask = torch.ones(1, 3, 32, 32), torch.ones(1, 32, 32, dtype=torch.long)
    padded, padded_mask = pad_for_queries(values, mask, 60)
    assert feature_positions(*padded.shape[-2:]) >= 60 and padded_mask.sum() == 32 * 32
    assert torch.equal(padded[..., :32, :32], values) and padded[..., 32:, :].abs().sum() == 0
    assert pad_for_queries(values, mask, 20)[0] is values  # enough positions: untouched


def test_load_detector_rejects_unknown_kind(gd_folder):
    with pytest.raises(AVSegError, match="unknown detector 'yolo'") as caught:
        load_detector("yolo", gd_folder)
    assert caught.value.exit_code == 2


def test_options_are_checked():
    with pytest.raises(AVSegError, match="min_score"):
        GroundingDinoDetector(Exploding(), None, min_score=1.5)
    with pytest.raises(AVSegError, match="max_boxes"):
        Owlv2Detector(Exploding(), None, max_boxes=0)
    with pytest.raises(AVSegError, match="batch_size"):
        Owlv2Detector(Exploding(), None, batch_size=0)


def test_grounding_dino_input_short_side_equals_a_processor_of_that_size(gd_folder, gd_raw):
    import copy

    model, processor = copy.deepcopy(gd_raw[0]), gd_raw[1]  # the detector swaps the model's CPU kernels in place
    resized = copy.deepcopy(processor)
    resized.image_processor.size = {"shortest_edge": 40, "longest_edge": int(round(40 * 1333 / 800))}
    reference = GroundingDinoDetector(model, resized, **ALL)
    smaller = GroundingDinoDetector(model, processor, input_short_side=40, **ALL)
    default = GroundingDinoDetector(model, processor, **ALL)
    shapes = []
    hook = model.register_forward_pre_hook(lambda module, args, kwargs: shapes.append(
        tuple(kwargs["pixel_values"].shape[-2:])), with_kwargs=True)
    try:
        image = frame(LANDSCAPE, 7)
        expected = reference.detect([image], ["dog", "piano"])[0]
        found = smaller.detect([image], ["dog", "piano"])[0]
        default.detect([image], ["dog", "piano"])
    finally:
        hook.remove()
    assert shapes[0] == shapes[1] and min(shapes[1]) == 40 and min(shapes[2]) > 40  # default: 64, capped by 96
    np.testing.assert_allclose(found.boxes, expected.boxes, atol=1e-4)
    np.testing.assert_allclose(found.class_scores, expected.class_scores, atol=1e-5)
    assert found.boxes[:, 2].max() <= LANDSCAPE[1] and found.boxes[:, 3].max() <= LANDSCAPE[0]
    with pytest.raises(ValueError, match="input_short_side"):
        GroundingDinoDetector(model, processor, input_short_side=8)


# ---------------------------------------------------------------- deformable attention on the CPU


def test_gather_deformable_attention_equals_the_transformers_kernel():
    from transformers.models.grounding_dino.modeling_grounding_dino import MultiScaleDeformableAttention

    from models.zeroshot.deformable_attention import GatherDeformableAttention

    gen = torch.Generator().manual_seed(0)
    shapes = [(6, 9), (3, 5), (2, 3), (1, 2)]
    spatial = torch.tensor(shapes)
    start = torch.tensor([0, 54, 69, 75])
    value = torch.randn(2, 77, 4, 5, generator=gen, dtype=torch.float64)
    locations = torch.rand(2, 13, 4, 4, 3, 2, generator=gen, dtype=torch.float64) * 1.4 - 0.2  # some off the map
    weights = torch.rand(2, 13, 4, 4, 3, generator=gen, dtype=torch.float64).softmax(-1)
    args = (value, spatial, shapes, start, locations, weights, 64)
    want = MultiScaleDeformableAttention()(*args)
    got = GatherDeformableAttention()(*args)
    assert got.shape == want.shape == (2, 13, 20)
    assert (got - want).abs().max().item() < 1e-10


def test_grounding_dino_on_the_cpu_uses_the_gather_and_matches_the_plain_model(gd_all, gd_raw):
    """gd_all (through the detector, on the CPU) runs the gather; gd_raw (loaded plainly) transformers' own
    kernel, so the comparisons with gd_raw above also check that the swap changes nothing."""
    from models.zeroshot.deformable_attention import GatherDeformableAttention

    kinds = lambda model: {type(m).__name__ for m in model.modules()}  # noqa: E731
    assert "GatherDeformableAttention" in kinds(gd_all.model) and "MultiScaleDeformableAttention" not in kinds(gd_all.model)
    assert "MultiScaleDeformableAttention" in kinds(gd_raw[0]) and "GatherDeformableAttention" not in kinds(gd_raw[0])
    assert sum(isinstance(m, GatherDeformableAttention) for m in gd_all.model.modules()) == sum(
        type(m).__name__ == "MultiScaleDeformableAttention" for m in gd_raw[0].modules())
    assert set(gd_all.model.state_dict()) == set(gd_raw[0].state_dict())


@pytest.mark.parametrize("detector", [GroundingDinoDetector, Owlv2Detector])
@pytest.mark.parametrize("option, value, message", [
    ("min_score", 1.5, "detector min_score must be in [0, 1], got 1.5"),
    ("max_boxes", 0, "detector max_boxes must be at least 1, got 0"),
    ("batch_size", 0, "detector batch_size must be at least 1, got 0"),
])
def test_box_options_out_of_range_are_usage_errors(detector, option, value, message):
    with pytest.raises(AVSegError) as caught:  # checked before the model is touched
        detector(None, None, **{option: value})
    assert caught.value.message == message and caught.value.exit_code == 2
