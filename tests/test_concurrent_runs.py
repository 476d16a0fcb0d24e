"""Two avseg processes on one folder: `avseg train` / `eval --save-predictions` refuse the second in one line
(`models.folder_lock`), `avseg annotate` refuses a second process on the same video's outputs but not on other
videos in the same folder, and two `atomic_dir` writes of one folder both finish with one complete folder. A killed
annotate's temporaries are tidied away by the next run on that video."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from multiprocessing import get_context
from pathlib import Path
from types import SimpleNamespace

import pytest

from models.atomic import atomic_dir
from models.errors import AVSegError
from models.folder_lock import LOCK_NAME, folder_lock, is_lock_file, output_lock
from models.pipeline.annotate import Annotator
from models.pipeline.annotate_batch import annotate_batch
from models.pipeline.annotate_outputs import AnnotateOptions
from models.pipeline.evaluate_ov import check_predictions_folder, predict_split
from models.pipeline.train import TrainOptions, train

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def other_process(tmp_path):
    """Start a second Python process that holds `folder` (as another avseg run would) until the test ends."""
    started = []

    def hold(folder: Path, command: str, output_subject: str | None = None) -> subprocess.Popen:
        """Hold `folder` (`folder_lock`), or with `output_subject` the output `folder` (`output_lock`)."""
        lock = (f"folder_lock({str(folder)!r}, {command!r})" if output_subject is None
                else f"output_lock({str(folder)!r}, {command!r}, {output_subject!r})")
        code = ("import sys, time; from models.folder_lock import folder_lock, output_lock\n"
                f"with {lock}:\n"
                "    print('held', flush=True); sys.stdin.read()\n")
        child = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 text=True)
        started.append(child)
        assert child.stdout.readline().strip() == "held"
        return child

    yield hold
    for child in started:
        child.stdin.close()
        child.wait(timeout=10)


def test_train_refuses_a_run_folder_another_process_uses(tmp_path, other_process):
    run = tmp_path / "run"
    run.mkdir()
    child = other_process(run, "train")
    options = TrainOptions(data_dir=tmp_path / "data", config_name="tiny", out_dir=run, device="cpu", max_iters=1,
                           vggish_weights="random", resume=True)
    with pytest.raises(AVSegError) as info:
        train(options, warn=lambda *_: None)
    assert info.value.message == (f"another avseg train is using {run} (pid {child.pid}): wait for it to finish, or "
                                  "use another folder")
    assert "\n" not in info.value.message


def test_cli_train_second_process_exits_1_with_one_line(tmp_path, other_process):
    run = tmp_path / "run"
    run.mkdir()
    child = other_process(run, "train")
    done = subprocess.run([sys.executable, "-m", "avseg_cli", "train", "--data", str(tmp_path), "--config", "tiny",
                           "--out", str(run), "--device", "cpu", "--resume"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    if errors and "not a prepared data folder" in errors[0]:
        pytest.skip("the CLI checks --data before the run folder")
    assert done.returncode == 1, done.stderr
    assert errors == [f"error: another avseg train is using {run} (pid {child.pid}): wait for it to finish, or use "
                      "another folder"], done.stderr
    assert "Traceback" not in done.stderr


def test_eval_save_predictions_refuses_a_folder_another_process_uses(tmp_path, other_process):
    preds = tmp_path / "preds"
    preds.mkdir()
    child = other_process(preds, "eval --save-predictions")
    data = SimpleNamespace(load_split=lambda split: [object()], data_dir=tmp_path, root=tmp_path)
    with pytest.raises(AVSegError, match=rf"^another avseg eval --save-predictions is using {preds} "
                                         rf"\(pid {child.pid}\)"):
        predict_split(predictor=None, data=data, split="test", pred_dir=preds)
    # the lock file of the other process is no content: the folder still counts as empty
    assert (preds / LOCK_NAME).is_file()
    assert check_predictions_folder(preds) == preds


def test_lock_is_released_and_its_file_removed(tmp_path):
    with folder_lock(tmp_path, "train"):
        assert (tmp_path / LOCK_NAME).read_text().strip().isdigit()
        with folder_lock(tmp_path, "train"):  # nested in one process: no refusal
            pass
        assert (tmp_path / LOCK_NAME).is_file()
    assert not (tmp_path / LOCK_NAME).exists()
    with folder_lock(tmp_path, "train"):  # taken again after release
        pass


def _write_folder_repeatedly(barrier, folder: str, tag: str, rounds: int, errors) -> None:
    for _ in range(rounds):
        barrier.wait()
        try:
            with atomic_dir(folder) as tmp:
                for k in range(3):
                    (tmp / f"{k}.txt").write_text(tag)
        except Exception as error:  # noqa: BLE001 - reported by the test
            errors.put(f"{tag}: {error}")


def test_two_processes_write_one_folder_at_once(tmp_path):
    context = get_context("fork") if sys.platform != "win32" else get_context()
    barrier, errors = context.Barrier(2), context.Queue()
    folder = str(tmp_path / "x")
    workers = [context.Process(target=_write_folder_repeatedly, args=(barrier, folder, tag, 100, errors))
               for tag in "AB"]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    found = []
    while not errors.empty():
        found.append(errors.get())
    assert found == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x"]  # nothing moved aside or temporary is left
    contents = {p.read_text() for p in (tmp_path / "x").iterdir()}
    assert sorted(p.name for p in (tmp_path / "x").iterdir()) == ["0.txt", "1.txt", "2.txt"] and len(contents) == 1


def _annotator(out: Path) -> Annotator:
    from test_annotate import VOCABULARY, FakePredictor

    return Annotator(FakePredictor(fps=10), VOCABULARY, AnnotateOptions(out_dir=out, write_video=False))


@pytest.fixture(scope="module")
def two_videos(tmp_path_factory) -> tuple[Path, Path]:
    from media import make_video

    folder = tmp_path_factory.mktemp("lock_media")
    return (make_video(folder / "clip.mp4", seconds=1.0, size=(32, 24), fps="10", sample_rate=16000),
            make_video(folder / "other.mp4", seconds=1.0, size=(32, 24), fps="10", sample_rate=16000))


def test_annotate_refuses_a_video_whose_outputs_another_process_writes(tmp_path, other_process, two_videos):
    clip, other = two_videos
    out = tmp_path / "out"
    out.mkdir()
    child = other_process(out / "clip.json", "annotate", "something")
    annotator = _annotator(out)
    with pytest.raises(AVSegError) as info:
        annotator.annotate(clip, warn=lambda *_: None)
    assert info.value.message == (f"{clip}: another avseg annotate is writing outputs named {out / 'clip'}.* "
                                  f"(pid {child.pid}): wait for it to finish")
    assert [p.name for p in out.iterdir() if not is_lock_file(p.name)] == []  # nothing of clip.mp4 written
    # another video into the same folder meanwhile: not held
    result = annotator.annotate(other, warn=lambda *_: None)
    assert result.outputs.json.is_file() and (out / "other.masks").is_dir()
    assert not any(p.name.startswith(".other") for p in out.iterdir())  # its own lock file is gone
    child.stdin.close()
    child.wait(timeout=10)
    annotator.annotate(clip, warn=lambda *_: None)  # released: annotated now
    assert json.loads((out / "clip.json").read_text())["input"] == str(clip)
    assert sorted(p.name for p in out.iterdir()) == ["clip.json", "clip.masks", "other.json", "other.masks"]


def test_annotate_batch_goes_on_past_a_video_another_process_writes(tmp_path, other_process, two_videos):
    clip, other = two_videos
    out = tmp_path / "out"
    out.mkdir()
    child = other_process(out / "clip.json", "annotate", "something")
    result = annotate_batch(_annotator(out), [clip, other], warn=lambda *_: None)
    statuses = [(outcome.input.name, outcome.status) for outcome in result.outcomes]
    assert statuses == [("clip.mp4", "failed"), ("other.mp4", "done")]
    assert f"(pid {child.pid}): wait for it to finish" in result.outcomes[0].error


def test_output_lock_names_a_hidden_file_beside_the_output_and_nests(tmp_path):
    target = tmp_path / ("v" * 250 + ".json")  # a name near the limit: the lock file's name is cut to fit
    with output_lock(target, "annotate", "x"):
        names = [p.name for p in tmp_path.iterdir()]
        assert len(names) == 1 and is_lock_file(names[0]) and names[0].startswith(".vvv")
        assert len(names[0].encode()) <= 255
        with output_lock(target, "annotate", "x"):  # nested in one process: no refusal
            pass
        assert (tmp_path / names[0]).is_file()
    assert list(tmp_path.iterdir()) == []


def _hidden_leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") and not is_lock_file(p.name))


def test_next_annotate_run_tidies_what_a_killed_one_left(tmp_path, two_videos):
    clip, other = two_videos
    out = tmp_path / "out"
    code = ("import sys, time\n"
            f"sys.path.insert(0, {str(ROOT / 'tests')!r})\n"
            "from test_annotate import VOCABULARY, FakePredictor\n"
            "from models.pipeline.annotate import Annotator\n"
            "from models.pipeline.annotate_outputs import AnnotateOptions\n"
            "class Stuck(FakePredictor):\n"
            "    def predict_clip(self, clip):\n"
            "        print('writing', flush=True); time.sleep(120)\n"
            f"Annotator(Stuck(fps=10), VOCABULARY, AnnotateOptions(out_dir={str(out)!r})).annotate({str(clip)!r})\n")
    child = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "writing"
    finally:
        child.kill()  # SIGKILL: no cleanup runs
        child.wait(timeout=10)
    left = _hidden_leftovers(out)
    # the overlay, masks folder and JSON being written when it was killed
    assert sorted(name.split(".")[1:3] for name in left) == [["clip", "avseg"], ["clip", "json"], ["clip", "masks"]]
    (out / ".other.json.ab12cd34.tmp.json").write_text("{")  # another video's: not this run's to remove
    (out / ".clip.notes").write_text("mine")  # a user's file
    _annotator(out).annotate(clip, warn=lambda *_: None)
    assert _hidden_leftovers(out) == [".clip.notes", ".other.json.ab12cd34.tmp.json"]
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["clip.json", "clip.masks"]


def test_a_masks_folder_moved_aside_by_a_killed_run_is_put_back(tmp_path, two_videos):
    clip, _ = two_videos
    out = tmp_path / "out"
    annotator = _annotator(out)
    annotator.annotate(clip, warn=lambda *_: None)
    frames = sorted(p.name for p in (out / "clip.masks").iterdir())
    os.replace(out / "clip.masks", out / ".clip.masks.old-4242")  # killed between atomic_dir's two renames
    no_masks = Annotator(annotator.predictor, annotator.vocabulary,
                         AnnotateOptions(out_dir=out, write_video=False, write_masks=False))
    no_masks.annotate(clip, warn=lambda *_: None)
    assert sorted(p.name for p in (out / "clip.masks").iterdir()) == frames and _hidden_leftovers(out) == []


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(timeout=30)
    return child.pid


def test_clear_interrupted_writes_touches_only_what_avseg_would_have_left(tmp_path):
    from models.atomic import clear_interrupted_writes

    dead = _dead_pid()
    (tmp_path / ".a.json.k3j2h1x0.tmp.json").write_text("x")  # atomic_path's names: removed
    (tmp_path / ".a.avseg.mp4.zz_9abcd.tmp.mp4").write_bytes(b"")
    (tmp_path / ".a.masks.q9q9q9q9.tmp").mkdir()  # atomic_dir's
    (tmp_path / ".a.masks.q9q9q9q9.tmp" / "000001.png").write_bytes(b"png")
    (tmp_path / "a.masks").mkdir()
    (tmp_path / f".a.masks.old-{dead}").mkdir()  # a folder is in place: the one moved aside is old
    (tmp_path / "b.masks.old").mkdir()
    (tmp_path / f".b.masks.old-{dead}").mkdir()  # nothing in place: put back
    (tmp_path / f".b.masks.old-{dead}" / "000001.png").write_bytes(b"png")
    kept = [".c.json.k3j2h1x0.tmp.json",  # another output's
            ".a.json", ".a.json.backup.tmp", ".a.json.abcdefgh.tmp", ".a.avseg.mp4.orig.tmp.mp4",  # a user's
            ".a.json.abcdefgh.tmp.mp4", ".a.masks.old-x", ".a.masks.v1.tmp", ".a.masks.old-1"]  # pid 1 is running
    for name in kept:
        (tmp_path / name).mkdir() if "masks" in name else (tmp_path / name).write_text("mine")
    (tmp_path / ".a.masks.abcdefgh.tmp.png").write_text("a file where atomic_dir makes a folder")
    kept.append(".a.masks.abcdefgh.tmp.png")
    tidied = clear_interrupted_writes(tmp_path, {"a.json", "a.masks", "a.avseg.mp4", "b.masks"})
    assert sorted((path.name, action) for path, action in tidied) == sorted([
        (".a.json.k3j2h1x0.tmp.json", "removed"), (".a.avseg.mp4.zz_9abcd.tmp.mp4", "removed"),
        (".a.masks.q9q9q9q9.tmp", "removed"), (f".a.masks.old-{dead}", "removed"),
        (f".b.masks.old-{dead}", "put back")])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(kept + ["a.masks", "b.masks", "b.masks.old"])
    assert (tmp_path / "b.masks" / "000001.png").read_bytes() == b"png"
    assert clear_interrupted_writes(tmp_path / "missing", {"a.json"}) == []


def test_annotate_names_what_it_tidied(tmp_path, two_videos):
    clip, _ = two_videos
    out = tmp_path / "out"
    out.mkdir()
    (out / ".clip.json.k3j2h1x0.tmp.json").write_text("{")
    warnings = []
    _annotator(out).annotate(clip, warn=warnings.append)
    assert f"{clip}: removed what an interrupted run left: .clip.json.k3j2h1x0.tmp.json" in warnings


def test_shared_folder_lock_file_of_another_user_still_locks(tmp_path):
    """A lock file another user made (0644: not writable here) is opened read-only, as flock needs no write access:
    the second process is refused instead of running unlocked (and tidying the first one's live temporaries)."""
    out = tmp_path / "out"
    out.mkdir()
    code = ("import os, sys\n"
            "from models.errors import AVSegError\n"
            "from models.folder_lock import output_lock\n"
            "real_open = os.open\n"
            "def open_as_another_user(path, flags, *args):\n"
            "    if str(path).endswith('.avseg.lock') and flags & (os.O_RDWR | os.O_WRONLY):\n"
            "        raise PermissionError(13, 'Permission denied', str(path))\n"
            "    return real_open(path, flags, *args)\n"
            "os.open = open_as_another_user\n"
            "try:\n"
            f"    with output_lock({str(out / 'clip.json')!r}, 'annotate', 'x') as held: print('held', held)\n"
            "except AVSegError as error: print('refused', error.message)\n")
    with output_lock(out / "clip.json", "annotate", "x") as held:
        assert held is True
        done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (f"refused another avseg annotate is writing x (pid {os.getpid()}): wait for it to "
                                   "finish")


def test_a_second_interrupt_during_annotate_cleanup_leaves_no_temporaries(tmp_path, two_videos, monkeypatch):
    from types import SimpleNamespace as Namespace

    import models.atomic
    from test_annotate import VOCABULARY, FakePredictor

    clip, _ = two_videos
    out = tmp_path / "out"
    calls = []

    def interrupted_rmtree(*args, **kwargs):  # a second Ctrl-C while atomic_dir removes the partial masks folder
        calls.append(args[0])
        if len(calls) == 1:
            raise KeyboardInterrupt
        return shutil.rmtree(*args, **kwargs)

    monkeypatch.setattr(models.atomic, "shutil", Namespace(rmtree=interrupted_rmtree))
    annotator = Annotator(FakePredictor(fps=10, interrupt_on_call=1), VOCABULARY, AnnotateOptions(out_dir=out))
    with pytest.raises(KeyboardInterrupt):
        annotator.annotate(clip, warn=lambda *_: None)
    assert list(out.iterdir()) == []  # no outputs, no temporaries, no lock file
    assert len(calls) == 2 and calls[0] == calls[1] and calls[0].name.startswith(".clip.masks.")
