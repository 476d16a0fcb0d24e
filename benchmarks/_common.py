"""Shared by the benchmark scripts: what a user can get wrong ends in one `error:` line, not a traceback.

    fail(message)          print "error: MESSAGE" on stderr and exit 2 (a usage error) or the given code
    require_device(name)   exit 2 before any work when --device names CUDA and there is none (or an unknown device)
    run(main)              call main(); an `AVSegError` from avseg becomes one "error:" line with its exit code
    default_workers(n)     n data-loader workers, at most the CPUs this process may use (PyTorch warns above)
"""

from __future__ import annotations

import os
import sys
from typing import Callable, NoReturn


def fail(message: str, code: int = 2) -> NoReturn:
    print(f"error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(code)


def require_device(name: str, option: str = "--device", allow_auto: bool = False) -> None:
    """Exit 2 with one line unless `name` is a device this machine has: cpu, cuda[:N] with a GPU (and "auto"
    where `allow_auto`)."""
    import torch

    text = str(name).strip().lower()
    if allow_auto and text == "auto":
        return
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        fail(f"{option} {name}: unknown device (use cpu or cuda{' or auto' if allow_auto else ''})")
    if device.type == "cpu":
        return
    if device.type != "cuda":
        fail(f"{option} {name}: the benchmarks run on cpu or cuda")
    if not torch.cuda.is_available():
        fail(f"{option} {name}: no CUDA device here (torch.cuda.is_available() is False)")
    if device.index is not None and device.index >= torch.cuda.device_count():
        fail(f"{option} {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")


def run(main: Callable[[], None]) -> None:
    from models.errors import AVSegError

    try:
        main()
    except AVSegError as error:
        fail(error.message, error.exit_code)


def default_workers(wanted: int) -> int:
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, min(wanted, cpus))
