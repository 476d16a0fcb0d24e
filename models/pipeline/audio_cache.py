"""Memoised VGGish embeddings for training: the audio network is frozen, so each distinct log-mel example
needs to go through it only once per run.

Each example is embedded on its own (batch of one), so a cached value is bit-identical to a fresh one
whatever was cached before; this keeps resumed runs identical to uninterrupted ones.
"""

from __future__ import annotations

import hashlib

import torch
from torch import nn


class AudioEmbeddingCache:
    """Maps (1, 96, 64) log-mel examples to (128,) VGGish embeddings, computing each one once."""

    def __init__(self, audio_encoder: nn.Module, max_entries: int = 1_000_000) -> None:
        self.audio_encoder = audio_encoder
        self.max_entries = max_entries
        self._store: dict[bytes, torch.Tensor] = {}
        self.hits = 0
        self.misses = 0

    @staticmethod
    def _key(example: torch.Tensor) -> bytes:
        return hashlib.blake2b(example.detach().cpu().contiguous().numpy().tobytes(), digest_size=16).digest()

    @torch.no_grad()
    def embed(self, examples: torch.Tensor, device: torch.device) -> torch.Tensor:
        """(B, T, 1, 96, 64) examples (CPU) -> (B, T, 128) embeddings on `device`."""
        b, t = examples.shape[:2]
        flat = examples.reshape(b * t, *examples.shape[2:])
        rows = []
        for example in flat:
            key = self._key(example)
            cached = self._store.get(key)
            if cached is None:
                self.misses += 1
                # one example at a time, so an embedding never depends on which others missed with it
                # (bit-for-bit resume); the copy does not wait for the GPU
                cached = self.audio_encoder(example[None].to(device, non_blocking=True)).float()[0]
                if len(self._store) < self.max_entries:
                    self._store[key] = cached
            else:
                self.hits += 1
            rows.append(cached)
        return torch.stack(rows).view(b, t, -1)
