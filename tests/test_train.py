"""`avseg train` and class-agnostic `avseg eval --checkpoint`: runs, checkpoints, bit-for-bit resume, errors."""

from __future__ import annotations

import math
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from models.data.synthetic import make_synthetic_avsbench
from models.errors import AVSegError, UsageError
from models.pipeline.prepare import prepare_dataset
from models.pipeline.train import TrainOptions, train
from models.pipeline.train_sampler import ResumableBatchSampler


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("train")
    make_synthetic_avsbench(base / "root", num_train=4, num_val=1, num_test=2, seed=3)
    prepare_dataset(base / "root", base / "data")
    return base / "data"


def _options(data_dir: Path, out: Path, **kw) -> TrainOptions:
    base = dict(data_dir=data_dir, config_name="tiny", out_dir=out, device="cpu", max_iters=4,
                checkpoint_period=2, vggish_weights="random", overrides={"train_num_points": 256})
    base.update(kw)
    return TrainOptions(**base)


def _quiet(*_a, **_k):
    pass


def test_sampler_is_a_pure_function_of_seed_and_iteration():
    full = list(ResumableBatchSampler(5, 2, seed=1, start=0, stop=6))
    tail = list(ResumableBatchSampler(5, 2, seed=1, start=3, stop=6))
    assert full[3:] == tail
    visited = [v for batch in full[:3] for v, _ in batch][:5]
    assert sorted(visited[:5]) == [0, 1, 2, 3, 4]  # one epoch = a permutation of the videos
    assert full != list(ResumableBatchSampler(5, 2, seed=2, start=0, stop=6))


def test_train_writes_checkpoints_and_log_and_resumes_bit_for_bit(data_dir: Path, tmp_path: Path):
    torch.set_num_threads(1)
    straight = train(_options(data_dir, tmp_path / "straight"), warn=_quiet)
    assert straight.iterations == 4
    names = sorted(p.name for p in (tmp_path / "straight").iterdir())
    assert {"last.pt", "model_0000002.pt", "model_0000004.pt", "log.jsonl"} <= set(names)
    rows = [json.loads(line) for line in (tmp_path / "straight" / "log.jsonl").read_text().splitlines()]
    assert rows and all(r["loss"] > 0 and "loss_ce" in r for r in rows)

    train(_options(data_dir, tmp_path / "resumed", max_iters=2), warn=_quiet)
    resumed = train(_options(data_dir, tmp_path / "resumed", max_iters=4, resume=True), warn=_quiet)
    assert resumed.iterations == 4
    a = torch.load(tmp_path / "straight" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "resumed" / "last.pt", weights_only=True)
    assert a["iteration"] == b["iteration"] == 4
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert a["optimizer"]["state"].keys() == b["optimizer"]["state"].keys()
    assert straight.final_loss == resumed.final_loss
    # training changed the weights
    first = torch.load(tmp_path / "straight" / "model_0000002.pt", weights_only=True)
    assert any(not torch.equal(first["model"][k], a["model"][k]) for k in a["model"])


def test_keep_checkpoints_deletes_the_older_numbered_ones(data_dir: Path, tmp_path: Path):
    run = tmp_path / "run"
    train(_options(data_dir, run, max_iters=4, checkpoint_period=1, keep_checkpoints=2), warn=_quiet)
    numbered = sorted(p.name for p in run.glob("model_*.pt"))
    assert numbered == ["model_0000003.pt", "model_0000004.pt"]
    assert [torch.load(run / name, weights_only=True)["iteration"] for name in numbered] == [3, 4]
    assert torch.load(run / "last.pt", weights_only=True)["iteration"] == 4
    # rolled back to iteration 3 (model_0000003.pt copied to last.pt) with a checkpoint of a later iteration left
    # from the abandoned part: the new iteration 4 is the latest of this run, and iteration 9 is not touched
    shutil.copyfile(run / "model_0000003.pt", run / "last.pt")
    (run / "model_0000009.pt").write_bytes(b"abandoned")
    train(_options(data_dir, run, max_iters=4, checkpoint_period=1, keep_checkpoints=1, resume=True), warn=_quiet)
    assert sorted(p.name for p in run.glob("model_*.pt")) == ["model_0000004.pt", "model_0000009.pt"]
    assert torch.load(run / "model_0000004.pt", weights_only=True)["iteration"] == 4
    # resumed with 0: last.pt alone, the numbered ones of the first parts go too
    train(_options(data_dir, run, max_iters=5, checkpoint_period=1, keep_checkpoints=0, resume=True), warn=_quiet)
    assert sorted(p.name for p in run.iterdir()) == ["last.pt", "log.jsonl", "model_0000009.pt"]
    assert torch.load(run / "last.pt", weights_only=True)["iteration"] == 5


