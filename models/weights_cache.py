"""The avseg cache folder and the weight files in it: finding, checking and downloading them.

`cache_dir` is `$AVSEG_CACHE` (default `~/.cache/avseg`). `cached_path` / `find_weight` look a registry entry up
on this machine without network, `cached_file_problem` tells a damaged copy, and `ensure_weight` /
`fetch_weight` download what is missing (URL weights here, open_clip ones via `models.clip_weights`, Hugging
Face folders via `models.hub_models`), or fail with one line saying where to get the file and put it.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Callable, Iterator

from models.errors import AVSegError
from models.weights_registry import REGISTRY, SOURCE_HF, SOURCE_MANUAL, SOURCE_OPEN_CLIP, SOURCE_URL, WeightFile


def cache_dir() -> Path:
    """`$AVSEG_CACHE` or `~/.cache/avseg`, as an absolute path.

    Raises:
        AVSegError: the path is a file (or lies under one), so nothing could ever be cached there.
    """
    path = Path(os.environ.get("AVSEG_CACHE") or Path.home() / ".cache" / "avseg").expanduser().absolute()
    for candidate in (path, *path.parents):
        if candidate.exists():
            if not candidate.is_dir():
                where = "is a file" if candidate == path else f"lies under {candidate}, which is a file"
                raise AVSegError(f"the avseg cache folder {path} {where} (set AVSEG_CACHE to a folder)")
            break
    return path


def _torch_hub_checkpoints() -> Path:
    torch_home = Path(os.environ.get("TORCH_HOME") or Path.home() / ".cache" / "torch").expanduser()
    return torch_home / "hub" / "checkpoints"


def _where_to_get(weight: WeightFile) -> str:
    if weight.source == SOURCE_MANUAL:
        return f"get it from {weight.url} ({weight.manual_note})"
    return f"download {weight.url}"


def find_weight(weight: WeightFile, explicit: str | os.PathLike | None = None) -> Path:
    """The path of a weight file: `explicit` if given, else the avseg cache, else torch.hub's cache.

    Never downloads. Raises one `AVSegError` saying where to get the file and where to put it.
    For SOURCE_HF entries the path is a model FOLDER (`explicit` too: a `save_pretrained` folder).
    """
    if weight.source == SOURCE_HF:
        from models.hub_models import check_model_folder, hub_missing_message

        if explicit is not None:
            return check_model_folder(weight, explicit)
        path = cached_path(weight)
        if path is None:
            raise AVSegError(hub_missing_message(weight, None))
        return path
    if explicit is not None:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise AVSegError(f"{weight.name} weights not found: {path}")
        return path
    path = cached_path(weight)
    if path is not None:
        return path
    raise AVSegError(
        f"{weight.name} weights not found: {_where_to_get(weight)} into {cache_dir() / weight.filename} "
        f"(or pass the file's path explicitly)"
    )


def cached_path(weight: WeightFile) -> Path | None:
    """Where the weight already is on this machine (avseg cache, torch.hub cache, Hugging Face cache), or None.

    Never touches the network. SOURCE_HF entries: the model folder (`models.hub_models.cached_hub_model`).
    """
    if weight.source == SOURCE_HF:
        from models.hub_models import cached_hub_model

        return cached_hub_model(weight)
    candidates = [cache_dir() / weight.filename]
    if weight.source == SOURCE_URL:
        candidates.append(_torch_hub_checkpoints() / weight.filename)
    for path in candidates:
        if path.is_file():
            return path
    if weight.source == SOURCE_OPEN_CLIP:
        from models.clip_weights import open_clip_cached_file

        return open_clip_cached_file(weight.clip_model or "", weight.clip_tag or "")
    return None


def checkpoint_path(value: str | os.PathLike) -> Path:
    """A `--checkpoint` argument as a file: the path itself, or, for the name of an official checkpoint that is
    not a path here (`ovavss-r50`, `ovavss-swinb`), its copy in the avseg cache.

    Raises:
        AVSegError: such a name without the file in the cache: where to get it and where to put it.
        UsageError: a path that does not exist with the file name of an official checkpoint
            (`model_ov_avss_r50.pth`): the registry name that finds the cached copy, or where to get it.
    """
    path = Path(value).expanduser()
    weight = REGISTRY.get(str(value))
    if not path.exists() and weight is None:
        _refuse_missing_official_file(path)
    if path.exists() or weight is None or weight.source != SOURCE_MANUAL:
        return path
    cached = cached_path(weight)
    if cached is None:
        raise AVSegError(f"{weight.name}: {weight.filename} is not in the avseg cache; {_where_to_get(weight)} and "
                         f"put it at {cache_dir() / weight.filename}")
    problem = cached_file_problem(weight, cached)
    if problem is not None:
        raise AVSegError(f"{weight.name}: the cached {cached} is damaged ({problem}); {_where_to_get(weight)}")
    return cached


def _refuse_missing_official_file(path: Path) -> None:
    """A UsageError for a missing `path` named like an official checkpoint, saying how avseg finds that file."""
    from models.errors import UsageError

    for weight in REGISTRY.values():
        if weight.source == SOURCE_MANUAL and path.name == weight.filename:
            if cached_path(weight) is not None:
                how = f"a copy is in the avseg cache: use --checkpoint {weight.name}"
            else:
                how = (f"{_where_to_get(weight)}, then give its path, or put it at {cache_dir() / weight.filename} "
                       f"and use --checkpoint {weight.name}")
            raise UsageError(f"checkpoint not found: {path} ({how})")


TOO_SMALL_FRACTION = 0.5
"""A cached file under this fraction of the weight's approximate size is taken for a damaged one."""


