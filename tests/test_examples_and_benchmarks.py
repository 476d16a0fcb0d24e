"""examples/batch.sh and the benchmark scripts: usage errors, CUDA-less machines and what they count and print.

Nothing here runs a real model: usage errors stop before avseg (or the benchmark's work) starts, and the batch
script's messages are checked against a stand-in `avseg` in a copy of the checkout's layout."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "benchmarks"
BATCH = REPO / "examples" / "batch.sh"
USAGE = "usage: bash examples/batch.sh VIDEO_DIR OUT_DIR [CLASSES] [more avseg options]"


def env(**extra: str) -> dict:
    return {**{k: v for k, v in os.environ.items() if k != "AVSEG_CHECKPOINT"}, "OMP_NUM_THREADS": "1",
            "HF_HUB_OFFLINE": "1", **extra}


def batch(*args, script: Path = BATCH, cwd: Path | None = None, **extra) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(script), *map(str, args)], capture_output=True, text=True, env=env(**extra),
                          cwd=cwd, timeout=60)


# --- examples/batch.sh: usage errors (exit 2, one line, before avseg runs) ---


@pytest.mark.parametrize("args, message", [
    ((), "VIDEO_DIR and OUT_DIR are required"),
    (("onlyone",), "VIDEO_DIR and OUT_DIR are required"),
    (("videos", "--no-masks"), "OUT_DIR expected before any option, got '--no-masks'"),
    (("--device", "cpu"), "VIDEO_DIR expected before any option, got '--device'"),
])
def test_batch_script_usage_errors(tmp_path, args, message):
    (tmp_path / "videos").mkdir()
    done = batch(*args, cwd=tmp_path)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.splitlines() == [f"batch.sh: error: {message}; {USAGE}  (--help: more)"]


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_batch_script_help(flag):
    done = batch(flag, "ignored")
    assert done.returncode == 0 and done.stderr == ""
    assert "bash examples/batch.sh VIDEO_DIR OUT_DIR [CLASSES]" in done.stdout and "Exit code" in done.stdout
    assert "#" not in done.stdout.split("\n")[0]


def test_batch_script_video_dir_must_be_a_folder(tmp_path):
    missing = batch(tmp_path / "no such dir", tmp_path / "out")
    assert missing.returncode == 2
    assert missing.stderr.splitlines() == [f"batch.sh: error: VIDEO_DIR does not exist: {tmp_path / 'no such dir'}"]
    (tmp_path / "a file.mp4").write_bytes(b"x")
    not_dir = batch(tmp_path / "a file.mp4", tmp_path / "out")
    assert not_dir.returncode == 2
    assert not_dir.stderr.splitlines() == [f"batch.sh: error: VIDEO_DIR is not a folder: {tmp_path / 'a file.mp4'}"]
    (tmp_path / "empty dir").mkdir()
    empty = batch(tmp_path / "empty dir", tmp_path / "out")
    assert empty.returncode == 2 and len(empty.stderr.splitlines()) == 1 and "no videos" in empty.stderr
    assert not (tmp_path / "out").exists()


# --- examples/batch.sh with a stand-in avseg (what the script passes on, counts and prints) ---

FAKE_AVSEG = r'''
import json, os, sys
from pathlib import Path

args = sys.argv[1:]
with open(os.environ["FAKE_AVSEG_CALLS"], "a") as calls:
    calls.write(json.dumps(args) + "\n")
if os.environ.get("FAKE_AVSEG_EARLY_ERROR"):  # stops before any video, like a damaged checkpoint or missing model
    print("error: " + os.environ["FAKE_AVSEG_EARLY_ERROR"], file=sys.stderr)
    sys.exit(1)
inputs = []
for arg in args[1:]:
    if arg.startswith("--"):
        break
    inputs.append(Path(arg))
out = Path(args[args.index("--out") + 1])
summary = Path(args[args.index("--json-summary") + 1])
# like avseg: an earlier run's <stem>.avseg.mp4 picked up by the glob is not an input of its own
stems = {p.stem for p in inputs if not p.name.endswith(".avseg.mp4")}
inputs = [p for p in inputs if not (p.name.endswith(".avseg.mp4") and p.name[: -len(".avseg.mp4")] in stems)]
out.mkdir(parents=True, exist_ok=True)
files = []
for video in inputs:
    output = out / f"{video.stem}.avseg.mp4"
    if "broken" in video.name:
        files.append({"input": str(video), "status": "failed", "error": "cannot read the video"})
    elif output.exists():
        files.append({"input": str(video), "status": "skipped", "error": None})
    else:
        output.write_bytes(b"annotated")
        files.append({"input": str(video), "status": "done", "error": None})
code = 1 if any(f["status"] == "failed" for f in files) else 0
counts = {s: sum(f["status"] == s for f in files) for s in ("done", "skipped", "failed", "interrupted", "not run")}
summary.write_text(json.dumps({"exit_code": code, "counts": counts, "files": files}))
sys.exit(code)
'''


@pytest.fixture
def checkout(tmp_path) -> Path:
    """A copy of the checkout's layout (with a space in its path) whose .venv/bin/avseg is the stand-in."""
    root = tmp_path / "check out"
    (root / "examples").mkdir(parents=True)
    shutil.copy(BATCH, root / "examples" / "batch.sh")
    bin_dir = root / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "python").symlink_to(sys.executable)
    (bin_dir / "avseg").write_text(f"#!{sys.executable}\n{FAKE_AVSEG}")
    (bin_dir / "avseg").chmod(0o755)
    return root


