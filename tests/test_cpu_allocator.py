"""models.cpu_allocator: large freed tensors are reused instead of page-faulted in again (glibc Linux)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from models import cpu_allocator

pytestmark = pytest.mark.skipif(cpu_allocator._glibc() is None, reason="needs glibc's mallopt (Linux)")

TENSOR_MB = 96

# A network-like step (an input, a 96 MB hidden activation, an output, all freed) repeated 16 times; prints the
# page faults and the resident-set growth of the last four steps. (PyTorch allocates with posix_memalign, whose
# freed blocks glibc reuses only after a few rounds, hence the warm-up steps.)
PROBE = f"""
import json, resource
import torch
from models.device import resolve_device
resolve_device("cpu")
from models.cpu_allocator import keep_freed_memory
applied = keep_freed_memory()
x = torch.ones({TENSOR_MB} * 2**20 // 16)
faults, rss = [], []
for _ in range(16):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    hidden = torch.cat([x, x, x, x]).relu_()
    y = hidden[: x.numel()] + x
    del hidden, y
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    rss.append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
print(json.dumps({{"applied": applied, "faults": faults[-4:], "rss_growth_kb": rss[-1] - rss[-5]}}))
"""


def _probe(malloc_setting: str | None) -> dict:
    env = dict(os.environ)
    env.pop("AVSEG_MALLOC", None)
    if malloc_setting is not None:
        env["AVSEG_MALLOC"] = malloc_setting
    done = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=120,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_resolve_device_keeps_freed_tensor_memory_in_the_process():
    pages = TENSOR_MB * 2**20 // os.sysconf("SC_PAGE_SIZE")
    kept = _probe(None)
    assert kept["applied"] is True
    # Reused heap memory: no fresh pages once warm (a few for the bookkeeping), and no growth.
    assert max(kept["faults"]) < pages // 20, kept
    assert kept["rss_growth_kb"] == 0, kept


def test_system_setting_keeps_the_c_library_defaults():
    pages = TENSOR_MB * 2**20 // os.sysconf("SC_PAGE_SIZE")
    system = _probe("system")
    assert system["applied"] is False
    # glibc's default maps every such block afresh: each step faults in (nearly) all of its pages again.
    assert min(system["faults"]) > pages * 0.8, system


def test_keep_freed_memory_is_a_no_op_without_glibc(monkeypatch):
    monkeypatch.setattr(cpu_allocator, "_glibc", lambda: None)
    cpu_allocator.keep_freed_memory.cache_clear()
    try:
        assert cpu_allocator.keep_freed_memory() is False
    finally:
        cpu_allocator.keep_freed_memory.cache_clear()
