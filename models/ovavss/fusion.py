"""Bi-directional audio-visual attention: the early fusion block of the pixel decoder (spec §3).

The official code reuses GLIP's image-text block (`VLFuse` -> `b_attn`). Visual tokens (all flattened
pixel-decoder levels of one frame) and audio tokens (one 128-d VGGish vector per frame in OV-AVSS) attend to
each other through one shared score matrix:

    scores = (v_proj(v) * head_dim^-1/2) . l_proj(l)^T                per head, (S, A), clamped to +-50000
    visual update = softmax over the audio axis  (scores)   . values_l_proj(l)  -> out_v_proj
    audio update  = softmax over the visual axis (scores^T) . values_v_proj(v)  -> out_l_proj

and the block adds the updates, scaled by learned per-channel gammas, to the LayerNorm-ed inputs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

SCORE_CLAMP = 50000.0
"""Attention scores are clamped to [-SCORE_CLAMP, SCORE_CLAMP] (kept from GLIP, whose fp16 range needs it)."""


class BiMultiHeadAttention(nn.Module):
    """Multi-head attention in both directions between visual tokens and audio tokens.

    Args:
        v_dim: visual channels (Cv).
        l_dim: audio channels (Ca) ("l" for language in GLIP; the official key names keep it).
        embed_dim: inner attention width E, split into `num_heads` heads of E / num_heads.
        num_heads: attention heads.
        dropout: dropout on both attention-probability tensors, training only (0.1 in the official code
            regardless of the config).
    """

    def __init__(self, v_dim: int = 256, l_dim: int = 128, embed_dim: int = 1024, num_heads: int = 8,
                 dropout: float = 0.1) -> None:
        super().__init__()
        if embed_dim % num_heads != 0:
            raise ValueError(f"embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads})")
        self.v_dim = v_dim
        self.l_dim = l_dim
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.dropout = dropout

        self.v_proj = nn.Linear(v_dim, embed_dim)
        self.l_proj = nn.Linear(l_dim, embed_dim)
        self.values_v_proj = nn.Linear(v_dim, embed_dim)
        self.values_l_proj = nn.Linear(l_dim, embed_dim)
        self.out_v_proj = nn.Linear(embed_dim, v_dim)
        self.out_l_proj = nn.Linear(embed_dim, l_dim)
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        for linear in (self.v_proj, self.l_proj, self.values_v_proj, self.values_l_proj,
                       self.out_v_proj, self.out_l_proj):
            nn.init.xavier_uniform_(linear.weight)
            nn.init.zeros_(linear.bias)

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """(N, T, E) -> (N, heads, T, E / heads)."""
        n, t, _ = x.shape
        return x.view(n, t, self.num_heads, self.head_dim).transpose(1, 2)

    def _merge_heads(self, x: torch.Tensor) -> torch.Tensor:
        """(N, heads, T, E / heads) -> (N, T, E)."""
        n, _, t, _ = x.shape
        return x.transpose(1, 2).reshape(n, t, self.embed_dim)

    def forward(self, v: torch.Tensor, l: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # noqa: E741
        """Compute the updates of both streams (no residual, no norm).

        Args:
            v: (N, S, Cv) visual tokens.
            l: (N, A, Ca) audio tokens.

        Returns:
            delta_v (N, S, Cv) and delta_l (N, A, Ca).
        """
        queries = self._split_heads(self.v_proj(v) * self.scale)  # (N, h, S, d)
        keys = self._split_heads(self.l_proj(l))  # (N, h, A, d)
        visual_values = self._split_heads(self.values_v_proj(v))  # (N, h, S, d)
        audio_values = self._split_heads(self.values_l_proj(l))  # (N, h, A, d)

        scores = (queries @ keys.transpose(-1, -2)).clamp(-SCORE_CLAMP, SCORE_CLAMP)  # (N, h, S, A)

        # Audio side: each audio token over ALL visual tokens; stabilised by the row max, clamped again.
        audio_scores = scores.transpose(-1, -2)  # (N, h, A, S)
        audio_scores = audio_scores - audio_scores.amax(dim=-1, keepdim=True)
        audio_probs = audio_scores.clamp(-SCORE_CLAMP, SCORE_CLAMP).softmax(dim=-1)
        # Visual side: each visual token over the audio tokens.
        visual_probs = scores.softmax(dim=-1)

        visual_probs = F.dropout(visual_probs, p=self.dropout, training=self.training)
        audio_probs = F.dropout(audio_probs, p=self.dropout, training=self.training)

        delta_v = self.out_v_proj(self._merge_heads(visual_probs @ audio_values))
        delta_l = self.out_l_proj(self._merge_heads(audio_probs @ visual_values))
        return delta_v, delta_l


class BiAttentionBlock(nn.Module):
    """Pre-norm bi-directional attention with layer scale (GLIP's `BiAttentionBlockForCheckpoint`).

    v_new = LN_v(v) + gamma_v * delta_v, l_new = LN_l(l) + gamma_l * delta_l: the residual is added to the
    NORMALISED inputs, so the visual stream leaving the block is LayerNorm-ed.

    Args:
        v_dim, l_dim, embed_dim, num_heads, dropout: as for `BiMultiHeadAttention`.
        init_values: initial value of every entry of `gamma_v` (v_dim,) and `gamma_l` (l_dim,).
    """

    def __init__(self, v_dim: int = 256, l_dim: int = 128, embed_dim: int = 1024, num_heads: int = 8,
                 dropout: float = 0.1, init_values: float = 1.0 / 6) -> None:
        super().__init__()
        self.layer_norm_v = nn.LayerNorm(v_dim)
        self.layer_norm_l = nn.LayerNorm(l_dim)
        self.attn = BiMultiHeadAttention(v_dim, l_dim, embed_dim, num_heads, dropout)
        self.gamma_v = nn.Parameter(torch.full((v_dim,), float(init_values)))
        self.gamma_l = nn.Parameter(torch.full((l_dim,), float(init_values)))

    def forward(self, v: torch.Tensor, l: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # noqa: E741
        """(N, S, Cv), (N, A, Ca) -> updated (N, S, Cv), (N, A, Ca)."""
        v = self.layer_norm_v(v)
        l = self.layer_norm_l(l)  # noqa: E741
        delta_v, delta_l = self.attn(v, l)
        return v + self.gamma_v * delta_v, l + self.gamma_l * delta_l


class AudioVisualFusion(nn.Module):
    """The pixel decoder's early-fusion layer (official `VLFuse`); the block lives in attribute `b_attn`.

    Args:
        visual_dim: visual token channels (the pixel decoder's conv_dim, 256).
        audio_dim: audio token channels (128, raw VGGish; the audio is not projected first).
        embed_dim: inner attention width (1024 officially, the encoder's FFN width).
        num_heads: attention heads (8).
        dropout: attention-probability dropout during training (0.1).
        init_values: layer-scale init (1/6).
    """

    def __init__(self, visual_dim: int = 256, audio_dim: int = 128, embed_dim: int = 1024, num_heads: int = 8,
                 dropout: float = 0.1, init_values: float = 1.0 / 6) -> None:
        super().__init__()
        self.b_attn = BiAttentionBlock(visual_dim, audio_dim, embed_dim, num_heads, dropout, init_values)

    def forward(self, visual: torch.Tensor, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Fuse the two streams.

        Args:
            visual: (N, S, Cv) flattened visual tokens (no positional embedding).
            audio: (N, A, Ca) audio tokens (A = 1 in OV-AVSS).

        Returns:
            (visual_new (N, S, Cv), audio_new (N, A, Ca)).
        """
        return self.b_attn(visual, audio.to(visual.device))
