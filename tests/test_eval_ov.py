"""Open-vocabulary `avseg eval --checkpoint`: it equals `eval --predictions` on its own saved PNGs, the PNGs are
what the predictor predicts (label = AVSBench id), resuming skips finished videos only, and errors are one line."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from models.data.classes import CLASS_NAMES
from models.data.prepared import PreparedData
from models.data.synthetic import make_synthetic_avsbench
from models.errors import AVSegError
from models.ovavss.audio import read_wav_examples
from models.pipeline.evaluate_ov import (
    AVSBENCH_VOCABULARY,
    RUN_FILE,
    check_predictions_folder,
    evaluate_open_vocabulary,
    predict_split,
)
from models.pipeline.evaluate_predictions import evaluate_predictions
from models.pipeline.prepare import prepare_dataset
from models.prediction import ClipInput
from models.predictor import AVSegPredictor
from test_predictor import make_tiny_checkpoint, make_tiny_clip_dir

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("eval-ov")
    make_synthetic_avsbench(base / "root", num_train=1, num_val=1, num_test=3, seed=4, size=(40, 52))
    prepare_dataset(base / "root", base / "data")
    make_tiny_checkpoint(base / "tiny.pt", seed=1)
    clip_dir = make_tiny_clip_dir(base / "clip", seed=2)
    predictor = AVSegPredictor.from_checkpoint(base / "tiny.pt", device="cpu", clip_weights=clip_dir)
    return {"base": base, "data": PreparedData.open(base / "data"), "checkpoint": base / "tiny.pt", "clip": clip_dir,
            "predictor": predictor}


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("AVSEG_CACHE", str(tmp_path / "cache"))


def run_cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    from avseg_cli.main import run

    monkeypatch.setattr(sys, "argv", ["avseg", *args])
    with pytest.raises(SystemExit) as info:
        run()
    captured = capsys.readouterr()
    code = info.value.code
    return (0 if code is None else int(code)), captured.out, captured.err


def read_png(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.mode == "P"
        return np.asarray(image).copy()


def test_eval_checkpoint_equals_eval_predictions_on_its_saved_pngs(setup, tmp_path, monkeypatch, capsys):
    data_dir = str(setup["data"].data_dir)
    preds = tmp_path / "preds"
    code, out, err = run_cli(
        monkeypatch, capsys, "eval", "--checkpoint", str(setup["checkpoint"]), "--data", data_dir, "--split", "test",
        "--device", "cpu", "--clip-weights", str(setup["clip"]), "--json", str(tmp_path / "ckpt.json"),
        "--save-predictions", str(preds),
    )
    assert code == 0, err
    assert "mIoU" in out and "videos predicted" in out
    assert "warning: on the CPU the official protocol" in err  # the speed hint (official protocol, CPU)
    code, _, err = run_cli(monkeypatch, capsys, "eval", "--predictions", str(preds), "--data", data_dir, "--split",
                           "test", "--json", str(tmp_path / "pred.json"))
    assert code == 0, err
    from_checkpoint = json.loads((tmp_path / "ckpt.json").read_text())
    from_predictions = json.loads((tmp_path / "pred.json").read_text())
    assert from_checkpoint["mode"] == "open-vocabulary"
    assert from_checkpoint["predictor"]["checkpoint_kind"] == "avseg"
    assert from_checkpoint["videos_predicted"] == from_checkpoint["num_videos"] == len(setup["data"].load_split("test"))
    for key in ("miou", "base_miou", "novel_miou", "harmonic_miou", "fscore", "per_class_iou", "num_frames"):
        assert from_checkpoint[key] == from_predictions[key], key
    assert json.loads((preds / RUN_FILE).read_text())["split"] == "test"
    # the --predictions result says what made the predictions, as the --checkpoint one does
    assert from_predictions["mode"] == "predictions" and from_predictions["predicted_by"]["split"] == "test"
    assert from_predictions["predicted_by"]["checkpoint"] == from_checkpoint["predictor"]["checkpoint"]


def test_saved_pngs_are_the_predictor_output_with_avsbench_ids(setup, tmp_path):
    data, predictor = setup["data"], setup["predictor"]
    run = predict_split(predictor, data, "test", tmp_path / "preds")
    records = data.load_split("test")
    assert run.predicted == len(records) and run.skipped == 0
    assert run.num_frames == sum(r.num_frames for r in records)
    assert predictor.vocabulary == AVSBENCH_VOCABULARY == tuple(CLASS_NAMES[1:])

    record = max(records, key=lambda r: r.num_frames)  # a 10-frame video: two 5-frame clips
    assert record.num_frames == 10
    root = data.root
    frames = np.stack([np.asarray(Image.open(record.frame_path(root, k)).convert("RGB")) for k in range(10)])
    audio = read_wav_examples(record.audio_path(root), num_examples=10).numpy()
    expected = []
    for start in (0, 5):
        clip = ClipInput(frames=frames[start : start + 5], audio_examples=audio[start : start + 5])
        expected += [frame.label_map for frame in predictor.predict_clip(clip)]
    names = sorted(p.name for p in (tmp_path / "preds" / record.uid).iterdir())
    assert names == sorted(f"{k}.png" for k in range(10))
    painted_ids = set()
    for k in range(10):
        saved = read_png(tmp_path / "preds" / record.uid / f"{k}.png")
        assert saved.shape == frames.shape[1:3]
        np.testing.assert_array_equal(saved, expected[k])
        painted_ids |= set(np.unique(saved).tolist())
    assert painted_ids - {0}, "the case should paint some class"
    assert max(painted_ids) <= 70


class CountingPredictor:
    """Wraps a predictor, counts clips, and can fail on a chosen clip."""

    def __init__(self, inner, fail_on_clip: int | None = None) -> None:
        self.inner = inner
        self.clip_len = inner.clip_len
        self.clips = 0
        self.fail_on_clip = fail_on_clip

    def set_vocabulary(self, names):
        self.inner.set_vocabulary(names)

    def describe(self):
        return self.inner.describe()

    def predict_clip(self, clip):
        self.clips += 1
        if self.clips == self.fail_on_clip:
            raise KeyboardInterrupt
        return self.inner.predict_clip(clip)


def test_resume_skips_only_complete_videos(setup, tmp_path):
    data = setup["data"]
    records = data.load_split("test")
    preds = tmp_path / "preds"
    predict_split(setup["predictor"], data, "test", preds)
    before = {p.relative_to(preds): p.read_bytes() for p in preds.rglob("*.png")}

    incomplete = records[0]
    (preds / incomplete.uid / f"{incomplete.num_frames - 1}.png").unlink()
    stale = preds / f".{records[1].uid}.abc12_34.tmp"
    stale.mkdir()
    counting = CountingPredictor(setup["predictor"])
    run = predict_split(counting, data, "test", preds)
    assert run.predicted == 1 and run.skipped == len(records) - 1
    assert counting.clips == len(range(0, incomplete.num_frames, 5))
    assert not stale.exists()
    after = {p.relative_to(preds): p.read_bytes() for p in preds.rglob("*.png")}
    assert after == before  # deterministic, and nothing else rewritten

    again = predict_split(CountingPredictor(setup["predictor"]), data, "test", preds)
    assert again.predicted == 0 and again.skipped == len(records)


def test_interrupted_video_leaves_no_folder_and_other_runs_are_refused(setup, tmp_path):
    data = setup["data"]
    records = data.load_split("test")
    ten = next(i for i, r in enumerate(records) if r.num_frames == 10)
    clips_before = sum(len(range(0, r.num_frames, 5)) for r in records[:ten])
    preds = tmp_path / "preds"
    with pytest.raises(KeyboardInterrupt):  # during the second clip of the 10-frame video
        predict_split(CountingPredictor(setup["predictor"], fail_on_clip=clips_before + 2), data, "test", preds)
    assert not (preds / records[ten].uid).exists()
    assert [p.name for p in preds.iterdir() if p.name.startswith(".")] == []
    assert all((preds / r.uid).is_dir() for r in records[:ten])

    other = AVSegPredictor(setup["predictor"].model, setup["predictor"].clip, setup["predictor"].config, "cpu",
                           setup["predictor"].options.__class__(score_threshold=0.5), setup["predictor"].sources)
    with pytest.raises(AVSegError, match=r"holds predictions of another run \(score_threshold"):
        predict_split(other, data, "test", preds)


def test_resume_redoes_a_video_whose_png_does_not_decode(setup, tmp_path):
    data = setup["data"]
    records = data.load_split("test")
    preds = tmp_path / "preds"
    predict_split(setup["predictor"], data, "test", preds)
    png = preds / records[1].uid / "0.png"
    whole = png.read_bytes()
    png.write_bytes(whole[:50])  # cut short by a hard kill or a full disk: a header, no pixels
    counting = CountingPredictor(setup["predictor"])
    run = predict_split(counting, data, "test", preds)
    assert run.predicted == 1 and run.skipped == len(records) - 1
    assert counting.clips == len(range(0, records[1].num_frames, 5))
    assert png.read_bytes() == whole
    assert evaluate_predictions(preds, data, "test").num_videos == len(records)  # scores without "unreadable"


def test_entries_that_would_fail_scoring_are_refused_before_predicting(setup, tmp_path):
    data = setup["data"]
    records = data.load_split("test")
    preds = tmp_path / "preds"
    predict_split(setup["predictor"], data, "test", preds)
    shutil.rmtree(preds / records[0].uid)
    (preds / "checkpoints").mkdir()  # added by hand to an avseg predictions folder
    counting = CountingPredictor(setup["predictor"])
    with pytest.raises(AVSegError, match=r"holds 1 entry that is no prediction of this split \(checkpoints/\)"):
        predict_split(counting, data, "test", preds)
    assert counting.clips == 0


def test_an_interrupt_during_cleanup_leaves_no_temporary_folder(setup, tmp_path, monkeypatch):
    import models.atomic

    calls = []

    def interrupted_rmtree(*args, **kwargs):  # a second Ctrl-C (or SIGTERM) while atomic_dir cleans up
        calls.append(args[0])
        if len(calls) == 1:
            raise KeyboardInterrupt
        return shutil.rmtree(*args, **kwargs)

    monkeypatch.setattr(models.atomic, "shutil", SimpleNamespace(rmtree=interrupted_rmtree))
    data = setup["data"]
    preds = tmp_path / "preds"
    with pytest.raises(KeyboardInterrupt):
        predict_split(CountingPredictor(setup["predictor"], fail_on_clip=2), data, "test", preds)
    assert [p.name for p in preds.iterdir() if p.name.startswith(".")] == []
    assert len(calls) == 2 and calls[0] == calls[1]  # the interrupted removal was done again


def test_bad_destinations_are_refused_before_the_model_loads(setup, tmp_path, monkeypatch, capsys):
    """A --save-predictions folder that holds anything but no RUN_FILE (an earlier run's PNGs without it, a run
    folder, the data folder), or a --json that cannot be written or is no results JSON: one line, no model."""
    data = setup["data"]
    copied = tmp_path / "copied"
    predict_split(setup["predictor"], data, "test", copied)
    (copied / RUN_FILE).unlink()  # PNGs avseg did not record making (another method's, or copied without it)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "model_0000010.pt").write_bytes(b"weights")
    weights = tmp_path / "last.pt"
    weights.write_bytes(setup["checkpoint"].read_bytes())

    def no_model(*args, **kwargs):
        raise AssertionError("the model must not be loaded")

    monkeypatch.setattr(AVSegPredictor, "from_checkpoint", no_model)
    pngs = sorted(copied.rglob("*"))
    cases = [(["--save-predictions", str(folder)], f"{folder} is not empty (") for folder in
             (copied, run_dir, data.data_dir)]
    cases += [(["--json", "/proc/avseg-eval-test.json"], "cannot write /proc/avseg-eval-test.json"),
              (["--json", "/proc/avseg-eval-test/r.json"], "cannot write /proc/avseg-eval-test/r.json"),
              (["--json", str(weights)], f"refusing to overwrite {weights}: it is not an avseg eval results JSON")]
    for extra, message in cases:
        code, out, err = run_cli(monkeypatch, capsys, "eval", "--checkpoint", str(setup["checkpoint"]), "--data",
                                 str(data.data_dir), "--device", "cpu", "--max-crops", "1", *extra)
        assert code in (1, 2) and message in err, (extra, err)
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err + out, err
    assert sorted(copied.rglob("*")) == pngs and not (copied / RUN_FILE).exists()
    assert weights.read_bytes() == setup["checkpoint"].read_bytes()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert check_predictions_folder(empty) == empty and check_predictions_folder(tmp_path / "new") == tmp_path / "new"


def test_without_save_dir_predictions_go_to_a_deleted_temporary_folder(setup, tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    result = evaluate_open_vocabulary(setup["predictor"], setup["data"], "val")
    assert not result.saved and result.to_json()["predictions"] is None
    assert result.scores.num_videos == len(setup["data"].load_split("val"))
    assert 0.0 <= result.scores.miou <= 1.0
    assert list((tmp_path / "tmp").iterdir()) == []


@pytest.mark.parametrize(
    "extra, message",
    [(["--amp", "fp16", "--device", "cpu"], "needs a CUDA device"),
     (["--checkpoint", "{tmp}/missing.pt"], "missing.pt"),
     (["--save-predictions", "{tmp}/p"], "--save-predictions needs --checkpoint or --method zeroshot"),
     (["--class-agnostic", "--sound-gate", "0.5"], "not to --class-agnostic"),
     (["--class-agnostic", "--protocol", "centered"], "--protocol applies to open-vocabulary evaluation"),
     (["--class-agnostic", "--templates", "vild"], "--templates applies to open-vocabulary evaluation"),
     (["--predictions", "{tmp}", "--top-k", "3"], "--top-k needs --checkpoint"),
     (["--predictions", "{tmp}", "--score-threshold", "0.5"], "--score-threshold needs --checkpoint or --method "
                                                              "zeroshot"),
     (["--templates", "{tmp}/missing.txt"], "--templates: prompt template file not found"),
     (["--method", "zeroshot", "--protocol", "centered"], "--protocol applies to the OV-AVSS method only"),
     (["--device", "cpu", "--offline"], "not found and downloads are off (--offline)"),
     (["--checkpoint", "{ckpt}", "--device", "cpu", "--save-predictions", "{tmp}/a-file"],
      "predictions path is not a folder"),
     (["--device", "cpu", "--sound-threshold", "0.3"], "--sound-threshold applies to --class-agnostic evaluation"),
     (["--method", "zeroshot", "--sound-threshold", "0.3"], "--sound-threshold applies to --class-agnostic")],
)
def test_cli_errors_are_one_line(setup, tmp_path, monkeypatch, capsys, extra, message):
    args = ["eval", "--data", str(setup["data"].data_dir)]
    extra = [a.format(tmp=tmp_path, ckpt=setup["checkpoint"]) for a in extra]
    (tmp_path / "a-file").write_text("a user's file")
    if not {"--checkpoint", "--save-predictions", "--predictions", "--method"} & set(extra):
        args += ["--checkpoint", str(setup["checkpoint"])]
    code, out, err = run_cli(monkeypatch, capsys, *args, *extra)
    assert code != 0
    assert message in err and "Traceback" not in err + out
    assert len(err.strip().splitlines()) == 1, err


def test_classifier_options_reach_the_predictor_and_a_resume_with_others_is_refused(setup, tmp_path, monkeypatch,
                                                                                     capsys):
    from models.ovavss.prompts import template_set_id

    templates = tmp_path / "prompts.txt"
    templates.write_text("a photo of the {}.\nthe {}, making a sound\n", encoding="utf-8")
    preds = tmp_path / "preds"
    common = ["eval", "--checkpoint", str(setup["checkpoint"]), "--data", str(setup["data"].data_dir), "--split",
              "val", "--device", "cpu", "--clip-weights", str(setup["clip"]), "--save-predictions", str(preds)]
    code, out, err = run_cli(monkeypatch, capsys, *common, "--protocol", "centered", "--top-k", "2",
                             "--score-threshold", "0.35", "--templates", str(templates), "--json",
                             str(tmp_path / "r.json"))
    assert code == 0, err
    described = json.loads((tmp_path / "r.json").read_text())["predictor"]
    assert (described["protocol"], described["top_k"], described["score_threshold"]) == ("centered", 2, 0.35)
    assert described["templates"] == template_set_id(("a photo of the {}.", "the {}, making a sound"))
    # the same folder with the official crop: refused in one line, the saved predictions kept
    saved = sorted(p.relative_to(preds) for p in preds.rglob("*.png"))
    code, out, err = run_cli(monkeypatch, capsys, *common, "--templates", str(templates), "--top-k", "2",
                             "--score-threshold", "0.35")
    assert code != 0 and "holds predictions of another run (protocol" in err and "Traceback" not in err + out
    assert sorted(p.relative_to(preds) for p in preds.rglob("*.png")) == saved and saved
