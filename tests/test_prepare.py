"""`avseg prepare` / `prepare_dataset` end to end on synthetic AVSBench-semantic folders."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from avseg_cli.main import app
from models.data.prepared import PreparedData
from models.data.synthetic import SyntheticVideoSpec, make_synthetic_avsbench
from models.errors import AVSegError, UsageError
from models.pipeline.prepare import prepare_dataset

REPO = Path(__file__).resolve().parents[1]


def tree_digest(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file, plus every folder (so added folders show too)."""
    digest = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        digest[rel] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "<dir>"
    return digest


@pytest.fixture(scope="module")
def clean_root(tmp_path_factory) -> Path:
    return make_synthetic_avsbench(tmp_path_factory.mktemp("clean") / "AVSS", seed=1).root


PROBLEM_SPECS = [
    SyntheticVideoSpec("train", "v1s", ("dog",), ("cat",), uid="ok_0_5000"),
    SyntheticVideoSpec("train", "v2", ("dog",), ("cat",), uid="-nofr_0_10000"),  # frames folder deleted
    SyntheticVideoSpec("train", "v2", ("guitar",), ("cat",), uid="frfile_0_10000"),  # frames is a file
    SyntheticVideoSpec("val", "v2", ("dog",), ("cat",), uid="damaged_0_10000"),  # files deleted / broken
    SyntheticVideoSpec("val", "v1s", ("dog",), ("cat",), uid="colours_0_5000", unknown_colour_pixels=5),
    SyntheticVideoSpec("test", "v1s", ("horse",), ("dog",), uid="typo_0_5000", a_obj_text="h orse"),
    SyntheticVideoSpec("test", "v2", ("dog",), ("cat",), uid="short_0_10000", audio_seconds=9.6),
    SyntheticVideoSpec("test", "v1s", ("dog",), ("cat",), uid="enough_0_5000", audio_seconds=4.815),
    SyntheticVideoSpec("train", "v1s", ("dog",), ("cat",), uid="noaudio_0_5000"),
    SyntheticVideoSpec("train", "v1s", ("dog",), ("violin",), uid="size_0_5000", size=(48, 80)),
    SyntheticVideoSpec("test", "v1s", ("dog",), ("cat",), uid="gone_0_5000"),  # video folder deleted
]


