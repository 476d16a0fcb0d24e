"""The VGGish audio network (torchvggish layout, no PCA post-processing) and its weight loader.

Keys are torchvggish's: `features.{0,3,6,8,11,13}.{weight,bias}` (3x3 convs 1->64->128->256->256->512->512)
and `embeddings.{0,2,4}.{weight,bias}` (Linear 12288->4096->4096->128); 72,141,184 parameters. The
pretrained file `vggish-10086976.pth` is a plain state dict with exactly these keys.
"""

from __future__ import annotations

import os
import pickle
import warnings
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from models.errors import AVSegError

EMBEDDING_DIM = 128


def _features() -> nn.Sequential:
    """conv-ReLU blocks with 2x2 max-pools: (n, 1, 96, 64) -> (n, 512, 6, 4). Indices match torchvggish."""
    layers: list[nn.Module] = []
    in_channels = 1
    for spec in (64, "M", 128, "M", 256, 256, "M", 512, 512, "M"):
        if spec == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(in_channels, spec, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            in_channels = spec
    return nn.Sequential(*layers)


class VGGish(nn.Module):
    """VGGish: log-mel examples (n, 1, 96, 64) float -> embeddings (n, 128), post-ReLU (all >= 0).

    The conv output (n, 512, 6, 4) is permuted to (n, 6, 4, 512) before flattening to 12,288 features,
    as the TensorFlow-trained weights expect.
    """

    def __init__(self) -> None:
        super().__init__()
        self.features = _features()
        self.embeddings = nn.Sequential(
            nn.Linear(512 * 6 * 4, 4096),
            nn.ReLU(inplace=True),
            nn.Linear(4096, 4096),
            nn.ReLU(inplace=True),
            nn.Linear(4096, EMBEDDING_DIM),
            nn.ReLU(inplace=True),
        )

    def forward(self, examples: torch.Tensor) -> torch.Tensor:
        if examples.dim() != 4 or examples.shape[1:] != (1, 96, 64):
            raise ValueError(f"VGGish expects examples of shape (n, 1, 96, 64), got {tuple(examples.shape)}")
        x = self.features(examples)
        x = x.permute(0, 2, 3, 1).flatten(1)
        return self.embeddings(x)


def _list(keys, limit: int = 4) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def load_vggish_weights(module: nn.Module, path: str | os.PathLike) -> None:
    """Load a torchvggish state dict (e.g. `vggish-10086976.pth`) into a VGGish, or an AudioEncoder's VGGish.

    Raises:
        AVSegError: the file is missing, cannot be read as a tensor file, or its keys/shapes are not VGGish's.
    """
    target = getattr(module, "audio_backbone", module)
    if not isinstance(target, VGGish):
        raise TypeError(f"load_vggish_weights needs a VGGish or an AudioEncoder, got {type(module).__name__}")
    path = Path(path)
    if not path.is_file():
        what = "is not a file" if path.exists() else "not found"
        raise AVSegError(f"VGGish weights {what}: {path}")
    try:
        with warnings.catch_warnings():  # "Detected pickle protocol 4 ..." and similar chatter
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if "Unsupported global" in str(error):
            reason = "it stores Python objects besides tensors (expected a plain state dict)"
        else:
            reason = "not a PyTorch weights file (corrupt or truncated?)"
        raise AVSegError(f"cannot read VGGish weights {path}: {reason}") from error
    except MemoryError:
        raise
    except Exception as error:  # truncated zip (OSError, RuntimeError), empty file (EOFError), ...
        from models.checkpoint import unreadable_reason

        raise AVSegError(f"cannot read VGGish weights {path}: {unreadable_reason(path, error)}") from error
    if not isinstance(state, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        from models.checkpoint import describe_keys

        hint = " (an avseg or OV-AVSS checkpoint? those go to --checkpoint)" if isinstance(state, Mapping) and (
            "avseg_format" in state or "model" in state) else ""
        raise AVSegError(f"not VGGish weights: {path} holds no plain state dict of tensors ({describe_keys(state)})"
                         f"{hint}")
    expected = target.state_dict()
    missing, unexpected = expected.keys() - state.keys(), state.keys() - expected.keys()
    if missing or unexpected:
        parts = ([f"missing {_list(missing)}"] if missing else []) + (
            [f"unexpected {_list(unexpected)}"] if unexpected else [])
        raise AVSegError(f"VGGish weights {path} do not have the torchvggish keys: {'; '.join(parts)}")
    for key, tensor in expected.items():
        if state[key].shape != tensor.shape:
            raise AVSegError(
                f"VGGish weights {path}: {key} has shape {tuple(state[key].shape)}, expected {tuple(tensor.shape)}")
    target.load_state_dict(state, strict=True)
