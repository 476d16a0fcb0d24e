"""Options of the training-free zero-shot method (`--method zeroshot`); every number is documented in fusion.py."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from models.numbers_check import real_number, whole_number
from models.ovavss.prompts import VILD_TEMPLATES, template_problem

DETECTORS = ("grounding-dino", "owlv2")
"""Text-conditioned box detectors the zero-shot method can use."""

INSTANCE_POLICIES = ("motion", "best", "all")
"""How instances of one sounding class are chosen when several are visible (see `fusion.select_instances`)."""

DEFAULT_BOX_THRESHOLD = {"grounding-dino": 0.3, "owlv2": 0.1}
"""Default detector score thresholds: Grounding DINO scores run higher than OWLv2's."""


REAL_OPTIONS = ("audio_window_s", "audio_threshold", "silence_dbfs", "box_threshold", "nms_iou", "rescore_weight",
                "keep_ratio", "motion_weight", "score_threshold")
"""Options that are real numbers (thresholds, levels, weights, seconds): ints and floats, finite."""

WHOLE_OPTIONS = ("max_sounding", "detector_short_side", "max_boxes_per_class", "min_mask_pixels", "max_instances")
"""Options that are counts or sizes: whole numbers (ints, not 1.5 or True)."""

OPTIONAL_OPTIONS = ("box_threshold", "detector_short_side")
"""Numeric options that may be None (meaning: the detector's or the model's default)."""

TEXT_OPTIONS = ("detector", "instance_policy", "audio_prompt", "clip_model", "clip_pretrained")
"""Options that are strings."""


def check_real(name: str, value: object) -> float:
    """`value` as a float; TypeError unless it is a real number (not a bool or a string), ValueError for NaN or an
    infinity."""
    number = real_number(name, value)
    if not math.isfinite(number):
        raise ValueError(f"{name} must be a finite number, got {number}")
    return number


