"""Command-line options of the OV-AVSS predictor shared by `annotate` and `eval` (one definition each)."""

from __future__ import annotations

import typer

AMP_OPTION = typer.Option(
    "off", "--amp", help="With --checkpoint: off, fp16 (CUDA; the official precision regime) or bf16 (CUDA, or a "
    "CPU with bfloat16 instructions: AMX / AVX512-BF16, about 20% faster there). Example: --amp fp16"
)
SOUND_GATE_OPTION = typer.Option(
    None, "--sound-gate", min=0.0, max=1.0, help="With --checkpoint: only classify queries whose sound-head "
    "P(sounding) is at least this (not in the official protocol; faster). Example: --sound-gate 0.5"
)
MAX_CROPS_OPTION = typer.Option(
    None, "--max-crops", min=1, help="With --checkpoint: per frame, classify only the N most sounding queries "
    "(not in the official protocol; bounds the CLIP work, which dominates on the CPU). Example: --max-crops 3"
)


def ovavss_only_options(amp: str, sound_gate: float | None, max_crops: int | None) -> dict[str, object]:
    """The OV-AVSS-only options a user gave (name -> value or None), for `reject_other_method_options`."""
    return {"--amp": None if amp == "off" else amp, "--sound-gate": sound_gate, "--max-crops": max_crops}


def runs_on_cpu(described: dict, method: str) -> bool:
    """Whether a predictor's `describe()` says it is `method` ("ov-avss", "zeroshot") running on the CPU."""
    return described.get("method") == method and str(described.get("device", "")).startswith("cpu")


def cpu_speed_hint(described: dict) -> str | None:
    """One warning line for an OV-AVSS predictor on the CPU with the official protocol, else None.

    `described` is the predictor's `describe()`. The official protocol sends every valid (query, frame) mask to
    CLIP: tens per frame at about 0.1-0.4 s each on a CPU, the bulk of the time (benchmarks/RESULTS.md).
    """
    if not runs_on_cpu(described, "ov-avss"):
        return None
    if described.get("max_crops_per_frame") is not None or described.get("sound_gate") is not None:
        return None
    return ("on the CPU the official protocol sends every mask of every frame to CLIP (tens per frame, 0.1-0.4 s "
            "each), which dominates the time; --max-crops 3 bounds that work (not the official protocol)")
