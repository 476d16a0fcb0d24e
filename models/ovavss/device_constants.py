"""Small constant tensors that depend only on the input's shape, made once and kept on each device that uses them.

Some inputs of the forward depend only on the input resolution: the deformable attention's level sizes and the
Swin shifted-window masks (made on the host), the sine position encodings and the deformable encoder's
reference points (computed on the device). Copying the host-made ones to the GPU at every call is a blocking
host-to-device copy: the CPU waits for the GPU each time, and inside CUDA-graph capture such a copy is not
allowed at all. Recomputing the device-made ones costs ~190 small operations per r50 forward, each a kernel
launch that a launch-bound GPU run waits for (benchmarks/count_ops.py). So both kinds are made once per key and
reused. An inference-mode tensor cannot take part in autograd later, so inference mode is part of the key.
Under torch.compile the constant is simply made inside the graph.

A CUDA graph reads these tensors by address without holding a reference to them, so `GraphedNetwork` keeps a
reference to every entry a capture may read (`DeviceConstants.entries_in`) for as long as it keeps the graph.
"""

from __future__ import annotations

import collections
from typing import Callable, Hashable

import torch
from torch import nn

__all__ = ["DeviceConstants", "ModuleWithConstants", "capturing_cuda_graph"]


def capturing_cuda_graph(device: torch.device) -> bool:
    """Whether work on `device` is being recorded into a CUDA graph right now."""
    return device.type == "cuda" and torch.cuda.is_current_stream_capturing()


class DeviceConstants:
    """A bounded cache of small constant tensors on their devices, least recently used dropped first.

    Args:
        max_entries: kept entries (they are keyed by input resolution, so this only matters for training with
            many random sizes).
    """

    def __init__(self, max_entries: int = 64) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, got {max_entries}")
        self.max_entries = int(max_entries)
        self.entries: collections.OrderedDict[tuple, torch.Tensor] = collections.OrderedDict()

    def _lookup(self, full_key: tuple) -> torch.Tensor | None:
        value = self.entries.get(full_key)
        if value is not None:
            self.entries.move_to_end(full_key)
        return value

    def _store(self, full_key: tuple, value: torch.Tensor) -> torch.Tensor:
        while len(self.entries) >= self.max_entries:
            self.entries.popitem(last=False)
        self.entries[full_key] = value
        return value

    def get(self, key: Hashable, make: Callable[[], torch.Tensor], device: torch.device,
            dtype: torch.dtype) -> torch.Tensor:
        """`make()` (a host tensor) as `dtype` on `device`, made and copied at the first request of `key`."""
        if torch.compiler.is_compiling():
            return make().to(device=device, dtype=dtype)
        full_key = (key, torch.device(device), dtype, torch.is_inference_mode_enabled())
        value = self._lookup(full_key)
        if value is None:
            value = self._store(full_key, make().to(dtype=dtype).to(device, non_blocking=True))
        return value

    def computed(self, key: Hashable, make: Callable[[], torch.Tensor], device: torch.device) -> torch.Tensor:
        """`make()`, which computes the tensor on `device` itself (so the values are exactly those of computing
        it at every call), kept under `key` (plus device and inference mode). Computed afresh, and not kept,
        under torch.compile and while a CUDA graph is being captured (the graph's own memory then holds it)."""
        device = torch.device(device)
        if torch.compiler.is_compiling() or capturing_cuda_graph(device):
            return make()
        full_key = (key, device, torch.is_inference_mode_enabled())
        value = self._lookup(full_key)
        if value is None:
            value = self._store(full_key, make())
        return value

    def __len__(self) -> int:
        return len(self.entries)

    def clear(self) -> None:
        """Drop every entry."""
        self.entries.clear()

    @staticmethod
    def attributes_of(module: nn.Module) -> list["DeviceConstants"]:
        """The `DeviceConstants` attributes of `module` itself (not of its submodules)."""
        return [value for value in vars(module).values() if isinstance(value, DeviceConstants)]

    @staticmethod
    def entries_in(module: nn.Module) -> list[torch.Tensor]:
        """Every tensor kept by the `DeviceConstants` attributes of `module` and its submodules."""
        return [tensor for submodule in module.modules() for constants in DeviceConstants.attributes_of(submodule)
                for tensor in constants.entries.values()]


class ModuleWithConstants(nn.Module):
    """An `nn.Module` whose `DeviceConstants` attributes are emptied whenever its tensors are moved or converted
    (`.to()`, `.cuda()`, `.half()`, ...): what was kept for the old device must not stay allocated there."""

    def _apply(self, fn, recurse: bool = True):
        for constants in DeviceConstants.attributes_of(self):
            constants.clear()
        return super()._apply(fn, recurse)
