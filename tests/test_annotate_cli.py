"""`avseg annotate` end to end through the real entry point (`avseg_cli.main.run`) with a fake predictor."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from media import make_audio_only, make_text_as_mp4, make_truncated, make_variable_rate, make_video, make_zero_byte
from test_annotate import FakePredictor, no_temporaries

import avseg_cli.annotate_cmd as annotate_cmd
from avseg_cli.naming_options import NamingChoices
from avseg_cli.ovavss_options import OvavssChoices
from models.ovavss.prompts import VILD_TEMPLATES
from avseg_cli.main import run


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("cli_media")
    return make_video(folder / "clip.mp4", seconds=1.0, size=(40, 30), fps="10", sample_rate=16000)


@pytest.fixture
def checkpoint(tmp_path) -> Path:
    path = tmp_path / "model.pt"
    path.write_bytes(b"not used: load_predictor is replaced by the fake")
    return path


@pytest.fixture
def fake(monkeypatch) -> FakePredictor:
    predictor = FakePredictor(fps=10)
    calls = []

    def load(checkpoint, device, vggish_weights, clip_weights, **options):
        calls.append((checkpoint, device, vggish_weights, clip_weights))
        predictor.load_options = options
        return predictor

    monkeypatch.setattr(annotate_cmd, "load_predictor", load)
    predictor.load_calls = calls
    return predictor


def avseg(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """Run `avseg annotate ARGS` as the console script does; return (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["avseg", "annotate", *map(str, args)])
    monkeypatch.setenv("COLUMNS", "250")
    with pytest.raises(SystemExit) as exit_info:
        run()
    captured = capsys.readouterr()
    code = exit_info.value.code
    return (0 if code is None else code), captured.out, captured.err


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def copy(source: Path, folder: Path, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(source.read_bytes())
    return folder / name


def test_batch_with_glob_summary_and_skip_existing(monkeypatch, capsys, clip, checkpoint, fake, tmp_path):
    copy(clip, tmp_path / "in", "a.mp4")
    copy(clip, tmp_path / "in", "b b.mp4")
    out, summary = tmp_path / "out", tmp_path / "summary.json"
    monkeypatch.chdir(tmp_path)  # weights paths are checked before anything loads: they must be there
    for name in ("v.pth", "c.pt"):
        (tmp_path / name).write_bytes(b"handed to the (fake) loader as given")
    args = [tmp_path / "in" / "*.mp4", "--classes", "pipa, violin", "--checkpoint", checkpoint, "--out", out,
            "--json-summary", summary, "--device", "cpu", "--vggish-weights", "v.pth", "--clip-weights", "c.pt"]
    code, stdout, stderr = avseg(monkeypatch, capsys, *args)
    assert code == 0, stderr
    assert fake.load_calls == [(checkpoint, "cpu", "v.pth", "c.pt")]
    assert fake.vocabulary == ["pipa", "violin"]
    assert sorted(p.name for p in out.iterdir()) == [
        "a.avseg.mp4", "a.json", "a.masks", "b b.avseg.mp4", "b b.json", "b b.masks"
    ]
    assert "2 done" in stdout and "a.mp4" in stdout and "b b.mp4" in stdout
    data = json.loads(summary.read_text())
    assert data["exit_code"] == 0 and data["counts"]["done"] == 2
    assert [Path(f["input"]).name for f in data["files"]] == ["a.mp4", "b b.mp4"]

    code, stdout, _ = avseg(monkeypatch, capsys, *args, "--skip-existing")
    assert code == 0 and "2 skipped" in stdout
    assert json.loads(summary.read_text())["counts"]["skipped"] == 2


def test_json_summary_names_a_file_that_is_not_utf8(monkeypatch, capsys, clip, checkpoint, fake, tmp_path):
    """A Latin-1 file name ("caf\\xe9.mp4") is written as a "\\udce9" escape: the summary used to fail with
    "internal error: UnicodeEncodeError" (after the video's own JSON did)."""
    import os

    video = tmp_path / os.fsdecode(b"caf\xe9.mp4")
    try:
        video.write_bytes(clip.read_bytes())
    except (OSError, UnicodeError):
        pytest.skip("this file system takes only UTF-8 file names")
    summary = tmp_path / "summary.json"
    # stdout stays strict UTF-8, as in a UTF-8 terminal; stderr escapes what it cannot encode, as Python's own does
    sys.stderr.reconfigure(errors="backslashreplace")
    code, stdout, stderr = avseg(monkeypatch, capsys, video, "--classes", "pipa", "--checkpoint", checkpoint,
                                 "--json-summary", summary)
    assert code == 0 and "internal error" not in stderr, stderr
    assert "caf\\xe9.mp4" in stdout  # the summary table shows the byte
    (item,) = json.loads(summary.read_bytes().decode("utf-8"))["files"]
    assert item["status"] == "done" and os.fsencode(item["input"]) == os.fsencode(video)


def test_a_glob_over_earlier_outputs_leaves_the_overlay_videos_out(monkeypatch, capsys, clip, checkpoint, fake,
                                                                     tmp_path):
    folder = tmp_path / "in"
    copy(clip, folder, "a.mp4")
    common = ["--classes", "pipa", "--checkpoint", checkpoint, "--device", "cpu"]
    code, _, stderr = avseg(monkeypatch, capsys, folder / "*.mp4", *common)
    assert code == 0, stderr
    assert (folder / "a.avseg.mp4").is_file()
    # run again, with the glob expanded by avseg and by a shell: a.avseg.mp4 is the first run's output, not an input
    for inputs in ([folder / "*.mp4"], [folder / "a.avseg.mp4", folder / "a.mp4"]):
        code, stdout, stderr = avseg(monkeypatch, capsys, *inputs, *common, "--skip-existing")
        assert code == 0, stderr
        assert "1 skipped" in stdout and "failed" not in stdout
        assert f"leaving out {folder / 'a.avseg.mp4'}: it is an output avseg writes for {folder / 'a.mp4'}" \
            in stderr.replace("\n", "")
    assert sorted(p.name for p in folder.iterdir()) == ["a.avseg.mp4", "a.json", "a.masks", "a.mp4"]
    # all of the folder (shell glob): the JSON and the masks folder are left out too, and the video is annotated
    code, stdout, stderr = avseg(monkeypatch, capsys, *sorted(folder.iterdir()), *common)
    assert code == 0 and "1 done" in stdout and "failed" not in stdout, stderr
    for name in ("a.avseg.mp4", "a.json", "a.masks"):
        assert f"leaving out {folder / name}: it is an output avseg writes for {folder / 'a.mp4'}" in \
            stderr.replace("\n", "")
    # outputs going elsewhere now: the first run's outputs beside the video are still not inputs
    code, stdout, stderr = avseg(monkeypatch, capsys, folder / "*.mp4", *common, "--out", tmp_path / "elsewhere")
    assert code == 0 and "1 done" in stdout, stderr
    assert sorted(p.name for p in (tmp_path / "elsewhere").iterdir()) == ["a.avseg.mp4", "a.json", "a.masks"]
    # named on its own, an overlay video is an input like any other
    code, _, stderr = avseg(monkeypatch, capsys, folder / "a.avseg.mp4", *common, "--out", tmp_path / "again")
    assert code == 0, stderr
    assert (tmp_path / "again" / "a.avseg.avseg.mp4").is_file()


def test_skip_existing_annotates_again_what_other_settings_made(monkeypatch, capsys, clip, checkpoint, fake,
                                                               tmp_path):
    out = tmp_path / "out"
    common = [clip, "--checkpoint", checkpoint, "--device", "cpu", "--out", out, "--skip-existing"]
    code, _, stderr = avseg(monkeypatch, capsys, *common, "--classes", "pipa,violin")
    assert code == 0, stderr
    code, stdout, stderr = avseg(monkeypatch, capsys, *common, "--classes", "pipa,violin", "--no-json")
    assert code == 0 and "1 skipped" in stdout, stderr  # same settings (read from the JSON kept beside)
    code, stdout, stderr = avseg(monkeypatch, capsys, *common, "--classes", "guitar,dog")
    assert code == 0 and "1 done" in stdout, stderr
    assert "annotating it again: its outputs were made with another vocabulary" in stderr.replace("\n", "")
    assert json.loads((out / "clip.json").read_text())["vocabulary"] == ["guitar", "dog"]
    code, stdout, stderr = avseg(monkeypatch, capsys, *common, "--classes", "guitar,dog", "--analysis-fps", "2")
    assert code == 0 and "1 done" in stdout and "another analysis rate" in stderr.replace("\n", ""), stderr
    code, stdout, stderr = avseg(monkeypatch, capsys, *common, "--classes", "guitar,dog", "--analysis-fps", "2")
    assert code == 0 and "1 skipped" in stdout, stderr
    monkeypatch.setattr(type(fake), "describe", lambda self: {"method": "fake", "clip_len": 5, "top_k": 3})
    code, stdout, stderr = avseg(monkeypatch, capsys, *common, "--classes", "guitar,dog", "--analysis-fps", "2")
    assert code == 0 and "1 done" in stdout
    assert "another predictor or predictor options (top_k: None then, 3 now)" in stderr.replace("\n", "")
    # a run without JSON that annotates again removes the JSON of other settings (it would name the masks wrongly)
    code, stdout, stderr = avseg(monkeypatch, capsys, *common, "--classes", "man,dog", "--no-json")
    assert code == 0 and "1 done" in stdout and not (out / "clip.json").exists()
    assert "removed clip.json: an earlier run made it with another vocabulary" in stderr.replace("\n", "")
    # ... so a later run cannot trust it: without a JSON the outputs are skipped with a warning
    code, stdout, stderr = avseg(monkeypatch, capsys, *common, "--classes", "pipa,violin", "--no-json")
    assert code == 0 and "1 skipped" in stdout
    assert "skipped without checking which settings made its outputs" in stderr.replace("\n", "")
    # a requested JSON that cannot be read: annotated again
    for damaged in ("{damaged", "[1, 2]", '{"predictor": 5}'):
        (out / "clip.json").write_text(damaged)
        code, stdout, stderr = avseg(monkeypatch, capsys, *common, "--classes", "pipa")
        assert code == 0 and "1 done" in stdout
        assert "annotating it again: its clip.json cannot be read" in stderr.replace("\n", "")
        assert json.loads((out / "clip.json").read_text())["vocabulary"] == ["pipa"]
    # a JSON of the same settings stays after a run without JSON; a user's own clip.json is never touched
    code, stdout, stderr = avseg(monkeypatch, capsys, clip, "--checkpoint", checkpoint, "--out", out, "--classes",
                                 "pipa", "--no-json")
    assert code == 0 and json.loads((out / "clip.json").read_text())["vocabulary"] == ["pipa"]
    (out / "clip.json").write_text('{"mine": true}')
    code, stdout, stderr = avseg(monkeypatch, capsys, clip, "--checkpoint", checkpoint, "--out", out, "--classes",
                                 "dog", "--no-json")
    assert code == 0 and (out / "clip.json").read_text() == '{"mine": true}'


def test_skip_existing_names_the_nested_setting_that_differs(monkeypatch, capsys, clip, checkpoint, fake, tmp_path):
    out = tmp_path / "out"
    common = [clip, "--checkpoint", checkpoint, "--out", out, "--classes", "pipa", "--skip-existing"]
    monkeypatch.setattr(type(fake), "describe", lambda self: {"method": "fake", "weights": {"clap": "/a", "sam": "/s"}})
    assert avseg(monkeypatch, capsys, *common)[0] == 0
    monkeypatch.setattr(type(fake), "describe", lambda self: {"method": "fake", "weights": {"clap": "/b", "sam": "/s"}})
    code, stdout, stderr = avseg(monkeypatch, capsys, *common)
    assert code == 0 and "1 done" in stdout
    assert "another predictor or predictor options (weights.clap: '/a' then, '/b' now)" in stderr.replace("\n", "")
    # a JSON written before an option existed (its key missing where the option is None now) describes the same
    # settings: skipped (this was an IndexError, the video "failed" with an internal error)
    monkeypatch.setattr(type(fake), "describe", lambda self: {"method": "fake", "weights": {"clap": "/b", "sam": "/s"},
                                                              "options": {"new_option": None, "kept": 1}})
    assert avseg(monkeypatch, capsys, *common)[0] == 0
    text = (out / "clip.json").read_text()
    assert text.count('"new_option": null,') == 1
    (out / "clip.json").write_text(re.sub(r'"new_option": null,\s*', "", text))
    assert "new_option" not in json.loads((out / "clip.json").read_text())["predictor"]["options"]
    code, stdout, stderr = avseg(monkeypatch, capsys, *common)
    assert code == 0 and "1 skipped" in stdout, stdout + stderr


def test_skip_existing_does_not_vouch_for_masks_or_video_its_json_did_not_make(monkeypatch, capsys, clip, checkpoint,
                                                                               fake, tmp_path):
    """Masks and video of one run, then a JSON-only run with other settings: the JSON beside them does not describe
    them, so --skip-existing annotates again instead of keeping masks that disagree with the JSON."""
    out = tmp_path / "out"
    common = [clip, "--checkpoint", checkpoint, "--device", "cpu", "--out", out]
    assert avseg(monkeypatch, capsys, *common, "--classes", "pipa,violin")[0] == 0
    masks_before = sorted((out / "clip.masks").iterdir())
    assert avseg(monkeypatch, capsys, *common, "--classes", "dog", "--no-masks", "--no-video")[0] == 0
    for flag, kind in (("--no-video", "masks"), ("--no-masks", "video")):
        code, stdout, stderr = avseg(monkeypatch, capsys, *common, "--classes", "dog", "--skip-existing", flag)
        assert code == 0 and "1 done" in stdout, stderr
        assert (f"annotating it again: the run that wrote its clip.json made no {kind}, so the {kind} beside it may "
                "come from other settings") in stderr.replace("\n", "")
        assert json.loads((out / "clip.json").read_text())["outputs"][kind] is not None
    assert sorted((out / "clip.masks").iterdir()) == masks_before  # same names, rewritten for "dog"
    # the last run made the video and JSON (no masks): asking for those two skips it
    code, stdout, stderr = avseg(monkeypatch, capsys, *common, "--classes", "dog", "--skip-existing", "--no-masks")
    assert code == 0 and "1 skipped" in stdout, stderr


def test_variable_frame_rate_video_is_annotated_with_a_warning(monkeypatch, capsys, clip, checkpoint, fake, tmp_path):
    video = make_variable_rate(tmp_path / "vfr.mp4")
    out = tmp_path / "out"
    code, _, stderr = avseg(monkeypatch, capsys, video, clip, "--classes", "pipa", "--checkpoint", checkpoint,
                            "--out", out)
    assert code == 0, stderr
    warning = [line for line in stderr.splitlines() if "variable frame rate" in line]
    assert len(warning) == 1 and warning[0].startswith(f"warning: {video}: variable frame rate (nominal 30 fps")
    assert "resampled to a constant 13" in warning[0]
    data = json.loads((out / "vfr.json").read_text())
    assert data["video"]["variable_frame_rate"] is True and 12.5 < data["video"]["fps"] < 13.5
    assert json.loads((out / "clip.json").read_text())["video"]["variable_frame_rate"] is False


def test_classes_file_and_no_outputs_flags(monkeypatch, capsys, clip, checkpoint, fake, tmp_path):
    names = tmp_path / "names.txt"
    names.write_text("# what may sound\nacoustic guitar\n\nman  # a person\n")
    video = copy(clip, tmp_path, "v.mp4")
    code, _, stderr = avseg(monkeypatch, capsys, video, "--classes-file", names, "--checkpoint", checkpoint,
                            "--no-video", "--no-masks")
    assert code == 0, stderr
    assert fake.vocabulary == ["acoustic guitar", "man"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt", "names.txt", "v.json", "v.mp4"]
    data = json.loads((tmp_path / "v.json").read_text())
    assert data["vocabulary"] == ["acoustic guitar", "man"] and len(data["frames"]) == 10


def test_silent_video_warns_and_succeeds(monkeypatch, capsys, checkpoint, fake, tmp_path):
    video = make_video(tmp_path / "mute.mp4", seconds=0.5, size=(32, 24), fps="10", audio=None)
    code, _, stderr = avseg(monkeypatch, capsys, video, "--classes", "pipa", "--checkpoint", checkpoint)
    assert code == 0
    assert "warning:" in stderr and "no audio track" in stderr and "annotated as silent" in stderr


def test_the_official_protocol_on_the_cpu_gets_a_speed_hint(monkeypatch, capsys, clip, checkpoint, fake, tmp_path):
    official = {"method": "ov-avss", "device": "cpu", "max_crops_per_frame": None, "sound_gate": None, "clip_len": 5}
    monkeypatch.setattr(fake, "describe", lambda: official)
    code, _, stderr = avseg(monkeypatch, capsys, clip, "--classes", "pipa", "--checkpoint", checkpoint, "--out",
                            tmp_path / "a")
    assert code == 0
    hints = [line for line in stderr.splitlines() if "--max-crops 3 bounds that work" in line]
    assert len(hints) == 1 and hints[0].startswith("warning: on the CPU the official protocol")


def test_cpu_speed_hint_only_for_the_official_protocol_on_the_cpu():
    from avseg_cli.ovavss_options import cpu_speed_hint

    official = {"method": "ov-avss", "device": "cpu", "max_crops_per_frame": None, "sound_gate": None}
    assert "--max-crops 3" in cpu_speed_hint(official)
    assert cpu_speed_hint({**official, "device": "cuda:0"}) is None
    assert cpu_speed_hint({**official, "max_crops_per_frame": 3}) is None
    assert cpu_speed_hint({**official, "sound_gate": 0.5}) is None
    assert cpu_speed_hint({**official, "method": "zeroshot"}) is None


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--classes", ""], "empty vocabulary"),
        (["--classes", "pipa,violin,pipa"], "duplicate class names in the vocabulary: 'pipa'"),
        (["--classes", "pipa", "--no-video", "--no-masks", "--no-json"], "nothing to write"),
        (["--classes", "pipa", "--analysis-fps", "0"], "--analysis-fps must be a positive number"),
        (["--classes", "pipa", "--checkpoint", "missing.pt"], "checkpoint not found: missing.pt"),
        (["--classes", "pipa", "--templates", "missing.txt"], "--templates: prompt template file not found: missing.txt"),
        (["--classes", "pipa", "--templates", "imagenet"], "--templates: unknown prompt template set 'imagenet'"),
        (["--classes", "pipa", "--templates", "{bad_templates}"], "prompts.txt:2: prompt template 'a {} and {}'"),
    ],
)
def test_usage_errors_exit_2_with_one_line(monkeypatch, capsys, clip, checkpoint, fake, args, expected):
    if "--checkpoint" not in args:
        args = [*args, "--checkpoint", str(checkpoint)]
    bad_templates = checkpoint.parent / "prompts.txt"
    bad_templates.write_text("a photo of a {}.\na {} and {}\n", encoding="utf-8")
    args = [arg.replace("{bad_templates}", str(bad_templates)) for arg in args]
    code, stdout, stderr = avseg(monkeypatch, capsys, clip, *args)
    assert code == 2
    assert error_lines(stderr) == [f"error: {error_lines(stderr)[0][7:]}"] and expected in stderr
    assert "Traceback" not in stderr and fake.load_calls == []


