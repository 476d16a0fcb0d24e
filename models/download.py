"""Downloading one weight file safely: urllib, progress callback, checksum, temp file + rename.

`download_file(url, destination, ...)` streams the response into a temporary file next to the
destination, hashing the bytes on the way; only when the byte count and the SHA-256 (full digest or the
prefix a file name carries, like torch.hub's `vggish-10086976.pth`) match is the file renamed into place.
On any failure or interruption the temporary file is removed and nothing is left at the destination.

Offline mode (`offline=True`, `AVSEG_OFFLINE=1`, `HF_HUB_OFFLINE=1`, or `set_process_offline` as the command
line's `--offline` does) is decided by `offline_reason`; callers check it before downloading so that a missing file
fails at once with one line.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Iterator, Protocol

from models.atomic import atomic_path
from models.errors import AVSegError

OFFLINE_VARIABLES = ("AVSEG_OFFLINE", "HF_HUB_OFFLINE")
"""Environment variables that switch downloads off when set to 1 / true / yes / on."""

CHUNK_BYTES = 1 << 20
DEFAULT_TIMEOUT_S = 30.0

ProgressCallback = Callable[[int, "int | None"], None]
"""progress(bytes_done, bytes_total_or_None), called after every chunk (and once at the start)."""


class DownloadProgress(Protocol):
    """A progress display for one download: called like a `ProgressCallback`, then closed."""

    def __call__(self, done: int, total: int | None) -> None: ...

    def close(self) -> None: ...


_default_progress: Callable[[str], DownloadProgress] | None = None


def set_default_progress(factory: Callable[[str], DownloadProgress] | None) -> None:
    """Show every download that is given no `progress` callback with `factory(label)` (None: show nothing).

    The command line installs its rich byte bar here, so weights fetched deep inside a command (VGGish on
    first use) show a bar too; library users get silence unless they ask.
    """
    global _default_progress
    _default_progress = factory

urlopen = urllib.request.urlopen
"""The opener used for every download (tests replace it; nothing here touches the network otherwise)."""


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


_process_offline: str | None = None
"""Why downloads are off for the whole process (`set_process_offline`), or None."""


def set_process_offline(reason: str | None) -> None:
    """Switch downloads off for the rest of this process, `reason` being what errors cite (e.g. "--offline"),
    or back on with None (the environment variables still count)."""
    global _process_offline
    _process_offline = reason


def offline_reason(offline: bool | None = None) -> str | None:
    """Why downloads are off ("offline mode", "--offline", "AVSEG_OFFLINE is set", ...), or None when they are
    allowed."""
    if offline:
        return "offline mode"
    if _process_offline is not None:
        return _process_offline
    for variable in OFFLINE_VARIABLES:
        if _truthy(os.environ.get(variable)):
            return f"{variable} is set"
    return None


def _check_digest(url: str, digest: str, sha256: str | None, sha256_prefix: str | None) -> None:
    expected = (sha256 or sha256_prefix or "").lower()
    if expected and not digest.startswith(expected):
        raise AVSegError(
            f"checksum mismatch for {url}: expected sha256 {expected[:16]}..., got {digest[:16]}... "
            f"(a damaged or different file; nothing was kept)"
        )


@contextlib.contextmanager
def _network_errors(url: str, label: str, destination: Path) -> Iterator[None]:
    """Turn what connecting to or reading from `url` can raise into one `AVSegError` line about the download
    (an OSError from the network - refused, timed out, TLS - is no "cannot write" of the destination)."""
    try:
        yield
    except urllib.error.HTTPError as error:
        raise AVSegError(f"cannot download {label} from {url}: HTTP {error.code} {error.reason}") from error
    except http.client.IncompleteRead as error:
        early = f": the server closed the connection {error.expected} bytes early" if error.expected is not None else ""
        raise AVSegError(f"download of {label} from {url} was cut short{early}") from error
    except (OSError, http.client.HTTPException) as error:
        reason = getattr(error, "reason", None) or error
        raise AVSegError(
            f"cannot download {label} from {url}: {reason} (no network? download it yourself and put it at "
            f"{destination})"
        ) from error


def download_file(
    url: str,
    destination: str | os.PathLike,
    *,
    sha256: str | None = None,
    sha256_prefix: str | None = None,
    progress: ProgressCallback | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
    what: str | None = None,
) -> Path:
    """Download `url` to `destination` (atomically) and return the destination.

    Args:
        url: http(s) or file URL.
        destination: final path; its folder is created.
        sha256: full expected hex digest, or
        sha256_prefix: the leading hex digits of it (torch.hub file-name convention); neither = no check.
        progress: called as progress(done, total) with byte counts (total None when the server gives none);
            None = the display set by `set_default_progress`, if any.
        timeout: seconds to wait for the connection and for each read.
        what: name used in messages (default: the file name).

    Raises:
        AVSegError: network or HTTP error, truncated transfer, checksum mismatch, unwritable folder. The
            temporary file is removed in every failing case (also on KeyboardInterrupt).
    """
    destination = Path(destination)
    label = what or destination.name
    if progress is None and _default_progress is not None:
        display = _default_progress(label)
        try:
            return download_file(url, destination, sha256=sha256, sha256_prefix=sha256_prefix, progress=display,
                                 timeout=timeout, what=what)
        finally:
            display.close()
    with atomic_path(destination) as tmp:  # errors writing `tmp` (a full disk) read "cannot write <destination>"
        digest = hashlib.sha256()
        done = 0
        request = urllib.request.Request(url, headers={"User-Agent": "avseg"})
        with _network_errors(url, label, destination):
            response = urlopen(request, timeout=timeout)
        with response, open(tmp, "wb") as handle:
            length = response.headers.get("Content-Length") if getattr(response, "headers", None) else None
            total = int(length) if length and str(length).isdigit() else None
            if progress is not None:
                progress(0, total)
            while True:
                with _network_errors(url, label, destination):
                    chunk = response.read(CHUNK_BYTES)
                if not chunk:
                    break
                handle.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(done, total)
        if total is not None and done != total:
            raise AVSegError(f"download of {label} from {url} was cut short: {done} of {total} bytes received")
        _check_digest(url, digest.hexdigest(), sha256, sha256_prefix)
    return destination
