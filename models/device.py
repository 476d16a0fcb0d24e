"""Choosing the torch device from what the user typed (auto, cpu, cuda, cuda:N)."""

from __future__ import annotations

import torch

from models.errors import AVSegError, UsageError


def resolve_device(device: str | torch.device) -> torch.device:
    """"auto" -> CUDA when available, else CPU; asking for CUDA without a GPU is a user error."""
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