@dataclass(frozen=True)
class ZeroShotConfig:
    """Every knob of the zero-shot pipeline; defaults are what `avseg annotate --method zeroshot` uses.

    Audio (CLAP, per analysed frame):
        audio_window_s: seconds of sound each frame is judged by, starting at the frame's timestamp (the same
            0.975 s window the OV-AVSS model hears by default).
        audio_prompt: CLAP text prompt per class name.
        null_prompts: extra CLAP texts competing with the class names in the softmax ("nothing in the
            vocabulary is sounding"); never reported as classes.
        audio_threshold: a class is sounding in a frame when its CLAP probability is at least this.
        max_sounding: at most this many classes sound per frame (the most probable).
        silence_dbfs: windows quieter than this RMS level (dB full scale) have no sounding class at all.

    Vision (per analysed frame, only for frames with a sounding class):
        detector: "grounding-dino" (default) or "owlv2".
        detector_short_side: Grounding DINO input size (shortest edge; None = the model's 800). OWLv2 has a fixed
            960 x 960 input.
        box_threshold: detector score a box needs for a sounding class (None: the detector's default,
            `DEFAULT_BOX_THRESHOLD`).
        nms_iou: per-class non-maximum suppression IoU.
        max_boxes_per_class: boxes per sounding class sent to SAM (highest detector score first).
        min_mask_pixels: masks smaller than this are dropped.

    Naming and selection:
        rescore: re-score the masked crops with the OV-AVSS CLIP classifier (square crop, ViLD prompt ensemble).
        rescore_weight: w in score = detector^(1 - w) * clip^w (0: detector only, 1: CLIP only).
        clip_model, clip_pretrained: the open_clip model used for re-scoring.
        clip_templates: prompt templates of the re-scoring's class embeddings (ViLD's 14 by default).
        instance_policy: "motion" (default), "best" or "all" (see `fusion.select_instances`).
        keep_ratio: with "motion", other instances of a class are kept when their evidence is at least this
            fraction of the best one's.
        motion_weight: exponent of the relative motion in the "motion" evidence.
        score_threshold: instances below this final score are dropped.
        max_instances: at most this many instances per frame (highest score first).
    """

    audio_window_s: float = 0.975
    audio_prompt: str = "This is a sound of {}."
    null_prompts: tuple[str, ...] = ("This is the sound of silence.", "This is background noise.")
    audio_threshold: float = 0.2
    max_sounding: int = 3
    silence_dbfs: float = -60.0

    detector: str = "grounding-dino"
    detector_short_side: int | None = None
    box_threshold: float | None = None
    nms_iou: float = 0.5
    max_boxes_per_class: int = 3
    min_mask_pixels: int = 16

    rescore: bool = True
    rescore_weight: float = 0.5
    clip_model: str = "ViT-B-16"
    clip_pretrained: str = "openai"
    clip_templates: tuple[str, ...] = VILD_TEMPLATES
    instance_policy: str = "motion"
    keep_ratio: float = 0.5
    motion_weight: float = 1.0
    score_threshold: float = 0.2
    max_instances: int = 10

    def __post_init__(self) -> None:
        """Check every option's type and range.

        Raises:
            TypeError: a number of the wrong kind (a string, a bool, a fraction where a count is meant), a text
                option that is not text.
            ValueError: a value out of range (NaN and infinities included) or an unknown name.
        """
        self._check_types()
        if self.detector not in DETECTORS:
            raise ValueError(f"detector must be one of {DETECTORS}, got {self.detector!r}")
        if self.instance_policy not in INSTANCE_POLICIES:
            raise ValueError(f"instance_policy must be one of {INSTANCE_POLICIES}, got {self.instance_policy!r}")
        for name in ("audio_threshold", "nms_iou", "rescore_weight", "keep_ratio", "score_threshold"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        if self.box_threshold is not None and not 0.0 <= self.box_threshold <= 1.0:
            raise ValueError(f"box_threshold must be in [0, 1], got {self.box_threshold}")
        if self.detector_short_side is not None:
            if self.detector != "grounding-dino":
                raise ValueError("detector_short_side applies to grounding-dino only (OWLv2's input is fixed)")
            if self.detector_short_side < 32:
                raise ValueError(f"detector_short_side must be >= 32, got {self.detector_short_side}")
        if self.audio_window_s <= 0:
            raise ValueError(f"audio_window_s must be > 0, got {self.audio_window_s}")
        if self.silence_dbfs > 0:
            raise ValueError(f"silence_dbfs must be <= 0 (dB relative to full scale), got {self.silence_dbfs}")
        if self.motion_weight < 0:
            raise ValueError(f"motion_weight must be >= 0, got {self.motion_weight}")
        if self.min_mask_pixels < 0:
            raise ValueError(f"min_mask_pixels must be >= 0, got {self.min_mask_pixels}")
        for name in ("max_sounding", "max_boxes_per_class", "max_instances"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.clip_templates:
            raise ValueError("clip_templates must hold at least one template")
        for template in self.clip_templates:
            problem = template_problem(template)
            if problem is not None:
                raise ValueError(f"clip template {template!r} {problem}")
        problem = template_problem(self.audio_prompt)
        if problem is not None:
            raise ValueError(f"audio_prompt {self.audio_prompt!r} {problem} (the class name goes in the '{{}}')")

    def _check_types(self) -> None:
        """TypeError for an option of the wrong type; ValueError for a NaN or infinite number.

        Numbers are stored as Python float / int afterwards (numpy scalars included), so `to_dict` stays JSON-able.
        """
        for name in REAL_OPTIONS + WHOLE_OPTIONS:
            value = getattr(self, name)
            if value is None and name in OPTIONAL_OPTIONS:
                continue
            if name in REAL_OPTIONS:
                object.__setattr__(self, name, check_real(name, value))
            else:
                object.__setattr__(self, name, whole_number(name, value))
        if not isinstance(self.rescore, (bool, np.bool_)):
            raise TypeError(f"rescore must be True or False, got {self.rescore!r}")
        for name in TEXT_OPTIONS:
            if not isinstance(getattr(self, name), str):
                raise TypeError(f"{name} must be a string, got {type(getattr(self, name)).__name__}")
        for name in ("null_prompts", "clip_templates"):
            texts = getattr(self, name)
            if isinstance(texts, str) or not isinstance(texts, (tuple, list)):
                raise TypeError(f"{name} must be a tuple of strings, got {type(texts).__name__}")
            for text in texts:
                if not isinstance(text, str):
                    raise TypeError(f"{name} must hold strings only, got {text!r}")

    @property
    def effective_box_threshold(self) -> float:
        """`box_threshold`, or the detector's default when it is None."""
        return DEFAULT_BOX_THRESHOLD[self.detector] if self.box_threshold is None else float(self.box_threshold)

    def to_dict(self) -> dict:
        """Plain JSON-able dict (for `describe()` and the annotate JSON)."""
        data = asdict(self)
        data["null_prompts"] = list(self.null_prompts)
        data["clip_templates"] = "vild" if tuple(self.clip_templates) == VILD_TEMPLATES else list(self.clip_templates)
        data["effective_box_threshold"] = self.effective_box_threshold
        return data
