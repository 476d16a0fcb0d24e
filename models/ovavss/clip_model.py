"""Load the frozen CLIP model of the open-vocabulary classifier through open_clip, offline-friendly.

The official code uses OpenAI CLIP (`clip.load`): ViT-B/16 for the R50 model, ViT-L/14@336px for Swin-B
(ovavss-spec.md §7.1). In open_clip these are `ViT-B-16` / `ViT-L-14-336` with the tag `openai`, which
needs QuickGELU (open_clip 3.x builds plain GELU for the bare names and only warns); `load_clip` picks
the activation from the tag so the weights run as trained.

Weights come from one of:
- a pretrained tag (`pretrained="openai"`): open_clip downloads or reuses its Hugging Face cache;
- a local file (`weights_path`, or `pretrained` set to an existing path): an open_clip / Hugging Face
  state dict (`.bin`, `.pt`, `.pth`, `.safetensors`), an OpenAI TorchScript archive (`ViT-B-16.pt` as
  cached by the `clip` package; implies QuickGELU), or any checkpoint holding the CLIP keys under a prefix
  (e.g. `clip_adapter.clip_model.*` in an official OV-AVSS checkpoint);
- neither: random initialisation (tests, smoke runs).
When a download is impossible (no network, `HF_HUB_OFFLINE=1`), one `AVSegError` says which file to get
and how to pass it.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import pickle
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch
from torch import nn

from models.errors import AVSegError
from models.network_errors import is_network_error

OPENAI_CLIP_MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)

# How the CLI names the option that takes a local weights file (used in messages only).
WEIGHTS_OPTION = "--clip-weights"
WEIGHTS_HINT = f"{WEIGHTS_OPTION} PATH (`clip_weights=PATH` in Python)"
"""How messages name the local-weights route: the option of the command line and the argument of the API."""

# OpenAI `clip` package names -> open_clip names.
_OPENAI_NAME_ALIASES = {
    "ViT-B/32": "ViT-B-32",
    "ViT-B/16": "ViT-B-16",
    "ViT-L/14": "ViT-L-14",
    "ViT-L/14@336px": "ViT-L-14-336",
}

# Messages open_clip logs on the root logger right before raising / in cases `load_clip` handles itself.
_SILENCED_LOG_PREFIXES = (
    "No pretrained weights loaded for model",
    "Failed to download weights for tag",
    "Pretrained tag or path",
)

Tokenizer = Callable[[list[str]], torch.Tensor]


@dataclass(frozen=True)
class LoadedClip:
    """A frozen CLIP model ready for the classifier.

    Attributes:
        model: open_clip `CLIP` in eval mode, parameters with `requires_grad=False`; `encode_image` takes
            (N, 3, image_size, image_size) normalised images, `encode_text` (N, context_length) tokens.
        tokenizer: list of strings -> (N, context_length) long tokens.
        model_name: the open_clip architecture name, e.g. "ViT-B-16".
        weights_id: what the weights are: the tag ("openai"), "sha256-<16 hex>" of a local file, the
            `hf-hub:` / `local-dir:` name, or None for random weights (never cached).
        image_size: R, the side of the square CLIP input (224 for ViT-B/16, 336 for ViT-L/14@336px).
        mean, std: per-channel normalisation of [0, 1] RGB input.
        quick_gelu: whether the transformer MLPs use QuickGELU (OpenAI weights) instead of GELU.
    """

    model: nn.Module
    tokenizer: Tokenizer
    model_name: str
    weights_id: str | None
    image_size: int
    mean: tuple[float, float, float] = OPENAI_CLIP_MEAN
    std: tuple[float, float, float] = OPENAI_CLIP_STD
    quick_gelu: bool = False

    @property
    def embed_dim(self) -> int:
        """D, the dimension of the joint image-text embedding."""
        return int(self.model.text_projection.shape[-1])


def canonical_model_name(model_name: str) -> str:
    """open_clip's name for `model_name` ("ViT-B/16" -> "ViT-B-16", "ViT-L/14@336px" -> "ViT-L-14-336")."""
    if model_name in _OPENAI_NAME_ALIASES:
        return _OPENAI_NAME_ALIASES[model_name]
    if model_name.startswith(("hf-hub:", "local-dir:")):
        return model_name
    return model_name.replace("/", "-")


