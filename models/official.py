"""Reading official OV-AVSS checkpoints and Mask2Former `.pkl` init files, safely.

- `read_checkpoint_file`: any supported file -> (state dict, `CheckpointInfo` with its kind).
  PyTorch files are read with `weights_only=True` only; plain pickles (Mask2Former `.pkl`) with a
  restricted unpickler that builds numpy arrays and nothing else.
- `convert_official_state_dict`: the official `model.state_dict()` -> our model / VGGish / CLIP parts.
  Our module tree uses the official names (ovavss-spec.md §10), so `backbone.*` and `sem_seg_head.*`
  pass through unchanged. detectron2's legacy renames (§10.6) are deliberately NOT applied.
- `load_mask2former_pkl`: a Mask2Former model-zoo `.pkl` (or any PyTorch file) as tensors; what of it
  initialises training is `models.training_init`'s.
"""

from __future__ import annotations

import collections
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from models.checkpoint import LEGACY_TORCH_HEAD, check_avseg_checkpoint, load_torch_file
from models.errors import AVSegError

KIND_OFFICIAL_R50 = "official-ovavss-r50"
KIND_OFFICIAL_SWINB = "official-ovavss-swinb"
KIND_MASK2FORMER_R50 = "mask2former-r50"
KIND_MASK2FORMER_SWINB = "mask2former-swinb"
KIND_AVSEG = "avseg"
KIND_VGGISH = "vggish"

AUDIO_PREFIX = "audio_encoder.audio_backbone."
CLIP_PREFIX = "clip_adapter.clip_model."
MODEL_PREFIXES = ("backbone.", "sem_seg_head.")

# Markers of the audio-visual parts that Mask2Former does not have (§9 "new (random init)").
_AUDIO_MARKERS = (
    "sem_seg_head.pixel_decoder.transformer.encoder.vl_layer.",
    "sem_seg_head.predictor.transformer_audio_cross_attention_layers.",
    "sem_seg_head.predictor.audio_query_embed.",
    AUDIO_PREFIX,
)


@dataclass(frozen=True)
class CheckpointInfo:
    """What `read_checkpoint_file` found.

    kind: "official-ovavss-r50" | "official-ovavss-swinb" | "mask2former-r50" | "mask2former-swinb" |
        "avseg" | "vggish".
    backbone: "r50" | "swinb" | None (None for VGGish files and avseg checkpoints of other configs).
    wrapped: the weights sat under "model" (detectron2 / avseg layout) rather than being the whole file.
    module_prefix_stripped: every key started with "module." and it was removed.
    iteration: training iteration stored in the file, if any.
    config_name: avseg checkpoints only.
    other_keys: top-level entries besides the weights (e.g. "optimizer", "iteration", "__author__").
    """

    path: Path
    kind: str
    backbone: str | None
    wrapped: bool
    module_prefix_stripped: bool
    iteration: int | None
    num_tensors: int
    num_values: int
    config_name: str | None = None
    other_keys: tuple[str, ...] = ()


@dataclass(frozen=True)
class ConvertedCheckpoint:
    """An official state dict split into the parts we load separately.

    model: `backbone.*` and `sem_seg_head.*`, keys unchanged (= our `OVAVSS` keys).
    audio: VGGish weights without the `audio_encoder.audio_backbone.` prefix (= torchvggish keys), or None.
    clip: CLIP weights without `clip_adapter.clip_model.` (OpenAI / open_clip key names), or None.
    dropped: keys not carried over (`criterion.*`, `clip_adapter.pixel_mean/std`, anything unknown).
    """

    model: dict[str, torch.Tensor]
    audio: dict[str, torch.Tensor] | None
    clip: dict[str, torch.Tensor] | None
    dropped: list[str]


# ------------------------------------------------------------------------------ restricted unpickling
def _numpy_core():
    return getattr(np, "_core", None) or np.core


def _allowed_pickle_globals() -> dict[tuple[str, str], Any]:
    """(module, name) -> object: numpy array/scalar reconstruction and the byte-string helpers that
    protocol-2 pickles use for array data. Constructors of plain data only; nothing that runs code."""
    core = _numpy_core()
    allowed: dict[tuple[str, str], Any] = {}
    for module in ("numpy.core", "numpy._core"):
        allowed[(f"{module}.multiarray", "_reconstruct")] = core.multiarray._reconstruct
        allowed[(f"{module}.multiarray", "scalar")] = core.multiarray.scalar
        allowed[(f"{module}.numeric", "_frombuffer")] = core.numeric._frombuffer  # protocol 5
    allowed[("numpy", "ndarray")] = np.ndarray
    allowed[("numpy", "dtype")] = np.dtype
    allowed[("_codecs", "encode")] = __import__("_codecs").encode  # bytes in protocol-2 pickles
    allowed[("__builtin__", "bytes")] = bytes
    allowed[("builtins", "bytes")] = bytes
    allowed[("collections", "OrderedDict")] = collections.OrderedDict
    return allowed