def test_keep_checkpoints_must_be_a_whole_number_from_0(data_dir: Path, tmp_path: Path):
    from avseg_cli.train_cmd import interrupt_hint

    for bad, message in ((-1, "--keep-checkpoints -1 is out of range: use 0 (last.pt alone) or more"),
                         (1.5, "--keep-checkpoints must be a whole number (an int), got float 1.5"),
                         (True, "--keep-checkpoints must be a whole number (an int), got bool True")):
        with pytest.raises(UsageError) as info:
            train(_options(data_dir, tmp_path / "run", keep_checkpoints=bad), warn=_quiet)
        assert info.value.message == message
    assert not (tmp_path / "run").exists()
    hint = interrupt_hint(_options(data_dir, tmp_path / "run", keep_checkpoints=3), "cpu")
    assert "--checkpoint-period 2 --keep-checkpoints 3" in hint  # a resumed run keeps deleting


def test_existing_run_needs_resume_and_finished_run_says_so(data_dir: Path, tmp_path: Path):
    train(_options(data_dir, tmp_path / "run", max_iters=2), warn=_quiet)
    with pytest.raises(AVSegError, match="use --resume"):
        train(_options(data_dir, tmp_path / "run", max_iters=2), warn=_quiet)
    before = (tmp_path / "run" / "last.pt").read_bytes()
    done = train(_options(data_dir, tmp_path / "run", max_iters=2, resume=True), warn=_quiet)
    assert done.already_done and done.iterations == 2  # nothing to do is not an error (scripts resume every time)
    assert (tmp_path / "run" / "last.pt").read_bytes() == before
    with pytest.raises(AVSegError, match="trained with --config tiny"):
        train(_options(data_dir, tmp_path / "run", config_name="r50", resume=True), warn=_quiet)


class _BarRecorder:
    """A `Progress` that keeps what a bar would show: (completed, total) after each call."""

    def __init__(self) -> None:
        self.shown: list[tuple[int, int | None]] = []
        self.completed, self.total = 0, None

    def start(self, description: str, total: int | None = None, completed: int = 0) -> None:
        self.completed, self.total = completed, total
        self.shown.append((self.completed, self.total))

    def advance(self, steps: int = 1, **status: object) -> None:
        self.completed += steps
        self.shown.append((self.completed, self.total))

    def finish(self) -> None:
        pass


def test_progress_counts_iterations_of_the_run_also_when_resumed(data_dir: Path, tmp_path: Path):
    first = _BarRecorder()
    train(_options(data_dir, tmp_path / "run", max_iters=2), progress=first, warn=_quiet)
    assert first.shown == [(0, 2), (1, 2), (2, 2)]
    resumed = _BarRecorder()
    train(_options(data_dir, tmp_path / "run", max_iters=4, resume=True), progress=resumed, warn=_quiet)
    assert resumed.shown == [(2, 4), (3, 4), (4, 4)]  # starts at 2/4 (done before), then 3/4, 4/4


def test_nan_loss_stops_and_keeps_last_good_checkpoint(data_dir: Path, tmp_path: Path, monkeypatch):
    out = tmp_path / "nan"
    train(_options(data_dir, out, max_iters=2), warn=_quiet)
    good = (out / "last.pt").read_bytes()
    import models.ovavss.criterion as criterion_module

    real = criterion_module.weighted_total

    def poisoned(losses, weight_dict):
        return real(losses, weight_dict) * float("nan")

    monkeypatch.setattr(criterion_module, "weighted_total", poisoned)
    with pytest.raises(AVSegError, match=r"diverged at iteration 2 .*last good checkpoint is .*last.pt"):
        train(_options(data_dir, out, max_iters=4, resume=True), warn=_quiet)
    assert (out / "last.pt").read_bytes() == good


