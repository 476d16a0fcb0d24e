"""Where weights live: one cache folder, known file names, and clear messages when a file is missing.

Cache folder: `$AVSEG_CACHE`, default `~/.cache/avseg`. Nothing here downloads yet; every lookup that
fails names the file, the URL to fetch it from and the folder to put it in.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from models.errors import AVSegError


@dataclass(frozen=True)
class WeightFile:
    """A named weight file: where it comes from and what it is called in the cache."""

    name: str
    filename: str
    url: str
    sha256_prefix: str | None = None
    description: str = ""


VGGISH = WeightFile(
    name="vggish",
    filename="vggish-10086976.pth",
    url="https://github.com/harritaylor/torchvggish/releases/download/v0.1/vggish-10086976.pth",
    sha256_prefix="10086976",
    description="VGGish audio network (torchvggish port of the TensorFlow release), 128-d embeddings",
)


def cache_dir() -> Path:
    """`$AVSEG_CACHE` or `~/.cache/avseg`."""
    return Path(os.environ.get("AVSEG_CACHE") or Path.home() / ".cache" / "avseg").expanduser()


def find_weight(weight: WeightFile, explicit: str | os.PathLike | None = None) -> Path:
    """The path of a weight file: `explicit` if given, else the avseg cache, else torch.hub's cache.

    Raises one `AVSegError` saying where to get the file and where to put it.
    """
    if explicit is not None:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise AVSegError(f"{weight.name} weights not found: {path}")
        return path
    candidates = [cache_dir() / weight.filename]
    torch_home = Path(os.environ.get("TORCH_HOME") or Path.home() / ".cache" / "torch").expanduser()
    candidates.append(torch_home / "hub" / "checkpoints" / weight.filename)
    for path in candidates:
        if path.is_file():
            return path
    raise AVSegError(
        f"{weight.name} weights not found: download {weight.url} into {candidates[0]} "
        f"(or pass the file's path explicitly)"
    )
