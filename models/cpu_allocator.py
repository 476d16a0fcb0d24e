"""Keeping freed tensor memory inside the process (glibc malloc settings), so large CPU tensors are reused.

glibc serves every allocation above its mmap threshold (at most 32 MiB by its own rule) with a fresh `mmap`
and returns it to the kernel on `free`. The OV-AVSS network allocates dozens of 25-100 MB activations per clip
(e.g. the pixel decoder's FFN hidden layer, 25,200 x 1024 float32), so every one of them was page-faulted and
zero-filled by the kernel again: measured on 2 cores, 1.1-1.2 million page faults and 1.7-3.6 s of system time
per r50 clip, a forward of 4.4-6.1 s instead of 3.5 s. Raising the mmap and trim thresholds to 1 GiB keeps
that memory in the heap, where the next clip reuses it.

PyTorch's own advice for CPU inference is to preload jemalloc or tcmalloc; that needs `LD_PRELOAD` before
the process starts, which a `pip install`ed command cannot arrange. `mallopt` gives the same effect for
these large blocks from inside the process. Set `AVSEG_MALLOC=system` to keep the C library's defaults.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import sys

# glibc's mallopt parameter numbers (malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3

#: Allocations below this size come from the heap instead of their own mmap.
MMAP_THRESHOLD_BYTES = 1 << 30
#: Free memory at the top of the heap is returned to the kernel only beyond this size.
TRIM_THRESHOLD_BYTES = 1 << 30


def _glibc() -> ctypes.CDLL | None:
    """The process's C library when it is glibc (musl and others lack `gnu_get_libc_version`)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018 (attribute lookup is the glibc check)
        libc.mallopt  # noqa: B018
    except (OSError, AttributeError):
        return None
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.mallopt.restype = ctypes.c_int
    return libc


@functools.cache
def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds to 1 GiB for this process; True when both were set.

    Idempotent (runs once per process). Does nothing (False) off glibc Linux, or when the environment has
    `AVSEG_MALLOC=system`. Cost: up to `TRIM_THRESHOLD_BYTES` of freed memory may stay resident between
    clips; it is reused, so a long video's peak memory stays that of one clip.
    """
    if os.environ.get("AVSEG_MALLOC", "").strip().lower() == "system":
        return False
    libc = _glibc()
    if libc is None:
        return False
    # Trim threshold first: once the mmap threshold is set, glibc stops adjusting both on its own.
    trimmed = libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) == 1
    mapped = libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1
    return trimmed and mapped