def test_user_errors(data_dir: Path, tmp_path: Path):
    if not torch.cuda.is_available():
        with pytest.raises(AVSegError, match="no CUDA"):
            train(_options(data_dir, tmp_path / "x", device="cuda"), warn=_quiet)
    with pytest.raises(UsageError, match="unknown config 'huge'"):
        train(_options(data_dir, tmp_path / "x", config_name="huge"), warn=_quiet)
    with pytest.raises(AVSegError, match="not a prepared data folder"):
        train(_options(tmp_path, tmp_path / "x"), warn=_quiet)
    with pytest.raises(AVSegError, match="nothing to resume"):
        train(_options(data_dir, tmp_path / "empty", resume=True), warn=_quiet)
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "last.pt").write_bytes(b"PK\x03\x04 not really a checkpoint")
    with pytest.raises(AVSegError, match="last.pt") as info:
        train(_options(data_dir, corrupt, resume=True), warn=_quiet)
    assert "numbered checkpoint" not in info.value.message  # none to point to
    # a damaged last.pt beside intact numbered checkpoints: the message points to the newest one
    train(_options(data_dir, tmp_path / "run", max_iters=2), warn=_quiet)  # a run with a numbered checkpoint
    numbered = sorted((tmp_path / "run").glob("model_*.pt"))
    assert numbered
    (tmp_path / "run" / "last.pt").write_bytes(b"damaged")
    with pytest.raises(AVSegError) as info:
        train(_options(data_dir, tmp_path / "run", max_iters=4, resume=True), warn=_quiet)
    assert info.value.message.endswith(f"the run folder also holds {numbered[-1].name} (the newest readable "
                                       "numbered checkpoint): copy it to last.pt to resume from there")
    assert (tmp_path / "run" / "last.pt").read_bytes() == b"damaged"  # nothing changed
    # a damaged newest numbered checkpoint is not the one suggested; without last.pt the advice is the same
    (tmp_path / "run" / "model_9999999.pt").write_bytes(numbered[-1].read_bytes()[:100])
    (tmp_path / "run" / "last.pt").unlink()
    with pytest.raises(AVSegError) as info:
        train(_options(data_dir, tmp_path / "run", max_iters=4, resume=True), warn=_quiet)
    assert info.value.message == (f"nothing to resume: {tmp_path / 'run' / 'last.pt'} does not exist (the run folder "
                                  f"holds {numbered[-1].name}: copy it to last.pt to resume from it)")
    with pytest.raises(AVSegError, match="vggish weights not found"):
        train(_options(data_dir, tmp_path / "y", vggish_weights=str(tmp_path / "nope.pth")), warn=_quiet)


@pytest.mark.parametrize("kind, pixel_decoder", [("pkl", False), ("pkl", True), ("pth", False)])
def test_init_takes_what_the_official_training_takes(data_dir: Path, tmp_path: Path, kind: str, pixel_decoder: bool):
    """--init: backbone and transformer decoder from a Mask2Former-style pickle; the pixel decoder keeps its
    random initialisation, as in the official training (`models.training_init.mask2former_init_state`), unless
    --init-pixel-decoder; a PyTorch file gives everything. lr 0 keeps the weights of the first step where they
    started."""
    import pickle

    from models.checkpoint_parts import read_checkpoint_parts
    from models.ovavss.model import build_ovavss

    torch.manual_seed(123)
    donor = {k: v + 0.5 * torch.randn_like(v) if v.is_floating_point() else v
             for k, v in build_ovavss("tiny").trained_state_dict().items()}
    init = tmp_path / f"model_final.{kind}"
    if kind == "pkl":
        with open(init, "wb") as handle:
            pickle.dump({"model": {k: v.numpy() for k, v in donor.items()}, "__author__": "Mask2Former",
                         "matching_heuristics": True}, handle)
    else:
        torch.save({"model": donor}, init)
    messages = []
    train(_options(data_dir, tmp_path / "run", max_iters=1, checkpoint_period=1, init=init,
                   init_pixel_decoder=pixel_decoder, overrides={"train_num_points": 256, "base_lr": 0.0}),
          warn=messages.append)
    state = read_checkpoint_parts(tmp_path / "run" / "last.pt").model_state
    pixel_keys = [k for k in donor if k.startswith("sem_seg_head.pixel_decoder.")]
    other_keys = [k for k in donor if k not in pixel_keys]
    assert pixel_keys and other_keys
    assert all(torch.equal(state[k], donor[k]) for k in other_keys)
    expect_pixel_decoder = pixel_decoder or kind == "pth"
    assert all(torch.equal(state[k], donor[k]) == expect_pixel_decoder
               for k in pixel_keys if donor[k].is_floating_point())
    note = [m for m in messages if m.startswith(f"initialised from {init}")]
    assert len(note) == 1 and ("keeps its random initialisation" in note[0]) != expect_pixel_decoder


