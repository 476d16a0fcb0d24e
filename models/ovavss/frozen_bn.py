"""Batch normalisation with fixed statistics and affine parameters (detectron2's `FrozenBatchNorm2d`).

All four tensors are buffers, so nothing here is trained and the optimiser never sees them:

    y = x * scale + shift,   scale = weight / sqrt(running_var + eps),   shift = bias - running_mean * scale

A fresh module is the identity (weight 1, bias 0, running_mean 0, running_var 1 - eps, as detectron2 sets
it). State dicts carry exactly `weight`, `bias`, `running_mean`, `running_var`; a `num_batches_tracked`
entry (present in `nn.BatchNorm2d` state dicts, e.g. torchvision's) is accepted and ignored.
"""

from __future__ import annotations

import torch
from torch import nn


class FrozenBatchNorm2d(nn.Module):
    """Per-channel affine map with frozen batch-norm statistics: (N, C, H, W) -> (N, C, H, W).

    Computed as one fused multiply-add with the input's dtype and memory format (channels_last stays
    channels_last), not through `F.batch_norm`.

    Args:
        num_features: number of channels C.
        eps: added to `running_var` before the square root (detectron2 default 1e-5).
    """

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features) - eps)

    def scale_and_shift(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The folded affine map: `scale`, `shift`, each (C,) float, with y = x * scale + shift."""
        scale = self.weight * torch.rsqrt(self.running_var + self.eps)
        shift = self.bias - self.running_mean * scale
        return scale, shift

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, C, H, W) -> (N, C, H, W), same dtype and memory format."""
        scale, shift = self.scale_and_shift()
        shape = (1, -1, 1, 1)
        return torch.addcmul(shift.to(x.dtype).reshape(shape), x, scale.to(x.dtype).reshape(shape))

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ) -> None:
        state_dict.pop(prefix + "num_batches_tracked", None)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"
