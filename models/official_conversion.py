"""`avseg weights convert`: an official OV-AVSS checkpoint (detectron2 `.pth`) rewritten as an avseg checkpoint.

The output loads faster and says what it holds: the model configuration, the trained network (keys checked
against our module tree, strict, shapes included), and VGGish and CLIP when the official file has them. The
official file is only read; the output is written atomically.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from models.errors import AVSegError, UsageError

if TYPE_CHECKING:  # pragma: no cover
    import torch


@dataclass(frozen=True)
class ConversionReport:
    """What `convert_official_checkpoint` wrote.

    Attributes:
        source, destination: the official file and our checkpoint.
        kind: "official-ovavss-r50" or "official-ovavss-swinb".
        config_name: "r50" or "swinb".
        model_tensors, model_values: trained part (backbone + sem_seg_head).
        has_audio, has_clip: whether VGGish / CLIP weights were inside (and were carried over).
        clip_values: number of CLIP values carried over (0 without CLIP).
        dropped: keys left out (criterion, CLIP pixel statistics, unknown).
        iteration: training iteration stored in the official file, if any.
        module_prefix_stripped: the keys carried a `module.` prefix.
    """

    source: Path
    destination: Path
    kind: str
    config_name: str
    model_tensors: int
    model_values: int
    has_audio: bool
    has_clip: bool
    clip_values: int
    dropped: tuple[str, ...]
    iteration: int | None
    module_prefix_stripped: bool

    def summary(self) -> str:
        """One line describing the converted checkpoint."""
        extras = [name for name, present in (("VGGish", self.has_audio), ("CLIP", self.has_clip)) if present]
        missing = [name for name, present in (("VGGish", self.has_audio), ("CLIP", self.has_clip)) if not present]
        text = (f"{self.kind} -> {self.destination}: {self.model_tensors} model tensors "
                f"({self.model_values / 1e6:.1f} M values, config {self.config_name})")
        if extras:
            text += f"; with {' and '.join(extras)}"
        if missing:
            text += f"; without {' and '.join(missing)} (loaded from the cache at run time)"
        if self.dropped:
            text += f"; {len(self.dropped)} unused keys dropped"
        return text


CONVERTED_KIND = "converted-official"
"""`kind` of an avseg checkpoint written by `convert_official_checkpoint`."""


def convert_official_checkpoint(source: str | os.PathLike, destination: str | os.PathLike,
                                overwrite: bool = False) -> ConversionReport:
    """Official OV-AVSS `.pth` (detectron2 format) -> an avseg checkpoint that loads without conversion.

    The output is a plain avseg checkpoint (`models.checkpoint`) with `kind` "converted-official", the model
    config, `model` (backbone + sem_seg_head, float32), and, when the official file had them, `audio`
    (torchvggish keys) and `clip` (OpenAI CLIP keys, checked to be the config's whole CLIP).

    Args:
        overwrite: replace an existing `destination` (refused otherwise: it may be a trained checkpoint).

    Raises:
        UsageError: `destination` exists (without `overwrite`), is a folder, or is `source`.
        AVSegError: unreadable file, not an official OV-AVSS checkpoint, keys that do not fit our model,
            incomplete CLIP weights inside.
    """
    from models.checkpoint import CHECKPOINT_FORMAT, save_checkpoint
    from models.official import KIND_OFFICIAL_R50, KIND_OFFICIAL_SWINB, convert_official_state_dict, read_checkpoint_file
    from models.ovavss.config import get_config

    source, destination = Path(source), Path(destination)
    if source.resolve() == destination.resolve():
        raise UsageError(f"refusing to overwrite the official checkpoint {source}: choose another output path")
    if destination.is_dir():
        raise UsageError(f"the output {destination} is a folder: give the file to write, e.g. {destination}/r50.pt")
    if (destination.exists() or destination.is_symlink()) and not overwrite:
        raise UsageError(f"{destination} exists: choose another output path, or --force to replace it")
    state, info = read_checkpoint_file(source)
    if info.kind not in (KIND_OFFICIAL_R50, KIND_OFFICIAL_SWINB):
        from models.official import KIND_AVSEG

        if info.kind == KIND_AVSEG:
            raise AVSegError(f"{source} is already an avseg checkpoint (nothing to convert): give it to --checkpoint")
        raise AVSegError(f"{source} is not an official OV-AVSS checkpoint (its kind: {info.kind})")
    converted = convert_official_state_dict(state)
    config_name = "r50" if info.kind == KIND_OFFICIAL_R50 else "swinb"
    config = get_config(config_name)
    check_model_keys(converted.model, config_name, str(source))
    if converted.clip is not None:
        from models.ovavss.clip_model import check_clip_weights

        try:
            check_clip_weights(converted.clip, f"{source} (clip_adapter.clip_model.*)", config.clip_model)
        except AVSegError as error:
            raise AVSegError(f"{error.message}: the file is damaged (an official checkpoint holds the whole "
                             "CLIP or none of it)") from None
    checkpoint: dict = {
        "avseg_format": CHECKPOINT_FORMAT,
        "kind": CONVERTED_KIND,
        "config_name": config_name,
        "config": config.to_dict(),
        "model": converted.model,
        "iteration": info.iteration,
        "extra": {"source": str(source), "source_kind": info.kind, "dropped": list(converted.dropped),
                  "module_prefix_stripped": info.module_prefix_stripped},
    }
    if converted.audio is not None:
        checkpoint["audio"] = converted.audio
    if converted.clip is not None:
        checkpoint["clip"] = converted.clip
    save_checkpoint(destination, checkpoint)
    return ConversionReport(
        source=source, destination=destination, kind=info.kind, config_name=config_name,
        model_tensors=len(converted.model), model_values=sum(t.numel() for t in converted.model.values()),
        has_audio=converted.audio is not None, has_clip=converted.clip is not None,
        clip_values=sum(t.numel() for t in (converted.clip or {}).values()), dropped=tuple(converted.dropped),
        iteration=info.iteration, module_prefix_stripped=info.module_prefix_stripped,
    )


def check_model_keys(model_state: dict[str, "torch.Tensor"], config_name: str, source: str) -> None:
    """Raise `AVSegError` unless `model_state` has exactly the trained keys (and shapes) of config `config_name`.

    Uses a meta-device model, so nothing is allocated.
    """
    import torch

    from models.ovavss.model import build_ovavss

    with torch.device("meta"):
        model = build_ovavss(config_name)
    expected = model.trained_state_dict()
    missing = [k for k in expected if k not in model_state]
    unexpected = [k for k in model_state if k not in expected]
    wrong = [k for k in expected if k in model_state and tuple(model_state[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if wrong:
            key = wrong[0]
            parts.append(f"{len(wrong)} with other shapes (e.g. {key} {tuple(model_state[key].shape)} vs "
                         f"{tuple(expected[key].shape)})")
        raise AVSegError(f"{source} does not fit the OV-AVSS {config_name} model: " + "; ".join(parts))
