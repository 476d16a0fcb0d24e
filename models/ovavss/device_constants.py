"""Small constant tensors made on the host once and kept on each device that uses them.

Some inputs of the forward depend only on the input resolution (the deformable attention's level sizes, the
Swin shifted-window masks). Copying them to the GPU at every call is a blocking host-to-device copy: the CPU
waits for the GPU each time, and inside CUDA-graph capture such a copy is not allowed at all. So they are made
once per key and reused; only the first use of a new resolution copies (without waiting: a pageable source is
staged at once). An inference-mode tensor cannot take part in autograd later, so inference mode is part of the
key. Under torch.compile the constant is simply made inside the graph.
"""

from __future__ import annotations

from typing import Callable, Hashable

import torch

__all__ = ["DeviceConstants"]


class DeviceConstants:
    """A bounded cache of device copies of host-made tensors.

    Args:
        max_entries: kept entries; the cache is emptied when it is full (they are tiny and keyed by input
            resolution, so this only matters for training with many random sizes).
    """

    def __init__(self, max_entries: int = 64) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, got {max_entries}")
        self.max_entries = int(max_entries)
        self.entries: dict[tuple, torch.Tensor] = {}

    def get(self, key: Hashable, make: Callable[[], torch.Tensor], device: torch.device,
            dtype: torch.dtype) -> torch.Tensor:
        """`make()` (a host tensor) as `dtype` on `device`, made and copied at the first request of `key`."""
        if torch.compiler.is_compiling():
            return make().to(device=device, dtype=dtype)
        full_key = (key, torch.device(device), dtype, torch.is_inference_mode_enabled())
        value = self.entries.get(full_key)
        if value is None:
            if len(self.entries) >= self.max_entries:
                self.entries.clear()
            value = make().to(dtype=dtype).to(device, non_blocking=True)
            self.entries[full_key] = value
        return value

    def __len__(self) -> int:
        return len(self.entries)