class _RefusedGlobal(pickle.UnpicklingError):
    def __init__(self, module: str, name: str) -> None:
        super().__init__(f"{module}.{name}")
        self.qualified_name = f"{module}.{name}"


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """A pickle reader that can rebuild numpy arrays, dicts, lists and scalars, and refuses everything else."""

    _allowed = _allowed_pickle_globals()

    def find_class(self, module: str, name: str) -> Any:
        allowed = self._allowed.get((module, name))
        if allowed is None:
            raise _RefusedGlobal(module, name)
        return allowed


def load_plain_pickle(path: str | os.PathLike) -> Any:
    """Unpickle `path` allowing only numpy arrays and plain Python data (no code can run).

    Raises:
        AVSegError: missing file, corrupt / truncated pickle, or a pickle that asks for any other
            class or function ("refusing to unpickle <module>.<name> from <path>").
    """
    path = Path(path)
    if not path.is_file():
        raise AVSegError(f"weights file not found: {path}" if not path.exists() else f"not a file: {path}")
    try:
        with open(path, "rb") as handle:
            return _NumpyOnlyUnpickler(handle, encoding="latin1").load()
    except _RefusedGlobal as refused:
        raise AVSegError(
            f"refusing to unpickle {refused.qualified_name} from {path}: a weights pickle may hold only numpy arrays"
        ) from None
    except OSError as error:
        raise AVSegError(f"cannot read {path}: {error.strerror or error}") from error
    except MemoryError:
        raise
    except Exception as error:  # UnpicklingError, EOFError, ValueError, ... = damaged bytes
        raise AVSegError(f"corrupt or truncated pickle, or not a pickle at all: {path}") from error


