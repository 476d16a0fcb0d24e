"""`AVSegPredictor`: composition checked against hand-computed maps (stub network + stub CLIP), a tiny
checkpoint end to end, CLIP inside a checkpoint, the fake official R50 file, options and input errors."""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from open_clip.model import CLIP
from PIL import Image

import fake_official as fake
from models.checkpoint import CHECKPOINT_FORMAT, save_checkpoint
from models.errors import AVSegError
from models.ovavss.clip_model import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, LoadedClip
from models.ovavss.config import TINY, ModelConfig
from models.vggish_setup import RANDOM_VGGISH_SEED_KEY
from models.prediction import ClipInput
from models.clip_loading import load_classifier_clip
from models.predictor import AVSegPredictor, PredictorOptions

torch.set_num_threads(1)

TINY_CLIP_CONFIG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
VOCABULARY = ["pipa", "violin", "man", "hair-dryer", "emergency-car"]
PIXEL_MEAN = np.array([123.675, 116.28, 103.53])
PIXEL_STD = np.array([58.395, 57.12, 57.375])


# ------------------------------------------------------------------------------------------ test helpers
def make_tiny_clip_dir(folder: Path, seed: int = 0) -> Path:
    """An open_clip folder (open_clip_config.json + weights) holding a random tiny CLIP."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_CLIP_CONFIG, "preprocess_cfg": {}}))
    torch.manual_seed(seed)
    torch.save(CLIP(**TINY_CLIP_CONFIG).state_dict(), folder / "open_clip_pytorch_model.bin")
    return folder


def make_tiny_checkpoint(path: Path, seed: int = 0, config: ModelConfig = TINY, **extra_entries) -> dict:
    """An avseg training checkpoint of the tiny network trained 'with --vggish-weights random'."""
    from models.ovavss.model import build_ovavss

    torch.manual_seed(seed)
    model = build_ovavss(config)
    state = {k: v.detach().clone() for k, v in model.trained_state_dict().items()}
    save_checkpoint(path, {
        "avseg_format": CHECKPOINT_FORMAT, "kind": "train", "config_name": config.name, "config": config.to_dict(),
        "model": state, "iteration": 7, "extra": {"vggish_weights_arg": "random", RANDOM_VGGISH_SEED_KEY: 3},
        **extra_entries,
    })
    return state


def random_clip_input(num_frames: int, height: int, width: int, seed: int = 0) -> ClipInput:
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, (num_frames, height, width, 3), dtype=np.uint8)
    audio = rng.standard_normal((num_frames, 1, 96, 64)).astype(np.float32)
    return ClipInput(frames=frames, audio_examples=audio)


def paint_reference(shape: tuple[int, int], instances) -> np.ndarray:
    """First-come-first-served painting of instance masks, in list order (independent of the predictor)."""
    label_map = np.zeros(shape, dtype=np.int64)
    for instance in instances:
        label_map[(label_map == 0) & instance.mask] = instance.class_index + 1
    return label_map


def reference_network_input(frames: np.ndarray, short_side: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """detectron2 test transform written out: shortest-edge size, PIL bilinear, (x - mean) / std, pad to 32."""
    height, width = frames.shape[1:3]
    scale = short_side / min(height, width)
    new_h, new_w = (short_side, scale * width) if height < width else (scale * height, short_side)
    new_h, new_w = int(new_h + 0.5), int(new_w + 0.5)
    resized = np.stack([np.asarray(Image.fromarray(f).resize((new_w, new_h), Image.BILINEAR)) for f in frames])
    normalized = (resized.astype(np.float64) - PIXEL_MEAN) / PIXEL_STD
    pad_h, pad_w = -(-new_h // 32) * 32, -(-new_w // 32) * 32
    canvas = np.zeros((len(frames), pad_h, pad_w, 3))
    canvas[:, :new_h, :new_w] = normalized
    return torch.from_numpy(canvas).permute(0, 3, 1, 2).float()[None], (new_h, new_w)


# ---------------------------------------------------------------------- stub network + stub CLIP, exact
BIG = 30.0
# close colours, so that the class probabilities are informative (0.667 / 0.846 / 0.755, see expected_probability)
COLOURS = {"red": (150, 120, 90), "green": (150, 117, 84), "blue": (153, 123, 93)}
# query -> (colour, quarter-resolution block rows a..b, cols c..d, frames where the mask is on)
BLOCKS = {0: ("red", 2, 8, 2, 10, range(5)), 1: ("green", 12, 20, 14, 26, range(5)), 2: ("blue", 2, 10, 20, 28, (0, 1))}
SOUND_LOGITS = torch.tensor([[3.0, -3.0], [-2.0, 2.0], [1.0, 0.0], [0.0, 0.0]])  # query 3: never on


def colour_feature(rgb) -> np.ndarray:
    values = np.array([(c / 255.0 - m) / s for c, m, s in zip(rgb, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)])
    return values / np.linalg.norm(values)


class StubNetwork(torch.nn.Module):
    """Returns the BLOCKS masks (quarter resolution of a 96 x 128 canvas) and SOUND_LOGITS; records its inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))
        self.calls: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(self, images, audio_examples=None, audio_embeddings=None):
        self.calls.append((images.clone(), audio_examples.clone()))
        num_frames = images.shape[1]
        masks = torch.full((1, 4, num_frames, images.shape[-2] // 4, images.shape[-1] // 4), -BIG)
        for query, (_, a, b, c, d, on) in BLOCKS.items():
            for t in on:
                if t < num_frames:
                    masks[0, query, t, a:b, c:d] = BIG
        return {"pred_logits": SOUND_LOGITS[None].clone(), "pred_masks": masks}


class StubClip(torch.nn.Module):
    """Image feature = the normalised colour at crop pixel (3, 3); text feature = the named colour's feature."""

    def __init__(self, names: list[str]) -> None:
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))
        self.names = names
        self.text = torch.tensor(np.stack([colour_feature(COLOURS[n]) for n in names]), dtype=torch.float32)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        self.autocast_seen = torch.is_autocast_enabled("cpu")
        return images[:, :, 3, 3]

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.text[tokens[:, 0]]

    def tokenize(self, prompts: list[str]) -> torch.Tensor:
        return torch.tensor([[next(i for i, n in enumerate(self.names) if n in p)] for p in prompts])


