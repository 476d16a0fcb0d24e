"""What a predictor returns, and the interface every method (OV-AVSS, zero-shot, ...) implements.

`annotate` and `eval` depend only on this module: any object with the `VideoPredictor` methods can be
plugged in (the OV-AVSS `AVSegPredictor`, a training-free method, or a fake in tests).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Iterator, Protocol, Sequence

import numpy as np


@dataclass
class Instance:
    """One named sounding object in one frame.

    Attributes:
        mask: (H, W) bool at the frame's original resolution.
        label: the vocabulary name.
        class_index: index of `label` in the vocabulary (0-based; label maps store class_index + 1).
        score: classification probability in [0, 1].
        sound_score: the sound head's probability that this query is a sounding object, in [0, 1]
            (NaN for methods without one).
        query: which model query (or proposal) produced it, for tracking across frames of a clip.
    """

    mask: np.ndarray
    label: str
    class_index: int
    score: float
    sound_score: float = float("nan")
    query: int = -1


@dataclass
class FramePrediction:
    """The result for one frame: a semantic label map and the instances it was painted from.

    Attributes:
        label_map: (H, W) uint8/uint16, 0 = background, i = vocabulary index i - 1.
        instances: in painting order (highest score first); masks may overlap, the label map resolves
            overlaps first-come-first-served.
    """

    label_map: np.ndarray
    instances: list[Instance] = field(default_factory=list)


@dataclass
class ClipInput:
    """T frames of one video with their audio, as every predictor receives them.

    Attributes:
        frames: uint8 (T, H, W, 3) RGB at the original resolution.
        audio_examples: float32 (T, 1, 96, 64) VGGish log-mel example of each frame (0.96 s of sound).
        waveform_16k: the mono 16 kHz samples covering the clip (for methods with their own audio model),
            or None.
        times: (T,) frame timestamps in seconds.
    """

    frames: np.ndarray
    audio_examples: np.ndarray
    waveform_16k: np.ndarray | None = None
    times: Sequence[float] = ()


class VideoPredictor(Protocol):
    """A method that names and segments the sounding objects of clips.

    Optional attributes callers look for: `needs_waveform` (True: evaluation also fills `ClipInput.waveform_16k`,
    as `annotate` always does), `audio_description` (what the method hears, for the annotate JSON) and
    `predict_clips(clips)` (an iterator of `predict_clip` results that may overlap consecutive clips; see
    `predict_clips` below).
    """

    clip_len: int
    """How many frames one call expects (the model's T; 5 for OV-AVSS)."""

    def set_vocabulary(self, names: Sequence[str]) -> None:
        """Choose the class names (encoded once; later calls reuse them)."""

    def predict_clip(self, clip: ClipInput) -> list[FramePrediction]:
        """One `FramePrediction` per frame of the clip (len(clip.frames) <= clip_len)."""

    def describe(self) -> dict:
        """What produced the predictions (method, config, weights) for the JSON output."""


def predict_clips(predictor: VideoPredictor, clips: Iterable[ClipInput]) -> Iterator[list[FramePrediction]]:
    """`predictor.predict_clip` of each clip in order, through the predictor's own `predict_clips` when it has
    one (the OV-AVSS predictor overlaps consecutive clips on a GPU). `clips` may be a generator: it is read at
    most one clip ahead of the results."""
    batched = getattr(predictor, "predict_clips", None)
    if batched is not None:
        return iter(batched(clips))
    return (predictor.predict_clip(clip) for clip in clips)


def checked_frames(clip: ClipInput, max_frames: int) -> np.ndarray:
    """`clip.frames` as a uint8 (T, H, W, 3) array with 1 <= T <= max_frames.

    Raises:
        TypeError: `clip` is not a `ClipInput`.
        ValueError: the frames have another dtype, rank, channel count or number.
    """
    if not isinstance(clip, ClipInput):
        raise TypeError(f"a clip is a ClipInput(frames, audio_examples), got {type(clip).__name__}")
    if clip.frames is None:
        raise ValueError("frames must be uint8 (T, H, W, 3), got None")
    frames = np.asarray(clip.frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}")
    if not 1 <= frames.shape[0] <= max_frames:
        raise ValueError(f"a clip holds 1 to {max_frames} frames, got {frames.shape[0]}")
    if min(frames.shape[1:3]) < 1:
        raise ValueError(f"frames must be at least 1x1 pixels, got {frames.shape[2]}x{frames.shape[1]}")
    return frames


def checked_audio_examples(audio_examples, num_frames: int) -> np.ndarray:
    """VGGish log-mel examples as a finite float32 (num_frames, 1, 96, 64) array.

    Raises:
        ValueError: missing, of another shape or holding NaN / infinity (decoded audio never does: such
            values would silence every prediction without a word).
    """
    if audio_examples is None:
        raise ValueError(f"audio_examples must be float ({num_frames}, 1, 96, 64), got None")
    try:
        audio = np.asarray(audio_examples, dtype=np.float32)
    except (TypeError, ValueError) as error:
        raise ValueError(f"audio_examples must be float ({num_frames}, 1, 96, 64): {error}") from None
    if audio.shape != (num_frames, 1, 96, 64):
        raise ValueError(f"audio_examples must be ({num_frames}, 1, 96, 64), got {audio.shape}")
    if not np.isfinite(audio).all():
        raise ValueError("audio_examples hold NaN or infinite values")
    return audio