def calls(path: Path) -> list[list[str]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_batch_script_counts_videos_not_its_outputs_when_out_dir_is_the_video_dir(checkout, tmp_path):
    videos = tmp_path / "my videos"
    videos.mkdir()
    (videos / "a b.mp4").write_bytes(b"video")
    log = tmp_path / "calls.jsonl"
    script = checkout / "examples" / "batch.sh"
    first = batch(videos, videos, script=script, FAKE_AVSEG_CALLS=str(log))
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines() == [f"all 1 video annotated in {videos} (1 now, 0 already done)"]
    second = batch(videos, videos, script=script, FAKE_AVSEG_CALLS=str(log))
    assert second.returncode == 0, second.stderr
    assert second.stdout.splitlines() == [f"all 1 video annotated in {videos} (0 now, 1 already done)"]
    # avseg gets the earlier output too (it leaves it out itself), the paths with spaces intact
    assert calls(log)[1] == ["annotate", str(videos / "a b.avseg.mp4"), str(videos / "a b.mp4"),
                             "--classes", "man,woman,guitar,piano,violin,dog,car", "--out", str(videos),
                             "--skip-existing", "--json-summary", str(videos / "summary.json")]


def test_batch_script_adds_nothing_when_avseg_stops_before_any_video(checkout, tmp_path):
    """A damaged checkpoint or a missing model: avseg's one line is the message, not a retry advice or a
    traceback about the missing summary, nor the counts of an earlier run's summary."""
    videos = tmp_path / "in"
    videos.mkdir()
    (videos / "a.mp4").write_bytes(b"video")
    log = tmp_path / "calls.jsonl"
    script = checkout / "examples" / "batch.sh"
    out = tmp_path / "out"
    stopped = batch(videos, out, script=script, FAKE_AVSEG_CALLS=str(log), FAKE_AVSEG_EARLY_ERROR="cannot read x.pt")
    assert stopped.returncode == 1 and stopped.stderr.splitlines() == ["error: cannot read x.pt"]
    assert stopped.stdout == ""
    assert batch(videos, out, script=script, FAKE_AVSEG_CALLS=str(log)).returncode == 0  # writes a summary
    again = batch(videos, out, script=script, FAKE_AVSEG_CALLS=str(log), FAKE_AVSEG_EARLY_ERROR="cannot read x.pt")
    assert again.returncode == 1 and again.stderr.splitlines() == ["error: cannot read x.pt"]
    assert again.stdout == ""  # the earlier summary is not reported as this run's


def test_batch_script_passes_classes_and_options_and_lists_failures(checkout, tmp_path):
    videos = tmp_path / "in"
    videos.mkdir()
    for name in ("one.mp4", "two.MKV", "broken.mp4", "notes.txt"):
        (videos / name).write_bytes(b"x")
    log = tmp_path / "calls.jsonl"
    script = checkout / "examples" / "batch.sh"
    out = tmp_path / "out dir"
    failed = batch(videos, out, "pipa,violin", "--device", "cpu", script=script, FAKE_AVSEG_CALLS=str(log),
                   AVSEG_CHECKPOINT="model.pth")
    assert failed.returncode == 1
    assert failed.stderr.splitlines() == ["some videos failed; run this script again to retry only those:",
                                          f"  {videos / 'broken.mp4'}: cannot read the video"]
    (videos / "broken.mp4").unlink()
    no_classes = batch(videos, out, "--no-masks", script=script, FAKE_AVSEG_CALLS=str(log))
    assert no_classes.returncode == 0, no_classes.stderr
    assert no_classes.stdout.splitlines() == [f"all 2 videos annotated in {out} (0 now, 2 already done)"]
    first, second = calls(log)
    assert first[first.index("--classes") + 1] == "pipa,violin"
    assert first[first.index("--checkpoint") + 1] == "model.pth" and first[-2:] == ["--device", "cpu"]
    assert sorted(Path(p).name for p in first[1:first.index("--classes")]) == ["broken.mp4", "one.mp4", "two.MKV"]
    assert second[second.index("--classes") + 1].startswith("man,woman") and second[-1] == "--no-masks"
    assert "--checkpoint" not in second


# --- benchmarks: one line and exit code 2 for what this machine or the options cannot do ---


def bench(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(BENCHMARKS / script), *args], capture_output=True, text=True,
                          env=env(), cwd=REPO, timeout=60)


