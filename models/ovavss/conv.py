"""A 2-D convolution with an optional normalisation and activation attached (detectron2's `Conv2d` shape).

Keeping the norm as a submodule *of the convolution* gives the state-dict keys the official checkpoints use:
`adapter_1.weight`, `adapter_1.norm.weight`, `adapter_1.norm.bias` (no `.0`/`.1` Sequential indices).
"""

from __future__ import annotations

import torch
from torch import nn


class Conv2dNorm(nn.Conv2d):
    """`nn.Conv2d` followed by `norm` (if given) and then `activation` (if given).

    Args:
        in_channels, out_channels, kernel_size, stride, padding, bias: as for `nn.Conv2d`.
        norm: a module applied to the convolution output, e.g. `nn.GroupNorm(32, out_channels)`;
            stored as attribute `norm` so its parameters appear under `<name>.norm.*`.
        activation: a parameter-free module applied last, e.g. `nn.ReLU()`.

    Shapes: (N, in_channels, H, W) -> (N, out_channels, H', W').
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        *,
        stride: int = 1,
        padding: int = 0,
        bias: bool = True,
        norm: nn.Module | None = None,
        activation: nn.Module | None = None,
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=bias)
        self.norm = norm
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = super().forward(x)
        if self.norm is not None:
            x = self.norm(x)
        if self.activation is not None:
            x = self.activation(x)
        return x


def c2_xavier_fill(conv: nn.Conv2d) -> None:
    """Caffe2's "XavierFill" as used by detectron2: kaiming-uniform with a = 1 on the weight, bias 0."""
    nn.init.kaiming_uniform_(conv.weight, a=1)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)
