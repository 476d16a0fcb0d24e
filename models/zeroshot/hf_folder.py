"""Load a `transformers` model and its processor from a local Hugging Face folder, with one-line user errors.

The zero-shot wrappers (CLAP, SAM, ...) all load the same way: `from_pretrained(folder, local_files_only=True)`
for the model and the processor, eval mode, no gradients, moved to the device. Every failure a user can cause (no
folder, no or unreadable config.json, a config.json of another model type, missing or corrupt weights, missing
processor files) becomes an `AVSegError` with one line naming the folder and the problem.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from models.errors import AVSegError


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
        raise AVSegError(f"{label} folder has no config.json: {path}")
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

    transformers' own progress bars are off while loading (and restored after).

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
    from transformers.utils import logging as transformers_logging

    path = Path(folder)
    found = read_model_type(path, label)
    if found != model_type:
        raise AVSegError(f"{path} holds model_type {found!r}, not a {label} model ({model_type!r})")
    bars_were_on = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()  # no "Loading weights" bars on stderr: the CLI shows its own
    try:
        try:
            model = model_class.from_pretrained(path, local_files_only=True)
        except Exception as error:  # transformers raises OSError, ValueError, safetensors errors, ...
            raise AVSegError(f"cannot load the {label} model from {path}: {one_line(error)}") from None
        try:
            processor = processor_class.from_pretrained(path, local_files_only=True)
        except Exception as error:
            raise AVSegError(f"cannot load the {label} processor from {path}: {one_line(error)}") from None
    finally:
        if bars_were_on:
            transformers_logging.enable_progress_bar()
    missing = [part for part in processor_parts if getattr(processor, part, None) is None]
    if missing:
        raise AVSegError(f"{path} has no complete {label} processor (missing: {', '.join(missing)})")
    model.eval().requires_grad_(False).to(torch.device(device))
    return model, processor


def one_line(error: BaseException) -> str:
    """The first non-empty line of an exception's message (or its type name)."""
    for line in str(error).splitlines():
        if line.strip():
            return line.strip()
    return type(error).__name__