def stub_predictor(**options) -> tuple[AVSegPredictor, StubNetwork]:
    names = ["red", "green", "blue"]
    clip_model = StubClip(names)
    clip = LoadedClip(clip_model, clip_model.tokenize, "stub", None, image_size=8)
    network = StubNetwork()
    config = replace(TINY, test_short_side=96)
    predictor = AVSegPredictor(network, clip, config, "cpu", PredictorOptions(**options))
    predictor.set_vocabulary(names)
    return predictor, network


def test_cuda_graphs_are_refused_off_cuda():
    with pytest.raises(AVSegError, match="CUDA graphs need a CUDA device, the predictor runs on cpu"):
        stub_predictor(cuda_graphs=True)
    from models.ovavss.graphed_network import GraphedNetwork

    with pytest.raises(ValueError, match="CUDA device, it is on cpu"):
        GraphedNetwork(StubNetwork())


def stub_clip_input(num_frames: int = 5) -> ClipInput:
    frames = np.zeros((num_frames, 48, 60, 3), dtype=np.uint8)
    for _, (colour, a, b, c, d, _) in BLOCKS.items():
        frames[:, 2 * a : 2 * b, 2 * c : 2 * d] = COLOURS[colour]
    audio = np.arange(num_frames * 96 * 64, dtype=np.float32).reshape(num_frames, 1, 96, 64)
    return ClipInput(frames=frames, audio_examples=audio)


def expected_probability(colour: str) -> float:
    """softmax over the 3 classes of 100 x cosine(colour, class colours), float64."""
    feature = colour_feature(COLOURS[colour])
    logits = np.array([100.0 * feature @ colour_feature(COLOURS[c]) for c in ("red", "green", "blue")])
    probs = np.exp(logits - logits.max())
    return float(probs[["red", "green", "blue"].index(colour)] / probs.sum())


