"""`avseg eval --method zeroshot`: the zero-shot predictor gets each AVSBench frame's own second of sound, its
predictions are scored like any other, and option conflicts are one-line usage errors."""

from __future__ import annotations

import json
import shlex
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from models.data.prepared import PreparedData
from models.data.synthetic import make_synthetic_avsbench
from models.pipeline.evaluate_ov import RUN_FILE, predict_split, read_waveform_16k
from models.pipeline.prepare import prepare_dataset
from models.zeroshot.config import ZeroShotConfig
from models.zeroshot.predictor import ZeroShotPredictor
from zeroshot_fakes import BoxMaskSegmenter

torch.set_num_threads(1)


class RecordingTagger:
    """Every audible window: the first class sounds (similarity 1 vs 0); records the windows."""

    logit_scale = 50.0

    def __init__(self):
        self.windows = []

    def similarities(self, windows, texts):
        self.windows.extend(np.array(w) for w in windows)
        out = np.zeros((len(windows), len(texts)))
        out[:, 0] = 1.0
        return out


class CornerDetector:
    name = "corner"

    def detect(self, frames, names):
        return [SimpleNamespace(boxes=np.array([[0, 0, f.shape[1] // 2, f.shape[0] // 2]], np.float32),
                                class_scores=np.full((1, len(names)), 0.9, np.float32)) for f in frames]


def fake_predictor() -> ZeroShotPredictor:
    return ZeroShotPredictor(RecordingTagger(), CornerDetector(), BoxMaskSegmenter(), None, ZeroShotConfig(rescore=False),
                             sources={"clap": "fake"})


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> PreparedData:
    base = tmp_path_factory.mktemp("eval-zs")
    make_synthetic_avsbench(base / "root", num_train=1, num_val=1, num_test=2, seed=3, size=(40, 52))
    prepare_dataset(base / "root", base / "data")
    return PreparedData.open(base / "data")


def test_each_frame_hears_its_own_second_of_the_wav(data, tmp_path):
    predictor = fake_predictor()
    run = predict_split(predictor, data, "test", tmp_path / "preds")
    records = data.load_split("test")
    assert run.predicted == len(records)
    expected = []
    for record in records:
        waveform = read_waveform_16k(record.audio_path(data.root))
        for k in range(record.num_frames):
            expected.append(waveform[k * 16000 : k * 16000 + 15600])
    assert len(predictor.tagger.windows) == len(expected)
    for got, want in zip(predictor.tagger.windows, expected):
        np.testing.assert_array_equal(got, want)
    # the fake says the first AVSBench name sounds and sits in the top-left quarter of every frame
    from PIL import Image

    first = records[0]
    saved = np.array(Image.open(tmp_path / "preds" / first.uid / "0.png"))
    assert saved[0, 0] == 1 and saved[-1, -1] == 0


def run_cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    from avseg_cli.main import run

    monkeypatch.setattr(sys, "argv", ["avseg", *map(str, args)])
    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit) as info:
        run()
    captured = capsys.readouterr()
    code = info.value.code
    return (0 if code is None else int(code)), captured.out, captured.err


def test_cli_zero_shot_eval_scores_and_saves_like_any_method(data, tmp_path, monkeypatch, capsys):
    calls = []

    def from_pretrained(config, device, **weights):
        calls.append((config, device, weights))
        return fake_predictor()

    monkeypatch.setattr(ZeroShotPredictor, "from_pretrained", staticmethod(from_pretrained))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sam_dir").mkdir()  # a folder given is checked to be there before anything loads
    result_path, preds = tmp_path / "r.json", tmp_path / "preds"
    code, stdout, stderr = run_cli(monkeypatch, capsys, "eval", "--method", "zeroshot", "--data", data.data_dir,
                                   "--split", "test", "--json", result_path, "--save-predictions", preds,
                                   "--device", "cpu", "--instance-policy", "best", "--sam-weights", "sam_dir")
    assert code == 0, stderr
    ((config, device, weights),) = calls
    assert config.instance_policy == "best" and device == "cpu" and weights["sam_weights"] == "sam_dir"
    assert "zero-shot (corner)" in stdout and "base mIoU" in stdout
    frames = sum(record.num_frames for record in PreparedData.open(data.data_dir).load_split("test"))
    hints = [line for line in stderr.splitlines() if "zero-shot method costs about 15-30 s per frame" in line]
    assert len(hints) == 1 and f"for the {frames} frames of this split; use --device cuda" in hints[0]
    result = json.loads(result_path.read_text())
    assert result["predictor"]["method"] == "zeroshot"
    code, again, _ = run_cli(monkeypatch, capsys, "eval", "--predictions", preds, "--data", data.data_dir,
                             "--split", "test")
    assert code == 0
    row = [line for line in stdout.splitlines() if line.strip().startswith("│ mIoU")]
    assert row and row[0] in again.splitlines()


def interrupting_predictor(after_clips: int) -> ZeroShotPredictor:
    """The fake predictor, interrupted (Ctrl-C) when asked for clip `after_clips` + 1."""
    predictor = fake_predictor()
    real, calls = predictor.predict_clip, []

    def predict_clip(clip):
        calls.append(clip)
        if len(calls) > after_clips:
            raise KeyboardInterrupt
        return real(clip)

    predictor.predict_clip = predict_clip
    return predictor


def test_cli_interrupt_prints_one_line_with_the_resume_command(data, tmp_path, monkeypatch, capsys):
    records = data.load_split("test")
    first_video_clips = len(range(0, records[0].num_frames, 5))
    predictors = iter([interrupting_predictor(0), interrupting_predictor(first_video_clips),
                       interrupting_predictor(0), fake_predictor()])
    monkeypatch.setattr(ZeroShotPredictor, "from_pretrained", staticmethod(lambda *a, **k: next(predictors)))
    preds = tmp_path / "my preds"
    args = ["eval", "--method", "zeroshot", "--data", str(data.data_dir), "--split", "test", "--device", "cpu",
            "--save-predictions", str(preds)]
    # interrupted in the first video: nothing to resume, and the line does not pretend there is
    code, out, err = run_cli(monkeypatch, capsys, *args)
    assert code == 130, err
    lines = [line for line in err.splitlines() if line.startswith("interrupted")]
    assert lines == [f"interrupted: no video was saved yet; `{shlex.join(['avseg', *args])}` starts the run "
                     f"again"], err
    code, out, err = run_cli(monkeypatch, capsys, *args)
    assert code == 130, err
    lines = [line for line in err.splitlines() if line.startswith("interrupted")]
    resume = shlex.join(["avseg", *args])
    assert lines == [f"interrupted: resume with `{resume}` (the videos already saved in {preds} are skipped)"], err
    assert "Traceback" not in err + out and "error" not in err
    assert sorted(p.name for p in preds.iterdir()) == sorted([RUN_FILE, records[0].uid])  # no .<uid>.*.tmp/ left
    # without --save-predictions nothing is kept, and the line says so
    code, _, err = run_cli(monkeypatch, capsys, *args[:-2])
    assert code == 130 and "interrupted: nothing was kept (with --save-predictions DIR" in err, err
    code, out, err = run_cli(monkeypatch, capsys, *shlex.split(resume)[1:])  # the printed command resumes
    assert code == 0, err
    assert f"{len(records) - 1} videos predicted, 1 already saved" in out


@pytest.mark.parametrize(
    "args, message",
    [
        (["--method", "zeroshot", "--checkpoint", "x.pt"], "drop --checkpoint"),
        (["--method", "zeroshot", "--class-agnostic"], "--class-agnostic applies to the OV-AVSS method only"),
        (["--method", "zeroshot", "--amp", "fp16"], "--amp applies to the OV-AVSS method only"),
        (["--checkpoint", "x.pt", "--detector", "owlv2"], "--detector applies to the zero-shot method only"),
        (["--detector", "owlv2"], "--detector applies to the zero-shot method: add --method zeroshot to evaluate it"),
        (["--predictions", "p", "--clap-weights", "c"], "--clap-weights applies to the zero-shot method: add --method "
         "zeroshot to evaluate it (--predictions only scores saved PNGs)"),
        (["--method", "zeroshot", "--no-rescore", "--clip-weights", "c"],
         "--clip-weights is for the CLIP re-scoring, which --no-rescore turns off"),
        (["--method", "ovavss"], "--method ovavss needs --checkpoint"),
        ([], "or --method zeroshot"),
    ],
)
def test_cli_method_conflicts_are_usage_errors(data, monkeypatch, capsys, args, message):
    code, _, stderr = run_cli(monkeypatch, capsys, "eval", "--data", data.data_dir, *args)
    assert code == 2, stderr
    lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in stderr


def test_resuming_with_other_zero_shot_options_or_another_method_is_refused(data, tmp_path):
    from dataclasses import replace

    from models.errors import AVSegError

    preds = tmp_path / "preds"
    first = predict_split(fake_predictor(), data, "test", preds)
    again = predict_split(fake_predictor(), data, "test", preds)  # the same options resume (nothing left to do)
    assert first.predicted == again.skipped == len(data.load_split("test")) and again.predicted == 0
    other = fake_predictor()
    other.config = replace(other.config, instance_policy="best")
    with pytest.raises(AVSegError) as refused:
        predict_split(other, data, "test", preds)
    assert "holds predictions of another run (options.instance_policy: 'motion' there, 'best' now): use a new " \
           "folder" in refused.value.message and len(refused.value.message) < 300
    # an OV-AVSS description is another run too
    ovavss = SimpleNamespace(describe=lambda: {"method": "ov-avss", "checkpoint": "m.pt"}, clip_len=5,
                             set_vocabulary=lambda names: None)
    with pytest.raises(AVSegError, match=r"another run \(checkpoint: None there, 'm.pt' now; method: 'zeroshot' there, 'ov-avss' now; \d+ more\)"):
        predict_split(ovavss, data, "test", preds)
    # a run file written before an option existed (no key where the option's default is None now) resumes:
    # nothing differs, and it was refused with an empty reason "another run ()"
    stored = json.loads((preds / RUN_FILE).read_text())
    assert stored["options"]["detector_short_side"] is None
    del stored["options"]["detector_short_side"]
    (preds / RUN_FILE).write_text(json.dumps(stored))
    assert predict_split(fake_predictor(), data, "test", preds).skipped == len(data.load_split("test"))
    # a run file of an earlier avseg (without the zero-shot keys) still resumes
    stored = json.loads((preds / RUN_FILE).read_text())
    for key in ("method", "detector", "options", "weights"):
        del stored[key]
    (preds / RUN_FILE).write_text(json.dumps(stored))
    assert predict_split(fake_predictor(), data, "test", preds).skipped == len(data.load_split("test"))


def test_cli_refuses_a_predictions_folder_in_use_before_loading_the_model(data, tmp_path, monkeypatch, capsys):
    """Another `eval --save-predictions` filling the folder (a process holding its lock): refused in one line before
    the (slow) model loading, not after it."""
    import subprocess
    from pathlib import Path

    preds = tmp_path / "preds"
    preds.mkdir()
    code = ("import sys; from models.folder_lock import folder_lock\n"
            f"with folder_lock({str(preds)!r}, 'eval --save-predictions'):\n"
            "    print('held', flush=True); sys.stdin.read()\n")
    child = subprocess.Popen([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "held"
        loaded = []
        monkeypatch.setattr(ZeroShotPredictor, "from_pretrained",
                            staticmethod(lambda *a, **k: loaded.append(1) or fake_predictor()))
        code_, _, stderr = run_cli(monkeypatch, capsys, "eval", "--method", "zeroshot", "--data", str(data.data_dir),
                                   "--split", "test", "--device", "cpu", "--save-predictions", str(preds))
    finally:
        child.stdin.close()
        child.wait(timeout=10)
    assert code_ == 1 and not loaded
    assert [line for line in stderr.splitlines() if line.strip()] == [
        f"error: another avseg eval --save-predictions is using {preds} (pid {child.pid}): wait for it to finish, "
        "or use another folder"]
