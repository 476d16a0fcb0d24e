"""Our training checkpoints: written atomically, read without unpickling arbitrary objects.

Format (a plain dict; everything in it survives `torch.load(weights_only=True)`):

    {"avseg_format": 1, "kind": "train", "config": <ModelConfig as dict>, "config_name": "r50",
     "model": state_dict, "optimizer": ..., "scheduler": ..., "iteration": int,
     "rng": capture_rng_state(), "extra": {...}}

Only tensors, numbers, strings, bytes, None, lists, tuples, sets and dicts may be stored:
`save_checkpoint` checks this before writing so a checkpoint that could not be read back is never
produced. Reading always uses `weights_only=True`; every problem a user can cause (missing, corrupt,
truncated, foreign or code-carrying file, full disk) becomes one `AVSegError` line naming the path.
"""

from __future__ import annotations

import collections
import contextlib
import os
import pickle
import random
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.atomic import atomic_path
from models.errors import AVSegError

CHECKPOINT_FORMAT = 1
"""Version of the avseg checkpoint layout; files with a larger number come from a newer avseg."""

_STORABLE_LEAVES = (type(None), bool, int, float, complex, str, bytes, torch.Tensor, torch.nn.Parameter,
                    torch.dtype, torch.device, torch.Size)
_STORABLE_CONTAINERS = (dict, collections.OrderedDict, collections.Counter, list, tuple, set)


# ------------------------------------------------------------------------------------------ safe load
def _numpy_safe_globals() -> list:
    """numpy's array/scalar reconstruction functions: plain data, no code (for detectron2 files)."""
    core = getattr(np, "_core", None) or np.core
    return [core.multiarray._reconstruct, core.multiarray.scalar, np.ndarray, np.dtype,
            *{type(np.dtype(code)) for code in "?bhilqBHILQefdgFD"}]


LEGACY_TORCH_HEAD = b"\x80\x02\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little")
"""How a pre-1.6 `torch.save` file starts: the pickled magic number of the legacy format."""


def _needed_global(error: BaseException) -> str | None:
    """The Python object a weights_only unpickling refused to import ("GLOBAL os.system"), if that is the error."""
    if not isinstance(error, pickle.UnpicklingError):
        return None
    match = re.search(r"GLOBAL ([\w.]+)", str(error))
    return match.group(1) if match else None


def unreadable_reason(path: str | os.PathLike, error: BaseException, formats: str = "PyTorch") -> str:
    """Why `torch.load` (or safetensors / torch.jit) could not read `path`, in plain words for one message line.

    On damaged or foreign bytes torch raises whatever its readers hit first: a KeyError holding a number (a memo
    lookup while unpickling the legacy format's magic number), "Unsupported operand 194", "PytorchStreamReader
    failed ...", EOFError, IndexError, ... None of it tells a user anything, so the reason says only what the
    file's first bytes show (empty, a zip archive, the legacy format, a .safetensors name) and never an exception
    class or a raw number.

    Args:
        formats: the formats the caller accepts, for "not a ... file" ("PyTorch", "PyTorch or safetensors").
    """
    path = Path(path)
    name = _needed_global(error)
    if name is not None:
        return (f"not a plain weights file (it needs the Python object {name} to load, and avseg never unpickles "
                f"arbitrary objects)")
    try:
        with open(path, "rb") as handle:
            head = handle.read(len(LEGACY_TORCH_HEAD))
    except OSError as os_error:
        return os_error.strerror or "it cannot be opened"
    if not head:
        return "the file is empty (0 bytes; an interrupted copy?)"
    if path.suffix == ".safetensors":
        return "not a safetensors file (corrupt or truncated?)"
    if head.startswith(b"PK\x03\x04"):
        return "a zip archive that is not a readable PyTorch file (corrupt or truncated?)"
    if head == LEGACY_TORCH_HEAD:
        return "a PyTorch file in the legacy format that cannot be read (corrupt or truncated?)"
    return f"not a {formats} file (corrupt or truncated?)"