def test_stub_network_gives_the_hand_computed_maps_and_instances():
    predictor, network = stub_predictor()
    clip = stub_clip_input()
    frames = predictor.predict_clip(clip)

    # network input: 48x60 -> short side 96 -> 96x120, normalised, zero-padded to 96x128; audio passed through
    images, audio = network.calls[0]
    assert images.shape == (1, 5, 3, 96, 128) and audio.shape == (1, 5, 1, 96, 64)
    reference, size = reference_network_input(clip.frames, 96)
    assert size == (96, 120)
    torch.testing.assert_close(images, reference, rtol=0, atol=1e-5)
    assert torch.equal(audio[0], torch.from_numpy(clip.audio_examples))

    assert len(frames) == 5
    sounding = SOUND_LOGITS.double().softmax(-1)[:, 0]
    for t, frame in enumerate(frames):
        expected = np.zeros((48, 60), dtype=np.int64)
        for query, (colour, a, b, c, d, on) in BLOCKS.items():
            if t in on:
                expected[2 * a : 2 * b, 2 * c : 2 * d] = ["red", "green", "blue"].index(colour) + 1
        assert frame.label_map.dtype == np.uint8 and frame.label_map.shape == (48, 60)
        np.testing.assert_array_equal(frame.label_map, expected)
        got = {(inst.query, inst.label) for inst in frame.instances}
        assert got == {(q, BLOCKS[q][0]) for q in BLOCKS if t in BLOCKS[q][5]}
        for inst in frame.instances:
            colour, a, b, c, d, _ = BLOCKS[inst.query]
            assert inst.class_index == ["red", "green", "blue"].index(colour)
            assert math.isclose(inst.score, expected_probability(colour), rel_tol=1e-4)
            assert math.isclose(inst.sound_score, float(sounding[inst.query]), rel_tol=1e-5)
            mask = np.zeros((48, 60), dtype=bool)
            mask[2 * a : 2 * b, 2 * c : 2 * d] = True
            np.testing.assert_array_equal(inst.mask, mask)
        assert [inst.query for inst in frame.instances] == [q for q in (1, 2, 0) if t in BLOCKS[q][5]]  # by score


def test_sound_gate_and_crop_limit_drop_the_predicted_queries():
    gated, _ = stub_predictor(sound_gate=0.5)  # query 1 (green) has P(sounding) = 0.018
    frames = gated.predict_clip(stub_clip_input())
    assert {inst.query for inst in frames[0].instances} == {0, 2}
    assert not (frames[0].label_map == 2).any()

    limited, _ = stub_predictor(max_crops_per_frame=1)  # per frame only query 0 (P = 0.9975) is cropped
    frames = limited.predict_clip(stub_clip_input())
    assert all({inst.query for inst in f.instances} == {0} for f in frames)
    assert set(np.unique(frames[0].label_map)) == {0, 1}

    assert 0.66 < expected_probability("red") < 0.67 and expected_probability("green") > 0.84
    strict, _ = stub_predictor(score_threshold=0.8)  # only green (0.846) is above
    assert all({(i.query, i.label) for i in f.instances} == {(1, "green")} for f in strict.predict_clip(stub_clip_input()))
    best, _ = stub_predictor(top_k=1)
    assert all({i.query for i in f.instances} == {1} for f in best.predict_clip(stub_clip_input()))
    nothing, _ = stub_predictor(score_threshold=0.9)
    assert all(not f.instances and not f.label_map.any() for f in nothing.predict_clip(stub_clip_input()))


def test_amp_autocast_reaches_clip_and_the_classifier_accepts_it(monkeypatch):
    """The amp regime (here CPU bf16 autocast standing in for CUDA fp16) runs CLIP under autocast, without
    mixing half-precision logits into the classifier's float32 sums."""
    predictor, _ = stub_predictor()
    reference = predictor.predict_clip(stub_clip_input())
    assert predictor.clip.model.autocast_seen is False
    monkeypatch.setattr(predictor, "_autocast", lambda: torch.autocast("cpu", dtype=torch.bfloat16))
    frames = predictor.predict_clip(stub_clip_input())
    assert predictor.clip.model.autocast_seen is True
    for got, expected in zip(frames, reference):
        np.testing.assert_array_equal(got.label_map, expected.label_map)
        assert [i.query for i in got.instances] == [i.query for i in expected.instances]


