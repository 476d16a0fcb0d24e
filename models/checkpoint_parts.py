"""Any OV-AVSS checkpoint the predictor accepts, read once: its parts and its network.

Accepted files: avseg training checkpoints, `avseg weights convert` outputs, and the official
`model_ov_avss_{r50,swinb}.pth` (detectron2 layout, `module.` prefixes allowed, CLIP / VGGish used when
inside). `read_checkpoint_parts` says what a file holds (`CheckpointParts`) and `build_network` builds the
network of its configuration with the trained weights (strict); `models.vggish_setup.setup_checkpoint_vggish`
fills its frozen VGGish from the best source available.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.errors import AVSegError
from models.ovavss.config import ModelConfig
from models.weights import RANDOM


@dataclass
class CheckpointParts:
    """What a checkpoint file provides, read onto the CPU.

    Attributes:
        kind: "avseg" (training checkpoint), "converted-official" (`avseg weights convert`),
            "official-ovavss-r50" / "official-ovavss-swinb" (the released .pth files).
        config: the network configuration.
        config_name: its name (r50, swinb, tiny, ...).
        model_state: backbone.* and sem_seg_head.* tensors.
        audio_state: VGGish tensors (torchvggish keys) when the file has them.
        clip_state: CLIP tensors (OpenAI / open_clip keys) when the file has them.
        iteration: training iteration, if stored.
        random_vggish_seed: set for avseg runs trained with `--vggish-weights random`.
        module_prefix_stripped: every key had a `module.` prefix.
    """

    kind: str
    config: ModelConfig
    config_name: str
    model_state: dict[str, torch.Tensor]
    audio_state: dict[str, torch.Tensor] | None = None
    clip_state: dict[str, torch.Tensor] | None = None
    iteration: int | None = None
    random_vggish_seed: int | None = None
    module_prefix_stripped: bool = False


def _as_tensor(value: Any) -> Any:
    if isinstance(value, (np.ndarray, np.generic)):
        return torch.from_numpy(np.ascontiguousarray(value).copy())
    return value


def read_checkpoint_parts(path: str | os.PathLike) -> CheckpointParts:
    """Read any checkpoint the predictor accepts (see `CheckpointParts.kind`) in one pass.

    Raises:
        AVSegError: missing / corrupt / foreign file, a Mask2Former or VGGish file given as a model, or an avseg
            file without a model configuration.
    """
    from models.checkpoint import check_avseg_checkpoint, load_torch_file
    from models.official import (
        KIND_OFFICIAL_R50,
        KIND_OFFICIAL_SWINB,
        convert_official_state_dict,
        detect_kind,
        read_checkpoint_file,
        strip_module_prefix,
    )
    from models.ovavss.config import get_config
    from models.vggish_setup import RANDOM_VGGISH_SEED_KEY
    from models.official_conversion import CONVERTED_KIND

    path = Path(path)
    try:
        obj = load_torch_file(path, allow_numpy=True)
    except AVSegError as error:
        if not path.is_file():
            raise
        # Not a PyTorch file (e.g. a pickled .pkl): the general reader knows the other formats.
        try:
            state, info = read_checkpoint_file(path)
        except AVSegError:
            raise error from None
        if info.kind not in (KIND_OFFICIAL_R50, KIND_OFFICIAL_SWINB):
            raise _not_a_model(path, info.kind) from None
        obj = {"model": state, "iteration": info.iteration}

    if isinstance(obj, dict) and "avseg_format" in obj:
        checkpoint = check_avseg_checkpoint(obj, path)
        if not isinstance(checkpoint.get("config"), dict):
            raise AVSegError(f"{path} holds no model configuration (not a training or converted checkpoint)")
        config = ModelConfig.from_dict(checkpoint["config"])
        extra = checkpoint.get("extra") or {}
        seed = None
        if extra.get("vggish_weights_arg") == RANDOM:
            seed = int(extra.get(RANDOM_VGGISH_SEED_KEY, 0) or 0)
        iteration = checkpoint.get("iteration")
        return CheckpointParts(
            kind=CONVERTED_KIND if checkpoint.get("kind") == CONVERTED_KIND else "avseg",
            config=config,
            config_name=str(checkpoint.get("config_name") or config.name),
            model_state={k: _as_tensor(v) for k, v in checkpoint["model"].items()},
            audio_state=checkpoint.get("audio") or None,
            clip_state=checkpoint.get("clip") or None,
            iteration=int(iteration) if isinstance(iteration, int) else None,
            random_vggish_seed=seed,
            module_prefix_stripped=bool(extra.get("module_prefix_stripped", False)),
        )

    if not isinstance(obj, dict):
        _, info = read_checkpoint_file(path)  # raises "foreign checkpoint" with the standard wording
        raise _not_a_model(path, info.kind)
    wrapped = isinstance(obj.get("model"), dict)
    raw = obj["model"] if wrapped else obj
    if not all(isinstance(k, str) for k in raw):
        _, info = read_checkpoint_file(path)
        raise _not_a_model(path, info.kind)
    raw, stripped = strip_module_prefix(raw)
    detected = detect_kind(raw)
    if detected is None:
        read_checkpoint_file(path)  # raises the standard "foreign checkpoint" message
        raise AVSegError(f"foreign checkpoint: {path}")
    kind = detected[0]
    if kind not in (KIND_OFFICIAL_R50, KIND_OFFICIAL_SWINB):
        raise _not_a_model(path, kind)
    converted = convert_official_state_dict({k: _as_tensor(v) for k, v in raw.items()})
    config_name = "r50" if kind == KIND_OFFICIAL_R50 else "swinb"
    iteration = obj.get("iteration") if wrapped else None
    return CheckpointParts(
        kind=kind, config=get_config(config_name), config_name=config_name, model_state=converted.model,
        audio_state=converted.audio, clip_state=converted.clip,
        iteration=int(iteration) if isinstance(iteration, (int, np.integer)) else None,
        module_prefix_stripped=stripped,
    )


def _not_a_model(path: Path, kind: str) -> AVSegError:
    from models.official import KIND_MASK2FORMER_R50, KIND_MASK2FORMER_SWINB, KIND_VGGISH

    if kind in (KIND_MASK2FORMER_R50, KIND_MASK2FORMER_SWINB):
        return AVSegError(
            f"{path} is a Mask2Former COCO checkpoint (a training initialisation, not an OV-AVSS model): "
            f"use it with avseg train --init"
        )
    if kind == KIND_VGGISH:
        return AVSegError(f"{path} holds VGGish weights, not an OV-AVSS model: pass it as the VGGish weights")
    return AVSegError(f"{path} is not an OV-AVSS checkpoint ({kind})")


def build_network(parts: CheckpointParts, source: str) -> torch.nn.Module:
    """The network of `parts` with its trained weights loaded (strict on backbone + sem_seg_head)."""
    from models.ovavss.model import build_ovavss

    model = build_ovavss(parts.config)
    result = model.load_state_dict(parts.model_state, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith("audio_encoder.")]
    if missing or result.unexpected_keys:
        first = (missing + list(result.unexpected_keys))[0]
        raise AVSegError(
            f"{source} does not fit config {parts.config_name}: {len(missing)} missing and "
            f"{len(result.unexpected_keys)} unexpected keys (first: {first})"
        )
    return model