def test_without_checkpoint_the_zero_shot_method_runs(monkeypatch, capsys, clip, fake, tmp_path):
    calls = []

    def load_zeroshot(config, device, clap, detector, sam, clip_weights):
        calls.append((config, device, clap, detector, sam, clip_weights))
        return fake

    monkeypatch.setattr(annotate_cmd, "load_zeroshot_predictor", load_zeroshot)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sam_dir").mkdir()  # a folder given is checked to be there before anything loads
    out = tmp_path / "out"
    code, _, stderr = avseg(monkeypatch, capsys, clip, "--classes", "pipa,violin", "--out", out, "--device", "cpu",
                            "--detector", "owlv2", "--instance-policy", "all", "--audio-threshold", "0.4",
                            "--no-rescore", "--sam-weights", "sam_dir")
    assert code == 0, stderr
    templates = tmp_path / "prompts.txt"
    templates.write_text("a photo of the {}.\n\nthe sound-making {}\n", encoding="utf-8")
    code, _, stderr = avseg(monkeypatch, capsys, clip, "--classes", "pipa,violin", "--out", out, "--device", "cpu",
                            "--detector-size", "480", "--skip-existing", "--templates", templates,
                            "--score-threshold", "0.45")
    assert code == 0, stderr
    (config, device, clap, detector, sam, clip_weights), (second, *_) = calls
    assert second.detector == "grounding-dino" and second.detector_short_side == 480
    assert second.clip_templates == ("a photo of the {}.", "the sound-making {}") and second.score_threshold == 0.45
    assert second.to_dict()["clip_templates"] == list(second.clip_templates)
    assert config.clip_templates == VILD_TEMPLATES and config.to_dict()["clip_templates"] == "vild"
    assert config.score_threshold == 0.2
    assert (config.detector, config.instance_policy, config.audio_threshold, config.rescore) == ("owlv2", "all", 0.4,
                                                                                                False)
    assert config.effective_box_threshold == 0.1
    assert (device, clap, detector, sam, clip_weights) == ("cpu", None, None, "sam_dir", None)
    assert fake.load_calls == [] and (out / "clip.avseg.mp4").is_file()


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--method", "ovavss"], "--method ovavss needs --checkpoint FILE"),
        (["--method", "zeroshot", "--checkpoint", "x.pt"], "--method zeroshot uses no checkpoint"),
        (["--method", "zeroshot", "--vggish-weights", "v.pth"], "--vggish-weights applies to the OV-AVSS method only"),
        (["--checkpoint", "x.pt", "--detector", "owlv2"], "--detector applies to the zero-shot method only"),
        (["--checkpoint", "x.pt", "--no-rescore"], "--no-rescore applies to the zero-shot method only"),
        (["--checkpoint", "x.pt", "--detector-size", "480"], "--detector-size applies to the zero-shot method only"),
        (["--detector", "owlv2", "--detector-size", "480"], "--detector-size applies to --detector grounding-dino only"),
        (["--max-crops", "3"], "--max-crops applies to the OV-AVSS method only"),
        (["--protocol", "centered"], "--protocol applies to the OV-AVSS method only"),
        (["--top-k", "3"], "--top-k applies to the OV-AVSS method only"),
        (["--short-side", "480"], "--short-side applies to the OV-AVSS method only"),
        (["--no-rescore", "--templates", "vild"], "--templates is for the CLIP re-scoring, which --no-rescore turns off"),
        (["--no-rescore", "--clip-weights", "/nope"],
         "--clip-weights is for the CLIP re-scoring, which --no-rescore turns off"),
        (["--method", "zeroshot", "--sound-gate", "0.5"], "--sound-gate applies to the OV-AVSS method only"),
        (["--amp", "fp16"], "--amp applies to the OV-AVSS method only"),
    ],
)
def test_method_option_conflicts_are_usage_errors(monkeypatch, capsys, clip, fake, args, expected):
    code, _, stderr = avseg(monkeypatch, capsys, clip, "--classes", "pipa", *args)
    assert code == 2, stderr
    (line,) = error_lines(stderr)
    assert expected in line and "Traceback" not in stderr
    if "ovavss needs" in expected:
        assert "OV-AVSS README" in line and "Baidu" in line and "avseg train" in line
    assert fake.load_calls == []


