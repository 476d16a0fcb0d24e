"""Command-line options of the OV-AVSS predictor shared by `annotate` and `eval` (one definition each)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import typer

from avseg_cli.values import FRACTION_METAVAR, fraction


class CropProtocol(str, Enum):
    official = "official"
    centered = "centered"


class AmpMode(str, Enum):
    off = "off"
    fp16 = "fp16"
    bf16 = "bf16"


AMP_OPTION = typer.Option(
    AmpMode.off, "--amp", help="With --checkpoint: off, fp16 (CUDA; the official precision regime) or bf16 (CUDA, or a "
    "CPU with bfloat16 instructions: AMX / AVX512-BF16, about 20% faster there). Example: --amp fp16"
)
SOUND_GATE_OPTION = typer.Option(
    None, "--sound-gate", parser=fraction, metavar=FRACTION_METAVAR,
    help="With --checkpoint: only classify queries whose sound-head P(sounding) is at least this (not in the "
    "official protocol; faster). Example: --sound-gate 0.5"
)
MAX_CROPS_OPTION = typer.Option(
    None, "--max-crops", min=1, help="With --checkpoint: per frame, classify only the N most sounding queries "
    "(not in the official protocol; bounds the CLIP work, which dominates on the CPU). Example: --max-crops 3"
)
PROTOCOL_OPTION = typer.Option(
    CropProtocol.official, "--protocol", help="With --checkpoint: the square crop CLIP sees of each mask: official "
    "(anchored at the mask box's top-left corner, as the released code does) or centered (centred on the box, as "
    "the paper describes). Example: --protocol centered"
)
TOP_K_OPTION = typer.Option(
    None, "--top-k", min=1, help="With --checkpoint: at most N (object, class) pairs are kept per 5-frame clip, "
    "highest class probability first (default: 10, as officially). Example: --top-k 5"
)
SHORT_SIDE_OPTION = typer.Option(
    None, "--short-side", min=32, help="With --checkpoint: the short side (pixels) frames are resized to for the "
    "network (default: the model's test size, 360 for r50 and swinb as officially; training saw 240-480). Larger: "
    "finer masks, slower; the outputs keep the video's size. Example: --short-side 480"
)


@dataclass(frozen=True)
class OvavssChoices:
    """The OV-AVSS-only options as typed on the command line."""

    amp: str = "off"
    sound_gate: float | None = None
    max_crops: int | None = None
    protocol: str = CropProtocol.official.value
    top_k: int | None = None
    short_side: int | None = None

    def explicit(self) -> dict[str, object]:
        """Option name -> value for the options set away from their defaults (None where not)."""
        return {
            "--amp": None if self.amp == "off" else self.amp,
            "--sound-gate": self.sound_gate,
            "--max-crops": self.max_crops,
            "--protocol": None if self.protocol == CropProtocol.official.value else self.protocol,
            "--top-k": self.top_k,
            "--short-side": self.short_side,
        }

    def predictor_kwargs(self) -> dict[str, object]:
        """The options as `AVSegPredictor.from_checkpoint` keyword arguments (defaults left to it)."""
        kwargs: dict[str, object] = {
            "amp": self.amp, "sound_gate": self.sound_gate, "max_crops_per_frame": self.max_crops,
            "protocol": self.protocol,
        }
        if self.top_k is not None:
            kwargs["top_k"] = self.top_k
        if self.short_side is not None:
            kwargs["short_side"] = self.short_side
        return kwargs


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
