"""`models.device`: the process-wide CPU setting that turns subnormal floats off, and what it must not disturb."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-W", "error", "-c", textwrap.dedent(code)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_flush_denormals_turns_subnormal_results_into_zero():
    done = _run("""
        import numpy as np, torch
        from models.device import flush_denormals
        tiny = torch.tensor([1e-20], dtype=torch.float32)
        before = (tiny * tiny).item()            # 1e-40: a subnormal float32
        supported = flush_denormals()
        after = (tiny * tiny).item()
        print(supported, before > 0, after, float(np.float32(1e-20) * np.float32(1e-20)))
    """)
    assert done.returncode == 0, done.stderr
    supported, was_subnormal, after, numpy_after = done.stdout.split()
    assert was_subnormal == "True"
    if supported == "True":  # x86 with SSE3; elsewhere torch reports False and nothing changes
        assert float(after) == 0.0 and float(numpy_after) == 0.0


def test_numpy_does_not_warn_about_subnormals_after_flushing():
    """numpy < 2.3 (the newest for Python 3.10) measured a float type's limits when `np.finfo` first met it and,
    with subnormals off, warned "The value of the smallest subnormal ... is zero" (four warning lines before every
    avseg command's own output): `flush_denormals` has them measured before it turns subnormals off."""
    done = _run("""
        import numpy as np
        from models.device import flush_denormals
        flush_denormals()
        import numpy.ma, scipy.optimize          # numpy.ma measures every float type on import
        for float_type, eps in ((np.float16, 2.0 ** -10), (np.float32, 2.0 ** -23), (np.float64, 2.0 ** -52)):
            assert np.finfo(float_type).eps == eps, float_type
        print("ok")
    """)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
