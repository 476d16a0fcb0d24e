"""The zero-shot method end to end with tiny random transformers models loaded from folders (no download):
`ZeroShotPredictor.from_pretrained` and `avseg annotate --method zeroshot` run the whole path."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from media import make_video
from models.prediction import ClipInput
from models.zeroshot.config import ZeroShotConfig
from models.zeroshot.predictor import ZeroShotPredictor

torch.set_num_threads(1)

OPEN = dict(audio_threshold=0.0, box_threshold=0.0, score_threshold=0.0, silence_dbfs=-200.0)
"""Thresholds that let random models' outputs through, so every stage runs."""


@pytest.fixture
def folders(tiny_zeroshot_folders) -> dict[str, Path]:
    return tiny_zeroshot_folders


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("AVSEG_CACHE", str(tmp_path / "cache"))


def load(folders, detector="grounding-dino", **options) -> ZeroShotPredictor:
    config = ZeroShotConfig(detector=detector, **{**OPEN, **options})
    return ZeroShotPredictor.from_pretrained(
        config, "cpu", clap_weights=folders["clap"], detector_weights=folders[detector], sam_weights=folders["sam"],
        clip_weights=folders["clip"] if config.rescore else None,
    )


def tone_clip(count: int = 3, size=(48, 64)) -> ClipInput:
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (count,) + size + (3,), dtype=np.uint8)
    seconds = count + 1
    waveform = (0.3 * np.sin(2 * np.pi * 440 * np.arange(seconds * 16000) / 16000)).astype(np.float32)
    return ClipInput(frames, np.zeros((count, 1, 96, 64), np.float32), waveform, tuple(float(t) for t in range(count)))


def check_predictions(predictions, vocabulary, size):
    for prediction in predictions:
        assert prediction.label_map.shape == size
        free = np.ones(size, bool)
        for instance in prediction.instances:
            assert instance.mask.shape == size and instance.mask.dtype == bool
            assert instance.label == vocabulary[instance.class_index]
            assert 0.0 <= instance.score <= 1.0 and 0.0 <= instance.sound_score <= 1.0
            # first come first served: the label map shows this instance wherever nothing earlier was painted
            assert np.all(prediction.label_map[instance.mask & free] == instance.class_index + 1)
            free &= ~instance.mask
        assert not prediction.label_map[free].any()


@pytest.mark.parametrize("detector", ["grounding-dino", "owlv2"])
def test_whole_path_runs_with_each_detector(folders, detector):
    predictor = load(folders, detector)
    vocabulary = ["violin", "acoustic guitar", "man"]
    predictor.set_vocabulary(vocabulary)
    predictions = predictor.predict_clip(tone_clip())
    assert len(predictions) == 3
    check_predictions(predictions, vocabulary, (48, 64))
    assert sum(len(p.instances) for p in predictions) > 0  # open thresholds: random models do produce objects
    described = json.loads(json.dumps(predictor.describe()))
    assert described["method"] == "zeroshot" and described["detector"] == detector
    assert described["weights"] == {"clap": str(folders["clap"]), "detector": str(folders[detector]),
                                    "sam": str(folders["sam"]), "clip": str(folders["clip"])}
    assert described["device"] == "cpu" and described["options"]["detector"] == detector


def test_model_folders_are_recorded_as_absolute_paths(folders, monkeypatch):
    """The same folders given relative to another working directory describe the same run (the annotate JSON and
    the --save-predictions record compare these), and the same relative path elsewhere does not."""
    monkeypatch.chdir(folders["clap"].parent)
    relative = {name: Path(folder.name) for name, folder in folders.items()}
    described = load(relative).describe()["weights"]
    assert described == load(folders).describe()["weights"]
    assert described["clap"] == str(folders["clap"].resolve()) and Path(described["clip"]).is_absolute()