def cached_file_problem(weight: WeightFile, path: Path, check_hash: bool = False) -> str | None:
    """Why the cached copy `path` of `weight` cannot be the right file, or None: far smaller than the weight
    (an interrupted copy, an empty file) or, with `check_hash` and a known SHA-256, another content (this reads
    the whole file). A cheap check for every use; the hash for `avseg weights fetch`."""
    if weight.source == SOURCE_HF or not path.is_file():
        return None
    size = path.stat().st_size
    if weight.approx_size_mb and size < TOO_SMALL_FRACTION * weight.approx_size_mb * 1_000_000:
        return f"it is {size:,} byte{'' if size == 1 else 's'}, the weights are about {weight.approx_size_mb} MB"
    expected = (weight.sha256 or weight.sha256_prefix or "").lower()
    if check_hash and expected:
        import hashlib

        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        if not digest.hexdigest().startswith(expected):
            return f"its SHA-256 starts {digest.hexdigest()[:8]}, not {expected[:8]}"
    return None


@contextlib.contextmanager
def refetch_hint_on_error(weight: WeightFile, path: Path) -> Iterator[None]:
    """Errors reading `path` inside the block say how to replace it when it is avseg's own cached copy."""
    try:
        yield
    except AVSegError as error:
        try:
            cached = Path(path).resolve().parent == cache_dir().resolve() and weight.source == SOURCE_URL
        except OSError:
            cached = False
        if not cached:
            raise
        raise AVSegError(f"{error.message} (avseg's cached copy: `avseg weights fetch --force {weight.name}` "
                         "downloads it again)", exit_code=error.exit_code) from error


