"""One avseg process at a time in a folder: an exclusive `flock` on a hidden lock file, held for a run's duration.

`avseg train` holds its run folder and `avseg eval --save-predictions` its predictions folder, so that a second
process started on the same folder (a `--resume` typed twice, two shells) is refused in one line instead of both
writing interleaved checkpoints, log lines or prediction folders. The lock is the kernel's: it goes with the
process (a killed run leaves no stale lock, at most the hidden empty file, which nothing else reads). The file is
removed when the lock is released. Where `fcntl` is missing (Windows) there is no locking.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

from models.errors import AVSegError

try:
    import fcntl
except ImportError:  # pragma: no cover - not on POSIX
    fcntl = None

LOCK_NAME = ".avseg.lock"
"""The lock file's name in the locked folder (hidden: `top_level_entries` and listings of outputs skip it)."""

_held: dict[str, int] = {}
"""Folders this process holds (real path -> depth): taking one again (nested calls) does not lock it twice."""


def is_lock_file(name: str) -> bool:
    return name == LOCK_NAME


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
    folder = Path(folder)
    key = os.path.realpath(folder)
    if fcntl is None:
        yield
        return
    if key in _held:
        _held[key] += 1
        try:
            yield
        finally:
            _held[key] -= 1
        return
    path = folder / LOCK_NAME
    fd = _acquire(path, folder, command)
    if fd is None:  # the lock file cannot be made (a read-only folder): the command reports what it cannot write
        yield
        return
    _held[key] = 1
    try:
        yield
    finally:
        del _held[key]
        with contextlib.suppress(OSError):
            path.unlink()  # still held: a process that opened this file now finds it gone and tries again
        os.close(fd)


def _acquire(path: Path, folder: Path, command: str) -> int | None:
    for _ in range(20):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _recorded_pid(fd)
            os.close(fd)
            other = f" (pid {pid})" if pid else ""
            raise AVSegError(f"another avseg {command} is using {folder}{other}: wait for it to finish, or use "
                             "another folder") from None
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
