"""One avseg process at a time in a folder: an exclusive `flock` on a hidden lock file, held for a run's duration.

`avseg train` holds its run folder and `avseg eval --save-predictions` its predictions folder, so that a second
process started on the same folder (a `--resume` typed twice, two shells) is refused in one line instead of both
writing interleaved checkpoints, log lines or prediction folders. `avseg annotate` holds one video's outputs in
its output folder (`output_lock`): batch scripts may annotate different videos into one folder at once, but two
runs on the same video (with other settings, say) cannot mix their overlay, masks and JSON. The lock is the
kernel's: it goes with the process (a killed run leaves no stale lock, at most the hidden empty file, which
nothing else reads). The file is removed when the lock is released. Where `fcntl` is missing (Windows) there is
no locking.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Callable, Iterator

from models.atomic import hidden_name
from models.errors import AVSegError

try:
    import fcntl
except ImportError:  # pragma: no cover - not on POSIX
    fcntl = None

LOCK_NAME = ".avseg.lock"
"""The lock file's name in the locked folder (hidden: `top_level_entries` and listings of outputs skip it)."""

_held: dict[str, int] = {}
"""Lock files this process holds (real folder path / name -> depth): taking one again (nested calls) does not lock
it twice."""


_OUTPUT_LOCK_SUFFIX = ".avseg.lock"
"""The end of every lock file's name: `LOCK_NAME` itself, and ".<output name>.avseg.lock" (`output_lock`)."""


def is_lock_file(name: str) -> bool:
    return name.startswith(".") and name.endswith(_OUTPUT_LOCK_SUFFIX)


def _recorded_pid(fd: int) -> str | None:
    with contextlib.suppress(OSError, ValueError):
        text = os.pread(fd, 32, 0).decode("ascii").strip()
        if text.isdigit():
            return text
    return None


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, command: str) -> Iterator[None]:
    """Hold `folder` (it exists) for this process for the block; `AVSegError` when another process holds it:
    "another avseg COMMAND is using FOLDER (pid N): wait for it to finish, or use another folder"."""
    def busy(pid: str) -> str:
        return f"another avseg {command} is using {folder}{pid}: wait for it to finish, or use another folder"

    with _lock(Path(folder), LOCK_NAME, busy):
        yield


@contextlib.contextmanager
def output_lock(output: str | os.PathLike, command: str, subject: str) -> Iterator[bool]:
    """Hold the outputs named by `output` (a file or folder to be written; its folder exists) for the block, by a
    hidden ".<name>.avseg.lock" beside it; `AVSegError` when another process holds them: "another avseg COMMAND
    is writing SUBJECT (pid N): wait for it to finish". Yields whether they are held: False where no lock can be
    taken (no `fcntl`, a file system without `flock`, a lock file that cannot be made or opened), so that the
    caller does not treat what it finds beside them as its own."""
    def busy(pid: str) -> str:
        return f"another avseg {command} is writing {subject}{pid}: wait for it to finish"

    output = Path(output)
    with _lock(output.parent, hidden_name(output.name, len(_OUTPUT_LOCK_SUFFIX)) + _OUTPUT_LOCK_SUFFIX, busy) as held:
        yield held


@contextlib.contextmanager
def _lock(folder: Path, name: str, busy: Callable[[str], str]) -> Iterator[bool]:
    """Hold `folder / name` (yields True, or False where no lock can be taken); `busy(" (pid N)" or "")` is the
    refusal when another process holds it."""
    key = os.path.join(os.path.realpath(folder), name)
    if fcntl is None:
        yield False
        return
    if key in _held:
        _held[key] += 1
        try:
            yield True
        finally:
            _held[key] -= 1
        return
    path = folder / name
    fd = _acquire(path, busy)
    if fd is None:  # the lock file cannot be made (a read-only folder): the command reports what it cannot write
        yield False
        return
    _held[key] = 1
    try:
        yield True
    finally:
        del _held[key]
        with contextlib.suppress(OSError):
            path.unlink()  # still held: a process that opened this file now finds it gone and tries again
        os.close(fd)


def _acquire(path: Path, busy: Callable[[str], str]) -> int | None:
    for _ in range(20):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except PermissionError:  # another user's lock file in a shared folder: flock needs no write access
            try:
                fd = os.open(path, os.O_RDONLY)
            except OSError:
                return None
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _recorded_pid(fd)
            os.close(fd)
            raise AVSegError(busy(f" (pid {pid})" if pid else "")) from None
        except OSError:  # a file system without flock: no locking
            os.close(fd)
            return None
        try:  # the holder that removed the file released it: lock the file that is there now
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except OSError:
            same = False
        if not same:
            os.close(fd)
            continue
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        return fd
    return None
