"""Batch normalisation with fixed statistics and affine parameters (detectron2's `FrozenBatchNorm2d`).

All four tensors are buffers, so nothing here is trained and the optimiser never sees them:

    y = x * scale + shift,   scale = weight / sqrt(running_var + eps),   shift = bias - running_mean * scale

The folded `scale` / `shift` are computed once and kept, for the last input dtype, until a buffer changes (in
place, as `load_state_dict` does, or replaced, as `.to()` does): recomputing them took 5 small operations per
layer, 265 of the r50 forward's ~1,400, each a kernel launch that a launch-bound GPU run waits for
(benchmarks/count_ops.py). The kept values are exactly the recomputed ones. (An in-place edit through `.data`,
e.g. `bn.weight.data.mul_(2)`, bypasses PyTorch's version counter and is not seen: edit the buffers themselves,
under `torch.no_grad()`, or assign new tensors.)

A fresh module is the identity (weight 1, bias 0, running_mean 0, running_var 1 - eps, as detectron2 sets
it). State dicts carry exactly `weight`, `bias`, `running_mean`, `running_var`; a `num_batches_tracked`
entry (present in `nn.BatchNorm2d` state dicts, e.g. torchvision's) is accepted and ignored.
"""

from __future__ import annotations

import torch
from torch import nn

from models.ovavss.device_constants import capturing_cuda_graph


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
        self._folded: tuple[torch.Tensor, torch.Tensor] | None = None
        self._folded_from: tuple | None = None  # (dtype, mode, buffer versions), the buffers themselves

    def scale_and_shift(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The folded affine map: `scale`, `shift`, each (C,) float, with y = x * scale + shift."""
        scale = self.weight * torch.rsqrt(self.running_var + self.eps)
        shift = self.bias - self.running_mean * scale
        return scale, shift

    def _folded_for(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """(scale, shift) as (1, C, 1, 1) tensors of `dtype`, kept while the buffers stay the same."""

        def fold() -> tuple[torch.Tensor, torch.Tensor]:
            scale, shift = self.scale_and_shift()
            shape = (1, -1, 1, 1)
            return scale.to(dtype).reshape(shape), shift.to(dtype).reshape(shape)

        buffers = (self.weight, self.bias, self.running_mean, self.running_var)
        # Not kept: under torch.compile, during CUDA-graph capture (a replay must read the buffers themselves),
        # and for inference-mode buffers, which have no version counter to tell an in-place change.
        if (torch.compiler.is_compiling() or capturing_cuda_graph(self.weight.device)
                or any(b.is_inference() for b in buffers)):
            return fold()
        # The same tensor objects (held here, so a replaced buffer's memory cannot come back under a new tensor),
        # with the same memory (`buffer.data = other` swaps it without a version change), unchanged in place since
        # (their version counters), for the same dtype and mode.
        state = (dtype, torch.is_inference_mode_enabled(), tuple((b.data_ptr(), b._version) for b in buffers))
        kept = self._folded_from
        if kept is None or state != kept[0] or any(old is not new for old, new in zip(kept[1], buffers)):
            self._folded = fold()
            self._folded_from = (state, buffers)
        return self._folded

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, C, H, W) -> (N, C, H, W), same dtype and memory format."""
        scale, shift = self._folded_for(x.dtype)
        return torch.addcmul(shift, x, scale)

    def _apply(self, fn, recurse: bool = True):
        self._folded = self._folded_from = None  # moved or converted: nothing kept for the old buffers
        return super()._apply(fn, recurse)

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ) -> None:
        state_dict.pop(prefix + "num_batches_tracked", None)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"