NO_CUDA = "error: --device cuda: no CUDA device here (torch.cuda.is_available() is False)"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
@pytest.mark.parametrize("script, args", [
    ("bench_model.py", ["--device", "cuda", "--configs", "tiny"]),
    ("bench_predictor.py", ["--device", "cuda", "--config", "tiny"]),
    ("profile_cuda.py", ["--config", "tiny"]),  # --device cuda is its default
    ("bench_train.py", ["--device", "cuda", "--config", "tiny"]),
    ("bench_annotate.py", ["--device", "cuda", "--random-weights", "tiny"]),
    ("bench_annotate.py", ["--device", "cuda"]),
    ("bench_zeroshot.py", ["--device", "cuda"]),
])
def test_benchmarks_refuse_cuda_without_a_gpu(script, args):
    done = bench(script, *args)
    assert (done.returncode, done.stdout, done.stderr.splitlines()) == (2, "", [NO_CUDA])


@pytest.mark.parametrize("script, args, message", [
    ("bench_model.py", ["--device", "cpu", "--amp", "fp16"],
     "error: --amp fp16 needs a CUDA device (fp16 autocast is CUDA-only in avseg); on cpu use --amp off"),
    ("bench_model.py", ["--device", "gpu"], "error: --device gpu: unknown device (use cpu or cuda)"),
    ("profile_cuda.py", ["--device", "cpu", "--config", "tiny", "--parts", "clip", "--iters", "1", "--clips", "1"],
     "error: --parts clip is fixed-size and GPU-oriented (fp16 on the CPU takes many minutes): use --device cuda "
     "or leave it out of --parts"),
    ("profile_cuda.py", ["--device", "cpu", "--parts", "train", "--iters", "1"],
     "error: --iters 1: the train part needs at least 2 (half of them, up to 10, are warm-up)"),
    ("bench_train.py", ["--device", "cpu", "--iters", "2", "--skip", "2"],
     "error: --iters 2 must be larger than --skip 2 (>= 0): nothing would be timed"),
    ("bench_predictor.py", ["--device", "cpu", "--modes", "gatex"],
     "error: unknown mode 'gatex': official, gate<p>, crops<n>, graphs, pipelined, joined by + "
     "(e.g. gate0.5+crops3, official+graphs+pipelined)"),
    ("bench_zeroshot.py", ["--detector", "owlv2", "--detector-size", "480"],
     "error: --detector-size applies to --detector grounding-dino only"),
])
def test_benchmark_usage_errors_are_one_line(script, args, message):
    done = bench(script, *args)
    assert (done.returncode, done.stdout, done.stderr.splitlines()) == (2, "", [message])