def test_init_pixel_decoder_needs_init(data_dir: Path, tmp_path: Path):
    with pytest.raises(UsageError, match="--init-pixel-decoder needs --init"):
        train(_options(data_dir, tmp_path / "x", init_pixel_decoder=True), warn=_quiet)


def _avseg(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "avseg_cli", *args], capture_output=True, text=True, timeout=600)


def test_cli_train_then_class_agnostic_eval(data_dir: Path, tmp_path: Path):
    run = tmp_path / "cli"
    done = _avseg("train", "--data", str(data_dir), "--config", "tiny", "--out", str(run), "--device", "cpu",
                  "--max-iters", "2", "--checkpoint-period", "1", "--vggish-weights", "random")
    assert done.returncode == 0, done.stderr
    assert (run / "model_0000001.pt").is_file() and (run / "last.pt").is_file()
    result = tmp_path / "agnostic.json"
    done = _avseg("eval", "--checkpoint", str(run / "last.pt"), "--data", str(data_dir), "--split", "test",
                  "--class-agnostic", "--device", "cpu", "--json", str(result))
    assert done.returncode == 0, done.stderr
    row = json.loads(result.read_text())
    assert row["mode"] == "class-agnostic" and row["iteration"] == 2 and row["num_frames"] > 0
    assert 0.0 <= row["fg_miou"] <= 1.0


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--data", "{data}", "--config", "tiny", "--out", "{tmp}/r", "--device", "cuda"], "CUDA"),
        (["train", "--data", "{tmp}", "--config", "tiny", "--out", "{tmp}/r"], "not a prepared data folder"),
        (["train", "--data", "{data}", "--config", "nope", "--out", "{tmp}/r"], "unknown config"),
        (["train", "--data", "{data}", "--config", "tiny", "--out", "{tmp}/r", "--init-pixel-decoder"],
         "--init-pixel-decoder needs --init"),
        (["eval", "--checkpoint", "{tmp}/missing.pt", "--data", "{data}", "--class-agnostic"], "missing.pt"),
        (["eval", "--checkpoint", "{tmp}/missing.pt", "--data", "{data}"], "missing.pt"),
        (["train", "--data", "{data}", "--config", "tiny", "--out", "{tmp}/r", "--init", "{tmp}/damaged.pkl",
          "--vggish-weights", "random"], "corrupt or truncated pickle"),  # no VGGish warning before it
    ],
)
def test_cli_errors_are_one_line(data_dir: Path, tmp_path: Path, args, message):
    if message == "CUDA" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    (tmp_path / "damaged.pkl").write_bytes(b"\x80\x04 not a whole pickle")
    done = _avseg(*[a.format(data=data_dir, tmp=tmp_path) for a in args])
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("global_option", [False, True])
def test_cli_offline_option_names_the_missing_vggish_file(data_dir: Path, tmp_path: Path, global_option: bool):
    import os

    from models.download import OFFLINE_VARIABLES

    env = {key: value for key, value in os.environ.items() if key not in OFFLINE_VARIABLES}
    env.update(AVSEG_CACHE=str(tmp_path / "cache"), TORCH_HOME=str(tmp_path / "torch"))
    args = ["train", "--data", str(data_dir), "--config", "tiny", "--out", str(tmp_path / "r"), "--device", "cpu",
            "--max-iters", "1"]
    args = ["--offline", *args] if global_option else [*args, "--offline"]
    done = subprocess.run([sys.executable, "-m", "avseg_cli", *args], capture_output=True, text=True, timeout=600,
                          env=env)
    assert done.returncode == 1, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "vggish-10086976.pth not found and downloads are off (--offline)" in lines[0]
    assert str(tmp_path / "cache" / "vggish-10086976.pth") in lines[0] and not (tmp_path / "r" / "last.pt").exists()
    assert lines[0].endswith("(or pass its path with --vggish-weights)")