@pytest.fixture(scope="module")
def problem_root(tmp_path_factory) -> Path:
    root = make_synthetic_avsbench(tmp_path_factory.mktemp("problems") / "AVSS", PROBLEM_SPECS, seed=2).root
    from PIL import Image

    v2, v1s = root / "v2", root / "v1s"
    for path in (v2 / "-nofr_0_10000" / "frames").iterdir():
        path.unlink()
    (v2 / "-nofr_0_10000" / "frames").rmdir()
    for path in (v2 / "frfile_0_10000" / "frames").iterdir():
        path.unlink()
    (v2 / "frfile_0_10000" / "frames").rmdir()
    (v2 / "frfile_0_10000" / "frames").write_text("not a folder")
    damaged = v2 / "damaged_0_10000"
    (damaged / "frames" / "3.jpg").unlink()
    jpeg = (damaged / "frames" / "5.jpg").read_bytes()
    (damaged / "frames" / "5.jpg").write_bytes(jpeg[: len(jpeg) // 2])  # truncated
    (damaged / "frames" / "6.jpg").write_bytes(b"this is no jpeg")
    Image.new("RGB", (32, 24), (200, 10, 10)).save(damaged / "frames" / "9.jpg")
    (damaged / "labels_rgb" / "7.png").unlink()
    png = (damaged / "labels_rgb" / "8.png").read_bytes()
    (damaged / "labels_rgb" / "8.png").write_bytes(png[: len(png) // 2])
    (damaged / "audio.wav").write_bytes(b"RIFF0000WAVEjunk")
    (v1s / "noaudio_0_5000" / "audio.wav").unlink()
    shutil.rmtree(v1s / "gone_0_5000")
    # a label of another size than its frame
    Image.new("RGB", (96, 64)).save(v1s / "size_0_5000" / "labels_rgb" / "0.png")
    return root


def test_clean_dataset_outputs(clean_root, tmp_path):
    out = tmp_path / "data"
    result = prepare_dataset(clean_root, out)
    assert result.written and not result.problems and not result.excluded
    summary = json.loads((out / "summary.json").read_text())
    assert summary == {
        "train": {"videos": 6, "frames": 45}, "val": {"videos": 3, "frames": 20}, "test": {"videos": 3, "frames": 20},
        "problems": [], "excluded": [], "dry_run": False,
    }  # fmt: skip
    data = PreparedData.open(out)
    assert data.root == clean_root.resolve() and data.include_v1m is False
    lines = (out / "splits" / "train.jsonl").read_text().splitlines()
    assert len(lines) == 6
    records = data.load_split("train")
    assert [json.loads(line) for line in lines] == [r.to_json() for r in records]
    first = records[0]
    assert (first.height, first.width) == (64, 96)
    assert first.labelled_frames == ([0] if first.subset == "v1s" else list(range(10)))
    assert all(r.frame_path(clean_root, r.num_frames - 1).is_file() for r in records)
    assert [r.uid for s in ("train", "val", "test") for r in data.load_split(s)] == [
        line.split(",")[1] for line in (clean_root / "metadata.csv").read_text().splitlines()[1:]
    ]


def test_damaged_split_files_are_one_line(clean_root, tmp_path):
    out = tmp_path / "data"
    prepare_dataset(clean_root, out)
    data = PreparedData.open(out)
    split = out / "splits" / "test.jsonl"
    good = split.read_bytes()
    split.write_bytes(b"\xff\xfe" + good)
    with pytest.raises(AVSegError, match=r"split file is not UTF-8 text: .*test.jsonl \(invalid start byte at byte "
                                         r"0; run `avseg prepare` again\)"):
        data.load_split("test")
    split.write_bytes(good[: len(good) // 2])  # cut in the middle of a line
    with pytest.raises(AVSegError, match=r"malformed line \d+ in .*test.jsonl"):
        data.load_split("test")
    split.unlink()
    split.mkdir()
    with pytest.raises(AVSegError, match=r"split file not found: .*test.jsonl"):
        data.load_split("test")
    split.rmdir()
    split.write_bytes(good)
    split.chmod(0)
    try:
        if not os.access(split, os.R_OK):  # (root reads anything)
            with pytest.raises(AVSegError, match=r"cannot read split file .*test.jsonl: Permission denied"):
                data.load_split("test")
    finally:
        split.chmod(0o644)


def test_idempotent_and_root_untouched(clean_root, tmp_path):
    before = tree_digest(clean_root)
    out = tmp_path / "data"
    prepare_dataset(clean_root, out)
    first = tree_digest(out)
    prepare_dataset(clean_root, out, workers=3)
    assert tree_digest(out) == first
    assert tree_digest(clean_root) == before
    assert sorted(first) == [
        "dataset.json", "splits", "splits/test.jsonl", "splits/train.jsonl", "splits/val.jsonl", "summary.json",
    ]  # fmt: skip (no temporary files left behind)


def test_problems_found_and_reported(problem_root, tmp_path):
    before = tree_digest(problem_root)
    out = tmp_path / "data"
    events = []

    class Recorder:
        def start(self, description, total=None):
            events.append(("start", total))

        def advance(self, steps=1, **status):
            events.append(("advance", steps))

        def finish(self):
            events.append(("finish", None))

    result = prepare_dataset(problem_root, out, progress=Recorder(), workers=2)
    assert events[0] == ("start", 11) and events[-1] == ("finish", None)
    assert sum(e[1] for e in events if e[0] == "advance") == 11
    problems = {p.kind: (p.count, list(p.examples)) for p in result.problems}
    assert problems == {
        "missing video folder": (1, ["v1s/gone_0_5000"]),
        "missing frames folder": (1, ["v2/-nofr_0_10000/frames"]),
        "frames folder is a file": (1, ["v2/frfile_0_10000/frames"]),
        "missing frame": (1, ["v2/damaged_0_10000/frames/3.jpg"]),
        "unreadable frame": (2, [
            "v2/damaged_0_10000/frames/5.jpg (truncated: no end-of-image marker)",
            problems["unreadable frame"][1][1],
        ]),
        "frame size differs from frame 0": (1, ["v2/damaged_0_10000/frames/9.jpg (32x24 vs 96x64)"]),
        "missing label": (1, ["v2/damaged_0_10000/labels_rgb/7.png"]),
        "unreadable label": (1, [problems["unreadable label"][1][0]]),
        "label size differs from frame 0": (1, ["v1s/size_0_5000/labels_rgb/0.png (96x64 vs 80x48)"]),
        "unknown label colour": (5, [f"v1s/colours_0_5000/labels_rgb/{k}.png (5 pixels)" for k in range(5)]),
        "missing audio": (1, ["v1s/noaudio_0_5000/audio.wav"]),
        "unreadable audio": (1, [problems["unreadable audio"][1][0]]),
        "audio too short": (1, ["v2/short_0_10000/audio.wav (9.600 s < 9.615 s for 10 frames)"]),
        "unknown a_obj token": (1, ["v1s/typo_0_5000: 'h orse'"]),
    }  # fmt: skip
    assert problems["unreadable frame"][1][1].startswith("v2/damaged_0_10000/frames/6.jpg (cannot identify image")
    assert all(str(problem_root) not in e for p in result.problems for e in p.examples)  # paths relative to root
    assert problems["unreadable label"][1][0].startswith("v2/damaged_0_10000/labels_rgb/8.png (")
    assert problems["unreadable audio"][1][0].startswith("v2/damaged_0_10000/audio.wav (")
    # left out: no frames to read, or a frame / label / audio file that training and evaluation could not read
    left_out = ("v2/-nofr_0_10000", "v2/frfile_0_10000", "v1s/gone_0_5000", "v1s/noaudio_0_5000", "v2/damaged_0_10000")
    assert sorted(result.excluded) == sorted(left_out)
    listed = {r.uid: r for s in ("train", "val", "test") for r in PreparedData.open(out).load_split(s)}
    assert sorted(listed) == sorted(s.uid for s in PROBLEM_SPECS if f"{s.subset}/{s.uid}" not in left_out)
    assert (listed["size_0_5000"].height, listed["size_0_5000"].width) == (48, 80)
    assert listed["typo_0_5000"].a_obj == ["h orse"] and listed["typo_0_5000"].class_ids == []
    summary = json.loads((out / "summary.json").read_text())
    assert summary["problems"][1] == {"kind": "missing frames folder", "count": 1, "examples": ["v2/-nofr_0_10000/frames"]}
    assert [p["kind"] for p in summary["problems"]] == [p.kind for p in result.problems]
    assert summary["train"] == {"videos": 2, "frames": 10}  # ok, size (v1s); noaudio and the two v2 are left out
    assert sorted(summary["excluded"]) == sorted(left_out)
    assert tree_digest(problem_root) == before


def test_every_video_kept_despite_problems_can_be_read_for_training_and_evaluation(problem_root, tmp_path):
    """What `prepare` keeps, the readers can read: a kept video with a missing frame or audio file stopped a
    training run at that video (the audit saw it 4 iterations in)."""
    from models.data.clips import TrainClipDataset
    from models.data.eval_clips import gt_index_maps, load_eval_video

    result = prepare_dataset(problem_root, tmp_path / "data")
    data = PreparedData.open(tmp_path / "data")
    train = TrainClipDataset(data, "train", short_sides=(48,))
    assert train.records and all(train[(index, seed)] is not None for index in range(len(train)) for seed in range(6))
    kept = [record for split in ("val", "test") for record in data.load_split(split)]
    assert kept and len(kept) + len(result.splits["train"]) + len(result.excluded) == 11
    for record in kept:
        assert load_eval_video(record, data.root, short_side=48).clips and gt_index_maps(record, data.root)


def test_strict_writes_nothing(problem_root, tmp_path):
    out = tmp_path / "data"
    result = prepare_dataset(problem_root, out, strict=True)
    assert not result.written and result.problem_count == 19
    assert not out.exists()


def test_dry_run(problem_root, tmp_path):
    out = tmp_path / "data"
    result = prepare_dataset(problem_root, out, dry_run=True)
    assert result.dry_run and not result.written
    summary = result.summary()
    assert summary["dry_run"] is True
    assert summary["train"] == {"videos": 5, "frames": 35} and summary["val"]["videos"] == 2
    assert summary["problems"] == [{"kind": "unknown a_obj token", "count": 1, "examples": ["v1s/typo_0_5000: 'h orse'"]}]
    assert all((r.height, r.width) == (0, 0) for r in result.splits["train"])
    assert not result.excluded
    assert not out.exists()  # a preview: nothing written


def test_dry_run_writes_nothing(clean_root, tmp_path):
    """--dry-run is a preview: an empty folder stays empty, and a prepared DATA_DIR keeps every byte."""
    empty = tmp_path / "empty"
    empty.mkdir()
    for out in (empty, tmp_path / "new" / "data"):
        result = prepare_dataset(clean_root, out, dry_run=True)
        assert result.dry_run and not result.written and result.counts["train"].videos == 6
    assert list(empty.iterdir()) == [] and not (tmp_path / "new").exists()

    prepared = tmp_path / "data"
    prepare_dataset(clean_root, prepared)
    before = tree_digest(prepared)
    assert json.loads((prepared / "splits" / "train.jsonl").read_text().splitlines()[0])["height"] == 64
    for strict in (False, True):
        prepare_dataset(clean_root, prepared, dry_run=True, strict=strict)
        assert tree_digest(prepared) == before
    cli = invoke("--root", str(clean_root), "--out", str(prepared), "--dry-run")
    assert cli.exit_code == 0, cli.output
    assert f"dry run: nothing was written to {prepared}" in cli.output and "wrote" not in cli.output
    assert tree_digest(prepared) == before


def test_real_metadata_dry_run_and_missing_folders(real_metadata_csv, tmp_path):
    root = tmp_path / "AVSBench-semantic"
    root.mkdir()
    (root / "metadata.csv").symlink_to(real_metadata_csv)
    result = prepare_dataset(root, tmp_path / "dry", dry_run=True)
    assert not (tmp_path / "dry").exists()
    summary = result.summary()
    assert {s: summary[s] for s in ("train", "val", "test")} == {
        "train": {"videos": 5184, "frames": 40095}, "val": {"videos": 1240, "frames": 8700},
        "test": {"videos": 1490, "frames": 11200},
    }  # fmt: skip
    assert summary["problems"] == []  # the 'h orse' clip is not selected
    assert len(result.splits["test"]) == 1490
    # without the media every selected video is reported and left out
    full = prepare_dataset(root, tmp_path / "full", workers=2)
    assert [(p.kind, p.count) for p in full.problems] == [("missing video folder", 7914)]
    first = result.splits["train"][0]
    assert full.problems[0].examples[0] == f"{first.subset}/{first.uid}"
    assert len(full.excluded) == 7914 and all(c.videos == 0 for c in full.counts.values())
    # ... and with nothing usable nothing is written: an empty DATA_DIR would only fail later, in train or eval
    assert full.nothing_usable and not full.written and not (tmp_path / "full").exists()
    done = CliRunner().invoke(app, ["prepare", "--root", str(root), "--out", str(tmp_path / "cli")])
    assert done.exit_code == 1 and not (tmp_path / "cli").exists()
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: none of the 7,914 selected videos could be used (the problems are listed above): is "
                      f"{root} the whole AVSBench-semantic download (v1s/, v1m/, v2/ beside metadata.csv)? Nothing "
                      f"was written to {tmp_path / 'cli'}"], done.stderr
    assert "missing video folder" in done.stdout and "Traceback" not in done.output


def test_include_v1m(tmp_path):
    specs = [SyntheticVideoSpec("train", "v1m", ("dog",), ("cat",)), SyntheticVideoSpec("val", "v1m", ("violin",), ("cat",)),
             SyntheticVideoSpec("test", "v1s", ("dog",), ("cat",))]  # fmt: skip
    root = make_synthetic_avsbench(tmp_path / "root", specs).root
    without = prepare_dataset(root, tmp_path / "a")
    assert {k: c.videos for k, c in without.counts.items()} == {"train": 0, "val": 0, "test": 1}
    with_v1m = prepare_dataset(root, tmp_path / "b", include_v1m=True)
    assert {k: c.videos for k, c in with_v1m.counts.items()} == {"train": 1, "val": 1, "test": 1}
    assert not with_v1m.problems
    assert with_v1m.splits["train"][0].labelled_frames == [0, 1, 2, 3, 4]
    assert json.loads((tmp_path / "b" / "dataset.json").read_text())["include_v1m"] is True
    # a split left empty is written (the others are usable) and named in a warning
    assert without.written and without.empty_splits == ["train", "val"] and with_v1m.empty_splits == []
    done = CliRunner().invoke(app, ["prepare", "--root", str(root), "--out", str(tmp_path / "c")])
    assert done.exit_code == 0 and (tmp_path / "c" / "splits" / "test.jsonl").is_file()
    assert [line for line in done.stderr.splitlines() if line.startswith("warning:")] == [
        "warning: the train split has no usable video", "warning: the val split has no usable video"]


def test_metadata_that_selects_no_video_fails_in_a_dry_run_too(tmp_path):
    """Only v1m videos (left out of AVSBench-OV without --include-v1m): the real run exits 1 writing nothing; the
    dry run, which sees the same empty split in metadata.csv, said "nothing was written" with exit 0."""
    specs = [SyntheticVideoSpec("train", "v1m", ("dog",), ("cat",)), SyntheticVideoSpec("test", "v1m", ("dog",), ("cat",))]
    root = make_synthetic_avsbench(tmp_path / "root", specs).root
    for extra in ([], ["--dry-run"], ["--dry-run", "--strict"]):
        done = invoke("--root", str(root), "--out", str(tmp_path / "data"), *extra)
        errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
        assert done.exit_code == 1 and errors == [
            f"error: metadata.csv selects no AVSBench-OV video: is {root} the whole AVSBench-semantic download (v1s/, "
            f"v1m/, v2/ beside metadata.csv)? Nothing was written to {tmp_path / 'data'}"], (extra, done.output)
        assert not (tmp_path / "data").exists()
    assert prepare_dataset(root, tmp_path / "data", dry_run=True).nothing_usable


def test_unknown_colour_count_matches_read_label(tmp_path):
    import numpy as np
    from PIL import Image

    from models.data.classes import PALETTE
    from models.data.labels import read_label
    from models.data.scan import count_unknown_colour_pixels

    rng = np.random.default_rng(0)
    few = PALETTE[rng.integers(0, 71, size=(40, 60))]
    few[3, 4] = (1, 2, 3)
    few[10:12, 0:5] = (255, 255, 254)
    many = rng.integers(0, 256, size=(90, 70, 3), dtype=np.uint8)  # > 4096 colours: the fallback path
    many[:30] = PALETTE[rng.integers(0, 71, size=(30, 70))]
    for name, array, expected in (("few.png", few, 11), ("many.png", many, None)):
        path = tmp_path / name
        Image.fromarray(array).save(path)
        reference = read_label(path).unknown_pixels
        assert count_unknown_colour_pixels(path) == ((array.shape[1], array.shape[0]), reference)
        if expected is not None:
            assert reference == expected
        else:
            assert reference > 60 * 70 - 100
    palettised = Image.fromarray(rng.integers(0, 5, size=(8, 9)).astype(np.uint8)).convert("P")
    palettised.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0, 9, 9, 9, 128, 128, 0] + [0] * 753)
    palettised.save(tmp_path / "p.png")
    assert count_unknown_colour_pixels(tmp_path / "p.png")[1] == read_label(tmp_path / "p.png").unknown_pixels > 0


# --- the CLI -------------------------------------------------------------------------------------------------------


def invoke(*args: str):
    return CliRunner().invoke(app, ["prepare", *args], env={"COLUMNS": "200"})


def test_cli_clean(clean_root, tmp_path):
    result = invoke("--root", str(clean_root), "--out", str(tmp_path / "data"))
    assert result.exit_code == 0, result.output
    assert "no problems found" in result.output
    assert "train" in result.output and "45" in result.output
    assert (tmp_path / "data" / "splits" / "test.jsonl").is_file()


def test_cli_problem_table_and_strict(problem_root, tmp_path):
    result = invoke("--root", str(problem_root), "--out", str(tmp_path / "data"))
    assert result.exit_code == 0, result.output
    for text in ("Problems", "missing frames folder", "v2/-nofr_0_10000/frames", "unknown label colour",
                 "... and 2 more", "audio too short", "'h orse'", "5 video(s) left out"):  # fmt: skip
        assert text in result.output, text
    strict = invoke("--root", str(problem_root), "--out", str(tmp_path / "strict"), "--strict")
    assert strict.exit_code == 1
    assert "19 problem(s) found with --strict; nothing was written" in strict.output
    assert not (tmp_path / "strict").exists()
    clean_strict = invoke("--root", str(problem_root), "--out", str(tmp_path / "dry"), "--dry-run", "--strict")
    assert clean_strict.exit_code == 1  # the 'h orse' token is a problem even without file checks
    assert not (tmp_path / "dry").exists()


def test_ctrl_c_is_one_line_and_writes_nothing(clean_root, tmp_path, monkeypatch, capsys):
    """Through the console script's entry point (typer turns a KeyboardInterrupt into a silent exit 130)."""
    from avseg_cli.main import run
    from models.data import scan

    checked = []

    def interrupt_on_the_third(root, record):
        checked.append(record.uid)
        if len(checked) == 3:
            raise KeyboardInterrupt
        return original(root, record)

    original = scan.scan_video
    monkeypatch.setattr("models.pipeline.prepare.scan_video", interrupt_on_the_third)
    out = tmp_path / "data"
    argv = ["avseg", "prepare", "--root", str(clean_root), "--out", str(out), "--workers", "1"]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exit_info:
        run()
    assert exit_info.value.code == 130 and len(checked) == 3
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert lines[-1] == f"interrupted: nothing was written to {out}; run the same command again"
    assert not out.exists()


def test_cli_dry_run(clean_root, tmp_path):
    result = invoke("--root", str(clean_root), "--out", str(tmp_path / "data"), "--dry-run")
    assert result.exit_code == 0, result.output
    assert "dry run" in result.output and "train" in result.output and "45" in result.output
    assert "nothing was written" in result.output
    assert not (tmp_path / "data").exists()


def run_avseg(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, COLUMNS="200")
    return subprocess.run(
        [sys.executable, "-m", "avseg_cli", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )


def bad_inputs(tmp_path: Path) -> list[tuple[list[str], str]]:
    """(arguments, text the one-line error must contain) for each kind of bad input."""
    file_root = tmp_path / "root-file"
    file_root.write_text("x")
    no_meta = tmp_path / "no-meta"
    no_meta.mkdir()
    wrong_columns = tmp_path / "wrong-columns"
    wrong_columns.mkdir()
    (wrong_columns / "metadata.csv").write_text("vid,uid,a_obj\nx,x,dog\n")
    bad_row = tmp_path / "bad-row"
    bad_row.mkdir()
    (bad_row / "metadata.csv").write_text("vid,uid,s_min,s_sec,a_obj,split,label\nx,x_0_5000,0,0,dog,train,v1s\nx,y\n")
    good = tmp_path / "good"
    good.mkdir()
    (good / "metadata.csv").write_text("vid,uid,s_min,s_sec,a_obj,split,label\nx,x_0_5000,0,0,dog,train,v1s\n")
    blocker = tmp_path / "blocker"
    blocker.write_text("a regular file")
    out = str(tmp_path / "out")
    return [
        (["--root", str(tmp_path / "missing"), "--out", out], f"AVSBench-semantic folder not found: {tmp_path / 'missing'}"),
        (["--root", str(file_root), "--out", out], f"AVSBench-semantic root is not a folder: {file_root}"),
        (["--root", str(no_meta), "--out", out], f"metadata.csv not found: {no_meta / 'metadata.csv'}"),
        (["--root", str(wrong_columns), "--out", out], "found vid,uid,a_obj"),
        (["--root", str(bad_row), "--out", out], f"{bad_row / 'metadata.csv'}, line 3: expected 7 fields, found 2"),
        (["--root", str(good), "--out", str(blocker / "data")], f"{blocker} is a file"),
        (["--root", str(good), "--out", str(blocker)], f"output folder is a file: {blocker}"),
        (["--root", str(good), "--out", str(good / "data")], f"output folder {good / 'data'} is inside the AVSBench root"),
    ]


def test_bad_inputs_give_one_clear_line(tmp_path):
    for args, expected in bad_inputs(tmp_path):
        before = tree_digest(tmp_path)
        result = run_avseg("prepare", *args)
        assert result.returncode != 0, args
        assert "Traceback" not in result.stderr + result.stdout
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith("error: ") and expected in lines[0], (lines[0], expected)
        assert tree_digest(tmp_path) == before, args  # nothing written, nothing half-written
        assert not (tmp_path / "out").exists()


def test_bad_inputs_through_the_api(tmp_path):
    for args, expected in bad_inputs(tmp_path):
        with pytest.raises(AVSegError) as info:
            prepare_dataset(Path(args[1]), Path(args[3]))
        assert expected in info.value.message


@pytest.mark.parametrize("own", ["splits/train.jsonl", "summary.json", "dataset.json"])
def test_files_prepare_did_not_write_are_never_replaced(clean_root, tmp_path, own):
    out = tmp_path / "data"
    (out / own).parent.mkdir(parents=True, exist_ok=True)
    (out / own).write_text('{"mine": true}\n')
    before = tree_digest(out)
    for dry_run in (False, True):
        with pytest.raises(UsageError, match=f"output folder {out} holds {own.split('/')[0]}.* that avseg prepare did "
                                             "not write; choose an empty or new folder") as info:
            prepare_dataset(clean_root, out, dry_run=dry_run)
        assert info.value.exit_code == 2
    assert tree_digest(out) == before
    (out / "notes.txt").write_text("kept")  # other files are fine, and a DATA_DIR of prepare's is updated
    (out / own).unlink()
    prepare_dataset(clean_root, out)
    prepare_dataset(clean_root, out)
    assert (out / "notes.txt").read_text() == "kept" and (out / "splits" / "train.jsonl").is_file()
    # ... but its splits/ folder is replaced as a whole: a file of the user's in it is never lost with it
    (out / "splits" / "mine.jsonl").write_text('{"x": 1}\n')
    before = tree_digest(out)
    with pytest.raises(UsageError, match="splits holds mine.jsonl, which avseg prepare did not write"):
        prepare_dataset(clean_root, out)
    assert tree_digest(out) == before


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores folder permissions")
def test_read_only_output_folder(clean_root, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        with pytest.raises(AVSegError, match=f"output folder is not writable: {locked}"):
            prepare_dataset(clean_root, locked / "data")
    finally:
        locked.chmod(0o755)


def test_help_is_fast_and_documents_every_option():
    code = (
        "import sys; from typer.testing import CliRunner; from avseg_cli.main import app; "
        "r = CliRunner().invoke(app, ['prepare', '--help'], env={'COLUMNS': '250'}); "
        "assert r.exit_code == 0, r.output; "
        "heavy = [m for m in ('torch', 'numpy', 'PIL', 'soundfile') if m in sys.modules]; "
        "assert not heavy, heavy; print(r.output)"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    for option in ("--root", "--out", "--dry-run", "--strict", "--include-v1m", "--workers"):
        assert option in result.stdout
    assert result.stdout.count("Example:") >= 7  # the command and each of its 6 options
