"""Audio branch of OV-AVSS: frozen VGGish turning 0.96 s log-mel examples into 128-d vectors.

The front end (file -> examples) lives in `audio_frontend`, the network and its weight loader in
`vggish`; this module adds the frozen encoder the model registers as `audio_encoder` (keys
`audio_encoder.audio_backbone.*`) and re-exports the pieces callers need.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from models.ovavss.audio_frontend import (
    NUM_EXAMPLES,
    pad_examples,
    read_wav,
    read_wav_examples,
    waveform_to_log_mel_examples,
)
from models.ovavss.vggish import EMBEDDING_DIM, VGGish, load_vggish_weights

__all__ = [
    "AudioEncoder",
    "EMBEDDING_DIM",
    "NUM_EXAMPLES",
    "VGGish",
    "load_vggish_weights",
    "pad_examples",
    "read_wav",
    "read_wav_examples",
    "waveform_to_log_mel_examples",
]


class AudioEncoder(nn.Module):
    """Frozen VGGish: examples (N, 1, 96, 64) -> embeddings (N, 128) float, post-ReLU, no normalisation.

    Its parameters never require gradients, it stays in eval mode whatever `train()` is called with, and
    the forward pass runs under `torch.no_grad()` (as the official model, which recomputes it every step).

    Args:
        weights: optional path of a torchvggish state dict (`vggish-10086976.pth`) to load now.
    """

    def __init__(self, weights: str | os.PathLike | None = None) -> None:
        super().__init__()
        self.audio_backbone = VGGish()
        self.audio_backbone.requires_grad_(False)
        self.audio_backbone.eval()
        if weights is not None:
            load_vggish_weights(self.audio_backbone, weights)

    def train(self, mode: bool = True) -> "AudioEncoder":
        super().train(mode)
        self.audio_backbone.eval()
        return self

    def forward(self, examples: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.audio_backbone(examples)
