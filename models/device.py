"""Choosing the torch device from what the user typed (auto, cpu, cuda, cuda:N)."""

from __future__ import annotations

import numpy as np
import torch

from models.cpu_allocator import keep_freed_memory
from models.errors import AVSegError, UsageError


def flush_denormals() -> bool:
    """Treat subnormal floats as zero on the CPU (FTZ/DAZ), as GPUs do; True when the CPU supports it.

    Subnormal numbers make x86 arithmetic 10-100x slower. They appear in attention softmaxes and activations
    (measured: SAM ViT-B's image encoder on a padded 360p frame took 163 s instead of 12.7 s on 2 cores). The
    setting is per thread and worker threads inherit it when they are created, so it must run before torch's
    first parallel operation; `resolve_device` calls it. Values below 1.2e-38 become 0: no visible effect on
    results.

    numpy before 2.3 works out each float type's limits the first time `np.finfo` meets that type and, with
    subnormals already off, warns "The value of the smallest subnormal for <class 'numpy.float32'> type is zero"
    (importing `numpy.ma`, as scipy does, meets four): the limits are worked out here, before, and numpy keeps them.
    """
    for float_type in (np.float16, np.float32, np.float64, np.longdouble):
        np.finfo(float_type)
    return bool(torch.set_flush_denormal(True))


def cpu_supports_bf16() -> bool:
    """True when oneDNN runs bfloat16 natively on this CPU (AVX512-BF16 or AMX; e.g. Intel Xeon since Cooper
    Lake, AMD Zen 4). Elsewhere bfloat16 is emulated and slower than float32."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # pragma: no cover - builds without oneDNN
        return False


def prepare_cpu() -> None:
    """The process-wide CPU settings every avseg command runs with: `flush_denormals` and
    `models.cpu_allocator.keep_freed_memory`. Call before torch's first parallel operation."""
    flush_denormals()
    keep_freed_memory()


def resolve_device(device: str | torch.device) -> torch.device:
    """"auto" -> CUDA when available, else CPU; asking for CUDA without a GPU is a user error.

    Also applies the process-wide CPU settings (`prepare_cpu`): subnormal floats off, freed memory kept.
    """
    prepare_cpu()
    if isinstance(device, torch.device):
        name = str(device)
    else:
        name = str(device).strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise AVSegError(f"device {name!r} was asked for, but PyTorch sees no CUDA GPU on this machine (use cpu)")
        return torch.device(name)
    if name == "cpu":
        return torch.device("cpu")
    raise UsageError(f"unknown device {name!r}: use auto, cpu or cuda")