def test_short_clips_and_input_errors():
    predictor, _ = stub_predictor()
    frames = predictor.predict_clip(stub_clip_input(num_frames=2))
    assert len(frames) == 2 and {inst.query for inst in frames[1].instances} == {0, 1, 2}
    clip = stub_clip_input()
    with pytest.raises(ValueError, match="uint8"):
        predictor.predict_clip(ClipInput(clip.frames.astype(np.float32), clip.audio_examples))
    with pytest.raises(ValueError, match="1 to 5 frames"):
        predictor.predict_clip(ClipInput(np.concatenate([clip.frames, clip.frames]), clip.audio_examples))
    with pytest.raises(ValueError, match="audio_examples"):
        predictor.predict_clip(ClipInput(clip.frames, clip.audio_examples[:3]))
    with pytest.raises(ValueError, match="audio_examples hold NaN or infinite values"):
        predictor.predict_clip(ClipInput(clip.frames, np.full_like(clip.audio_examples, np.nan)))
    with pytest.raises(ValueError, match="audio_examples hold NaN"):
        predictor.predict_clip(ClipInput(clip.frames, np.where(np.arange(64) == 3, np.inf, clip.audio_examples)))
    with pytest.raises(ValueError, match=r"audio_examples must be float \(5, 1, 96, 64\), got None"):
        predictor.predict_clip(ClipInput(clip.frames, None))
    with pytest.raises(TypeError, match="a clip is a ClipInput.frames, audio_examples., got tuple"):
        predictor.predict_clip((clip.frames, clip.audio_examples))
    fresh = AVSegPredictor(StubNetwork(), predictor.clip, predictor.config, "cpu")
    with pytest.raises(RuntimeError, match="set_vocabulary"):
        fresh.predict_clip(clip)


def test_predict_resized_checks_its_inputs_and_takes_numpy():
    predictor, _ = stub_predictor()
    clip = stub_clip_input()
    frames = torch.from_numpy(clip.frames).permute(0, 3, 1, 2).contiguous()  # (T, 3, H, W), already the input size
    size = tuple(clip.frames.shape[1:3])
    expected = predictor.predict_resized(frames, torch.from_numpy(clip.audio_examples), size)
    assert_same_frames(predictor.predict_resized(frames.numpy(), clip.audio_examples, list(size)), expected)
    with pytest.raises(ValueError, match=r"audio_examples must be \(5, 1, 96, 64\), got \(3, 1, 96, 64\)"):
        predictor.predict_resized(frames, clip.audio_examples[:3], size)
    with pytest.raises(ValueError, match=r"frames must be uint8 \(T, 3, h, w\), got torch.float32"):
        predictor.predict_resized(frames.float(), clip.audio_examples, size)
    with pytest.raises(ValueError, match=r"frames must be uint8 \(T, 3, h, w\)"):
        predictor.predict_resized(frames.permute(0, 2, 3, 1), clip.audio_examples, size)
    with pytest.raises(ValueError, match="1 to 5 frames, got 6"):
        predictor.predict_resized(torch.cat([frames, frames[:1]]), np.concatenate([clip.audio_examples] * 2)[:6], size)
    for bad_size in [(48,), (0, 64), (48.5, 64)]:
        with pytest.raises(ValueError, match="original_size must be"):
            predictor.predict_resized(frames, clip.audio_examples, bad_size)


@pytest.mark.parametrize(
    "options, message",
    [({"amp": "fp16"}, "needs a CUDA device"), ({"protocol": "middle"}, "crop protocol"),
     ({"score_threshold": 1.5}, "score threshold"), ({"top_k": 0}, "top_k"), ({"sound_gate": -0.1}, "sound gate"),
     ({"max_crops_per_frame": 0}, "max crops"), ({"amp": "fp8"}, "amp mode"), ({"templates": ["no placeholder"]}, "{}"),
     ({"cuda_graphs": True}, "CUDA graphs need a CUDA device, the predictor runs on cpu"),
     ({"top_k": 2.5}, r"top_k must be a whole number \(an int\), got float 2.5"), ({"top_k": True}, "got bool True"),
     ({"max_crops_per_frame": 1.5}, "max_crops_per_frame must be a whole number"),
     ({"score_threshold": "0.3"}, "score_threshold must be a number, got str '0.3'"),
     ({"amp_weights": "yes"}, "amp_weights must be True or False")],
)
def test_option_errors_come_before_any_loading(tmp_path, options, message):
    started = time.perf_counter()
    with pytest.raises(AVSegError, match=message if message != "{}" else r"\{\}"):
        AVSegPredictor.from_checkpoint(tmp_path / "not-there.pt", device="cpu", **options)
    assert time.perf_counter() - started < 1.0


def test_numpy_numbers_are_stored_as_python_numbers():
    """Options are recorded in the annotate JSON and eval results: numpy scalars (e.g. from a sweep over an
    np.linspace) are kept as the Python numbers they equal, so those records can be written."""
    options = PredictorOptions(top_k=np.int64(3), score_threshold=np.float32(0.25), sound_gate=np.float64(0.5),
                               max_crops_per_frame=np.int32(2), short_side=np.uint16(360))
    assert json.loads(json.dumps(asdict(options)))["top_k"] == 3
    for name, value in [("top_k", 3), ("score_threshold", 0.25), ("sound_gate", 0.5), ("max_crops_per_frame", 2),
                        ("short_side", 360)]:
        assert getattr(options, name) == value and type(getattr(options, name)) is type(value), name