def test_train_downloads_vggish_on_first_use(data_dir: Path, tmp_path: Path, monkeypatch):
    """Like annotate and eval, train fetches the missing VGGish file into the cache (hash-checked); offline it
    names the file, its URL and the cache path in one line."""
    import dataclasses
    import hashlib
    import io

    from models import download, weights
    from models.ovavss import audio

    payload = b"vggish bytes" * 1000
    served: list[str] = []

    class Response(io.BytesIO):
        headers = {"Content-Length": str(len(payload))}

    def opener(request, timeout=None):
        served.append(request.full_url)
        return Response(payload)

    loaded: list[bytes] = []
    entry = dataclasses.replace(weights.VGGISH, sha256_prefix=hashlib.sha256(payload).hexdigest()[:8])
    monkeypatch.setattr(weights, "VGGISH", entry)
    monkeypatch.setattr(download, "urlopen", opener)
    monkeypatch.setattr(audio, "load_vggish_weights", lambda module, path: loaded.append(Path(path).read_bytes()))
    monkeypatch.setenv("AVSEG_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("AVSEG_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(AVSegError) as offline:
        train(_options(data_dir, tmp_path / "offline", vggish_weights=None, max_iters=1), warn=_quiet)
    assert "downloads are off (HF_HUB_OFFLINE is set)" in offline.value.message
    assert entry.url in offline.value.message and str(tmp_path / "cache" / entry.filename) in offline.value.message
    assert served == [] and loaded == []
    monkeypatch.delenv("HF_HUB_OFFLINE")
    result = train(_options(data_dir, tmp_path / "online", vggish_weights=None, max_iters=1), warn=_quiet)
    assert result.iterations == 1
    assert served == [entry.url] and loaded == [payload]
    assert (tmp_path / "cache" / entry.filename).read_bytes() == payload


# ------------------------------------------------------------------------- run folders, resume, interrupts
@pytest.fixture(scope="module")
def small_run(data_dir: Path, tmp_path_factory) -> Path:
    """A finished 2-iteration run (checkpoints at 1 and 2, a log record per step): tests work on copies."""
    run = tmp_path_factory.mktemp("small") / "run"
    train(_options(data_dir, run, max_iters=2, checkpoint_period=1, log_period=1), warn=_quiet)
    return run


def _log_steps(run: Path) -> list:
    return [json.loads(line).get("iteration") for line in (run / "log.jsonl").read_text().splitlines()]


class _InterruptAt(_BarRecorder):
    """A `Progress` that raises KeyboardInterrupt (Ctrl+C) when the bar reaches `at`."""

    def __init__(self, at: int) -> None:
        super().__init__()
        self.at = at

    def advance(self, steps: int = 1, **status: object) -> None:
        super().advance(steps, **status)
        if self.completed == self.at:
            raise KeyboardInterrupt


def test_resume_cuts_the_log_back_to_the_checkpoint(data_dir: Path, tmp_path: Path):
    """Steps logged after the checkpoint a run resumes from are logged again: the old records go, so the log of an
    interrupted and resumed run has the steps of a straight one; other records stay, a cut-short line goes."""
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):  # at step 4: steps 1-3 logged, last.pt at 2
        train(_options(data_dir, run, max_iters=4, log_period=1), progress=_InterruptAt(4), warn=_quiet)
    assert _log_steps(run) == [1, 2, 3]
    lines = (run / "log.jsonl").read_text().splitlines()
    (run / "log.jsonl").write_text("\n".join([lines[0], '{"note": "kept"}', *lines[1:]]) + '\n{"iteration": 3, "lo')
    train(_options(data_dir, run, max_iters=4, log_period=1, resume=True), warn=_quiet)
    assert _log_steps(run) == [1, None, 2, 3, 4]
    assert json.loads((run / "log.jsonl").read_text().splitlines()[1]) == {"note": "kept"}


