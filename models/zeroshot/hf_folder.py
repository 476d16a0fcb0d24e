"""Load a `transformers` model and its processor from a local Hugging Face folder, with one-line user errors.

The zero-shot wrappers (CLAP, SAM, ...) all load the same way: `from_pretrained(folder, local_files_only=True)`
for the model and the processor, eval mode, no gradients, moved to the device. Every failure a user can cause (no
folder, no or unreadable config.json, a config.json of another model type, missing or corrupt weights, missing
processor files) becomes an `AVSegError` with one line naming the folder and the problem.

Weights are checked, not trusted: transformers fills tensors a checkpoint lacks with random values and only logs a
"LOAD REPORT" table, so a damaged folder would otherwise run on random layers. Here transformers' logging is silenced
while loading (and restored after), its loading info is read instead, and a checkpoint whose tensors do not fit the
config (other shapes) or leave parameters of the model unset is refused in one line naming the first tensors.
Tensors a checkpoint may legitimately lack are allowed: tied copies and keys the model class declares optional
(transformers already drops those from its report) and buffers computed when the model is built (position ids,
relative position indices, batch-norm counters); batch-norm running statistics are learned and must be there.
"""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch

from models.errors import AVSegError

SHOWN_KEYS = 3
"""How many tensor names a weights error lists (then "..." and the count)."""

ALLOW_INCOMPLETE_ENV = "AVSEG_ALLOW_INCOMPLETE_WEIGHTS"
"""Set to 1 to load a model folder that lacks some of the model's tensors anyway (random), with a warning: an
escape hatch should a published checkpoint legitimately lack tensors this check does not know to allow."""

LEARNED_BUFFER_SUFFIXES = ("running_mean", "running_var")
"""Buffers that hold learned values (batch-norm statistics): missing ones are refused like missing parameters."""


def read_model_type(folder: str | os.PathLike, label: str) -> str | None:
    """`model_type` of `folder/config.json` (None when the file has none).

    Raises:
        AVSegError: the folder or its config.json is missing or config.json is not a JSON object.
    """
    path = Path(folder)
    if not path.is_dir():
        raise AVSegError(f"{label} folder not found: {path}")
    config_file = path / "config.json"
    if not config_file.is_file():
        from models.hub_models import hub_cache_hint

        raise AVSegError(f"{label} folder has no config.json: {path}{hub_cache_hint(path)}")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise AVSegError(f"{label} config.json is unreadable: {config_file} ({one_line(error)})") from None
    if not isinstance(config, dict):
        raise AVSegError(f"{label} config.json is not a JSON object: {config_file}")
    found = config.get("model_type")
    return None if found is None else str(found)


def load_model_folder(
    folder: str | os.PathLike,
    label: str,
    model_type: str,
    model_class: Any,
    processor_class: Any,
    processor_parts: tuple[str, ...],
    device: torch.device | str = "cpu",
) -> tuple[Any, Any]:
    """(model, processor) saved in `folder`; the model is in eval mode, frozen and on `device`.

    transformers' own progress bars and log messages (its "LOAD REPORT" table) are off while loading (and restored
    after); the weights are checked by `load_checked_model`.

    Args:
        folder: a local folder written by `save_pretrained` (or a Hub snapshot).
        label: the model's name for messages, e.g. "CLAP".
        model_type: the `model_type` config.json must have, e.g. "clap" (checked before any weights are read, so
            a wrong folder never builds a large random model).
        model_class: e.g. `transformers.ClapModel`.
        processor_class: e.g. `transformers.ClapProcessor`.
        processor_parts: attributes the processor must have, e.g. ("tokenizer", "feature_extractor").
        device: where the model goes.

    Raises:
        AVSegError: one line naming the folder and what is wrong.
    """
    path = Path(folder)
    found = read_model_type(path, label)
    if found is None:
        raise AVSegError(f"{path / 'config.json'} has no model_type: not {article(label)} {label} model "
                         f"(expected model_type {model_type!r})")
    if found != model_type:
        raise AVSegError(f"{path} holds model_type {found!r}, not {article(label)} {label} model ({model_type!r})")
    with quiet_transformers():
        model = load_checked_model(path, label, model_class)
        try:
            processor = processor_class.from_pretrained(path, local_files_only=True)
        except Exception as error:
            raise AVSegError(f"cannot load the {label} processor from {path}: {one_line(error)}") from None
    missing = [part for part in processor_parts if getattr(processor, part, None) is None]
    if missing:
        raise AVSegError(f"{path} has no complete {label} processor (missing: {', '.join(missing)})")
    model.eval().requires_grad_(False).to(torch.device(device))
    return model, processor


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """No transformers progress bars and only its errors logged inside the block; the previous settings after."""
    from transformers.utils import logging as transformers_logging

    bars_were_on = transformers_logging.is_progress_bar_enabled()
    verbosity = transformers_logging.get_verbosity()
    transformers_logging.disable_progress_bar()  # no "Loading weights" bars on stderr: the CLI shows its own
    transformers_logging.set_verbosity_error()  # no LOAD REPORT table: avseg says what is wrong in one line
    try:
        yield
    finally:
        transformers_logging.set_verbosity(verbosity)
        if bars_were_on:
            transformers_logging.enable_progress_bar()