def test_missing_and_foreign_checkpoints(tmp_path):
    with pytest.raises(AVSegError, match="not-there.pt"):
        AVSegPredictor.from_checkpoint(tmp_path / "not-there.pt", device="cpu")
    pkl = tmp_path / "model_final_3c8ec9.pkl"
    fake.make_fake_mask2former_pkl(pkl)
    with pytest.raises(AVSegError, match="Mask2Former COCO checkpoint"):
        AVSegPredictor.from_checkpoint(pkl, device="cpu")
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": {"a.b": torch.zeros(1)}}, foreign)
    with pytest.raises(AVSegError, match="foreign checkpoint"):
        AVSegPredictor.from_checkpoint(foreign, device="cpu")


# ------------------------------------------------------------------------------------- tiny checkpoint
@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("tiny-predictor")
    state = make_tiny_checkpoint(folder / "tiny.pt")
    return {"checkpoint": folder / "tiny.pt", "clip": make_tiny_clip_dir(folder / "clip"), "state": state}


@pytest.fixture(scope="module")
def tiny_predictor(tiny_files) -> AVSegPredictor:
    return AVSegPredictor.from_checkpoint(tiny_files["checkpoint"], device="cpu", clip_weights=tiny_files["clip"])


def test_tiny_checkpoint_describe_and_weights(tiny_predictor, tiny_files):
    described = tiny_predictor.describe()
    assert described["checkpoint_kind"] == "avseg" and described["config"] == "tiny"
    assert described["iteration"] == 7
    assert described["vggish"] == "random (seed 3, as trained)"
    assert described["clip_source"] == str(tiny_files["clip"])
    assert described["clip_weights"].startswith("local-dir-sha256-")
    assert described["short_side"] == TINY.test_short_side and described["clip_len"] == 5
    assert described["protocol"] == "official" and described["amp"] == "off" and described["top_k"] == 10
    assert described["cuda_graphs"] is False
    own = tiny_predictor.model.state_dict()
    for key, value in tiny_files["state"].items():
        assert torch.equal(own[key], value), key
    json.dumps(described)  # JSON-ready


def test_tiny_checkpoint_predictions_match_a_reference_composition(tiny_predictor, tmp_path, monkeypatch):
    monkeypatch.setenv("AVSEG_CACHE", str(tmp_path))
    predictor = tiny_predictor
    predictor.set_vocabulary(VOCABULARY)
    clip = random_clip_input(5, 40, 56, seed=1)
    frames = predictor.predict_clip(clip)
    assert len(frames) == 5

    # reference: the same network and classifier driven by hand-written preprocessing
    images, size = reference_network_input(clip.frames, TINY.test_short_side)
    with torch.inference_mode():
        outputs = predictor.model(images, audio_examples=torch.from_numpy(clip.audio_examples)[None])
        mask_logits = torch.nn.functional.interpolate(outputs["pred_masks"][0], size=images.shape[-2:],
                                                      mode="bilinear", align_corners=False)
        resized = torch.from_numpy(np.stack([np.asarray(Image.fromarray(f).resize((size[1], size[0]), Image.BILINEAR))
                                             for f in clip.frames])).permute(0, 3, 1, 2)
        classified = predictor.classifier.classify(resized, mask_logits, outputs["pred_logits"][0],
                                                   predictor._text_embeddings)
        painted = predictor.classifier.paint(classified, mask_logits, size, (40, 56))
    sounding = outputs["pred_logits"][0].double().softmax(-1)[:, 0]
    assert painted.scores.numel() > 0  # the case exercises painting
    for t, frame in enumerate(frames):
        assert frame.label_map.shape == (40, 56) and frame.label_map.dtype == np.uint8
        np.testing.assert_array_equal(frame.label_map, painted.semantic_maps[t].numpy())
        np.testing.assert_array_equal(frame.label_map, paint_reference((40, 56), frame.instances))
        scores = [inst.score for inst in frame.instances]
        assert scores == sorted(scores, reverse=True) and all(s > 0.3 for s in scores)
        for inst in frame.instances:
            assert inst.label == VOCABULARY[inst.class_index]
            assert inst.mask.dtype == bool and inst.mask.shape == (40, 56) and inst.mask.any()
            assert math.isclose(inst.sound_score, float(sounding[inst.query]), rel_tol=1e-5, abs_tol=1e-7)


