"""Our training checkpoints: atomic save, weights_only load with clear errors, RNG state round trips."""

from __future__ import annotations

import errno
import os
import random
import re
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from models import checkpoint as ckpt
from models.errors import AVSegError

torch.set_num_threads(1)


@dataclass(frozen=True)
class _Cfg:
    name: str = "tiny"
    hidden_dim: int = 32
    short_sides: tuple[int, ...] = (240, 360)


def _train_state(seed: int = 0) -> dict:
    """A realistic checkpoint: a model, AdamW after one step, a LambdaLR, a config, the RNG state."""
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: 0.1 if it > 5 else 1.0)
    model(torch.randn(2, 4)).sum().backward()
    optimizer.step()
    scheduler.step()
    return {
        "avseg_format": ckpt.CHECKPOINT_FORMAT, "kind": "train", "config": asdict(_Cfg()), "config_name": "tiny",
        "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
        "iteration": 17, "rng": ckpt.capture_rng_state(), "extra": {"note": "x", "losses": [0.5, 0.25]},
    }


def _assert_same(a, b) -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    elif isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b)
        for key in a:
            _assert_same(a[key], b[key])
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b)
        for x, y in zip(a, b):
            _assert_same(x, y)
    else:
        assert a == b and type(a) is type(b)


# ----------------------------------------------------------------------------------------- save/load
def test_round_trip_and_plain_weights_only(tmp_path: Path):
    state = _train_state()
    path = tmp_path / "run" / "last.pt"  # the folder is created
    ckpt.save_checkpoint(path, state)
    loaded = ckpt.load_checkpoint(path)
    _assert_same(state, loaded)
    # Independent check: plain torch.load with weights_only=True reads it (no allowlists needed).
    _assert_same(state, torch.load(path, map_location="cpu", weights_only=True))
    assert loaded["config"]["short_sides"] == (240, 360)
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.pt"]  # no temporary files left


def test_overwrite_replaces_previous(tmp_path: Path):
    path = tmp_path / "last.pt"
    first, second = _train_state(0), _train_state(1)
    second["iteration"] = 18
    ckpt.save_checkpoint(path, first)
    ckpt.save_checkpoint(path, second)
    assert ckpt.load_checkpoint(path)["iteration"] == 18
    _assert_same(second["model"], ckpt.load_checkpoint(path)["model"])