# ----------------------------------------------------------------------------------------- reading
def _file_format(path: Path) -> str:
    """The container: "zip" (PyTorch), "legacy-torch" (pre-1.6 torch.save), "pickle" (other pickles), "other"."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(len(LEGACY_TORCH_HEAD))
    except OSError:
        return "other"
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    if head == LEGACY_TORCH_HEAD:
        return "legacy-torch"
    if head[:1] == b"\x80":
        return "pickle"
    return "other"


def _to_tensor(key: str, value: Any, path: Path) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (np.ndarray, np.generic)):
        array = np.asarray(value)
        if not array.flags.writeable or not array.flags.c_contiguous:
            array = np.ascontiguousarray(array).copy()
        return torch.from_numpy(array)
    raise AVSegError(f"foreign checkpoint: {path} entry {key!r} is a {type(value).__name__}, not a tensor")


def strip_module_prefix(state: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
    """Remove `module.` (DistributedDataParallel) when every key has it; returns (state, stripped)."""
    if state and all(key.startswith("module.") for key in state):
        return {key[len("module."):]: value for key, value in state.items()}, True
    return dict(state), False


def detect_kind(state: Mapping[str, Any]) -> tuple[str, str | None] | None:
    """(kind, backbone) of a state dict from its keys, or None when nothing is recognised."""
    keys = list(state)
    if any(k.startswith(("backbone.res2.", "backbone.stem.")) for k in keys):
        backbone = "r50"
    elif any(k.startswith("backbone.patch_embed.") for k in keys):
        backbone = "swinb"
    else:
        backbone = None
    has_head = any(k.startswith("sem_seg_head.") for k in keys)
    if backbone is not None and has_head:
        has_audio = any(k.startswith(_AUDIO_MARKERS) for k in keys)
        kinds = {("r50", True): KIND_OFFICIAL_R50, ("swinb", True): KIND_OFFICIAL_SWINB,
                 ("r50", False): KIND_MASK2FORMER_R50, ("swinb", False): KIND_MASK2FORMER_SWINB}
        return kinds[backbone, has_audio], backbone
    if "features.0.weight" in state and "embeddings.0.weight" in state:
        return KIND_VGGISH, None
    return None


def _foreign(path: Path, obj: Any) -> AVSegError:
    if isinstance(obj, dict):
        keys = [str(k) for k in list(obj)[:5]]
        more = f", ... ({len(obj)} keys)" if len(obj) > 5 else ""
        found = f"first keys: {', '.join(keys) or '(none)'}{more}"
    else:
        found = f"it holds a {type(obj).__name__}"
    return AVSegError(
        f"foreign checkpoint: {path} is not an OV-AVSS, Mask2Former, VGGish or avseg checkpoint ({found})"
    )


def read_checkpoint_file(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], CheckpointInfo]:
    """Read any supported weights file onto the CPU and say what it is.

    Accepts `{"model": sd, ...}` (detectron2, Mask2Former .pkl, avseg) or a bare state dict; removes a
    `module.` prefix when every key has it; converts numpy arrays to tensors.

    Returns:
        (state_dict, info). For avseg checkpoints the state dict is the checkpoint's "model" entry.
    Raises:
        AVSegError: missing file, corrupt / truncated file, a file that needs arbitrary classes ("not a
            plain weights file" / "refusing to unpickle ..."), or no recognisable keys ("foreign checkpoint").
    """
    path = Path(path)
    if path.is_file() and _file_format(path) == "pickle":
        obj = load_plain_pickle(path)
    else:
        obj = load_torch_file(path, allow_numpy=True)

    if isinstance(obj, dict) and "avseg_format" in obj:
        checkpoint = check_avseg_checkpoint(obj, path)
        state = {k: _to_tensor(k, v, path) for k, v in checkpoint["model"].items()}
        config_name = checkpoint.get("config_name")
        iteration = checkpoint.get("iteration")
        return state, CheckpointInfo(
            path=path, kind=KIND_AVSEG, backbone=config_name if config_name in ("r50", "swinb") else None,
            wrapped=True, module_prefix_stripped=False, iteration=int(iteration) if iteration is not None else None,
            num_tensors=len(state), num_values=sum(t.numel() for t in state.values()),
            config_name=config_name, other_keys=tuple(str(k) for k in checkpoint if k != "model"),
        )

    if not isinstance(obj, dict):
        raise _foreign(path, obj)
    wrapped = isinstance(obj.get("model"), dict)
    raw = obj["model"] if wrapped else obj
    if not all(isinstance(k, str) for k in raw):
        raise _foreign(path, raw)
    raw, stripped = strip_module_prefix(raw)
    detected = detect_kind(raw)
    if detected is None:
        raise _foreign(path, raw)
    state = {k: _to_tensor(k, v, path) for k, v in raw.items()}
    iteration = obj.get("iteration") if wrapped else None
    return state, CheckpointInfo(
        path=path, kind=detected[0], backbone=detected[1], wrapped=wrapped, module_prefix_stripped=stripped,
        iteration=int(iteration) if isinstance(iteration, (int, np.integer)) else None,
        num_tensors=len(state), num_values=sum(t.numel() for t in state.values()),
        other_keys=tuple(str(k) for k in obj if k != "model") if wrapped else (),
    )


# -------------------------------------------------------------------------------------- conversion
def convert_official_state_dict(state: Mapping[str, torch.Tensor]) -> ConvertedCheckpoint:
    """Split an official OV-AVSS `model.state_dict()` into our model / VGGish / CLIP parts.

    `backbone.*`, `sem_seg_head.*` -> model (unchanged); `audio_encoder.audio_backbone.X` -> audio `X`;
    `clip_adapter.clip_model.X` -> clip `X`; everything else is dropped and listed. fp16/bf16 tensors are
    upcast to float32 (exact). A `module.` prefix on every key is removed.

    Raises:
        AVSegError: no `backbone.*` / `sem_seg_head.*` keys at all.
    """
    state, _ = strip_module_prefix(state)
    model: dict[str, torch.Tensor] = {}
    audio: dict[str, torch.Tensor] = {}
    clip: dict[str, torch.Tensor] = {}
    dropped: list[str] = []
    for key, value in state.items():
        if isinstance(value, torch.Tensor) and value.dtype in (torch.float16, torch.bfloat16):
            value = value.float()
        if key.startswith(MODEL_PREFIXES):
            model[key] = value
        elif key.startswith(AUDIO_PREFIX):
            audio[key[len(AUDIO_PREFIX):]] = value
        elif key.startswith(CLIP_PREFIX):
            clip[key[len(CLIP_PREFIX):]] = value
        else:
            dropped.append(key)
    if not model:
        raise AVSegError("not an OV-AVSS state dict: it has no backbone.* or sem_seg_head.* keys")
    return ConvertedCheckpoint(model=model, audio=audio or None, clip=clip or None, dropped=dropped)


def load_mask2former_pkl(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a Mask2Former model-zoo `.pkl` (`{"model": {name: ndarray}, ...}` or a bare dict) as tensors.

    The pickle is read with a restricted unpickler (numpy arrays only). A PyTorch file given here is
    read with `read_checkpoint_file` instead (weights_only), so any supported checkpoint can initialise.

    Raises:
        AVSegError: missing / corrupt file, forbidden pickle content, or no backbone / head keys.
    """
    path = Path(path)
    if path.is_file() and _file_format(path) in ("zip", "legacy-torch"):
        state, _ = read_checkpoint_file(path)
        return state
    if path.is_file() and _file_format(path) == "other":
        raise AVSegError(f"not a pickle or PyTorch file: {path}")
    obj = load_plain_pickle(path)
    if not isinstance(obj, dict):
        raise _foreign(path, obj)
    raw = obj["model"] if isinstance(obj.get("model"), dict) else obj
    if not all(isinstance(k, str) for k in raw):
        raise _foreign(path, raw)
    raw, _ = strip_module_prefix(raw)
    if not any(k.startswith(MODEL_PREFIXES) for k in raw):
        raise _foreign(path, raw)
    return {k: _to_tensor(k, v, path) for k, v in raw.items()}


def is_plain_pickle(path: str | os.PathLike) -> bool:
    """True for a pickle that is not a PyTorch file (a model-zoo `.pkl`: its dict carries no module versions)."""
    return _file_format(Path(path)) == "pickle"
