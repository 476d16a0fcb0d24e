"""Command-line options shared by `annotate` and `eval` for choosing and tuning the method."""

from __future__ import annotations

from enum import Enum

import typer

from avseg_cli.ovavss_options import runs_on_cpu
from avseg_cli.values import FRACTION_METAVAR, fraction


class Method(str, Enum):
    auto = "auto"
    ovavss = "ovavss"
    zeroshot = "zeroshot"


class Detector(str, Enum):
    grounding_dino = "grounding-dino"
    owlv2 = "owlv2"


class InstancePolicy(str, Enum):
    motion = "motion"
    best = "best"
    all = "all"


ZEROSHOT_CPU_SECONDS = (15, 30)
"""Seconds per analysed frame with sound of the zero-shot method on 2 CPU cores (benchmarks/RESULTS.md)."""


def zeroshot_cpu_hint(described: dict, analysis_fps: float | None) -> str | None:
    """One warning line for the zero-shot method analysing every frame on the CPU, else None.

    `described` is the predictor's `describe()`. A frame with sound costs Grounding DINO + SAM + CLIP
    (`ZEROSHOT_CPU_SECONDS`): every frame of a 25 fps video is hours per minute of video.
    """
    if not runs_on_cpu(described, "zeroshot") or analysis_fps is not None:
        return None
    low, high = ZEROSHOT_CPU_SECONDS
    return (f"on the CPU the zero-shot method costs about {low}-{high} s per analysed frame with sound (every frame "
            "by default); --analysis-fps 1 analyses one frame per second and holds each result until the next")


def zeroshot_eval_cpu_hint(num_frames: int) -> str:
    """The warning line for evaluating the zero-shot method on the CPU: every one of the split's `num_frames`
    frames is analysed (call it when `runs_on_cpu(described, "zeroshot")`)."""
    low, high = (num_frames * seconds for seconds in ZEROSHOT_CPU_SECONDS)
    span = f"{low / 3600:.0f}-{high / 3600:.0f} hours" if high >= 7200 else f"{low / 60:.0f}-{high / 60:.0f} minutes"
    return (f"on the CPU the zero-shot method costs about {ZEROSHOT_CPU_SECONDS[0]}-{ZEROSHOT_CPU_SECONDS[1]} s per "
            f"frame with sound: up to {span} for the {num_frames} frames of this split; use --device cuda, and "
            "--save-predictions DIR to resume an interrupted run")


# Options shared by annotate and eval (one definition each).
METHOD_OPTION = typer.Option(
    Method.auto, "--method", help="ovavss (needs --checkpoint) or zeroshot (training-free: CLAP + Grounding DINO "
    "/ OWLv2 + SAM + CLIP, downloaded on first use); auto = ovavss with --checkpoint, else zeroshot."
)
DETECTOR_OPTION = typer.Option(
    Detector.grounding_dino, "--detector", help="Zero-shot: the text-conditioned box detector. Example: --detector owlv2"
)
INSTANCE_POLICY_OPTION = typer.Option(
    InstancePolicy.motion, "--instance-policy", help="Zero-shot: which visible instances of a sounding class are "
    "kept: motion (the moving ones), best (one per class) or all."
)
AUDIO_THRESHOLD_OPTION = typer.Option(
    None, "--audio-threshold", parser=fraction, metavar=FRACTION_METAVAR,
    help="Zero-shot: CLAP probability a class needs to count as sounding (default 0.2). Example: --audio-threshold 0.3"
)
DETECTOR_SIZE_OPTION = typer.Option(
    None, "--detector-size", min=32, help="Zero-shot: Grounding DINO input shortest edge in pixels (default: the "
    "model's 800, which upsamples 360p video; 480 has 2.8x fewer pixels: faster, coarser). Example: --detector-size 480"
)
BOX_THRESHOLD_OPTION = typer.Option(
    None, "--box-threshold", parser=fraction, metavar=FRACTION_METAVAR,
    help="Zero-shot: detector score a box needs (default 0.3 for grounding-dino, 0.1 for owlv2)."
)
NO_RESCORE_OPTION = typer.Option(
    False, "--no-rescore", help="Zero-shot: name masks by the detector alone (skip the CLIP re-scoring; faster)."
)
CLAP_WEIGHTS_OPTION = typer.Option(
    None, "--clap-weights", help="Zero-shot: local CLAP folder (save_pretrained / snapshot layout), for offline use."
)
DETECTOR_WEIGHTS_OPTION = typer.Option(
    None, "--detector-weights", help="Zero-shot: local detector folder, for offline use."
)
SAM_WEIGHTS_OPTION = typer.Option(
    None, "--sam-weights", help="Zero-shot: local SAM folder, for offline use."
)


class ZeroShotChoices:
    """The zero-shot options as typed on the command line."""

    def __init__(self, detector, instance_policy, audio_threshold, box_threshold, no_rescore, clap_weights,
                 detector_weights, sam_weights, detector_size=None) -> None:
        self.detector_size = detector_size
        self.detector = detector
        self.instance_policy = instance_policy
        self.audio_threshold = audio_threshold
        self.box_threshold = box_threshold
        self.no_rescore = no_rescore
        self.clap_weights = clap_weights
        self.detector_weights = detector_weights
        self.sam_weights = sam_weights

    def explicit(self) -> dict[str, object]:
        """Options the user set away from their defaults (for the --method ovavss check)."""
        return {
            "--detector": self.detector if self.detector != Detector.grounding_dino.value else None,
            "--instance-policy": self.instance_policy if self.instance_policy != InstancePolicy.motion.value else None,
            "--audio-threshold": self.audio_threshold, "--box-threshold": self.box_threshold,
            "--no-rescore": self.no_rescore, "--clap-weights": self.clap_weights, "--detector-size": self.detector_size,
            "--detector-weights": self.detector_weights, "--sam-weights": self.sam_weights,
        }

    def weight_paths(self) -> dict[str, str | None]:
        """The model folders given on the command line (option name -> value or None)."""
        return {"--clap-weights": self.clap_weights, "--detector-weights": self.detector_weights,
                "--sam-weights": self.sam_weights}

    def config(self):
        from dataclasses import replace

        from models.zeroshot.config import ZeroShotConfig

        from models.errors import UsageError

        if self.detector_size is not None and self.detector != Detector.grounding_dino.value:
            raise UsageError("--detector-size applies to --detector grounding-dino only (OWLv2's input is fixed)")
        config = ZeroShotConfig(detector=self.detector, instance_policy=self.instance_policy,
                                box_threshold=self.box_threshold, rescore=not self.no_rescore,
                                detector_short_side=self.detector_size)
        if self.audio_threshold is not None:
            config = replace(config, audio_threshold=self.audio_threshold)
        return config


def load_zeroshot_predictor(config, device: str, clap_weights, detector_weights, sam_weights, clip_weights):
    """The training-free predictor (`models.zeroshot.predictor.ZeroShotPredictor`), imported lazily; says
    "loading ..." on stderr once every model is found (downloads, on first use, show their own bars)."""
    from avseg_cli.console import err
    from models.zeroshot.predictor import ZeroShotPredictor

    return ZeroShotPredictor.from_pretrained(
        config, device, clap_weights=clap_weights, detector_weights=detector_weights, sam_weights=sam_weights,
        clip_weights=clip_weights, on_found=lambda: err.print("loading the zero-shot models (CLAP, detector, SAM) ..."),
    )