def test_text_embeddings_are_encoded_once_and_cached_on_disk(tiny_predictor, tmp_path, monkeypatch):
    monkeypatch.setenv("AVSEG_CACHE", str(tmp_path))
    first = AVSegPredictor(tiny_predictor.model, tiny_predictor.clip, tiny_predictor.config, "cpu")
    first.set_vocabulary(["dog", "cat"])
    files = list((tmp_path / "text-embeddings").glob("*.pt"))
    assert len(files) == 1

    from models.ovavss import text_embeddings

    def refuse(*args, **kwargs):
        raise AssertionError("the text encoder must not run for cached names")

    monkeypatch.setattr(text_embeddings, "encode_class_names", refuse)
    second = AVSegPredictor(tiny_predictor.model, tiny_predictor.clip, tiny_predictor.config, "cpu")
    second.set_vocabulary(["cat", "dog"])
    torch.testing.assert_close(second._text_embeddings, first._text_embeddings.flip(0))
    second.set_vocabulary(["cat", "dog"])  # same vocabulary again: nothing to do
    assert second.vocabulary == ("cat", "dog")


def test_clip_and_vggish_inside_a_checkpoint(tmp_path, tiny_files):
    """A converted checkpoint carrying CLIP (config names the architecture) and VGGish tensors."""
    name = "avseg-test-predictor-clip"
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / f"{name}.json").write_text(json.dumps(TINY_CLIP_CONFIG))
    open_clip.add_model_config(tmp_path / "configs")
    torch.manual_seed(5)
    clip_state = CLIP(**TINY_CLIP_CONFIG).state_dict()
    from models.ovavss.vggish import VGGish

    torch.manual_seed(6)
    vggish_state = VGGish().state_dict()
    config = replace(TINY, clip_model=name, clip_pretrained="")
    make_tiny_checkpoint(tmp_path / "converted.pt", config=config, clip=clip_state, audio=vggish_state)
    predictor = AVSegPredictor.from_checkpoint(tmp_path / "converted.pt", device="cpu")
    described = predictor.describe()
    assert described["clip_source"] == "checkpoint" and described["clip_model"] == name
    assert described["clip_weights"].startswith("text-sha256-")
    assert described["vggish"] == "checkpoint"
    loaded = predictor.clip.model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in clip_state.items())
    audio = predictor.model.audio_encoder.audio_backbone.state_dict()
    assert all(torch.equal(audio[k], v) for k, v in vggish_state.items())
    predictor.set_vocabulary(VOCABULARY)
    assert len(predictor.predict_clip(random_clip_input(2, 24, 30))) == 2
    # an explicit CLIP weights folder wins over the CLIP inside the checkpoint
    clip, source = load_classifier_clip(config, torch.device("cpu"), clip_weights=tiny_files["clip"], clip_state=clip_state)
    assert source == str(tiny_files["clip"]) and clip.model_name.startswith("local-dir:")


def test_fake_official_r50_checkpoint_loads_and_runs(tmp_path, tiny_files):
    path = tmp_path / "model_ov_avss_r50.pth"
    official = fake.make_fake_official_checkpoint(path, "r50", with_vggish=True, module_prefix=True, compact=True)
    predictor = AVSegPredictor.from_checkpoint(path, device="cpu", clip_weights=tiny_files["clip"], short_side=64)
    described = predictor.describe()
    assert described["checkpoint_kind"] == "official-ovavss-r50" and described["config"] == "r50"
    assert described["iteration"] == 96227 and described["vggish"] == "checkpoint"
    assert described["short_side"] == 64
    own = predictor.model.state_dict()
    for key in ("backbone.stem.conv1.weight", "sem_seg_head.predictor.query_feat.weight",
                "sem_seg_head.pixel_decoder.transformer.encoder.vl_layer.b_attn.gamma_v"):
        assert torch.equal(own[key], official[key]), key
    assert torch.equal(own["audio_encoder.audio_backbone.embeddings.4.weight"],
                       official["audio_encoder.audio_backbone.embeddings.4.weight"])
    predictor.set_vocabulary(VOCABULARY)
    frames = predictor.predict_clip(random_clip_input(3, 32, 48, seed=2))
    assert len(frames) == 3
    for frame in frames:
        assert frame.label_map.shape == (32, 48) and frame.label_map.max() <= len(VOCABULARY)
        np.testing.assert_array_equal(frame.label_map, paint_reference((32, 48), frame.instances))