def file_sha256(path: str | os.PathLike, chunk_bytes: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def is_torchscript_archive(path: str | os.PathLike) -> bool:
    """True for a TorchScript zip (what OpenAI's `clip` package downloads), False for `torch.save` files."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name == "constants.pkl" or name.endswith("/constants.pkl") for name in archive.namelist())


def read_clip_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a CLIP weights file (any of the formats in the module docstring), on the CPU.

    Wrappers (`{"state_dict": ...}`, `{"model": ...}`) are unwrapped; key prefixes are left for
    `load_clip_weights` to resolve against the model.
    """
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        elif is_torchscript_archive(path):
            with warnings.catch_warnings():  # "torch.jit.load is deprecated"
                warnings.simplefilter("ignore")
                state = torch.jit.load(str(path), map_location="cpu").state_dict()
            for key in ("input_resolution", "context_length", "vocab_size"):
                state.pop(key, None)
        else:
            with warnings.catch_warnings():  # "Detected pickle protocol 4 ..." and similar chatter
                warnings.simplefilter("ignore")
                state = torch.load(path, map_location="cpu", weights_only=True)
    except MemoryError:
        raise
    except Exception as error:  # a user's file: I/O, unpickling (weights_only), zip and safetensors errors
        from models.checkpoint import unreadable_reason

        reason = unreadable_reason(path, error, formats="PyTorch or safetensors")
        raise AVSegError(f"cannot read CLIP weights file {path}: {reason}") from error
    for wrapper in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise AVSegError(f"CLIP weights file {path} does not hold a state dict of tensors")
    return dict(state)


def load_clip_weights(model: nn.Module, state: dict[str, torch.Tensor], source: str, model_name: str) -> None:
    """Copy `state` into `model` exactly (every parameter present, nothing extra, shapes equal).

    The CLIP keys may sit under any prefix (`module.`, `clip_adapter.clip_model.`): the prefix under which
    most of the model's keys are found is used, and keys outside it are ignored.
    """
    model.load_state_dict(matching_clip_weights(model, state, source, model_name), strict=True)


def check_clip_weights(state: dict[str, torch.Tensor], source: str, model_name: str) -> None:
    """Raise `AVSegError` unless `state` holds every tensor of open_clip's `model_name`, with its shapes (checked
    on a meta-device model: nothing is allocated)."""
    import open_clip

    with _silence_open_clip_logs(), torch.device("meta"):
        model = open_clip.create_model(model_name, force_quick_gelu=True, device="meta")
    matching_clip_weights(model, state, source, model_name)


def matching_clip_weights(model: nn.Module, state: dict[str, torch.Tensor], source: str,
                          model_name: str) -> dict[str, torch.Tensor]:
    """The tensors of `state` that fill `model` (see `load_clip_weights`), checked: every parameter present,
    nothing extra, shapes equal.

    Raises:
        AVSegError: naming `source`, what is missing or extra, or the first shape that differs.
    """
    expected = model.state_dict()
    prefixes = {key[: -len("logit_scale")] for key in state if key == "logit_scale" or key.endswith(".logit_scale")}
    prefixes.add("")
    prefix = max(sorted(prefixes), key=lambda p: sum((p + k) in state for k in expected))
    non_persistent = {name for name, _ in model.named_buffers()} - set(expected)  # e.g. attn_mask in TorchScript
    selected = {
        key[len(prefix):]: value
        for key, value in state.items()
        if key.startswith(prefix) and key[len(prefix):] not in non_persistent
    }
    if "logit_scale" in selected and selected["logit_scale"].ndim != expected["logit_scale"].ndim:
        selected["logit_scale"] = selected["logit_scale"].reshape(expected["logit_scale"].shape)
    missing = [key for key in expected if key not in selected]
    unexpected = [key for key in selected if key not in expected]
    if missing or unexpected:
        details = []
        if missing:
            details.append(f"{len(missing)} of {len(expected)} tensors missing (e.g. {missing[0]!r})")
        if unexpected:
            details.append(f"{len(unexpected)} unknown tensors (e.g. {prefix + unexpected[0]!r})")
        raise AVSegError(f"{source} does not hold {model_name} CLIP weights: {'; '.join(details)}")
    for key, value in selected.items():
        if tuple(value.shape) != tuple(expected[key].shape):
            raise AVSegError(
                f"{source} does not hold {model_name} CLIP weights: {key!r} has shape {tuple(value.shape)}, "
                f"the model expects {tuple(expected[key].shape)}"
            )
    return selected


def load_clip(
    model_name: str,
    pretrained: str | None = None,
    weights_path: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    quick_gelu: bool | None = None,
) -> LoadedClip:
    """Build a frozen open_clip CLIP and fill it with weights (see the module docstring for sources).

    Args:
        model_name: open_clip architecture ("ViT-B-16", "ViT-L-14-336"; OpenAI spellings "ViT-B/16",
            "ViT-L/14@336px" accepted) or an open_clip `hf-hub:` / `local-dir:` name.
        pretrained: open_clip tag ("openai"); with `weights_path` it only tells the activation and the
            normalisation of those weights. An existing file path here acts as `weights_path`.
        weights_path: local weights file; never touches the network.
        device: where the model lives.
        quick_gelu: force QuickGELU on/off; None = from the tag (or True for an OpenAI TorchScript archive,
            or a `-quickgelu` model name).

    Raises:
        AVSegError: unknown model or tag, missing / unreadable / mismatching file, or weights that must be
            downloaded while no network is available (one line naming the file to get and `--clip-weights`).
    """
    import open_clip

    name = canonical_model_name(model_name)
    schema = name.split(":", 1)[0] if name.startswith(("hf-hub:", "local-dir:")) else None
    if pretrained is not None and weights_path is None and schema is None and _looks_like_path(pretrained):
        weights_path, pretrained = pretrained, None
    if schema is None and open_clip.get_model_config(name) is None:
        known = ", ".join(m for m in open_clip.list_models() if m.startswith("ViT-"))[:300]
        raise AVSegError(f"unknown CLIP model {model_name!r}: use an open_clip model name ({known}, ...)")
    tag_config: dict = {}
    if pretrained is not None and schema is None:
        tag_config = open_clip.get_pretrained_cfg(name, pretrained)
        if not tag_config:
            tags = open_clip.list_pretrained_tags_by_model(name)
            raise AVSegError(
                f"unknown pretrained tag {pretrained!r} for CLIP model {name}: known tags are {tags}, "
                f"or pass a local weights file with {WEIGHTS_HINT}"
            )

    state: dict[str, torch.Tensor] | None = None
    weights_id: str | None = None
    torchscript = False
    if weights_path is not None:
        path = Path(weights_path).expanduser()
        if not path.is_file():
            raise AVSegError(f"CLIP weights file not found: {path}")
        torchscript = is_torchscript_archive(path)
        state = read_clip_state_dict(path)
        weights_id = f"sha256-{file_sha256(path)[:16]}"
    elif schema is not None:
        weights_id = name
    elif pretrained is not None:
        weights_id = pretrained

    if quick_gelu is None:
        quick_gelu = bool(tag_config.get("quick_gelu", False)) or torchscript or name.endswith("-quickgelu")
    mean = tuple(tag_config.get("mean", OPENAI_CLIP_MEAN))
    std = tuple(tag_config.get("std", OPENAI_CLIP_STD))
    download_tag = pretrained if (state is None and schema is None) else None

    # A tag's normalisation is applied by open_clip when it downloads; for a local file of a tag, force it.
    preprocess_override = {"mean": mean, "std": std} if (state is not None and tag_config) else None
    with _silence_open_clip_logs():
        try:
            model = open_clip.create_model(
                name,
                pretrained=download_tag,
                device=device,
                force_quick_gelu=quick_gelu,
                force_preprocess_cfg=preprocess_override,
            )
        except (RuntimeError, OSError, ValueError) as error:
            user_error = _user_error(error, model_name=name, pretrained=pretrained, tag_config=tag_config)
            if user_error is None:
                raise
            raise user_error from error
        except (EOFError, KeyError, IndexError, pickle.UnpicklingError) as error:  # a damaged weights file
            if schema != "local-dir":
                raise
            raise _local_dir_error(name, error) from error
    if state is not None:
        load_clip_weights(model, state, source=str(weights_path), model_name=name)
        model.to(device)
    model.eval()
    model.requires_grad_(False)
    quick_gelu = quick_gelu or _uses_quick_gelu(model)

    image_size = model.visual.image_size
    image_size = int(image_size[0] if isinstance(image_size, (tuple, list)) else image_size)
    tokenizer = open_clip.get_tokenizer(name)
    preprocess = getattr(model.visual, "preprocess_cfg", {}) or {}
    return LoadedClip(
        model=model,
        tokenizer=tokenizer,
        model_name=name,
        weights_id=weights_id,
        image_size=image_size,
        mean=tuple(preprocess.get("mean", mean)),
        std=tuple(preprocess.get("std", std)),
        quick_gelu=quick_gelu,
    )


# --------------------------------------------------------------------------------------------- helpers


def _looks_like_path(value: str) -> bool:
    return os.sep in value or "/" in value or Path(value).suffix in (".pt", ".pth", ".bin", ".safetensors")


def _uses_quick_gelu(model: nn.Module) -> bool:
    from open_clip.model import QuickGELU

    return any(isinstance(module, QuickGELU) for module in model.modules())


def _first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]


