"""Building the class-agnostic network for evaluation from a checkpoint, with its VGGish (`models.vggish_setup`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn


@dataclass
class LoadedNetwork:
    model: nn.Module
    config_name: str
    iteration: int | None
    audio_source: str
    kind: str


def load_network(checkpoint: str | Path, device: torch.device, vggish_weights: str | None = None,
                 offline: bool = False) -> LoadedNetwork:
    """Build the network of a checkpoint (ours, converted or official) with its trained weights and VGGish.

    Reads the file the way the predictor does (`models.checkpoint_parts.read_checkpoint_parts`), so everything the
    predictor accepts works here too, VGGish weights stored in the file included.
    """
    from models.checkpoint_parts import build_network, read_checkpoint_parts
    from models.vggish_setup import setup_checkpoint_vggish

    parts = read_checkpoint_parts(checkpoint)
    model = build_network(parts, str(checkpoint))
    audio_source = setup_checkpoint_vggish(model, parts, vggish_weights, offline)
    model.to(device).eval()
    return LoadedNetwork(model=model, config_name=parts.config_name, iteration=parts.iteration,
                         audio_source=audio_source, kind=parts.kind)
