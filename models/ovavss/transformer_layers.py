"""Post-norm transformer building blocks of the mask decoder (Mask2Former style), plus a small MLP.

All attention layers use `nn.MultiheadAttention` in its sequence-first layout: tensors are `(L, B, C)`
(sequence length first). Attribute names (`self_attn`, `multihead_attn`, `linear1`, `linear2`, `norm`,
`layers`) are the official ones, so official checkpoints load without renaming.

Initialisation (ovavss-spec.md §5.7): the attention and FFN layers apply xavier-uniform to every parameter
with two or more dimensions (MHA packed in-projection, out-projection, FFN weights); the MHA biases keep
PyTorch's default of zero, LayerNorms and FFN biases keep PyTorch defaults. `MLP` keeps PyTorch's default
Linear initialisation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _xavier_init_matrices(module: nn.Module) -> None:
    """xavier-uniform on every parameter of `module` with at least two dimensions."""
    for parameter in module.parameters():
        if parameter.dim() > 1:
            nn.init.xavier_uniform_(parameter)


def _add_position(x: torch.Tensor, pos: torch.Tensor | None) -> torch.Tensor:
    return x if pos is None else x + pos


class SelfAttentionLayer(nn.Module):
    """Post-norm self-attention: `x = norm(x + MHA(q = k = x + pos, v = x))`.

    Args:
        d_model: channels C.
        nhead: attention heads (C must be divisible by it).
        dropout: attention-output dropout (0 in every official configuration).
    """

    def __init__(self, d_model: int, nhead: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        _xavier_init_matrices(self)

    def forward(
        self,
        x: torch.Tensor,
        pos: torch.Tensor | None = None,
        attn_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x, pos: (L, B, C); attn_mask: optional (L, L) or (B * nhead, L, L), True = blocked -> (L, B, C)."""
        query_and_key = _add_position(x, pos)
        attended = self.self_attn(query_and_key, query_and_key, value=x, attn_mask=attn_mask, need_weights=False)[0]
        return self.norm(x + self.dropout(attended))


class CrossAttentionLayer(nn.Module):
    """Post-norm cross-attention: `x = norm(x + MHA(q = x + query_pos, k = memory + memory_pos, v = memory))`.

    Args:
        d_model: channels C.
        nhead: attention heads.
        dropout: attention-output dropout (0 in every official configuration).
    """

    def __init__(self, d_model: int, nhead: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.multihead_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        _xavier_init_matrices(self)

    def forward(
        self,
        x: torch.Tensor,
        memory: torch.Tensor,
        memory_pos: torch.Tensor | None = None,
        query_pos: torch.Tensor | None = None,
        attn_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Attend from queries to memory.

        Args:
            x: queries (Lq, B, C).
            memory: keys/values source (Lm, B, C).
            memory_pos: positional encoding added to the keys (Lm, B, C).
            query_pos: positional encoding added to the queries (Lq, B, C).
            attn_mask: optional bool (B * nhead, Lq, Lm), True = query may NOT attend to that memory position.

        Returns:
            (Lq, B, C).
        """
        attended = self.multihead_attn(
            _add_position(x, query_pos),
            _add_position(memory, memory_pos),
            value=memory,
            attn_mask=attn_mask,
            need_weights=False,
        )[0]
        return self.norm(x + self.dropout(attended))


class FFNLayer(nn.Module):
    """Post-norm feed-forward block: `x = norm(x + linear2(relu(linear1(x))))`.

    Args:
        d_model: channels C.
        dim_feedforward: hidden width of the block.
        dropout: dropout after the activation and on the residual branch (0 officially).
    """

    def __init__(self, d_model: int, dim_feedforward: int = 2048, dropout: float = 0.0) -> None:
        super().__init__()
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        _xavier_init_matrices(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (..., C) -> (..., C)."""
        hidden = self.dropout(F.relu(self.linear1(x)))
        return self.norm(x + self.dropout(self.linear2(hidden)))


class MLP(nn.Module):
    """`num_layers` Linear layers in_dim -> hidden_dim -> ... -> out_dim with ReLU between them (not after the last).

    Args:
        in_dim: input channels.
        hidden_dim: width of every intermediate layer.
        out_dim: output channels.
        num_layers: number of Linear layers (>= 1).
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"MLP needs at least one layer, got num_layers={num_layers}")
        dims_in = [in_dim] + [hidden_dim] * (num_layers - 1)
        dims_out = [hidden_dim] * (num_layers - 1) + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(d_in, d_out) for d_in, d_out in zip(dims_in, dims_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (..., in_dim) -> (..., out_dim)."""
        last = len(self.layers) - 1
        for index, layer in enumerate(self.layers):
            x = layer(x)
            if index < last:
                x = F.relu(x)
        return x