def test_new_run_starts_over_the_log_of_a_run_that_saved_nothing(data_dir: Path, tmp_path: Path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "log.jsonl").write_text('{"iteration": 7, "loss": 1.0}\n')  # interrupted before its first checkpoint
    train(_options(data_dir, run, max_iters=2, log_period=1), warn=_quiet)
    assert _log_steps(run) == [1, 2]


def test_new_run_refuses_a_folder_with_numbered_checkpoints(small_run: Path, data_dir: Path, tmp_path: Path):
    run = shutil.copytree(small_run, tmp_path / "run")
    (run / "last.pt").unlink()
    log = (run / "log.jsonl").read_bytes()
    with pytest.raises(AVSegError) as info:
        train(_options(data_dir, run), warn=_quiet)
    assert info.value.message == (f"{run} already holds checkpoints of a run (model_0000002.pt, no last.pt): to "
                                  "continue it, copy model_0000002.pt (its newest readable checkpoint) to last.pt and "
                                  "use --resume; or choose another --out")
    (run / "model_0000002.pt").write_bytes(b"damaged")
    with pytest.raises(AVSegError, match=r"copy model_0000001.pt \(its newest readable checkpoint\)"):
        train(_options(data_dir, run), warn=_quiet)
    assert (run / "log.jsonl").read_bytes() == log and (run / "model_0000002.pt").read_bytes() == b"damaged"


def test_failed_run_leaves_no_empty_folders(data_dir: Path, tmp_path: Path, monkeypatch):
    import models.ovavss.criterion as criterion_module

    real = criterion_module.weighted_total
    monkeypatch.setattr(criterion_module, "weighted_total", lambda losses, weights: real(losses, weights) * math.nan)
    with pytest.raises(AVSegError, match="diverged at iteration 0"):
        train(_options(data_dir, tmp_path / "new" / "run", log_period=10), warn=_quiet)
    assert not (tmp_path / "new").exists()
    (tmp_path / "kept").mkdir()
    with pytest.raises(AVSegError, match="diverged"):
        train(_options(data_dir, tmp_path / "kept", log_period=10), warn=_quiet)
    assert (tmp_path / "kept").is_dir()  # it was there before


def test_out_and_seed_errors(data_dir: Path, tmp_path: Path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(UsageError, match="is a file, not a folder"):
        train(_options(data_dir, tmp_path / "afile"), warn=_quiet)
    with pytest.raises(UsageError, match=f"is under {tmp_path / 'afile'}, which is a file"):
        train(_options(data_dir, tmp_path / "afile" / "sub", resume=True), warn=_quiet)
    for seed in (-1, 2**64):
        with pytest.raises(UsageError, match=f"--seed {seed} is out of range: use a whole number from 0 to"):
            train(_options(data_dir, tmp_path / "run", seed=seed), warn=_quiet)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "args, message, code",
    [
        (["--out", "{tmp}/afile"], "--out {tmp}/afile is a file, not a folder", 2),
        (["--out", "{tmp}/afile/sub"], "--out {tmp}/afile/sub is under {tmp}/afile, which is a file", 2),
        (["--out", "{tmp}/r", "--seed", "-1"], "--seed", 2),
        (["--out", "{tmp}/r", "--seed", "99999999999999999999"], "--seed 99999999999999999999 is out of range", 2),
        (["--out", "/proc/avseg-run"], "cannot create the run folder /proc/avseg-run", 1),
    ],
)
def test_cli_bad_out_and_seed(data_dir: Path, tmp_path: Path, args, message, code):
    if args[1].startswith("/proc") and not Path("/proc/self").is_dir():
        pytest.skip("no /proc here")
    (tmp_path / "afile").write_text("x")
    done = _avseg("train", "--data", str(data_dir), "--config", "tiny", "--device", "cpu", "--vggish-weights",
                  "random", *[a.format(tmp=tmp_path) for a in args])
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == code and len(lines) == 1, done.stderr
    assert lines[0].startswith("error: ") and message.format(tmp=tmp_path) in lines[0]
    assert not (tmp_path / "r").exists()


