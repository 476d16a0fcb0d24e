"""What the video and audio readers and the mp4 writer share: the ffmpeg binary, input checks, PyAV open.

* The ffmpeg executable is the static build bundled with `imageio-ffmpeg` (it has libx264 and aac but
  no ffprobe); `IMAGEIO_FFMPEG_EXE` points it at another one. Probing uses PyAV (`av`) instead.
* `check_media_file` and `open_container` turn every input problem a user can cause (missing file,
  folder, empty file, not a media file, no permission) into one `AVSegError` line naming the file.
* `media_path` spells a path for ffmpeg and PyAV so that a file name is always read as a file: "12:30 take.mp4"
  would otherwise be a URL with the unknown protocol "12", and "-take.mp4" an option.
* `StderrLog` collects an ffmpeg subprocess's stderr in a temporary file (a pipe that nobody drains
  can fill up and block ffmpeg) and gives back its first and last lines for error messages.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from pathlib import Path

from models.errors import AVSegError


def ffmpeg_exe() -> str:
    """Path of the ffmpeg executable (imageio-ffmpeg's bundled build unless `IMAGEIO_FFMPEG_EXE` is set)."""
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError) as error:
        raise AVSegError(
            f"no ffmpeg executable found ({error}); install imageio-ffmpeg or set IMAGEIO_FFMPEG_EXE"
        ) from error


def subprocess_options() -> dict:
    """Extra `subprocess.Popen` arguments for ffmpeg children: their own process group / session.

    Ctrl-C in a terminal then reaches only Python, which stops (and kills) the child itself; otherwise
    a reader's ffmpeg would quit first and its early end would look like a truncated video, and a
    writer's ffmpeg would finalise a half-written output.
    """
    if os.name == "posix":
        return {"start_new_session": True}
    return {"creationflags": getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0)}


def media_path(path: str | os.PathLike) -> str:
    """`path` as ffmpeg and PyAV must be given it: a relative path gets a leading "./".

    Both read "name:rest" as a URL with the protocol "name" ("12:30 take.mp4" fails with "Protocol not found")
    and an argument starting with "-" as an option; "./12:30 take.mp4" and "./-take.mp4" are plain files.
    """
    text = os.fspath(path)
    if os.path.isabs(text) or Path(text).drive or text.startswith("./"):
        return text
    return os.path.join(os.curdir, text)


def check_media_file(path: str | os.PathLike) -> Path:
    """Return `path` as a Path if it is a non-empty file; raise one `AVSegError` line otherwise."""
    path = Path(path)
    if not path.exists():
        raise AVSegError(f"file not found: {path}")
    if path.is_dir():
        raise AVSegError(f"expected a video or audio file, found a folder: {path}")
    try:
        size = path.stat().st_size
    except OSError as error:
        raise AVSegError(f"cannot read {path}: {error.strerror or error}") from error
    if size == 0:
        raise AVSegError(f"empty file (0 bytes): {path}")
    return path


def open_container(path: str | os.PathLike):
    """Open a media file for reading with PyAV (`av.container.InputContainer`; use it as a context manager).

    Raises:
        AVSegError: the file is missing, a folder, empty, unreadable, or not a media file PyAV knows.
    """
    import av

    path = check_media_file(path)
    try:
        return av.open(media_path(path), mode="r")
    except PermissionError as error:
        raise AVSegError(f"cannot read {path}: permission denied") from error
    except (av.error.FFmpegError, OSError, ValueError) as error:
        reason = getattr(error, "strerror", None) or str(error)
        raise AVSegError(
            f"cannot read {path} as video or audio: {reason} (not a media file, or a damaged or truncated one)"
        ) from error


_CONTEXT_PREFIX = re.compile(r"^(\[[^\]]*\]\s*)+")


def start_reader(command: list[str], stderr: "StderrLog", what: str) -> subprocess.Popen:
    """Start an ffmpeg that writes to a pipe we read (stdin closed, stderr to `stderr`, own session).

    `what` completes the error message: "cannot run ffmpeg to read <what>: <reason>".
    """
    try:
        return subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr.file,
                                **subprocess_options())
    except OSError as error:
        raise AVSegError(f"cannot run ffmpeg to read {what}: {error}") from error


class StderrLog:
    """A temporary file to pass as a subprocess's stderr; `summary()` reads it back.

    Use as a context manager; the file is deleted on exit.
    """

    def __init__(self) -> None:
        self.file = tempfile.TemporaryFile(mode="w+b")

    def __enter__(self) -> "StderrLog":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def lines(self) -> list[str]:
        """All non-empty lines written so far, decoded leniently."""
        self.file.flush()
        self.file.seek(0)
        text = self.file.read().decode("utf-8", errors="replace")
        self.file.seek(0, os.SEEK_END)
        return [line.strip() for line in text.splitlines() if line.strip()]

    def summary(self, default: str = "no error message from ffmpeg") -> str:
        """First and last error lines ("first; last"; one of them when equal), for one-line messages.

        ffmpeg usually names the cause first (e.g. "invalid preset 'x'") and ends with a consequence
        ("Nothing was written into output file ...").
        """
        lines = [_CONTEXT_PREFIX.sub("", line) for line in self.lines()]
        if not lines:
            return default
        return lines[0] if lines[0] == lines[-1] else f"{lines[0]}; {lines[-1]}"

    def close(self) -> None:
        self.file.close()
