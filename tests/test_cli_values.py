"""Option values from 0 to 1: every spelling a user might type is either taken as the number it names or refused
in one line that says what is wrong with it (typer's own range check called a NaN "should be <= 1")."""

from __future__ import annotations

import sys

import pytest
import typer

from avseg_cli.values import fraction


@pytest.mark.parametrize("text, number", [("0", 0.0), ("1", 1.0), ("0.25", 0.25), ("-0", 0.0), (".5", 0.5),
                                          ("1e-3", 0.001), (" 0.5 ", 0.5)])
def test_fraction_takes_numbers_from_0_to_1(text, number):
    assert fraction(text) == number


@pytest.mark.parametrize("text, message", [
    ("nan", "nan is not a number from 0 to 1"), ("NaN", "NaN is not a number from 0 to 1"),
    ("inf", "inf is not a number from 0 to 1"), ("-inf", "-inf is not a number from 0 to 1"),
    ("1.0000001", "1.0000001 is not a number from 0 to 1"), ("-0.1", "-0.1 is not a number from 0 to 1"),
    ("abc", "'abc' is not a number (give one from 0 to 1)"), ("", "'' is not a number (give one from 0 to 1)"),
])
def test_fraction_refuses_with_the_reason(text, message):
    with pytest.raises(typer.BadParameter) as info:
        fraction(text)
    assert str(info.value) == message


def run_cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    from avseg_cli.main import run

    monkeypatch.setattr(sys, "argv", ["avseg", *args])
    with pytest.raises(SystemExit) as info:
        run()
    captured = capsys.readouterr()
    return int(info.value.code or 0), captured.out, captured.err


@pytest.mark.parametrize("command, option", [
    ("annotate", "--sound-gate"), ("annotate", "--score-threshold"), ("annotate", "--audio-threshold"),
    ("annotate", "--box-threshold"), ("eval", "--sound-threshold"), ("eval", "--score-threshold"),
])
def test_cli_names_a_nan_for_what_it_is(command, option, tmp_path, monkeypatch, capsys):
    target = ["video.mp4", "--classes", "a,b"] if command == "annotate" else ["--data", str(tmp_path)]
    code, out, err = run_cli(monkeypatch, capsys, command, *target, option, "nan")
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"error: Invalid value for '{option}': nan is not a number from 0 to 1 (see: ")
    assert lines[0].endswith(f"avseg {command} --help)")  # the program name is pytest's here
    assert out == ""


def test_help_shows_the_range(monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "200")
    code, out, _ = run_cli(monkeypatch, capsys, "annotate", "--help")
    assert code == 0
    line = next(line for line in out.splitlines() if "--sound-gate" in line)
    assert "<0 to 1>" in line


@pytest.mark.parametrize("args, option", [
    (["annotate", "video.mp4", "--classes", "a", "--clip-weights", "{missing}"], "--clip-weights"),
    (["annotate", "video.mp4", "--classes", "a", "--clap-weights", "{missing}"], "--clap-weights"),
    (["annotate", "video.mp4", "--classes", "a", "--detector-weights", "{missing}"], "--detector-weights"),
    (["annotate", "video.mp4", "--classes", "a", "--sam-weights", "{missing}"], "--sam-weights"),
    (["eval", "--data", "{tmp}", "--method", "zeroshot", "--clip-weights", "{missing}"], "--clip-weights"),
    (["eval", "--data", "{tmp}", "--checkpoint", "{ckpt}", "--vggish-weights", "{missing}"], "--vggish-weights"),
    (["train", "--data", "{tmp}", "--config", "tiny", "--out", "{tmp}/run", "--vggish-weights", "{missing}"],
     "--vggish-weights"),
])
def test_a_weights_path_that_is_not_there_is_named_first(args, option, tmp_path, monkeypatch, capsys):
    """Before any model is looked for: the zero-shot method first looked for CLAP's default folder and never
    named the --clip-weights path that was mistyped."""
    (tmp_path / "model.pt").write_bytes(b"not read")
    missing = tmp_path / "typo" / "weights.pt"
    argv = [a.format(missing=missing, tmp=tmp_path, ckpt=tmp_path / "model.pt") for a in args]
    code, out, err = run_cli(monkeypatch, capsys, *argv)
    assert code == 2, err
    assert err.strip().splitlines() == [f"error: {option} {missing}: no such file or folder"]


def test_random_weights_and_existing_paths_pass(tmp_path):
    from avseg_cli.values import check_paths_exist

    (tmp_path / "w.pt").write_bytes(b"x")
    check_paths_exist({"--vggish-weights": "random", "--clip-weights": str(tmp_path / "w.pt"), "--sam-weights": None,
                       "--clap-weights": str(tmp_path)})


def test_a_broken_link_and_an_option_that_does_not_apply_are_named_as_such(tmp_path, monkeypatch, capsys):
    """A dangling symlink was "no such file or folder" although `ls` lists it; `eval --class-agnostic` with a
    mistyped --clip-weights named the path instead of saying the option does not apply there."""
    (tmp_path / "model.pt").write_bytes(b"not read")
    link = tmp_path / "clip.pt"
    link.symlink_to(tmp_path / "moved" / "clip.pt")
    base = ["eval", "--data", str(tmp_path), "--checkpoint", str(tmp_path / "model.pt")]
    code, _, err = run_cli(monkeypatch, capsys, *base, "--clip-weights", str(link))
    assert code == 2 and err.strip().splitlines() == [
        f"error: --clip-weights {link}: a link to {tmp_path / 'moved' / 'clip.pt'}, which is not there"]
    code, _, err = run_cli(monkeypatch, capsys, *base, "--class-agnostic", "--clip-weights", str(tmp_path / "typo.pt"))
    assert code == 2 and err.strip().splitlines() == [
        "error: --clip-weights applies to open-vocabulary evaluation, not to --class-agnostic"]