def test_ovavss_options_reach_the_predictor(monkeypatch, capsys, clip, checkpoint, fake, tmp_path):
    code, _, stderr = avseg(monkeypatch, capsys, clip, "--classes", "pipa", "--checkpoint", checkpoint,
                            "--out", tmp_path / "out", "--max-crops", "3", "--sound-gate", "0.25", "--amp", "bf16")
    assert code == 0, stderr
    assert fake.load_options == {"amp": "bf16", "sound_gate": 0.25, "max_crops_per_frame": 3, "protocol": "official"}
    code, _, stderr = avseg(monkeypatch, capsys, clip, "--classes", "pipa", "--checkpoint", checkpoint,
                            "--out", tmp_path / "out2", "--protocol", "centered", "--top-k", "4", "--templates", "vild",
                            "--score-threshold", "0.6", "--short-side", "480")
    assert code == 0, stderr
    assert fake.load_options == {"amp": "off", "sound_gate": None, "max_crops_per_frame": None, "protocol": "centered",
                                 "top_k": 4, "templates": "vild", "score_threshold": 0.6, "short_side": 480}
    for bad in (["--top-k", "0"], ["--protocol", "sideways"], ["--score-threshold", "1.5"], ["--short-side", "16"]):
        code, _, stderr = avseg(monkeypatch, capsys, clip, "--classes", "pipa", "--checkpoint", checkpoint, *bad)
        assert code == 2 and f"Invalid value for '{bad[0]}'" in stderr and "Traceback" not in stderr
    code, _, stderr = avseg(monkeypatch, capsys, clip, "--classes", "pipa", "--checkpoint", checkpoint,
                            "--max-crops", "0")
    assert code == 2 and "--max-crops" in stderr and "Traceback" not in stderr