def test_resume_says_which_options_it_does_not_take(small_run: Path, data_dir: Path, tmp_path: Path):
    """Batch size, seed and VGGish stay the run's (a warning each); a new --checkpoint-period and --max-iters apply;
    another --data is used, with a warning; --init cannot resume."""
    run = shutil.copytree(small_run, tmp_path / "run")
    other_data = shutil.copytree(data_dir, tmp_path / "data2")
    saved = torch.load(run / "last.pt", weights_only=True)["train_config"]
    messages: list[str] = []
    train(_options(other_data, run, max_iters=4, checkpoint_period=3, batch_size=2, seed=5, resume=True,
                   vggish_weights=str(tmp_path / "vggish.pth")), warn=messages.append)
    assert messages[:4] == [
        f"--batch-size 2 ignored: the resumed run keeps batch size {saved['batch_size']}",
        f"--seed 5 ignored: the resumed run keeps seed {saved['seed']}",
        f"--vggish-weights {tmp_path / 'vggish.pth'} ignored: the resumed run keeps its randomly initialised VGGish "
        f"(random (seed {saved['seed']}))",
        f"--data {other_data} is not the folder the run was trained on ({data_dir}): the resumed run trains on "
        f"{other_data}",
    ]
    resumed = torch.load(run / "last.pt", weights_only=True)
    assert resumed["iteration"] == 4 and resumed["train_config"]["batch_size"] == saved["batch_size"]
    assert resumed["train_config"]["seed"] == saved["seed"] and resumed["train_config"]["checkpoint_period"] == 3
    assert (run / "model_0000003.pt").is_file() and not (run / "model_0000004.pt").exists()
    messages.clear()  # the run's own values (its data is now data2, where it went on): nothing to say
    train(_options(other_data, run, max_iters=5, seed=saved["seed"], vggish_weights="random", resume=True),
          warn=messages.append)
    assert not [m for m in messages if "ignored" in m or "--data" in m]
    with pytest.raises(UsageError, match="--init starts a new run and --resume continues"):
        train(_options(data_dir, run, init=run / "last.pt", resume=True), warn=_quiet)


def test_init_from_a_checkpoint_of_another_config_is_refused(small_run: Path, data_dir: Path, tmp_path: Path,
                                                            monkeypatch):
    import models.ovavss.model as model_module

    messages: list[str] = []
    train(_options(data_dir, tmp_path / "tiny", max_iters=1, init=small_run / "last.pt"), warn=messages.append)
    note = [m for m in messages if m.startswith("initialised from")]
    assert len(note) == 1 and note[0].endswith("(the 18 not in the checkpoint are the frozen VGGish audio encoder's: "
                                               "training checkpoints never hold it, it comes from --vggish-weights)")

    def never(*_args, **_kw):
        raise AssertionError("a network was built")

    monkeypatch.setattr(model_module, "build_ovavss", never)  # refused before anything is built
    with pytest.raises(UsageError) as info:
        train(_options(data_dir, tmp_path / "r50", config_name="r50", init=small_run / "last.pt"), warn=_quiet)
    assert info.value.message == (f"--init {small_run / 'last.pt'} is a checkpoint of --config tiny, not r50: train "
                                  "with --config tiny, or initialise from a r50 checkpoint")
    assert not (tmp_path / "r50").exists()


def test_init_from_a_mask2former_file_of_another_size_is_refused(data_dir: Path, tmp_path: Path):
    """An r50 Mask2Former .pkl into --config tiny: nothing fits (it trained from a random start before)."""
    from fake_official import make_fake_mask2former_pkl

    pkl = tmp_path / "model_final_3c8ec9.pkl"
    make_fake_mask2former_pkl(pkl, "r50")
    with pytest.raises(UsageError) as info:
        train(_options(data_dir, tmp_path / "tiny", max_iters=1, init=pkl), warn=_quiet)
    assert info.value.message.startswith(f"--init {pkl} does not fit --config tiny: 0 tensors fit, ")
    assert "in the file, " in info.value.message and info.value.message.endswith(
        "it is made for another model size (r50 files: --config r50, Swin-B files: --config swinb)")
    assert not (tmp_path / "tiny").exists()  # the run folder it made is removed again