def test_cast_inference_weights_casts_the_autocast_parts_only():
    """`amp_weights`: backbone, transformer decoder, VGGish and CLIP image tower in the amp dtype; the pixel
    decoder, buffers and the CLIP text tower stay float32; the network still runs under autocast and gives
    what float32 weights give under the same autocast (CPU bf16 standing in for CUDA)."""
    from models.ovavss.model import build_ovavss
    from models.predictor import cast_inference_weights

    torch.manual_seed(0)
    model = build_ovavss(TINY).eval()
    clip = CLIP(**TINY_CLIP_CONFIG)
    images, audio = torch.randn(1, 2, 3, 64, 96), torch.randn(1, 2, 128)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        reference = model(images, audio_embeddings=audio)
    cast_inference_weights(model, clip, torch.bfloat16)
    for part in (model.backbone, model.sem_seg_head.predictor, model.audio_encoder, clip.visual):
        assert {p.dtype for p in part.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in model.sem_seg_head.pixel_decoder.parameters()} == {torch.float32}
    r50 = build_ovavss("r50")
    cast_inference_weights(r50, clip, torch.bfloat16)
    assert {b.dtype for b in r50.buffers() if b.is_floating_point()} == {torch.float32}  # FrozenBN statistics
    assert {p.dtype for p in r50.backbone.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in clip.transformer.parameters()} == {torch.float32}  # text tower
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        cast = model(images, audio_embeddings=audio)
    # matrix products saw the same bf16 operands; only norm scales/shifts were rounded once
    torch.testing.assert_close(cast["pred_masks"].float(), reference["pred_masks"].float(), rtol=0.05, atol=0.05)
    assert (cast["pred_masks"].float() - reference["pred_masks"].float()).abs().mean() < 0.01


def test_bf16_on_a_cpu_without_bfloat16_instructions_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr("models.predictor.cpu_supports_bf16", lambda: False)
    with pytest.raises(AVSegError, match=r"--amp bf16 on the CPU needs bfloat16 instructions .* \(use --amp off\)"):
        AVSegPredictor.from_checkpoint(tmp_path / "not-there.pt", device="cpu", amp="bf16")


@pytest.mark.skipif(not __import__("models.device").device.cpu_supports_bf16(),
                    reason="this CPU has no native bfloat16 (AVX512-BF16 / AMX)")
def test_bf16_on_the_cpu_keeps_the_results_of_float32(tmp_path, monkeypatch):
    """--amp bf16 on a CPU with bfloat16 instructions: bf16 weights in the autocast parts, float32 pixel
    decoder and text tower, and the label maps of float32 on nearly every pixel."""
    monkeypatch.setenv("AVSEG_CACHE", str(tmp_path / "cache"))
    make_tiny_checkpoint(tmp_path / "tiny.pt")
    clip_dir = make_tiny_clip_dir(tmp_path / "clip")
    clip = random_clip_input(5, 72, 128, seed=6)
    results = {}
    for amp in ("off", "bf16"):
        predictor = AVSegPredictor.from_checkpoint(tmp_path / "tiny.pt", device="cpu", clip_weights=clip_dir, amp=amp)
        dtype = torch.bfloat16 if amp == "bf16" else torch.float32
        assert next(predictor.model.backbone.parameters()).dtype == dtype
        assert next(predictor.clip.model.visual.parameters()).dtype == dtype
        assert next(predictor.model.sem_seg_head.pixel_decoder.parameters()).dtype == torch.float32
        assert predictor.clip.model.token_embedding.weight.dtype == torch.float32
        assert predictor.describe()["amp"] == amp
        predictor.set_vocabulary(VOCABULARY)
        results[amp] = predictor.predict_clip(clip)
    agree = [float((a.label_map == b.label_map).mean()) for a, b in zip(results["off"], results["bf16"])]
    print("label agreement bf16 vs float32:", agree)
    assert min(agree) > 0.97, agree
    assert sum(len(f.instances) for f in results["off"]) > 0