def load_torch_file(path: str | os.PathLike, allow_numpy: bool = False, what: str = "checkpoint") -> Any:
    """`torch.load(path, map_location="cpu", weights_only=True)` with one-line `AVSegError`s.

    Args:
        allow_numpy: also accept numpy arrays/scalars inside the file (detectron2 checkpoints may hold
            them); still no arbitrary classes or functions.
        what: word used in messages ("checkpoint", "weights file").
    """
    path = Path(path)
    if not path.exists():
        raise AVSegError(f"{what} not found: {path}")
    if path.is_dir():
        raise AVSegError(f"{what} is a folder, not a file: {path}")
    try:
        with open(path, "rb") as handle:
            if not handle.read(1):
                raise AVSegError(f"{what} is empty (0 bytes; an interrupted copy?): {path}")
    except OSError as error:
        raise AVSegError(f"cannot read {what} {path}: {error.strerror or error}") from error
    try:
        with contextlib.ExitStack() as stack:
            if allow_numpy and hasattr(torch.serialization, "safe_globals"):
                stack.enter_context(torch.serialization.safe_globals(_numpy_safe_globals()))
            elif allow_numpy:  # torch 2.4 has only the process-wide allowlist
                torch.serialization.add_safe_globals(_numpy_safe_globals())
            stack.enter_context(warnings.catch_warnings())
            warnings.simplefilter("ignore")  # "Detected pickle protocol 4 ..." and similar chatter
            return torch.load(path, map_location="cpu", weights_only=True)
    except MemoryError:
        raise
    except Exception as error:  # damaged bytes, or Python objects weights_only refuses (unreadable_reason tells)
        raise AVSegError(f"cannot read {what} {path}: {unreadable_reason(path, error)}") from error


def describe_keys(obj: Any, limit: int = 6) -> str:
    """A loaded object's top level for one-line messages: `found keys a, b, ... (N in all)` or `found a list, not a
    dict`."""
    if isinstance(obj, dict):
        keys = [str(k) for k in list(obj)[:limit]]
        more = f", ... ({len(obj)} in all)" if len(obj) > limit else ""
        return f"found keys {', '.join(keys) or '(none)'}{more}"
    return f"found a {type(obj).__name__}, not a dict"