def test_load_predictor_maps_the_options_onto_from_checkpoint(monkeypatch, tmp_path):
    import inspect

    from models import predictor as predictor_module

    parameters = inspect.signature(predictor_module.AVSegPredictor.from_checkpoint).parameters
    seen = {}
    monkeypatch.setattr(predictor_module.AVSegPredictor, "from_checkpoint",
                        classmethod(lambda cls, checkpoint, **kwargs: seen.update(kwargs, checkpoint=checkpoint)))
    options = {**OvavssChoices("fp16", 0.5, 2, "centered", 3, 480).predictor_kwargs(),
               **NamingChoices("p.txt", 0.25).predictor_kwargs()}
    annotate_cmd.load_predictor(tmp_path / "m.pt", "cpu", "v.pth", "c.pt", **options)
    assert seen == {"checkpoint": tmp_path / "m.pt", "device": "cpu", "vggish_weights": "v.pth", "clip_weights": "c.pt",
                    "amp": "fp16", "sound_gate": 0.5, "max_crops_per_frame": 2, "protocol": "centered", "top_k": 3,
                    "short_side": 480, "templates": "p.txt", "score_threshold": 0.25}
    assert set(options) <= set(parameters)  # every keyword the choices give is one the real from_checkpoint takes


def test_zero_shot_offline_without_models_is_one_line(monkeypatch, capsys, clip, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("AVSEG_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    code, _, stderr = avseg(monkeypatch, capsys, clip, "--classes", "pipa", "--device", "cpu")
    assert code == 1, stderr
    (line,) = error_lines(stderr)
    assert "clap-htsat-unfused" in line and "avseg weights fetch clap-htsat-unfused" in line
    assert stderr.strip() == line  # nothing else: no "loading ..." before an error about loading
    assert "Traceback" not in stderr and not (clip.parent / "clip.avseg.mp4").exists()


def test_offline_option_forbids_downloads_for_that_run_only(monkeypatch, capsys, clip, fake, tmp_path):
    from models import download, hub_models

    for variable in download.OFFLINE_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("AVSEG_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    downloads = []
    monkeypatch.setattr(hub_models, "download_hub_model", lambda weight, **kw: downloads.append(weight.name) or 1 / 0)
    for argv in (["avseg", "annotate", str(clip), "--classes", "pipa", "--device", "cpu", "--offline"],
                 ["avseg", "--offline", "annotate", str(clip), "--classes", "pipa", "--device", "cpu"]):
        monkeypatch.setattr(sys, "argv", argv)
        with pytest.raises(SystemExit) as info:
            run()
        stderr = capsys.readouterr().err
        assert info.value.code == 1, stderr
        (line,) = error_lines(stderr)
        assert "clap-htsat-unfused" in line and "downloads are off (--offline)" in line
    assert downloads == [] and not (clip.parent / "clip.avseg.mp4").exists()
    # the next run in this process (no --offline) may download again
    monkeypatch.setattr(annotate_cmd, "load_zeroshot_predictor", lambda *args: fake)
    code, _, stderr = avseg(monkeypatch, capsys, clip, "--classes", "pipa", "--out", tmp_path / "out")
    assert code == 0, stderr
    assert download.offline_reason() is None


def test_bad_inputs_fail_one_line_each_and_the_rest_is_done(monkeypatch, capsys, clip, checkpoint, fake, tmp_path):
    folder = tmp_path / "in"
    good = copy(clip, folder, "good.mp4")
    (folder / "dir.mp4").mkdir()
    bad = [
        folder / "missing.mp4",
        folder / "dir.mp4",
        make_text_as_mp4(folder / "text.mp4"),
        make_zero_byte(folder / "zero.mp4"),
        make_truncated(folder / "cut.mp4", seconds=1.5),
        make_audio_only(folder / "sound.m4a"),
    ]
    out = tmp_path / "out"
    code, stdout, stderr = avseg(monkeypatch, capsys, *bad, good, "--classes", "pipa", "--checkpoint", checkpoint,
                                 "--out", out)
    assert code == 1
    lines = error_lines(stderr)
    assert len(lines) == len(bad)
    for line, path in zip(lines, bad):
        assert str(path) in line
    assert "Traceback" not in stderr
    assert "1 done" in stdout and "6 failed" in stdout
    assert sorted(p.name for p in out.iterdir()) == ["good.avseg.mp4", "good.json", "good.masks"]
    # stderr is not a terminal here: besides the errors, a progress line per video that got anywhere (the truncated
    # one's decoded frames, the good one) and one for all videos; no empty or half-drawn bar lines
    others = [line for line in stderr.splitlines() if not line.startswith(("error:", "warning:"))]
    assert others[-1].startswith("all videos: 7/7 videos") and "good.mp4: 10/10 frames" in stderr
    assert all(line.strip() for line in stderr.splitlines())


def test_when_no_input_can_be_read_no_model_is_loaded(monkeypatch, capsys, checkpoint, fake, tmp_path):
    zeroshot_loads = []
    monkeypatch.setattr(annotate_cmd, "load_zeroshot_predictor", lambda *args: zeroshot_loads.append(args) or fake)
    text = make_text_as_mp4(tmp_path / "notes.mp4")
    bad = [tmp_path / "missing.mp4", text, tmp_path / "nothing-*.mp4"]
    summary = tmp_path / "summary.json"
    for method in (["--checkpoint", checkpoint], []):
        code, stdout, stderr = avseg(monkeypatch, capsys, *bad, "--classes", "pipa", *method, "--json-summary",
                                     summary)
        assert code == 1 and "3 failed" in stdout
        lines = error_lines(stderr)
        assert lines[0] == f"error: file not found: {bad[0]}" and str(text) in lines[1]
        assert lines[2] == f"error: no file matches {bad[2]}" and len(lines) == 3
        assert [f["status"] for f in json.loads(summary.read_text())["files"]] == ["failed"] * 3
    assert fake.load_calls == [] and zeroshot_loads == []


def test_output_folder_that_cannot_be_created(monkeypatch, capsys, clip, checkpoint, fake, tmp_path):
    blocker = tmp_path / "plain-file"
    blocker.write_text("x")
    code, _, stderr = avseg(monkeypatch, capsys, clip, "--classes", "pipa", "--checkpoint", checkpoint,
                            "--out", blocker / "sub")
    assert code == 2  # a folder path under a file: a usage error
    (line,) = error_lines(stderr)
    assert line == f"error: cannot use {blocker / 'sub'} as the output folder: {blocker} is a file"
    assert fake.load_calls == []  # checked before the model is loaded


def test_an_output_folder_that_is_a_file_is_a_usage_error(monkeypatch, capsys, clip, checkpoint, fake, tmp_path):
    taken = tmp_path / "taken.mp4"
    taken.write_bytes(b"a user's file")
    code, _, stderr = avseg(monkeypatch, capsys, clip, "--classes", "pipa", "--checkpoint", checkpoint, "--out", taken)
    assert code == 2 and error_lines(stderr) == [f"error: cannot use {taken} as the output folder: it is a file"]
    assert taken.read_bytes() == b"a user's file" and fake.load_calls == []


def test_json_summary_folder_errors_name_it_and_empty_folders_made_by_a_failed_run_go(monkeypatch, capsys, clip,
                                                                                       checkpoint, fake, tmp_path):
    blocker = tmp_path / "plain-file"
    blocker.write_text("x")
    code, _, stderr = avseg(monkeypatch, capsys, clip, "--classes", "pipa", "--checkpoint", checkpoint,
                            "--out", tmp_path / "new" / "out", "--json-summary", blocker / "sub" / "s.json")
    assert code == 2
    (line,) = error_lines(stderr)
    assert line == f"error: cannot use {blocker / 'sub'} as the --json-summary folder: {blocker} is a file"
    assert not (tmp_path / "new").exists()
    text = tmp_path / "notes.mp4"
    text.write_text("not a video")
    for extra in ([], ["--json-summary", tmp_path / "made" / "s.json"]):
        code, _, stderr = avseg(monkeypatch, capsys, text, "--classes", "pipa", "--checkpoint", checkpoint,
                                "--out", tmp_path / "new" / "out", *extra)
        assert code == 1 and "notes.mp4" in stderr
        assert not (tmp_path / "new").exists()  # made for this run, left empty: removed
    assert (tmp_path / "made" / "s.json").is_file()  # the summary was written: its folder stays
    kept = tmp_path / "kept"
    kept.mkdir()
    code, _, _ = avseg(monkeypatch, capsys, text, "--classes", "pipa", "--checkpoint", checkpoint, "--out", kept)
    assert code == 1 and kept.is_dir()  # a folder that was there before is never removed


def test_disk_full_is_one_line_and_leaves_nothing(monkeypatch, capsys, clip, checkpoint, fake, tmp_path):
    import errno
    import os

    from models.io.mux import VideoWriter

    def full(self, frame):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(VideoWriter, "write", full)
    out = tmp_path / "out"
    code, _, stderr = avseg(monkeypatch, capsys, clip, "--classes", "pipa", "--checkpoint", checkpoint, "--out", out)
    assert code == 1
    (line,) = error_lines(stderr)
    assert str(clip) in line and "No space left on device" in line
    assert not out.exists()  # nothing left: not even the folder this run made


def test_ctrl_c_exits_130_keeps_finished_videos(monkeypatch, capsys, clip, checkpoint, fake, tmp_path):
    videos = [copy(clip, tmp_path / "in", f"{name}.mp4") for name in ("first", "second", "third")]
    fake.interrupt_on_call = 10 + 2  # clip.mp4 (10 frames at 10 fps) takes 10 calls; stop inside the second
    out, summary = tmp_path / "out", tmp_path / "summary.json"
    code, stdout, stderr = avseg(monkeypatch, capsys, *videos, "--classes", "pipa", "--checkpoint", checkpoint,
                                 "--out", out, "--json-summary", summary)
    assert code == 130
    assert "interrupted" in stderr and "Traceback" not in stderr
    assert sorted(p.name for p in out.iterdir()) == ["first.avseg.mp4", "first.json", "first.masks"]
    assert no_temporaries(out) == []
    data = json.loads(summary.read_text())
    assert data["exit_code"] == 130 and [f["status"] for f in data["files"]] == ["done", "interrupted", "not run"]


def test_sigterm_ends_like_ctrl_c_with_exit_143(monkeypatch, capsys, clip, checkpoint, fake, tmp_path):
    """`kill PID` or a scheduler's time limit: the video being annotated leaves no temporary files (they stayed
    behind before), finished videos are kept, and the exit code says SIGTERM (128 + 15)."""
    import os
    import signal

    videos = [copy(clip, tmp_path / "in", f"{name}.mp4") for name in ("first", "second")]
    predict = fake.predict_clip

    def predict_then_terminate(clip_input):
        if fake.calls == 12:  # inside the second video
            os.kill(os.getpid(), signal.SIGTERM)
        return predict(clip_input)

    monkeypatch.setattr(fake, "predict_clip", predict_then_terminate)
    before = signal.getsignal(signal.SIGTERM)
    out = tmp_path / "out"
    code, _, stderr = avseg(monkeypatch, capsys, *videos, "--classes", "pipa", "--checkpoint", checkpoint, "--out", out)
    assert code == 143, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    assert sorted(p.name for p in out.iterdir()) == ["first.avseg.mp4", "first.json", "first.masks"]
    assert no_temporaries(out) == []
    assert signal.getsignal(signal.SIGTERM) is before  # run() puts the previous handler back


def test_an_interrupt_before_the_command_can_report_it_is_still_one_line(monkeypatch, capsys, clip):
    """Ctrl-C in the first seconds (imports, the global options): typer exits 130 without a word; avseg says it."""
    import models.download

    def interrupted(*_args, **_kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(models.download, "set_default_progress", interrupted)  # called by the global callback
    code, stdout, stderr = avseg(monkeypatch, capsys, clip, "--classes", "pipa")
    assert code == 130 and [line for line in stderr.splitlines() if line.strip()] == ["interrupted"]


def test_run_works_outside_the_main_thread(monkeypatch, capsys):
    """Signal handlers can only be set in the main thread: run() from another one keeps SIGTERM's as it is."""
    import threading

    monkeypatch.setattr(sys, "argv", ["avseg", "--version"])
    codes = []

    def target():
        try:
            run()
        except SystemExit as exit_info:
            codes.append(exit_info.code)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    assert codes == [0] and capsys.readouterr().out.startswith("avseg ")


def test_python_warnings_are_one_line(monkeypatch, capsys, clip, checkpoint, fake, tmp_path):
    import warnings

    predict = fake.predict_clip

    def predict_with_a_warning(clip_input):
        warnings.warn("the weights in /x are incomplete\n(second line of the text)", UserWarning)
        return predict(clip_input)

    monkeypatch.setattr(fake, "predict_clip", predict_with_a_warning)
    before = warnings.showwarning
    code, _, stderr = avseg(monkeypatch, capsys, clip, "--classes", "pipa", "--checkpoint", checkpoint,
                            "--out", tmp_path / "out")
    assert code == 0, stderr
    assert "warning: the weights in /x are incomplete (second line of the text)" in stderr
    assert "UserWarning" not in stderr
    assert "test_annotate_cli.py" not in stderr  # no file name and source line, as Python prints them
    assert warnings.showwarning is before


def test_official_checkpoint_name_reads_the_cached_file(monkeypatch, capsys, clip, fake, tmp_path):
    monkeypatch.setenv("AVSEG_CACHE", str(tmp_path / "cache"))
    code, _, stderr = avseg(monkeypatch, capsys, clip, "--classes", "pipa", "--checkpoint", "ovavss-r50")
    assert code == 1 and "model_ov_avss_r50.pth is not in the avseg cache" in error_lines(stderr)[0]
    cached = tmp_path / "cache" / "model_ov_avss_r50.pth"
    cached.parent.mkdir()
    with open(cached, "wb") as handle:  # the size of the real file (sparse); not read: load_predictor is the fake's
        handle.truncate(1080 * 1_000_000)
    code, _, stderr = avseg(monkeypatch, capsys, clip, "--classes", "pipa", "--checkpoint", "ovavss-r50",
                            "--out", tmp_path / "out")
    assert code == 0, stderr
    assert fake.load_calls[0][0] == cached


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["annotate", "x.mp4", "--bogus"], "error: No such option: --bogus"),
        (["annotate", "x.mp4", "--classes", "a", "--top-k", "0"], "error: Invalid value for '--top-k'"),
        (["annotate", "x.mp4", "--amp", "fp32"], "error: Invalid value for '--amp'"),
        (["eval", "--data", "d", "--split", "train"], "error: Invalid value for '--split'"),
        (["frobnicate"], "error: No such command 'frobnicate'."),
    ],
)
def test_click_usage_errors_are_one_line_too(monkeypatch, capsys, argv, expected):
    monkeypatch.setattr(sys, "argv", ["avseg", *argv])
    with pytest.raises(SystemExit) as info:
        run()
    captured = capsys.readouterr()
    assert info.value.code == 2
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(expected) and lines[0].endswith("--help)")
    assert "╭" not in captured.err and "Usage:" not in captured.err and captured.out == ""


def test_a_command_without_arguments_shows_its_help(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["avseg", "annotate"])
    with pytest.raises(SystemExit) as info:
        run()
    captured = capsys.readouterr()
    assert info.value.code == 2 and "annotate [OPTIONS] {VIDEO}..." in captured.out + captured.err
    assert "error" not in captured.err


def test_help_lists_the_options(monkeypatch, capsys):
    code, stdout, _ = avseg(monkeypatch, capsys, "--help")
    assert code == 0
    for option in ("--classes", "--classes-file", "--checkpoint", "--out", "--analysis-fps", "--no-video",
                   "--no-masks", "--no-json", "--skip-existing", "--json-summary", "--device", "--vggish-weights",
                   "--clip-weights"):
        assert option in stdout


def test_with_a_tiny_ovavss_checkpoint_end_to_end(monkeypatch, capsys, clip, tmp_path):
    """The real `AVSegPredictor` (tiny random network, tiny random CLIP) through the whole command."""
    import torch

    pytest.importorskip("models.predictor")
    from test_predictor import make_tiny_checkpoint, make_tiny_clip_dir

    torch.set_num_threads(1)
    monkeypatch.setenv("AVSEG_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    checkpoint = tmp_path / "tiny.pt"
    make_tiny_checkpoint(checkpoint)
    clip_dir = make_tiny_clip_dir(tmp_path / "clip")
    out = tmp_path / "out"
    code, stdout, stderr = avseg(monkeypatch, capsys, clip, "--classes", "pipa,violin,man", "--checkpoint", checkpoint,
                                 "--clip-weights", clip_dir, "--device", "cpu", "--out", out)
    assert code == 0, stderr
    data = json.loads((out / "clip.json").read_text())
    assert data["predictor"]["method"] == "ov-avss" and data["predictor"]["config"] == "tiny"
    assert data["predictor"]["vocabulary_size"] == 3 and data["vocabulary"] == ["pipa", "violin", "man"]
    assert data["num_frames"] == 10 and [f["frame"] for f in data["frames"]] == list(range(10))
    assert sum(len(f["instances"]) for f in data["frames"]) > 0  # the seeded random model does find some
    from models.io.masks import read_index_mask
    from models.io.rle import rle_to_mask

    for record in data["frames"]:
        label_map = read_index_mask(out / "clip.masks" / f"{record['frame']:06d}.png")
        assert label_map.shape == (30, 40) and int(label_map.max()) <= 3
        for instance in record["instances"]:
            assert instance["label"] in data["vocabulary"] and 0.3 < instance["score"] <= 1
            assert 0 <= instance["sound_score"] <= 1
            assert rle_to_mask(instance["segmentation"]).shape == (30, 40)
    from models.io.video import probe

    assert probe(out / "clip.avseg.mp4").num_frames == 10
    assert data["predictor"]["max_crops_per_frame"] is None and data["predictor"]["sound_gate"] is None

    # The crop cap and the sound gate are recorded in the JSON; AMP on the CPU is refused in one line.
    code, _, stderr = avseg(monkeypatch, capsys, clip, "--classes", "pipa,violin,man", "--checkpoint", checkpoint,
                            "--clip-weights", clip_dir, "--device", "cpu", "--out", tmp_path / "capped",
                            "--max-crops", "1", "--sound-gate", "0.2")
    assert code == 0, stderr
    capped = json.loads((tmp_path / "capped" / "clip.json").read_text())
    assert capped["predictor"]["max_crops_per_frame"] == 1 and capped["predictor"]["sound_gate"] == 0.2

    # The classifier options: the paper's centred crop, fewer kept pairs, a higher threshold, a template file.
    from models.ovavss.prompts import template_set_id

    templates = tmp_path / "prompts.txt"
    templates.write_text("a photo of the {}.\nthe {}, making a sound\n", encoding="utf-8")
    code, _, stderr = avseg(monkeypatch, capsys, clip, "--classes", "pipa,violin,man", "--checkpoint", checkpoint,
                            "--clip-weights", clip_dir, "--device", "cpu", "--out", tmp_path / "tuned",
                            "--protocol", "centered", "--top-k", "1", "--score-threshold", "0.34",
                            "--templates", templates, "--short-side", "48")
    assert code == 0, stderr
    tuned = json.loads((tmp_path / "tuned" / "clip.json").read_text())
    described = tuned["predictor"]
    assert (described["protocol"], described["top_k"], described["score_threshold"]) == ("centered", 1, 0.34)
    assert described["short_side"] == 48 and data["predictor"]["short_side"] == 64  # the tiny config's test size
    assert described["templates"] == template_set_id(("a photo of the {}.", "the {}, making a sound"))
    assert described["templates_file"] == str(templates.resolve())
    assert data["predictor"]["templates"] == "vild" and "templates_file" not in data["predictor"]
    assert sum(len(record["instances"]) for record in tuned["frames"]) > 0
    for record in tuned["frames"]:
        # top-k 1: one (query, class) pair per 5-frame clip, so at most one object per frame
        assert len(record["instances"]) <= 1
        assert read_index_mask(tmp_path / "tuned" / "clip.masks" / f"{record['frame']:06d}.png").shape == (30, 40)
        assert all(instance["score"] > 0.34 for instance in record["instances"])
    code, stdout, stderr = avseg(monkeypatch, capsys, clip, "--classes", "pipa", "--checkpoint", checkpoint,
                                 "--clip-weights", clip_dir, "--device", "cpu", "--out", tmp_path / "amp",
                                 "--amp", "fp16")
    assert code != 0 and "needs a CUDA device" in stderr and "Traceback" not in stderr + stdout
    assert len(error_lines(stderr)) == 1 and not (tmp_path / "amp" / "clip.json").exists()


# ------------------------------------------------------------------------------------------------
# the example scripts

REPO = Path(__file__).resolve().parents[1]


def script_env(**extra: str) -> dict:
    import os

    env = {key: value for key, value in os.environ.items() if key != "AVSEG_CHECKPOINT"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["COLUMNS"] = "200"
    env.update(extra)
    return env


def test_demo_video_is_small_and_as_documented():
    from models.io.video import probe

    video = REPO / "examples" / "astronaut.mp4"
    assert video.stat().st_size < 1_000_000
    info = probe(video)
    assert (info.width, info.height, info.fps) == (640, 360, 25)
    assert 6.0 <= info.duration <= 8.0 and info.has_audio and info.audio_codec == "aac"


def test_demo_script_uses_the_zero_shot_method_and_fails_cleanly_offline(tmp_path):
    import subprocess

    env = script_env(HF_HUB_OFFLINE="1", AVSEG_CACHE=str(tmp_path / "cache"), HF_HUB_CACHE=str(tmp_path / "hf"))
    completed = subprocess.run(["bash", str(REPO / "examples" / "demo.sh")], capture_output=True, text=True,
                               env=env, cwd="/", timeout=120)
    assert completed.returncode == 1, completed.stderr
    # the zero-shot method's first model is what is missing
    assert "clap-htsat-unfused" in completed.stderr and "avseg weights fetch" in completed.stderr
    assert "Traceback" not in completed.stderr
    import torch

    if not torch.cuda.is_available():  # a 7 s demo would cost over an hour on a CPU at every frame
        assert "no CUDA: analysing 1 frame per second" in completed.stdout


@pytest.mark.parametrize("fps, refused", [("0", True), ("abc", True), ("-1", True), ("2.5", False), ("all", False)])
def test_demo_script_analysis_rate_can_be_chosen(tmp_path, fps, refused):
    """AVSEG_DEMO_FPS: a rate that is not a positive number is refused by the script in one line naming the
    variable (exit 2, before any model loads; avseg's own message would name --analysis-fps, which the user did not
    type); a number or `all` is taken (the run gets as far as the missing models)."""
    import subprocess

    env = script_env(HF_HUB_OFFLINE="1", AVSEG_CACHE=str(tmp_path / "cache"), HF_HUB_CACHE=str(tmp_path / "hf"),
                     AVSEG_DEMO_FPS=fps)
    completed = subprocess.run(["bash", str(REPO / "examples" / "demo.sh")], capture_output=True, text=True,
                               env=env, cwd="/", timeout=120)
    assert "no CUDA" not in completed.stdout
    if refused:
        assert completed.returncode == 2 and completed.stderr.strip() == (
            f"error: AVSEG_DEMO_FPS must be all, auto or a positive number of frames per second, got '{fps}'")
    else:
        assert completed.returncode == 1 and "avseg weights fetch" in completed.stderr


def test_zero_shot_on_the_cpu_at_every_frame_gets_a_speed_hint(monkeypatch, capsys, clip, fake, tmp_path):
    from avseg_cli.zeroshot_options import zeroshot_cpu_hint

    described = {"method": "zeroshot", "device": "cpu", "clip_len": 5}
    assert "--analysis-fps 1" in zeroshot_cpu_hint(described, None)
    assert zeroshot_cpu_hint(described, 2.0) is None
    assert zeroshot_cpu_hint({**described, "device": "cuda:0"}, None) is None
    assert zeroshot_cpu_hint({**described, "method": "ov-avss"}, None) is None
    monkeypatch.setattr(fake, "describe", lambda: described)
    monkeypatch.setattr(annotate_cmd, "load_zeroshot_predictor", lambda *args: fake)
    for extra, expected in (([], 1), (["--analysis-fps", "1"], 0)):
        code, _, stderr = avseg(monkeypatch, capsys, clip, "--classes", "pipa", "--out", tmp_path / str(len(extra)),
                                *extra)
        assert code == 0, stderr
        hints = [line for line in stderr.splitlines() if "--analysis-fps 1 analyses one frame per second" in line]
        assert len(hints) == expected and all(h.startswith("warning: on the CPU the zero-shot method") for h in hints)


@pytest.mark.slow
def test_batch_script_with_a_tiny_checkpoint(clip, tmp_path):
    import subprocess

    from test_predictor import make_tiny_checkpoint, make_tiny_clip_dir

    videos = tmp_path / "videos"
    copy(clip, videos, "one.mp4")
    copy(clip, videos, "two.MKV")
    make_text_as_mp4(videos / "broken.mp4")
    checkpoint = tmp_path / "tiny.pt"
    make_tiny_checkpoint(checkpoint)
    clip_dir = make_tiny_clip_dir(tmp_path / "clip")
    out = tmp_path / "out"
    command = ["bash", str(REPO / "examples" / "batch.sh"), str(videos), str(out), "pipa,violin",
               "--clip-weights", str(clip_dir), "--device", "cpu"]
    env = script_env(AVSEG_CHECKPOINT=str(checkpoint), AVSEG_CACHE=str(tmp_path / "cache"), HF_HUB_OFFLINE="1")
    first = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert first.returncode == 1, first.stderr
    assert f"\n  cannot read {videos / 'broken.mp4'} as video" in first.stderr  # listed once, named once
    assert "run this script again" in first.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert {Path(f["input"]).name: f["status"] for f in summary["files"]} == {
        "broken.mp4": "failed", "one.mp4": "done", "two.MKV": "done"
    }
    (videos / "broken.mp4").unlink()
    second = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert second.returncode == 0, second.stderr
    assert "all 2 videos annotated" in second.stdout
    assert [f["status"] for f in json.loads((out / "summary.json").read_text())["files"]] == ["skipped", "skipped"]
    # OUT_DIR = VIDEO_DIR: the second run's glob also finds one.avseg.mp4, which is neither annotated nor counted
    same = tmp_path / "same dir"
    copy(clip, same, "one.mp4")
    in_place = [command[0], command[1], str(same), str(same), *command[4:]]
    for now, already in ((1, 0), (0, 1)):
        run_in_place = subprocess.run(in_place, capture_output=True, text=True, env=env, timeout=600)
        assert run_in_place.returncode == 0, run_in_place.stderr
        assert f"all 1 video annotated in {same} ({now} now, {already} already done)" in run_in_place.stdout
    assert len(json.loads((same / "summary.json").read_text())["files"]) == 1


def test_render_workers_option_reaches_the_annotator(monkeypatch, capsys, clip, checkpoint, fake, tmp_path):
    """--render-workers processes: the same outputs as the default threads, drawn in worker processes."""
    from models.pipeline import annotate as annotate_module

    seen = []
    real = annotate_module.render_pool

    def spy(workers, kind="threads"):
        seen.append(kind)
        return real(workers, kind)

    monkeypatch.setattr(annotate_module, "render_pool", spy)
    results = {}
    for kind in ("threads", "processes"):
        out = tmp_path / kind
        code, _, stderr = avseg(monkeypatch, capsys, clip, "--classes", "pipa,violin", "--checkpoint", checkpoint,
                                "--out", out, "--render-workers", kind)
        assert code == 0, stderr
        masks = {p.name: p.read_bytes() for p in (out / f"{clip.stem}.masks").iterdir()}
        results[kind] = (masks, json.loads((out / f"{clip.stem}.json").read_text())["frames"])
    assert seen == ["threads", "processes"]
    assert results["threads"] == results["processes"] and len(results["threads"][0]) == 10
    code, _, stderr = avseg(monkeypatch, capsys, clip, "--classes", "pipa", "--checkpoint", checkpoint,
                            "--render-workers", "fibers")
    assert code == 2 and "fibers" in stderr and "Traceback" not in stderr
