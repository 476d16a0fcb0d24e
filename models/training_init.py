"""`avseg train --init`: what of a Mask2Former (or any) checkpoint initialises training, and loading it.

- `read_init_checkpoint` / `mask2former_init_state`: the tensors the official training takes from a file (a
  model-zoo pickle's pixel decoder is left out, as detectron2's loading makes the official code do).
- `load_matching`: load by exact name, skip shape mismatches (Mask2Former init rule, ovavss-spec.md §9), and
  report what was loaded, skipped, missing and unused (`LoadReport`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Mapping

import torch
from torch import nn

from models.official import is_plain_pickle, load_mask2former_pkl


@dataclass(frozen=True)
class LoadReport:
    """Outcome of `load_matching`.

    loaded: checkpoint keys copied into the module.
    skipped_shape: keys present on both sides with different shapes (left at their initial values);
        `shape_mismatches[key]` = (checkpoint shape, module shape).
    missing: module keys the checkpoint does not have (left at their initial values).
    unexpected: checkpoint keys the module does not have (ignored).
    """

    loaded: list[str]
    skipped_shape: list[str]
    missing: list[str]
    unexpected: list[str]
    shape_mismatches: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = field(default_factory=dict)
    loaded_values: int = 0

    def summary(self) -> str:
        """One line for logs, e.g. 'loaded 558 tensors (44.1 M values); 2 skipped (shape): ...'."""
        text = f"loaded {len(self.loaded)} tensors ({self.loaded_values / 1e6:.1f} M values)"
        if self.skipped_shape:
            shown = [f"{k} {tuple(self.shape_mismatches[k][0])}->{tuple(self.shape_mismatches[k][1])}"
                     for k in self.skipped_shape[:3]]
            more = ", ..." if len(self.skipped_shape) > 3 else ""
            text += f"; {len(self.skipped_shape)} skipped (shape): {', '.join(shown)}{more}"
        text += f"; {len(self.missing)} not in the checkpoint; {len(self.unexpected)} unused"
        return text


def mask2former_init_state(
    state: Mapping[str, torch.Tensor], pixel_decoder: bool = False
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The part of a Mask2Former checkpoint that initialises training, as the official training takes it.

    The official head (`MaskFormerHeadAV._load_from_state_dict`, a legacy-format hook) renames every key
    that contains "sem_seg_head" but does not start with "sem_seg_head.predictor" to
    "sem_seg_head.pixel_decoder.<rest>" whenever the loaded state dict carries no module version. A model-zoo
    `.pkl` loaded by detectron2's checkpointer never does (its name matching returns a plain dict, since
    detectron2 v0.4 of March 2021; Mask2Former and OV-AVSS need v0.6 or later), so the pixel-decoder keys land on
    names that do not exist and the official training starts with a randomly initialised pixel decoder: only
    the backbone and the transformer decoder come from Mask2Former. Checked against the official code and
    detectron2 themselves (`tests/test_official_parity_training.py`).

    A PyTorch file saved from a module's state_dict keeps its module versions, so the official code loads its
    pixel decoder (`is_plain_pickle` tells the two apart).

    Args:
        state: the checkpoint (`load_mask2former_pkl`).
        pixel_decoder: also keep the pixel decoder's tensors (what the paper and the spec describe).

    Returns:
        (the tensors to load, the names left out).
    """
    left_out = [] if pixel_decoder else [
        key for key in state if "sem_seg_head" in key and not key.startswith("sem_seg_head.predictor")
    ]
    dropped = set(left_out)
    return {key: value for key, value in state.items() if key not in dropped}, left_out


def read_init_checkpoint(
    path: str | os.PathLike, pixel_decoder: bool = False
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """`avseg train --init PATH`: the tensors that initialise training, taken as the official training takes
    them (`mask2former_init_state`: a model-zoo pickle's pixel decoder is left out unless `pixel_decoder`).

    Returns:
        (the tensors to load, the names left out).
    """
    return mask2former_init_state(load_mask2former_pkl(path), pixel_decoder or not is_plain_pickle(path))


def load_matching(module: nn.Module, state: Mapping[str, torch.Tensor], prefix: str = "") -> LoadReport:
    """Copy every checkpoint tensor whose name and shape match a module entry; report the rest.

    Args:
        module: receives the values (parameters and persistent buffers, via `load_state_dict`).
        state: checkpoint state dict.
        prefix: only checkpoint keys starting with `prefix` are considered, with `prefix` removed
            (e.g. `"audio_encoder.audio_backbone."` to load VGGish into the VGGish module).
    """
    own = module.state_dict()
    to_load: dict[str, torch.Tensor] = {}
    skipped: list[str] = []
    mismatches: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {}
    unexpected: list[str] = []
    for full_key, value in state.items():
        if not full_key.startswith(prefix):
            continue
        key = full_key[len(prefix):]
        if key not in own:
            unexpected.append(key)
        elif tuple(value.shape) != tuple(own[key].shape):
            skipped.append(key)
            mismatches[key] = (tuple(value.shape), tuple(own[key].shape))
        else:
            to_load[key] = value
    module.load_state_dict(to_load, strict=False)
    missing = [key for key in own if key not in to_load and key not in mismatches]
    return LoadReport(
        loaded=list(to_load), skipped_shape=skipped, missing=missing, unexpected=unexpected,
        shape_mismatches=mismatches, loaded_values=sum(v.numel() for v in to_load.values()),
    )
