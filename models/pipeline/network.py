"""Building the network for inference from a checkpoint, and the frozen VGGish setup training uses.

The frozen VGGish audio network is not stored in training checkpoints: it is loaded from
`vggish-10086976.pth` (see `models.weights`), or, for runs trained with `--vggish-weights random`,
re-created from the recorded seed with `random_vggish_`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn


RANDOM_VGGISH_SEED_KEY = "random_vggish_seed"


def random_vggish_(audio_encoder: nn.Module, seed: int) -> None:
    """Re-initialise the VGGish weights from `seed` alone (He-uniform weights, zero biases), in place.

    Used when no real VGGish weights are available (tests, experiments): the features are then a fixed
    random projection of the log-mel examples, reproducible from the seed at training and test time.
    """
    generator = torch.Generator().manual_seed(int(seed))
    with torch.no_grad():
        for module in audio_encoder.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                fan_in = module.weight[0].numel()
                bound = math.sqrt(6.0 / fan_in)
                module.weight.copy_(torch.rand(module.weight.shape, generator=generator) * 2 * bound - bound)
                if module.bias is not None:
                    module.bias.zero_()


def setup_audio_encoder(model: nn.Module, vggish_weights: str | None, random_seed: int | None) -> str:
    """Load real VGGish weights (the path given, else the cache, else downloaded into it unless offline) or seed
    random ones; returns a description."""
    if vggish_weights == "random":
        random_vggish_(model.audio_encoder, 0 if random_seed is None else random_seed)
        return f"random (seed {0 if random_seed is None else random_seed})"
    from models.ovavss.audio import load_vggish_weights
    from models.weights import VGGISH, ensure_weight, refetch_hint_on_error

    path = ensure_weight(VGGISH, vggish_weights)
    with refetch_hint_on_error(VGGISH, path):
        load_vggish_weights(model.audio_encoder.audio_backbone, path)
    return str(path)


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
    from models.checkpoint_parts import build_network, read_checkpoint_parts, setup_vggish

    parts = read_checkpoint_parts(checkpoint)
    model = build_network(parts, str(checkpoint))
    audio_source = setup_vggish(model, parts, vggish_weights, offline)
    model.to(device).eval()
    return LoadedNetwork(model=model, config_name=parts.config_name, iteration=parts.iteration,
                         audio_source=audio_source, kind=parts.kind)