def test_an_avseg_error_is_one_line(capsys):
    sys.path.insert(0, str(BENCHMARKS))
    from _common import run

    from models.errors import AVSegError

    def main():
        raise AVSegError("checkpoint not found: x.pth")

    with pytest.raises(SystemExit) as stop:
        run(main)
    assert stop.value.code == 1 and capsys.readouterr().err == "error: checkpoint not found: x.pth\n"


# --- benchmarks: options, help and arithmetic ---

PARSERS = ["bench_annotate", "bench_model", "bench_predictor", "bench_sound_options", "bench_train",
           "bench_zeroshot", "bench_zeroshot_fusion", "profile_cuda"]
AVSEG_OPTIONS = {"bench_sound_options": {"--sound-gate", "--max-crops"}}  # avseg's, named in the docstring


@pytest.fixture(scope="module")
def modules():
    sys.path.insert(0, str(BENCHMARKS))
    import importlib

    return {name: importlib.import_module(name) for name in PARSERS}


@pytest.mark.parametrize("name", PARSERS)
def test_every_option_has_help_and_the_docstring_names_only_real_options(modules, name):
    module = modules[name]
    parser = module.build_parser()
    options = {option for action in parser._actions for option in action.option_strings}
    assert [action.dest for action in parser._actions if action.option_strings and not action.help] == []
    named = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", module.__doc__))
    assert named - options - AVSEG_OPTIONS.get(name, set()) == set()


def test_profile_cuda_help_lists_the_parts(modules):
    text = modules["profile_cuda"].build_parser().format_help()
    assert "{predictor,clip,train}" in text and "ignores --iters" in text


def test_bench_train_times_the_iterations_after_the_skipped_ones(modules, tmp_path, capsys):
    rate_of = modules["bench_train"]._iterations_per_second
    log = tmp_path / "log.jsonl"
    log.write_text("".join(json.dumps({"iteration": i, "time": t}) + "\n" for i, t in ((1, 1.0), (2, 1.5), (3, 2.0))))
    assert rate_of(log, 1) == (2.0, 2)  # iterations 2 and 3: from the end of 1 (1.0 s) to the end of 3 (2.0 s)
    assert rate_of(log, 2) == (2.0, 1)
    assert rate_of(log, 0) == (1.5, 3)  # from the loop's start
    with pytest.raises(SystemExit):
        rate_of(log, 3)
    assert "no iteration to time after the 3 skipped (3 logged)" in capsys.readouterr().err


def test_bench_train_defaults_fit_the_machine(modules):
    bench_train = modules["bench_train"]
    cpus = len(os.sched_getaffinity(0))
    assert bench_train.build_parser().parse_args([]).workers == min(4, cpus)
    assert bench_train._peak(float("nan")) == "n/a" and bench_train._peak(1.234) == "1.23"


def test_cuda_session_script_says_how_it_went_in_its_exit_status(tmp_path):
    """benchmarks/cuda_session.sh exits 2 without a (known) stage, 1 when a step failed, so a caller on a lent GPU
    machine sees a failed session without reading the log (it exited 0 whatever happened)."""
    script = str(REPO / "benchmarks" / "cuda_session.sh")
    env = {**os.environ, "OUT": str(tmp_path / "out"), "PYTHON": "false", "PATH": "/usr/bin:/bin"}
    usage = subprocess.run(["bash", script], capture_output=True, text=True, env=env, timeout=60)
    assert usage.returncode == 2 and usage.stderr.startswith("usage: bash benchmarks/cuda_session.sh STAGE...")
    unknown = subprocess.run(["bash", script, "nope"], capture_output=True, text=True, env=env, timeout=60)
    assert unknown.returncode == 2 and "unknown stage nope" in unknown.stderr
    failed = subprocess.run(["bash", script, "env"], capture_output=True, text=True, env=env, timeout=120)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    summary = failed.stdout.split("=== summary")[-1].split()
    assert "versions" in summary and "rc=1" in summary  # PYTHON=false fails the step; the summary says so