def test_cli_resume_of_a_finished_run_has_nothing_to_do(small_run: Path, data_dir: Path, tmp_path: Path):
    run = shutil.copytree(small_run, tmp_path / "run")
    done = _avseg("train", "--data", str(data_dir), "--config", "tiny", "--out", str(run), "--device", "cpu",
                  "--vggish-weights", "random", "--max-iters", "2", "--resume")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (f"nothing to do: the run in {run} is already at iteration 2, its last (a larger "
                                   "--max-iters extends it)")
    # without --config, --resume takes the run's own (it said "trained with --config tiny, not r50")
    again = _avseg("train", "--data", str(data_dir), "--out", str(run), "--device", "cpu", "--max-iters", "2",
                   "--resume")
    assert again.returncode == 0 and again.stdout == done.stdout, again.stderr


def test_new_run_and_resume_remove_temporary_files_of_interrupted_writes(small_run: Path, data_dir: Path,
                                                                          tmp_path: Path):
    run = shutil.copytree(small_run, tmp_path / "run")
    stale = [".model_0000001.pt.k2j3h4m5.tmp.pt", ".last.pt.abc_1234.tmp.pt", ".log.jsonl.x1y2z3w4.tmp.jsonl"]
    for name in [*stale, ".keep", "notes.tmp.pt"]:
        (run / name).write_bytes(b"")
    train(_options(data_dir, run, max_iters=3, resume=True), warn=_quiet)
    assert not [name for name in stale if (run / name).exists()]
    assert (run / ".keep").exists() and (run / "notes.tmp.pt").exists()
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / stale[0]).write_bytes(b"")
    train(_options(data_dir, fresh, max_iters=1), warn=_quiet)
    assert not (fresh / stale[0]).exists()


def test_interrupt_hint_matches_the_run_folder(tmp_path: Path):
    """Resume when last.pt exists; otherwise start again (no --resume); both name the device the run used."""
    from avseg_cli.train_cmd import interrupt_hint

    options = TrainOptions(data_dir=Path("my data"), config_name="tiny", out_dir=tmp_path / "run", device="auto",
                           seed=3, init=Path("m.pkl"), vggish_weights="random", amp="bf16")
    again = interrupt_hint(options, "cuda")
    assert again == (" before anything was saved (nothing to resume): start again with `avseg train --data 'my data' "
                     f"--config tiny --out {tmp_path / 'run'} --device cuda --amp bf16 --vggish-weights random "
                     "--seed 3 --init m.pkl`")
    (tmp_path / "run").mkdir()
    assert interrupt_hint(options, "cuda").startswith(" before the first checkpoint (nothing to resume): start again")
    (tmp_path / "run" / "last.pt").write_bytes(b"")
    assert interrupt_hint(options, "cpu") == (
        f": resume with `avseg train --data 'my data' --config tiny --out {tmp_path / 'run'} --device cpu --amp bf16 "
        "--vggish-weights random --resume`")


def test_cli_interrupt_hint_is_one_line_with_the_device(tmp_path: Path, monkeypatch):
    """Printed without hard wraps (a copied command keeps its --resume), naming the device `auto` stood for."""
    from typer.testing import CliRunner

    import models.pipeline.train as train_module
    from avseg_cli import console
    from avseg_cli.main import app

    def interrupted(*_args, **_kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "train", interrupted)
    monkeypatch.setattr(console.err, "width", 40)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "last.pt").write_bytes(b"")
    done = CliRunner().invoke(app, ["train", "--data", str(tmp_path / "data"), "--config", "tiny", "--out",
                                    str(tmp_path / "run")])
    device = "cuda" if torch.cuda.is_available() else "cpu"
    assert done.exit_code == 130
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines == [f"interrupted: resume with `avseg train --data {tmp_path / 'data'} --config tiny --out "
                     f"{tmp_path / 'run'} --device {device} --resume`"]


def test_cli_help_fits_80_columns():
    import os

    done = subprocess.run([sys.executable, "-m", "avseg_cli", "train", "--help"], capture_output=True, text=True,
                          timeout=120, env=dict(os.environ, COLUMNS="80"))
    assert done.returncode == 0 and "--vggish-weights" in done.stdout
    assert "…" not in done.stdout, done.stdout
