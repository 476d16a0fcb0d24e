"""The frozen VGGish of an OV-AVSS network: where its weights come from.

VGGish is never trained, so training checkpoints do not store it: it is loaded from `vggish-10086976.pth`
(`models.weights`, downloaded into the cache when allowed), taken from inside an official checkpoint that holds
it, or, for runs trained with `--vggish-weights random`, re-created from the seed the run recorded
(`RANDOM_VGGISH_SEED_KEY`, `random_vggish_`). `setup_training_vggish` serves `avseg train`,
`setup_checkpoint_vggish` the predictor and evaluation.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from models.errors import AVSegError
from models.weights import RANDOM

if TYPE_CHECKING:
    from models.checkpoint_parts import CheckpointParts

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


def setup_training_vggish(model: nn.Module, vggish_weights: str | None, random_seed: int | None) -> str:
    """The VGGish of a training run: real weights (the path given, else the cache, else downloaded into it unless
    offline), or random ones from `random_seed` with "random"; returns where they came from."""
    if vggish_weights == "random":
        random_vggish_(model.audio_encoder, 0 if random_seed is None else random_seed)
        return f"random (seed {0 if random_seed is None else random_seed})"
    from models.ovavss.audio import load_vggish_weights
    from models.weights import VGGISH, ensure_weight, refetch_hint_on_error

    path = ensure_weight(VGGISH, vggish_weights)
    with refetch_hint_on_error(VGGISH, path):
        load_vggish_weights(model.audio_encoder.audio_backbone, path)
    return str(path)


def setup_checkpoint_vggish(model: torch.nn.Module, parts: CheckpointParts, vggish_weights: str | os.PathLike | None,
                            offline: bool) -> str:
    """Fill the frozen VGGish: explicit path / "random" > weights inside the checkpoint > the run's random seed >
    the cache (downloaded when allowed). Returns where the weights came from."""
    from models.ovavss.audio import load_vggish_weights
    from models.weights import VGGISH, ensure_weight, refetch_hint_on_error

    if vggish_weights is not None and str(vggish_weights) == RANDOM:
        seed = parts.random_vggish_seed or 0
        random_vggish_(model.audio_encoder, seed)
        return f"random (seed {seed})"
    if vggish_weights is not None:
        path = Path(vggish_weights).expanduser()
        load_vggish_weights(model.audio_encoder, path)
        return str(path)
    if parts.audio_state is not None:
        backbone = model.audio_encoder.audio_backbone
        expected = backbone.state_dict()
        bad = [k for k in expected if k not in parts.audio_state
               or tuple(parts.audio_state[k].shape) != tuple(expected[k].shape)]
        if bad or set(parts.audio_state) - set(expected):
            raise AVSegError(f"the VGGish weights inside the checkpoint do not fit VGGish (e.g. {(bad or ['?'])[0]})")
        backbone.load_state_dict({k: v.float() for k, v in parts.audio_state.items()}, strict=True)
        return "checkpoint"
    if parts.random_vggish_seed is not None:
        random_vggish_(model.audio_encoder, parts.random_vggish_seed)
        return f"random (seed {parts.random_vggish_seed}, as trained)"
    path = ensure_weight(VGGISH, offline=offline)
    with refetch_hint_on_error(VGGISH, path):
        load_vggish_weights(model.audio_encoder, path)
    return str(path)