def load_checked_model(path: Path, label: str, model_class: Any) -> Any:
    """`model_class.from_pretrained(path)`, refused unless every tensor the model needs came from the checkpoint.

    Raises:
        AVSegError: unreadable weights; tensors whose shapes do not fit config.json; parameters (or learned
            buffers) the checkpoint lacks, which transformers would have filled with random values.
    """
    try:
        # ignore_mismatched_sizes: transformers then reports the mismatches instead of raising after its own table
        model, info = model_class.from_pretrained(
            path, local_files_only=True, output_loading_info=True, ignore_mismatched_sizes=True
        )
    except Exception as error:  # transformers raises OSError, ValueError, safetensors errors, ...
        raise AVSegError(f"cannot load the {label} model from {path}: {loading_error_text(error)}") from None
    mismatched = sorted(info.get("mismatched_keys") or ())
    if mismatched:
        shapes = [f"{key} is {_shape(file_shape)} in the file but {_shape(model_shape)} in the model"
                  for key, file_shape, model_shape in mismatched]
        raise AVSegError(f"the {label} weights in {path} do not fit its config.json: {len(mismatched)} tensor(s) "
                         f"have other shapes ({key_list(shapes, '; ')})")
    missing = required_missing_keys(model, info.get("missing_keys") or ())
    if missing:
        unexpected = sorted(info.get("unexpected_keys") or ())
        extra = f"; it has {len(unexpected)} unexpected tensor(s) ({key_list(unexpected)})" if unexpected else ""
        message = (f"the {label} weights in {path} are incomplete: {len(missing)} tensor(s) of the model are "
                   f"missing ({key_list(missing)}){extra}")
        if os.environ.get(ALLOW_INCOMPLETE_ENV) == "1":
            warnings.warn(f"{message}; loaded anyway with those tensors random ({ALLOW_INCOMPLETE_ENV}=1)",
                          stacklevel=2)
            return model
        raise AVSegError(f"{message} (if this file is known to lack them, {ALLOW_INCOMPLETE_ENV}=1 loads it anyway "
                         "with those tensors random)")
    return model


def required_missing_keys(model: Any, missing_keys: Iterable[str]) -> list[str]:
    """The sorted `missing_keys` a checkpoint must not lack: parameters and learned buffers (batch-norm statistics).

    Buffers the model computes when it is built (position ids, relative position indices, batch-norm counters) are
    the same with or without the checkpoint, so their absence is allowed.
    """
    buffers = {name for name, _ in model.named_buffers()}
    return sorted(key for key in missing_keys if key not in buffers or key.endswith(LEARNED_BUFFER_SUFFIXES))


def key_list(keys: Iterable[str], separator: str = ", ") -> str:
    """The first `SHOWN_KEYS` of `keys` joined by `separator`, then "..." when there are more."""
    keys = list(keys)
    return separator.join(keys[:SHOWN_KEYS] + (["..."] if len(keys) > SHOWN_KEYS else []))


def loading_error_text(error: BaseException) -> str:
    """`one_line(error)`, without transformers' pointers to its own (silenced) report."""
    text = one_line(error)
    if "above report" in text:
        return "its weights cannot be converted to this model's layout"
    if text.startswith("Error(s) in loading state_dict"):
        details = [line.strip() for line in str(error).splitlines()[1:] if line.strip()]
        return details[0] if details else text
    return text


def _shape(shape: Any) -> str:
    """A tensor shape as Python writes it: "(2, 3)", "(16,)"."""
    return str(tuple(int(size) for size in shape))


def article(label: str) -> str:
    """The article before `label`: "an" when it starts with a vowel ("an OWLv2"), else "a" ("a CLAP", "a SAM")."""
    return "an" if label[:1].upper() in "AEIOU" else "a"


def one_line(error: BaseException) -> str:
    """The first non-empty line of an exception's message (or its type name)."""
    for line in str(error).splitlines():
        if line.strip():
            return line.strip()
    return type(error).__name__