@pytest.mark.parametrize("vocabulary_size, dtype", [(254, np.uint8), (255, np.uint16), (300, np.uint16)])
def test_label_maps_keep_every_class_id_in_their_dtype(vocabulary_size, dtype):
    """Label maps travel narrowed (uint8 / int32 instead of int64); ids up to the vocabulary size survive."""
    from models.ovavss.classifier import PaintedClip

    predictor, _ = stub_predictor()
    predictor.vocabulary = tuple(f"name {i}" for i in range(vocabulary_size))
    semantic = torch.arange(2 * 3 * 60, dtype=torch.long).remainder(vocabulary_size + 1).view(2, 3, 60)
    masks = torch.zeros(1, 2, 3, 60, dtype=torch.bool)
    masks[0, 1, :, 5:9] = True
    painted = PaintedClip(semantic_maps=semantic, query_index=torch.tensor([0]),
                          class_index=torch.tensor([vocabulary_size - 1]), scores=torch.tensor([0.9]), masks=masks)
    frames = predictor._frame_predictions(painted, SOUND_LOGITS)
    assert [f.label_map.dtype for f in frames] == [dtype, dtype]
    assert np.array_equal(np.stack([f.label_map for f in frames]), semantic.numpy())
    assert [len(f.instances) for f in frames] == [0, 1]
    assert frames[1].instances[0].label == f"name {vocabulary_size - 1}"


def assert_same_frames(got: list, want: list) -> None:
    assert len(got) == len(want)
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a.label_map, b.label_map)
        assert [(i.label, i.query, i.score, i.sound_score) for i in a.instances] == \
            [(i.label, i.query, i.score, i.sound_score) for i in b.instances]
        for x, y in zip(a.instances, b.instances):
            np.testing.assert_array_equal(x.mask, y.mask)


def test_predict_clips_gives_predict_clip_results_reading_one_clip_ahead(tiny_predictor):
    """`predict_clips` (clips overlapped on a GPU): the results of `predict_clip`, clip by clip, for clips of
    different sizes and lengths; the input iterator is read at most one clip ahead of the results."""
    tiny_predictor.set_vocabulary(VOCABULARY)
    clips = [random_clip_input(5, 72, 128, seed=1), random_clip_input(3, 90, 60, seed=2),
             random_clip_input(5, 72, 128, seed=3), random_clip_input(1, 40, 40, seed=4)]
    want = [tiny_predictor.predict_clip(clip) for clip in clips]
    assert sum(len(f.instances) for frames in want for f in frames) > 0
    pulled = []

    def source():
        for clip in clips:
            pulled.append(clip)
            yield clip

    results = tiny_predictor.predict_clips(source())
    for index, (got, expected) in enumerate(zip(results, want)):
        assert len(pulled) == min(index + 2, len(clips))
        assert_same_frames(got, expected)
    assert len(pulled) == len(clips)
    assert list(tiny_predictor.predict_clips([])) == []


def test_predict_clips_helper_falls_back_to_predict_clip():
    from models.prediction import predict_clips

    class OneByOne:
        clip_len = 5

        def __init__(self):
            self.calls = []

        def predict_clip(self, clip):
            self.calls.append(clip)
            return [clip]

    predictor = OneByOne()
    assert list(predict_clips(predictor, iter(["a", "b"]))) == [["a"], ["b"]] and predictor.calls == ["a", "b"]


def readme_python_blocks() -> list[str]:
    """The ```python blocks of the README's "Python API" section."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Python API\n", 1)[1].split("\n## ", 1)[0]
    return [block.split("```", 1)[0] for block in section.split("```python\n")[1:]]


def test_the_readme_python_example_runs_as_written(tiny_files, tmp_path, monkeypatch):
    """The README's OV-AVSS example, with only the checkpoint, device and CLIP weights swapped for local ones."""
    from media import make_video

    block = readme_python_blocks()[0]
    original = 'AVSegPredictor.from_checkpoint("model_ov_avss_r50.pth", device="cuda")'
    assert original in block
    block = block.replace(original, f'AVSegPredictor.from_checkpoint({str(tiny_files["checkpoint"])!r}, device="cpu", '
                                    f'clip_weights={str(tiny_files["clip"])!r})')
    monkeypatch.chdir(tmp_path)
    make_video(tmp_path / "video.mp4", seconds=3.2, size=(40, 30), fps="10", sample_rate=16000)
    names: dict = {}
    exec(compile(block, "README.md", "exec"), names)
    assert names["times"] == [0.0, 1.0, 2.0, 3.0]
    frames_out = names["frames_out"]
    assert len(frames_out) == 4 and frames_out[0].label_map.shape == (30, 40)
    assert names["clip"].audio_examples.shape == (4, 1, 96, 64) and names["clip"].waveform_16k.ndim == 1
    assert_same_frames(frames_out, names["predictor"].predict_clip(names["clip"]))
