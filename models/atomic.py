"""Write files so that a reader never sees a half-written one and nothing the user had is lost.

Every output goes to a temporary name in the destination folder and is renamed into place only when
complete (`os.replace` is atomic on one file system). On any error the temporary file is removed and
the previous file, if any, is untouched.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import IO, Iterator

from models.errors import AVSegError


def _default_mode(directory: bool = False) -> int:
    """Permissions a normally created file (0o666) or folder (0o777) gets under the current umask."""
    mask = os.umask(0)
    os.umask(mask)
    return (0o777 if directory else 0o666) & ~mask


def _describe_os_error(path: Path, error: OSError) -> str:
    reason = error.strerror or str(error)
    return f"cannot write {path}: {reason}"


_TEMPORARY_NAME = re.compile(r"\.(?P<target>.+)\.[a-z0-9_]{8}\.tmp(?P<suffix>\.[^.]*)?")
"""A temporary name of `atomic_path` / `atomic_dir`: "." + destination name + "." + tempfile's 8 random characters
+ ".tmp" (+ the destination's suffix for files)."""


_NAME_MAX = 255
"""Bytes in one file name on the common file systems (ext4, XFS, btrfs, APFS, NTFS in UTF-16 units)."""


def hidden_name(name: str, reserved: int) -> str:
    """"." + `name`, cut so that `reserved` more bytes still fit in one file name: the temporary and
    set-aside names of a destination whose own name is near the limit (a 240-character video title) would be
    refused with "File name too long". A cut name no longer maps back with `temporary_target` (an interrupted
    write of such a file is not cleaned up by the next run)."""
    budget = _NAME_MAX - 1 - reserved
    encoded = os.fsencode(name)
    if len(encoded) > budget:  # cut at a character boundary where the name is UTF-8
        name = encoded[:budget].decode("utf-8", "ignore") if _is_utf8(encoded) else os.fsdecode(encoded[:budget])
    return "." + name


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def temporary_target(name: str) -> str | None:
    """The destination name whose interrupted atomic write left the temporary file or folder `name`
    (".model_0000002.pt.k3j2h1x0.tmp.pt" -> "model_0000002.pt"), or None for any other name."""
    match = _TEMPORARY_NAME.fullmatch(name)
    return match.group("target") if match else None


_SET_ASIDE_NAME = re.compile(r"\.(?P<target>.+)\.old-(?P<pid>[0-9]+)")
"""A folder `atomic_dir` moved aside while putting its new one in place: "." + name + ".old-" + process id."""


def clear_interrupted_writes(folder: str | os.PathLike, names: set[str]) -> list[tuple[Path, str]]:
    """Tidy what interrupted atomic writes of `folder / name` (for `name` in `names`) left in `folder`.

    Their temporaries are deleted: a file named as `atomic_path` names them (with the destination's suffix) or a
    folder named as `atomic_dir` does. A folder `atomic_dir` had moved aside, by a process that is no longer
    running, is deleted where a folder of its name is in place, or else put back. Only for outputs no other
    process is writing now (the caller holds them). Returns (path, "removed" or "put back") for what it did.
    """
    folder = Path(folder)
    tidied: list[tuple[Path, str]] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return tidied
    for entry in entries:
        path = Path(entry.path)
        temporary = _TEMPORARY_NAME.fullmatch(entry.name)
        if temporary is not None and temporary.group("target") in names:
            target, suffix = temporary.group("target"), temporary.group("suffix")
            # a folder's has no suffix, a file's the destination's (`atomic_path` with its default suffix)
            expected = suffix is None if _is_real_dir(path) else (suffix or "") == Path(target).suffix
            if expected and _remove(path):
                tidied.append((path, "removed"))
            continue
        set_aside = _SET_ASIDE_NAME.fullmatch(entry.name)
        if (set_aside is None or set_aside.group("target") not in names or not _is_real_dir(path)
                or _process_exists(int(set_aside.group("pid")))):
            continue
        target = folder / set_aside.group("target")
        if target.exists() or target.is_symlink():
            if _remove(path):
                tidied.append((path, "removed"))
        else:
            with contextlib.suppress(OSError):
                os.rename(path, target)
                tidied.append((path, "put back"))
    return tidied


def _is_real_dir(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink()


def _process_exists(pid: int) -> bool:
    if pid == os.getpid():
        return False  # this process's own: left by an earlier call that was interrupted
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OverflowError, OSError):
        return True  # another user's process (PermissionError), or cannot tell: left alone
    return True


def _remove(path: Path) -> bool:
    try:
        if _is_real_dir(path):
            shutil.rmtree(path)
        else:
            path.unlink()
    except OSError:
        return False
    return True


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it to `path` when the block succeeds.

    Args:
        path: final destination.
        suffix: last suffix of the temporary name (default: the destination's, so tools that look at
            the extension, like ffmpeg or PIL, see the right one).
    """
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tail = ".tmp" + (path.suffix if suffix is None else suffix)
        fd, tmp_name = tempfile.mkstemp(prefix=hidden_name(path.name, 9 + len(os.fsencode(tail))) + ".", suffix=tail,
                                        dir=parent)  # bytes: a suffix may be ".vidéo"
        os.close(fd)
    except OSError as error:
        raise AVSegError(_describe_os_error(path, error)) from error
    tmp = Path(tmp_name)
    try:
        yield tmp
        if tmp.exists():
            os.chmod(tmp, _default_mode())  # mkstemp makes 0600 files; outputs get normal permissions
        os.replace(tmp, path)
    except OSError as error:
        tmp.unlink(missing_ok=True)
        raise AVSegError(_describe_os_error(path, error)) from error
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """Open a temporary file for writing; it replaces `path` only if the block completes."""
    if "b" in mode:
        encoding = None
    with atomic_path(path) as tmp:
        try:
            with open(tmp, mode, encoding=encoding) as handle:
                yield handle
        except OSError as error:
            raise AVSegError(_describe_os_error(Path(path), error)) from error


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def json_dumps(data: object, **options: object) -> str:
    """`json.dumps(data, ensure_ascii=False, **options)` that can always be saved as UTF-8.

    A file name that is not UTF-8 ("caf\\xe9.mp4" from an old Latin-1 archive) is a str with lone surrogates in
    Python (`os.fsdecode`), which UTF-8 cannot encode; they are written as "\\udce9" escapes instead, so the JSON
    stays valid and `json.loads` gives back the same name (and `os.fsencode` its bytes).
    """
    text = json.dumps(data, ensure_ascii=False, **options)
    return _LONE_SURROGATE.sub(lambda match: f"\\u{ord(match.group()):04x}", text)


def write_json(path: str | os.PathLike, data: object, indent: int | None = 2) -> None:
    """Write `data` as JSON atomically (`json_dumps`: file names that are not UTF-8 too)."""
    with atomic_open(path) as handle:
        handle.write(json_dumps(data, indent=indent) + "\n")


def write_jsonl(path: str | os.PathLike, rows: list[dict]) -> None:
    """Write one JSON object per line atomically."""
    with atomic_open(path) as handle:
        for row in rows:
            handle.write(json_dumps(row) + "\n")


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder next to `path`; it replaces `path` only when the block succeeds.

    An existing folder at `path` is moved aside and deleted only after the new one is in place; anything else
    there (a file of the user's) is refused before the block runs, and left as it is.
    """
    path = Path(path)
    if (path.exists() or path.is_symlink()) and not path.is_dir():
        raise AVSegError(f"cannot write folder {path}: a file of that name is in the way (move or rename it)")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=hidden_name(path.name, 13) + ".", suffix=".tmp", dir=path.parent))
    except OSError as error:
        raise AVSegError(_describe_os_error(path, error)) from error
    try:
        yield tmp
        os.chmod(tmp, _default_mode(directory=True))
        _swap_in(tmp, path)
    except OSError as error:
        shutil.rmtree(tmp, ignore_errors=True)
        raise AVSegError(_describe_os_error(path, error)) from error
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _swap_in(tmp: Path, path: Path, attempts: int = 20) -> None:
    """Rename the finished folder `tmp` to `path`, moving a folder there aside first and deleting it afterwards.

    Another process may write the same folder at the same moment (two runs of one command on one video): the folder
    it moves aside can vanish under this one, or its folder can appear at `path` between this one's two renames. The
    later rename wins (each folder is complete); a folder moved aside is put back if this one cannot be put in place.
    """
    old_tail = f".old-{os.getpid()}"
    old = path.with_name(hidden_name(path.name, len(old_tail)) + old_tail)
    for attempt in range(attempts):
        moved = False
        if path.exists():
            try:
                os.replace(path, old)
                moved = True
            except FileNotFoundError:  # another process moved it aside in between
                pass
        try:
            os.replace(tmp, path)
        except OSError as error:
            if error.errno in (errno.ENOTEMPTY, errno.EEXIST) and attempt + 1 < attempts:
                if moved:  # another process put its folder in place in between: replace that one too
                    shutil.rmtree(old, ignore_errors=True)
                continue
            if moved and not path.exists():
                with contextlib.suppress(OSError):
                    os.replace(old, path)  # nothing the user had is lost
            elif moved:
                shutil.rmtree(old, ignore_errors=True)
            raise
        if moved:
            shutil.rmtree(old, ignore_errors=True)
        return
