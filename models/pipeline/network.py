"""Building the network for inference from a checkpoint (ours; official OV-AVSS files come with the predictor).

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

from models.errors import AVSegError

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
    """Load real VGGish weights (path or cache) or seed random ones; returns a description."""
    if vggish_weights == "random":
        random_vggish_(model.audio_encoder, 0 if random_seed is None else random_seed)
        return f"random (seed {0 if random_seed is None else random_seed})"
    from models.ovavss.audio import load_vggish_weights
    from models.weights import VGGISH, find_weight

    path = find_weight(VGGISH, vggish_weights)
    load_vggish_weights(model.audio_encoder.audio_backbone, path)
    return str(path)


@dataclass
class LoadedNetwork:
    model: nn.Module
    config_name: str
    iteration: int | None
    audio_source: str
    kind: str


def load_network(checkpoint: str | Path, device: torch.device, vggish_weights: str | None = None) -> LoadedNetwork:
    """Build the network of an avseg training checkpoint and load its weights (strict on the trained part)."""
    from models.checkpoint import load_checkpoint
    from models.ovavss.config import ModelConfig
    from models.ovavss.model import build_ovavss

    state = load_checkpoint(checkpoint)
    if "config" not in state or "model" not in state:
        raise AVSegError(f"{checkpoint} holds no model weights and configuration")
    config = ModelConfig.from_dict(state["config"])
    model = build_ovavss(config)
    result = model.load_state_dict(state["model"], strict=False)
    missing = [k for k in result.missing_keys if not k.startswith("audio_encoder.")]
    if missing or result.unexpected_keys:
        raise AVSegError(
            f"{checkpoint} does not fit config {config.name}: {len(missing)} missing and "
            f"{len(result.unexpected_keys)} unexpected keys (first: {(missing + result.unexpected_keys)[0]})"
        )
    extra = state.get("extra", {})
    if vggish_weights is None and extra.get("vggish_weights_arg") == "random":
        vggish_weights = "random"
    audio_source = setup_audio_encoder(model, vggish_weights, extra.get(RANDOM_VGGISH_SEED_KEY))
    model.to(device).eval()
    return LoadedNetwork(model=model, config_name=state.get("config_name", config.name),
                         iteration=state.get("iteration"), audio_source=audio_source, kind="avseg")