def test_disk_full_keeps_previous_file(tmp_path: Path, monkeypatch):
    path = tmp_path / "last.pt"
    old = _train_state(0)
    ckpt.save_checkpoint(path, old)
    before = path.read_bytes()

    def half_then_enospc(obj, handle, *args, **kwargs):
        handle.write(before[: len(before) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", half_then_enospc)
    with pytest.raises(AVSegError) as info:
        ckpt.save_checkpoint(path, _train_state(1))
    message = str(info.value)
    assert str(path) in message and "No space left on device" in message and "\n" not in message
    monkeypatch.undo()
    assert path.read_bytes() == before
    _assert_same(old, ckpt.load_checkpoint(path))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # the half-written temporary is gone


def test_read_only_rename_failure(tmp_path: Path, monkeypatch):
    path = tmp_path / "model_0000100.pt"

    def refuse(src, dst):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(AVSegError, match="Read-only file system") as info:
        ckpt.save_checkpoint(path, _train_state())
    assert str(path) in str(info.value)
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "entry, where",
    [(np.zeros(3), "['extra']['bad']"), (np.float64(1.5), "['extra']['bad']"), (Path("/x"), "['extra']['bad']"),
     (_Cfg(), "['extra']['bad']"), ([1, {"deep": np.int64(2)}], "['extra']['bad'][1]['deep']")],
)
def test_unstorable_values_are_refused_before_writing(tmp_path: Path, entry, where):
    state = _train_state()
    state["extra"]["bad"] = entry
    path = tmp_path / "last.pt"
    with pytest.raises(TypeError) as info:
        ckpt.save_checkpoint(path, state)
    assert where in str(info.value)
    assert not path.exists() and list(tmp_path.iterdir()) == []


def test_save_requires_avseg_dict(tmp_path: Path):
    with pytest.raises(ValueError):
        ckpt.save_checkpoint(tmp_path / "x.pt", {"model": {}})


def test_load_missing_and_folder(tmp_path: Path):
    with pytest.raises(AVSegError, match="not found") as info:
        ckpt.load_checkpoint(tmp_path / "nope.pt")
    assert str(tmp_path / "nope.pt") in str(info.value)
    with pytest.raises(AVSegError, match="folder"):
        ckpt.load_checkpoint(tmp_path)
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(AVSegError, match="empty"):
        ckpt.load_checkpoint(tmp_path / "empty.pt")


def test_load_truncated_and_random_bytes(tmp_path: Path):
    good = tmp_path / "good.pt"
    ckpt.save_checkpoint(good, _train_state())
    data = good.read_bytes()
    for name, content in [("truncated.pt", data[: len(data) // 2]), ("head.pt", data[:100]),
                          ("random.pt", np.random.default_rng(3).bytes(4096)), ("text.pt", b"hello world\n")]:
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(AVSegError) as info:
            ckpt.load_checkpoint(path)
        message = str(info.value)
        assert "corrupt" in message and str(path) in message and "\n" not in message and len(message) < 400


def damaged_files(tmp_path: Path, good: bytes) -> dict[Path, str]:
    """Damaged weights files (fixed seeds) -> the plain reason their error message must give."""
    rng = np.random.default_rng(7)
    files = {
        # LONG_BINGET of a memo slot that does not exist: torch raised "KeyError: 3700098262"
        "memo.pt": (b"j" + (3700098262).to_bytes(4, "little") + rng.bytes(64), "not a PyTorch file"),
        "empty.pt": (b"", "empty (0 bytes"),
        "truncated.pt": (good[: len(good) // 2], "a zip archive that is not a readable PyTorch file"),
        "head.pt": (good[:100], "a zip archive that is not a readable PyTorch file"),
        **{f"random{seed}.pt": (np.random.default_rng(seed).bytes(size), "not a PyTorch file")
           for seed, size in ((0, 1), (1, 7), (2, 100), (3, 4096), (4, 4096), (5, 65536))},
    }
    for name, (content, _) in files.items():
        (tmp_path / name).write_bytes(content)
    return {tmp_path / name: reason for name, (_, reason) in files.items()}


def assert_plain_message(message: str, path: Path, reason: str) -> None:
    """One line that names the file and says what is wrong, without torch's internals."""
    assert str(path) in message and "\n" not in message, message
    rest = message.replace(str(path), "")
    assert reason in rest, message
    assert not re.search(r"[A-Za-z]*(Error|Exception)\b", rest), message  # no "KeyError", "UnpicklingError"
    assert not re.search(r"\d{2,}", rest), message  # no bare numbers (memo slots, opcodes)
    for internal in ("operand", "PytorchStreamReader", "Weights only", "magic"):
        assert internal not in rest, message


def test_damaged_files_give_a_plain_reason(tmp_path: Path):
    from models.checkpoint_parts import read_checkpoint_parts

    good = tmp_path / "good.pt"
    ckpt.save_checkpoint(good, _train_state())
    for path, reason in damaged_files(tmp_path, good.read_bytes()).items():
        for read in (ckpt.load_checkpoint, read_checkpoint_parts):  # `avseg train --resume`, `--checkpoint`
            with pytest.raises(AVSegError) as info:
                read(path)
            assert_plain_message(info.value.message, path, reason)


def test_damaged_checkpoint_on_the_command_line_is_one_line(tmp_path: Path):
    path = tmp_path / "corrupt.pt"
    path.write_bytes(b"j" + (3700098262).to_bytes(4, "little") + np.random.default_rng(7).bytes(64))
    result = subprocess.run(
        [sys.executable, "-m", "avseg_cli", "weights", "convert", str(path), str(tmp_path / "out.pt")],
        cwd=Path(__file__).resolve().parents[1], env=dict(os.environ, COLUMNS="300"), capture_output=True,
        text=True, timeout=120,
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: cannot read checkpoint "), result.stderr
    assert_plain_message(lines[0], path, "not a PyTorch file (corrupt or truncated?)")
    assert not (tmp_path / "out.pt").exists()


class _Sneaky:
    """An object whose unpickling would run a shell command."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def test_code_carrying_pickle_is_refused(tmp_path: Path):
    pwned = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"avseg_format": 1, "model": {}, "payload": _Sneaky(pwned)}, path)
    with pytest.raises(AVSegError, match="not a plain weights file") as info:
        ckpt.load_checkpoint(path)
    assert "system" in str(info.value) and str(path) in str(info.value)
    assert not pwned.exists()


def test_foreign_and_newer_files(tmp_path: Path):
    path = tmp_path / "foreign.pt"
    torch.save({"state_dict": {"w": torch.ones(1)}, "epoch": 3}, path)
    with pytest.raises(AVSegError, match=r"not an avseg checkpoint: .*found keys state_dict, epoch"):
        ckpt.load_checkpoint(path)
    torch.save(torch.ones(3), path)
    with pytest.raises(AVSegError, match="not an avseg checkpoint.*Tensor"):
        ckpt.load_checkpoint(path)
    state = _train_state()
    state["avseg_format"] = ckpt.CHECKPOINT_FORMAT + 1
    torch.save(state, path)
    with pytest.raises(AVSegError, match="newer avseg"):
        ckpt.load_checkpoint(path)
    state["avseg_format"] = 1
    del state["model"]
    torch.save(state, path)
    with pytest.raises(AVSegError, match="without model weights"):
        ckpt.load_checkpoint(path)


# ----------------------------------------------------------------------------------------------- RNG
def _draws() -> tuple:
    return (random.random(), random.gauss(0, 1), random.randrange(10**9),
            np.random.standard_normal(3).tolist(), np.random.randint(0, 10**6, 4).tolist(),
            torch.rand(3).tolist(), torch.randn(2).tolist(), torch.randperm(10).tolist())


def test_rng_capture_restore_repeats_draws():
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    random.gauss(0, 1)  # leaves a cached second Gaussian in python's generator
    np.random.standard_normal()  # and in numpy's legacy generator
    state = ckpt.capture_rng_state()
    first = _draws()
    _draws()
    ckpt.restore_rng_state(state)
    assert _draws() == first
    ckpt.check_storable(state)  # plain data only


def test_rng_state_survives_checkpoint_file(tmp_path: Path):
    random.seed(5)
    np.random.seed(6)
    torch.manual_seed(7)
    checkpoint = _train_state()
    checkpoint["rng"] = ckpt.capture_rng_state()
    expected = _draws()
    ckpt.save_checkpoint(tmp_path / "last.pt", checkpoint)
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    ckpt.restore_rng_state(ckpt.load_checkpoint(tmp_path / "last.pt")["rng"])
    assert _draws() == expected


def test_rng_restore_rejects_damaged_state():
    state = ckpt.capture_rng_state()
    del state["numpy"]
    with pytest.raises(AVSegError, match="random-generator state"):
        ckpt.restore_rng_state(state)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_rng_restore():
    torch.cuda.manual_seed_all(11)
    torch.rand(1, device="cuda")  # initialise CUDA
    state = ckpt.capture_rng_state()
    assert len(state["cuda"]) == torch.cuda.device_count()
    first = torch.rand(5, device="cuda").cpu()
    torch.rand(5, device="cuda")
    ckpt.restore_rng_state(state)
    assert torch.equal(torch.rand(5, device="cuda").cpu(), first)


def test_temporary_names_of_atomic_writes_map_back_to_their_destination(tmp_path):
    """What the stale-temporary clean-ups of `train` and `eval --save-predictions` rely on."""
    from models.atomic import atomic_dir, atomic_path, temporary_target

    seen = []
    for name in ("model_0000002.pt", "log.jsonl", "last.pt", "a.b.c"):
        with atomic_path(tmp_path / name) as tmp:
            seen.append((temporary_target(tmp.name), name))
            tmp.write_bytes(b"x")
    for name in ("vid_0_10000", "-dash.and.dots"):
        with atomic_dir(tmp_path / name) as tmp:
            seen.append((temporary_target(tmp.name), name))
    assert all(found == name for found, name in seen), seen
    for other in ("last.pt", ".last.pt", ".last.pt.old-123", ".vid.tmp", ".last.pt.a-b.tmp.pt", "x.abcd1234.tmp",
                  ".last.pt.backup.tmp.pt"):  # tempfile adds 8 random characters, not 6
        assert temporary_target(other) is None, other


def test_atomic_dir_replaces_a_folder_but_never_a_file_in_its_way(tmp_path):
    from models.atomic import atomic_dir

    folder = tmp_path / "clip.masks"
    folder.mkdir()
    (folder / "old.png").write_bytes(b"old")
    with atomic_dir(folder) as tmp:
        (tmp / "0.png").write_bytes(b"new")
    assert sorted(p.name for p in folder.iterdir()) == ["0.png"] and sorted(os.listdir(tmp_path)) == ["clip.masks"]
    mine = tmp_path / "notes.masks"
    mine.write_text("the user's file")
    ran = []
    with pytest.raises(AVSegError, match=r"cannot write folder .*notes.masks: a file of that name is in the way"):
        with atomic_dir(mine):
            ran.append(True)
    assert not ran and mine.read_text() == "the user's file"
    assert sorted(os.listdir(tmp_path)) == ["clip.masks", "notes.masks"]  # nothing moved aside, nothing left


@pytest.mark.parametrize("name", ["v" * 245 + ".avseg.mp4", "é" * 120 + ".json", "m" * 249 + ".masks",
                                  "v" * 240 + ".vidéo"])  # a suffix of more bytes than characters
def test_atomic_writes_of_names_near_the_length_limit(tmp_path, name):
    """A destination name that fits the file system (255 bytes) is written, replaced and cleaned up although its
    temporary and set-aside names (".<name>.<random>.tmp<suffix>", ".<name>.old-<pid>") would not fit uncut."""
    from models.atomic import atomic_dir, atomic_path

    assert len(os.fsencode(name)) <= 255
    target = tmp_path / name
    if name.endswith(".masks"):
        for content in (b"first", b"second"):
            with atomic_dir(target) as tmp:
                assert len(os.fsencode(tmp.name)) <= 255
                (tmp / "0.png").write_bytes(content)
        assert (target / "0.png").read_bytes() == b"second"
    else:
        for content in (b"first", b"second"):
            with atomic_path(target) as tmp:
                assert len(os.fsencode(tmp.name)) <= 255 and tmp.name.startswith(".")
                tmp.write_bytes(content)
        assert target.read_bytes() == b"second"
    assert os.listdir(tmp_path) == [name]
    with pytest.raises(KeyboardInterrupt):  # an interrupted write leaves nothing either
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"partial")
            raise KeyboardInterrupt
    assert os.listdir(tmp_path) == [name]