class _MessageFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_SILENCED_LOG_PREFIXES)


@contextlib.contextmanager
def _silence_open_clip_logs() -> Iterator[None]:
    """Drop open_clip's root-logger messages that `load_clip` replaces with its own errors."""
    root = logging.getLogger()
    message_filter = _MessageFilter()
    root.addFilter(message_filter)
    try:
        yield
    finally:
        root.removeFilter(message_filter)


def _user_error(error: BaseException, model_name: str, pretrained: str | None, tag_config: dict) -> AVSegError | None:
    """Turn an open_clip failure into one `AVSegError` line; None for anything unexpected (a bug)."""
    if is_network_error(error):
        offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
        why = "HF_HUB_OFFLINE is set" if offline else "no network connection"
        if model_name.startswith("hf-hub:"):
            repo = model_name[len("hf-hub:"):]
            return AVSegError(
                f"cannot download CLIP model {model_name} ({why}): download open_clip_config.json and the weights "
                f"from https://huggingface.co/{repo} into a folder and use the model name local-dir:FOLDER"
            )
        sources = []
        if tag_config.get("hf_hub"):
            sources.append(f"open_clip_pytorch_model.bin from https://huggingface.co/{tag_config['hf_hub'].strip('/')}")
        if tag_config.get("url"):
            sources.append(tag_config["url"])
        where = " or ".join(sources) if sources else "the weights file"
        return AVSegError(
            f"cannot download CLIP weights {model_name} '{pretrained}' ({why}): download {where} "
            f"and pass the file with {WEIGHTS_HINT}"
        )
    if model_name.startswith("local-dir:"):
        if isinstance(error, (FileNotFoundError, ValueError)):
            return AVSegError(f"CLIP model folder unusable: {_first_line(error)}")
        return _local_dir_error(model_name, error)
    return None


LOCAL_DIR_WEIGHT_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
"""The weights file names open_clip looks for in a `local-dir:` folder, in its order."""


def _local_dir_error(model_name: str, error: BaseException) -> AVSegError:
    """One line for an open_clip folder whose weights could not be loaded: the file's own problem (damaged,
    empty, not PyTorch) when it cannot be read, else the first line of open_clip's error (e.g. a shape mismatch)."""
    folder = Path(model_name[len("local-dir:"):])
    weights = next((folder / name for name in LOCAL_DIR_WEIGHT_FILES if (folder / name).is_file()), None)
    if weights is not None:
        try:
            read_clip_state_dict(weights)
        except AVSegError as unreadable:
            return AVSegError(f"CLIP model folder {folder} unusable: {unreadable.message}")
    return AVSegError(f"CLIP model folder {folder} unusable: {_first_line(error)}")
