"""`avseg train` and class-agnostic `avseg eval --checkpoint`: runs, checkpoints, bit-for-bit resume, errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from models.data.synthetic import make_synthetic_avsbench
from models.errors import AVSegError, UsageError
from models.pipeline.prepare import prepare_dataset
from models.pipeline.train import ResumableBatchSampler, TrainOptions, train


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


def test_existing_run_needs_resume_and_finished_run_says_so(data_dir: Path, tmp_path: Path):
    train(_options(data_dir, tmp_path / "run", max_iters=2), warn=_quiet)
    with pytest.raises(AVSegError, match="use --resume"):
        train(_options(data_dir, tmp_path / "run", max_iters=2), warn=_quiet)
    with pytest.raises(AVSegError, match="already reached iteration 2"):
        train(_options(data_dir, tmp_path / "run", max_iters=2, resume=True), warn=_quiet)
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
    random initialisation, as in the official training (`models.official.mask2former_init_state`), unless
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