def test_audio_gate_with_real_clap_outputs_controls_the_vision_work(folders, monkeypatch):
    predictor = load(folders, rescore=False)
    predictor.set_vocabulary(["violin", "man"])
    calls = []
    original = predictor.detector.detect
    monkeypatch.setattr(predictor.detector, "detect", lambda frames, names: calls.append(list(names)) or
                        original(frames, names))
    silent = tone_clip()
    silent = ClipInput(silent.frames, silent.audio_examples, np.zeros_like(silent.waveform_16k), silent.times)
    predictor.predict_clip(silent)
    assert calls == []  # silence: no detector run at all
    # the tiny CLAP's real probabilities decide the sounding set; only those names reach the detector
    predictor = load(folders, rescore=False, audio_threshold=0.0, max_sounding=1)
    predictor.set_vocabulary(["violin", "man"])
    monkeypatch.setattr(predictor.detector, "detect", lambda frames, names: calls.append(list(names)) or
                        original(frames, names))
    predictor.predict_clip(tone_clip(count=1))
    top = ["violin", "man"][int(np.argmax(predictor.last_evidence[0].probabilities))]
    assert calls == [[top]]


def test_annotate_cli_with_local_zero_shot_models(folders, monkeypatch, capsys, tmp_path):
    from avseg_cli.main import run

    video = make_video(tmp_path / "clip.mp4", seconds=1.0, size=(64, 48), fps="5", sample_rate=16000)
    out = tmp_path / "out"
    args = ["avseg", "annotate", str(video), "--classes", "violin,man", "--out", str(out), "--device", "cpu",
            "--clap-weights", str(folders["clap"]), "--detector-weights", str(folders["grounding-dino"]),
            "--sam-weights", str(folders["sam"]), "--clip-weights", str(folders["clip"]),
            "--audio-threshold", "0", "--box-threshold", "0"]
    monkeypatch.setattr(sys, "argv", args)
    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit) as info:
        run()
    stderr = capsys.readouterr().err
    assert info.value.code in (0, None), stderr
    document = json.loads((out / "clip.json").read_text())
    assert document["predictor"]["method"] == "zeroshot" and document["predictor"]["detector"] == "grounding-dino"
    assert document["analysis"]["audio"].startswith("CLAP on the 0.975 s")
    assert len(document["frames"]) == 5
    assert len(list((out / "clip.masks").glob("*.png"))) == 5 and (out / "clip.avseg.mp4").is_file()


def test_on_found_is_called_once_the_models_are_there_and_not_when_one_is_missing(folders, tmp_path):
    calls = []
    config = ZeroShotConfig(**OPEN)
    ZeroShotPredictor.from_pretrained(config, "cpu", clap_weights=folders["clap"], sam_weights=folders["sam"],
                                      detector_weights=folders["grounding-dino"], clip_weights=folders["clip"],
                                      on_found=lambda: calls.append("found"))
    assert calls == ["found"]
    from models.errors import AVSegError

    with pytest.raises(AVSegError, match="sam"):
        ZeroShotPredictor.from_pretrained(config, "cpu", clap_weights=folders["clap"], sam_weights=tmp_path / "none",
                                          detector_weights=folders["grounding-dino"], clip_weights=folders["clip"],
                                          on_found=lambda: calls.append("found"))
    assert calls == ["found"]


def test_clip_templates_reach_the_rescoring(folders):
    templates = ("a photo of the {}.", "the {}, making a sound")
    custom = load(folders, clip_templates=templates)
    default = load(folders)
    for predictor in (custom, default):
        predictor.set_vocabulary(["violin", "man"])
    assert custom.rescorer.templates == templates and custom.describe()["options"]["clip_templates"] == list(templates)
    assert default.describe()["options"]["clip_templates"] == "vild"
    # same CLIP, other prompts: other class embeddings
    assert custom.rescorer._text.shape == default.rescorer._text.shape
    assert not torch.allclose(custom.rescorer._text, default.rescorer._text)
    with pytest.raises(ValueError, match="exactly one"):
        ZeroShotConfig(clip_templates=("no placeholder",))