def ensure_weight(
    weight: WeightFile,
    explicit: str | os.PathLike | None = None,
    *,
    offline: bool | None = None,
    progress: Callable[[int, int | None], None] | None = None,
) -> Path:
    """The local path of a weight, downloading it into the cache first when it is missing and allowed.

    Args:
        weight: registry entry (SOURCE_URL entries are downloaded here; open_clip ones by `fetch_weight`;
            SOURCE_HF ones by `models.hub_models.resolve_hub_model`, which returns a folder).
        explicit: a user-given path (used as is, never downloads).
        offline: forbid downloads (also AVSEG_OFFLINE / HF_HUB_OFFLINE).
        progress: byte progress callback for the download.

    Raises:
        AVSegError: offline (or manual) and missing: one line with the file, the URL and the cache path;
            download failures (see `models.download.download_file`).
    """
    from models.download import download_file, offline_reason

    if weight.source == SOURCE_HF:
        from models.hub_models import resolve_hub_model

        return resolve_hub_model(weight, explicit, offline=offline)
    if explicit is not None:
        return find_weight(weight, explicit)
    path = cached_path(weight)
    if path is not None:
        problem = cached_file_problem(weight, path)
        if problem is not None:
            raise AVSegError(f"the cached {weight.name} weights {path} are damaged ({problem}): "
                             f"`avseg weights fetch --force {weight.name}` downloads them again")
        return path
    reason = offline_reason(offline)
    target = cache_dir() / weight.filename
    if weight.source == SOURCE_MANUAL:
        raise AVSegError(
            f"{weight.filename} not found: it cannot be downloaded automatically; {_where_to_get(weight)} and put it "
            f"at {target} {weight.pass_it_hint()}"
        )
    if reason is not None:
        raise AVSegError(
            f"{weight.name} weights {weight.filename} not found and downloads are off ({reason}): download "
            f"{weight.url} and put it at {target} {weight.pass_it_hint()}"
        )
    if weight.source == SOURCE_OPEN_CLIP:
        return fetch_weight(weight, offline=offline, progress=progress)
    return download_file(weight.url, target, sha256=weight.sha256, sha256_prefix=weight.sha256_prefix,
                         progress=progress, what=f"{weight.name} weights")


def fetch_weight(
    weight: WeightFile,
    *,
    offline: bool | None = None,
    force: bool = False,
    progress: Callable[[int, int | None], None] | None = None,
) -> Path:
    """`avseg weights fetch NAME`: make the weight available locally and return its path.

    SOURCE_URL: download into the cache (again with `force`). SOURCE_OPEN_CLIP: open_clip's own download
    into the Hugging Face cache. SOURCE_MANUAL: an error saying where to get the file. SOURCE_HF:
    `snapshot_download` of the pinned commit into the Hugging Face cache (every file again with `force`); the
    returned path is the model folder.
    """
    from models.download import download_file, offline_reason

    target = cache_dir() / weight.filename
    if not force:
        path = cached_path(weight)
        problem = None if path is None else cached_file_problem(weight, path, check_hash=True)
        if path is not None and problem is None:
            return path
        if problem is not None:
            if path != target or weight.source != SOURCE_URL:  # not ours to replace (torch.hub's, a manual file)
                again = (_where_to_get(weight) if weight.source == SOURCE_MANUAL
                         else f"fetch again (`avseg weights fetch {weight.name}`)")
                raise AVSegError(f"the cached {weight.name} weights {path} are damaged ({problem}): delete the file "
                                 f"and {again}")
            force = True  # our own damaged copy: downloaded again (the download replaces it only when complete)
            reason = offline_reason(offline)
            if reason is not None:
                raise AVSegError(f"the cached {weight.name} weights {path} are damaged ({problem}) and downloads "
                                 f"are off ({reason}): download {weight.url} and put it at {target}")
    if weight.source == SOURCE_MANUAL:
        raise AVSegError(
            f"{weight.name} cannot be downloaded automatically: {_where_to_get(weight)} and put it at {target}"
        )
    reason = offline_reason(offline)
    if weight.source == SOURCE_HF:
        from models.hub_models import download_hub_model, hub_missing_message

        if reason is not None:
            raise AVSegError(hub_missing_message(weight, reason))
        return download_hub_model(weight, force=force)
    if reason is not None:
        raise AVSegError(
            f"cannot fetch {weight.name} ({reason}): download {weight.url} and put it at {target}"
        )
    if weight.source == SOURCE_OPEN_CLIP:
        from models.clip_weights import open_clip_download

        return open_clip_download(weight)
    return download_file(weight.url, target, sha256=weight.sha256, sha256_prefix=weight.sha256_prefix,
                         progress=progress, what=f"{weight.name} weights")