def check_avseg_checkpoint(obj: Any, path: str | os.PathLike) -> dict:
    """Return `obj` if it is an avseg checkpoint this version can read, else raise `AVSegError`."""
    if not isinstance(obj, dict) or "avseg_format" not in obj:
        raise AVSegError(f"not an avseg checkpoint: {path} ({describe_keys(obj)})")
    version = obj["avseg_format"]
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise AVSegError(f"not an avseg checkpoint: {path} (avseg_format is {version!r})")
    if version > CHECKPOINT_FORMAT:
        raise AVSegError(
            f"{path} was written by a newer avseg (checkpoint format {version}; this version reads format "
            f"{CHECKPOINT_FORMAT}): upgrade avseg to read it"
        )
    if not isinstance(obj.get("model"), dict):
        raise AVSegError(f"avseg checkpoint without model weights: {path} ({describe_keys(obj)})")
    return obj


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read an avseg checkpoint (weights_only=True, onto the CPU) and check its format.

    Raises:
        AVSegError: missing, empty, corrupt or truncated file; a pickle that needs arbitrary classes
            ("not a plain weights file"); a torch file that is not ours ("not an avseg checkpoint").
    """
    return check_avseg_checkpoint(load_torch_file(path), path)


# ---------------------------------------------------------------------------------------------- save
def check_storable(obj: Any, where: str = "checkpoint") -> None:
    """Raise `TypeError` naming the first entry that `torch.load(weights_only=True)` could not read back
    (numpy arrays and scalars, dataclasses, Paths, arbitrary objects, ...). A bug, not a user error."""
    kind = type(obj)
    if kind in _STORABLE_LEAVES:
        return
    if kind not in _STORABLE_CONTAINERS:
        raise TypeError(
            f"{where} is a {kind.__module__}.{kind.__qualname__}, which torch.load(weights_only=True) cannot read "
            f"back: store tensors, numbers, strings, lists or dicts"
        )
    if isinstance(obj, dict):
        for key, value in obj.items():
            check_storable(key, f"{where} key {key!r}")
            check_storable(value, f"{where}[{key!r}]")
    else:
        for index, value in enumerate(obj):
            check_storable(value, f"{where}[{index}]")


def _fsync_dir(folder: Path) -> None:
    """Make the rename durable (best effort: not every platform/file system allows it)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def save_checkpoint(path: str | os.PathLike, obj: dict) -> None:
    """Write `obj` with torch.save to a temporary file next to `path`, fsync it, then `os.replace`.

    A reader never sees a half-written file and, on failure, the previous file at `path` is intact.

    Raises:
        AVSegError: the file cannot be written (disk full, read-only folder, ...), naming path and reason;
            the temporary file is removed.
        TypeError / ValueError: `obj` is not an avseg checkpoint dict or holds something that could not be
            read back with weights_only=True (programming errors).
    """
    path = Path(path)
    if not isinstance(obj, dict) or not isinstance(obj.get("avseg_format"), int):
        raise ValueError("save_checkpoint expects an avseg checkpoint dict with an integer 'avseg_format'")
    check_storable(obj)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
    _fsync_dir(path.parent if str(path.parent) else Path("."))


# ----------------------------------------------------------------------------------------------- RNG
def capture_rng_state() -> dict:
    """The state of every random generator training uses, as weights_only-safe plain data.

    Returns:
        {"python": {...}, "numpy": {...}, "torch": ByteTensor, "cuda": [ByteTensor per device]}.
        "cuda" is empty unless CUDA is available and already initialised in this process (a process that
        never touched CUDA has drawn nothing from it, and capturing would create a context on every GPU).
    """
    py_version, py_internal, py_gauss_next = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_cached_gaussian = np.random.get_state(legacy=True)
    cuda_states: list[torch.Tensor] = []
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        cuda_states = [state.clone() for state in torch.cuda.get_rng_state_all()]
    return {
        "python": {"version": int(py_version), "internal": [int(v) for v in py_internal],
                   "gauss_next": None if py_gauss_next is None else float(py_gauss_next)},
        "numpy": {"bit_generator": str(np_name), "keys": [int(k) for k in np_keys], "pos": int(np_pos),
                  "has_gauss": int(np_has_gauss), "cached_gaussian": float(np_cached_gaussian)},
        "torch": torch.get_rng_state().clone(),
        "cuda": cuda_states,
    }


def restore_rng_state(state: dict) -> None:
    """Put back a state from `capture_rng_state`: later draws repeat the ones made after the capture.

    CUDA states are restored when CUDA is available (on as many devices as both sides have) and ignored
    otherwise (resuming a GPU run on the CPU).

    Raises:
        AVSegError: the state is incomplete or malformed (a damaged checkpoint).
    """
    try:
        py = state["python"]
        random.setstate((py["version"], tuple(py["internal"]), py["gauss_next"]))
        npy = state["numpy"]
        np.random.set_state((npy["bit_generator"], np.asarray(npy["keys"], dtype=np.uint32), npy["pos"],
                             npy["has_gauss"], npy["cached_gaussian"]))
        torch.set_rng_state(state["torch"])
        cuda_states = state.get("cuda") or []
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        raise AVSegError(f"invalid random-generator state in checkpoint: {type(error).__name__}: {error}") from error
    if cuda_states and torch.cuda.is_available():
        for device, cuda_state in enumerate(cuda_states[: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state, device)
