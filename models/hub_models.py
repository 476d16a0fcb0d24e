"""Hugging Face hub models (transformers `from_pretrained` folders) pinned by revision, found or fetched.

A registry entry with `source == SOURCE_HF` names a hub repository and a commit (`repo_id`, `revision`);
its `filename` is the folder name in the avseg cache. `resolve_hub_model` returns the local folder holding
`config.json` that `from_pretrained` loads, looking in this order:

1. a folder the user passes (written by `save_pretrained` or `snapshot_download`);
2. `$AVSEG_CACHE/<filename>` (a copy put there by hand, e.g. on a machine without network);
3. the Hugging Face cache (`HF_HUB_CACHE` / `HF_HOME`), snapshot of exactly the pinned commit, no network;
4. downloads off (offline=True, AVSEG_OFFLINE=1, HF_HUB_OFFLINE=1, or download=False): one-line error at once;
5. otherwise `huggingface_hub.snapshot_download` of the pinned commit into the Hugging Face cache, after one
   quick probe of the hub's server (`models.network_check`): without network, one-line error at once too.

Only `HF_ALLOW_PATTERNS` are downloaded (configs, vocabularies, safetensors weights), so repositories that
also carry `pytorch_model.bin`, TensorFlow, Flax or ONNX copies of the same weights cost one copy. A
repository whose snapshot then holds no `.safetensors` file gets a second pass with `HF_BIN_PATTERNS`
(`pytorch_model*.bin`), so models published only as PyTorch pickles still load.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from models.errors import AVSegError

if TYPE_CHECKING:  # pragma: no cover
    from models.weights_registry import WeightFile

HF_ALLOW_PATTERNS = ("*.json", "*.txt", "*.model", "*.safetensors")
"""What `snapshot_download` fetches: configs, tokenizer / processor files and safetensors weights."""

HF_BIN_PATTERNS = ("pytorch_model*.bin",)
"""Fallback weights, fetched only when a snapshot has no `.safetensors` file (sharded names included)."""

WEIGHT_FILE_GLOBS = ("*.safetensors", "*.bin")
"""Files whose presence makes a folder a usable model folder (besides `config.json`)."""


def hub_url(weight: "WeightFile") -> str:
    """The web page of the pinned snapshot, `https://huggingface.co/{repo_id}/tree/{revision}`."""
    return f"https://huggingface.co/{weight.repo_id}/tree/{weight.revision}"


def hub_label(weight: "WeightFile") -> str:
    """`repo_id@short-revision`, e.g. `facebook/sam-vit-base@70c1a07`."""
    return f"{weight.repo_id}@{(weight.revision or 'main')[:7]}"


def model_folder_problem(folder: Path) -> str | None:
    """Why `folder` cannot be passed to `from_pretrained` ("not found", "has no config.json", ...), or None."""
    if not folder.is_dir():
        return "not found" if not folder.exists() else "is not a folder"
    if not (folder / "config.json").is_file():
        return "has no config.json" + hub_cache_hint(folder)
    if not any(path.is_file() for pattern in WEIGHT_FILE_GLOBS for path in folder.glob(pattern)):
        return "has no weights file (*.safetensors or *.bin)"
    return None


def hub_cache_hint(folder: Path) -> str:
    """A parenthesised hint to pass `folder/snapshots/<revision>` when `folder` is a Hugging Face cache repository
    root (`models--owner--name`, holding `snapshots/<revision>/config.json`); "" for any other folder.

    The revisions found are named (at most 3), so the user can copy the right path.
    """
    snapshots = Path(folder) / "snapshots"
    if not snapshots.is_dir():
        return ""
    revisions = sorted(entry.name for entry in snapshots.iterdir() if (entry / "config.json").is_file())
    if not revisions:
        return f" (it looks like a Hugging Face cache folder, but {snapshots} holds no snapshot with a config.json)"
    if len(revisions) == 1:
        return f" (it looks like a Hugging Face cache folder: pass its snapshot {snapshots / revisions[0]})"
    shown = ", ".join(revisions[:3]) + (f" and {len(revisions) - 3} more" if len(revisions) > 3 else "")
    return (f" (it looks like a Hugging Face cache folder: pass one of its snapshots, e.g. "
            f"{snapshots / revisions[0]}; revisions found: {shown})")


def _avseg_cache_folder(weight: "WeightFile") -> Path:
    from models.weights_cache import cache_dir

    return cache_dir() / weight.filename


def _hf_cache_snapshot(weight: "WeightFile") -> Path | None:
    """The snapshot folder of the pinned commit in the Hugging Face cache, never touching the network."""
    snapshot_download = _snapshot_download()
    try:
        folder = snapshot_download(weight.repo_id, revision=weight.revision, local_files_only=True,
                                   allow_patterns=list(HF_ALLOW_PATTERNS))
    except Exception:  # LocalEntryNotFoundError / IncompleteSnapshotError = not cached; a broken cache = not cached
        return None
    return Path(folder) if model_folder_problem(Path(folder)) is None else None


def _snapshot_download():
    """huggingface_hub's `snapshot_download`; a one-line `AVSegError` when the installed library cannot import.

    A broken installation (e.g. a missing dependency of huggingface_hub) must not pass for "not cached".
    """
    try:
        from huggingface_hub import snapshot_download
    except ImportError as error:
        raise AVSegError(
            f"huggingface_hub cannot be imported ({_first_line(error)}): reinstall it "
            "(pip install --force-reinstall huggingface_hub)"
        ) from error
    return snapshot_download


def cached_hub_model(weight: "WeightFile") -> Path | None:
    """The model folder if it is on this machine (avseg cache first, then the Hugging Face cache), or None.

    Never downloads and never raises for a missing or broken cache (only for a huggingface_hub that cannot
    be imported).
    """
    own = _avseg_cache_folder(weight)
    if model_folder_problem(own) is None:
        return own
    return _hf_cache_snapshot(weight)


def _fetch_advice(weight: "WeightFile") -> str:
    return (f"run 'avseg weights fetch {weight.name}' with network, or put a copy of {hub_url(weight)} in "
            f"{_avseg_cache_folder(weight)} {weight.pass_it_hint('folder')}")


def hub_missing_message(weight: "WeightFile", reason: str | None) -> str:
    """One line: what is missing, why nothing is downloaded, the fetch command, the URL and where to copy it."""
    why = f" and downloads are off ({reason})" if reason else ""
    return f"{weight.name} ({hub_label(weight)}) not found{why}: {_fetch_advice(weight)}"


def check_model_folder(weight: "WeightFile", explicit: str | os.PathLike) -> Path:
    """`explicit` as a Path when it is a usable model folder; one-line `AVSegError` naming the problem otherwise."""
    folder = Path(explicit).expanduser()
    problem = model_folder_problem(folder)
    if problem == "not found":
        raise AVSegError(f"{weight.name} weights folder not found: {folder}")
    if problem is not None:
        raise AVSegError(f"{weight.name} weights folder {folder} {problem}")
    return folder


def resolve_hub_model(
    weight: "WeightFile",
    explicit: str | os.PathLike | None = None,
    *,
    offline: bool | None = None,
    download: bool = True,
) -> Path:
    """The local folder (with `config.json`) to pass to `from_pretrained` for a SOURCE_HF registry entry.

    Args:
        weight: a registry entry with `repo_id` and `revision`.
        explicit: a user-given folder (used as is, never downloads).
        offline: forbid downloads (also AVSEG_OFFLINE / HF_HUB_OFFLINE).
        download: False forbids downloads too (the caller only wants what is on this machine).

    Raises:
        AVSegError: an explicit folder that is missing or incomplete; missing with downloads off (one line,
            at once); a download that fails (no network, unknown revision, gated or private repository).
    """
    from models.download import offline_reason

    if explicit is not None:
        return check_model_folder(weight, explicit)
    folder = cached_hub_model(weight)
    if folder is not None:
        return folder
    reason = offline_reason(offline) or (None if download else "this command does not download")
    if reason is not None:
        raise AVSegError(hub_missing_message(weight, reason))
    return download_hub_model(weight)


def download_hub_model(weight: "WeightFile", *, force: bool = False) -> Path:
    """`snapshot_download` of the pinned commit into the Hugging Face cache (its own tqdm bars show progress).

    Fetches `HF_ALLOW_PATTERNS`, then `HF_BIN_PATTERNS` when the snapshot has no safetensors file.
    `force` downloads every file again. Returns the snapshot folder.

    Raises:
        AVSegError: one line for no network, an unknown revision, a gated / private / missing repository, an
            HTTP error or an unwritable cache; a huggingface_hub that cannot be imported.
    """
    from models.network_check import unreachable_reason

    snapshot_download = _snapshot_download()
    unreachable = unreachable_reason()  # huggingface_hub would retry for half a minute per model
    if unreachable is not None:
        raise AVSegError(f"cannot download {weight.name} ({hub_label(weight)}): {unreachable}: "
                         f"{_fetch_advice(weight)}")
    try:
        folder = Path(snapshot_download(weight.repo_id, revision=weight.revision,
                                        allow_patterns=list(HF_ALLOW_PATTERNS), force_download=force))
        if not any(folder.glob("*.safetensors")):
            folder = Path(snapshot_download(weight.repo_id, revision=weight.revision,
                                            allow_patterns=list(HF_BIN_PATTERNS), force_download=force))
    except Exception as error:
        user_error = _download_error(weight, error)
        if user_error is None:
            raise
        raise user_error from error
    problem = model_folder_problem(folder)
    if problem is not None:
        raise AVSegError(f"{weight.name} ({hub_label(weight)}) was downloaded to {folder} but it {problem}")
    return folder


def _first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]


def _download_error(weight: "WeightFile", error: BaseException) -> AVSegError | None:
    """One `AVSegError` line for a failed `snapshot_download`; None for anything unexpected (a bug)."""
    from huggingface_hub import errors as hub_errors

    from models.network_errors import is_network_error

    what = f"cannot download {weight.name} ({hub_label(weight)})"
    if isinstance(error, hub_errors.RevisionNotFoundError):
        return AVSegError(f"{what}: revision {weight.revision} does not exist in https://huggingface.co/"
                          f"{weight.repo_id} (pass a folder with the model instead)")
    if isinstance(error, hub_errors.GatedRepoError):
        return AVSegError(f"{what}: the repository is gated; accept its terms at https://huggingface.co/"
                          f"{weight.repo_id} and log in with 'hf auth login', then run the command again")
    if isinstance(error, hub_errors.RepositoryNotFoundError):
        return AVSegError(f"{what}: repository https://huggingface.co/{weight.repo_id} not found or private")
    if is_network_error(error):
        return AVSegError(f"{what} (no network?): {_fetch_advice(weight)}")
    if isinstance(error, hub_errors.HfHubHTTPError):
        return AVSegError(f"{what}: {_first_line(error)}")
    if isinstance(error, OSError):
        return AVSegError(f"{what} into the Hugging Face cache: {_first_line(error)}")
    return None
