"""The sound each video frame is analysed with: a VGGish log-mel example aligned to the frame's timestamp.

Alignment rule (`avseg annotate`):

* the log-mel spectrogram of the **whole** 16 kHz mono waveform is computed once, with VGGish's
  numbers (`models.ovavss.audio_frontend`: 25 ms windows every 10 ms, 64 mel bands, ln(mel + 0.01));
  log-mel frame i covers samples [160 i, 160 i + 400), i.e. starts at i x 10 ms;
* a video frame at timestamp t seconds gets the 96 log-mel frames starting at frame
  i0 = floor(100 t + 1/2) (t rounded to the 10 ms hop, halves up): the 0.96 s of sound from its
  timestamp on, shape (1, 96, 64);
* log-mel frames past the end of the audio are **zeros** in the log-mel domain, as the official code
  pads missing examples (not silence, which would be ln 0.01);
* a video without an audio track is treated as true silence: every value is ln(0.01), the log-mel of
  an all-zero waveform, for every frame.

This differs from the official AVSBench indexing, where 1-fps frame k gets the k-th *non-overlapping*
0.96 s example (starting at 0.96 k s, which drifts from the frame's time k s); here every frame, at any
frame rate, hears the sound that starts at its own timestamp. Both count from the start of the file
(`models.io.video` and `models.io.audio`): audio that starts after the picture is preceded by silence, a
picture that starts after the audio by copies of its first frame, so the two stay in step.

Memory: the waveform (64 kB per second) and the float32 log-mel (25.6 kB per second) of the whole
video are kept, about 330 MB per hour; the spectrogram is computed in chunks so its temporary STFT
buffers stay small whatever the length.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from models.ovavss.audio_frontend import (
    EXAMPLE_FRAMES,
    LOG_OFFSET,
    NUM_MEL_BINS,
    SAMPLE_RATE,
    STFT_HOP_SAMPLES,
    STFT_WINDOW_SAMPLES,
    log_mel_spectrogram,
    num_log_mel_frames,
)

LOG_MEL_FRAMES_PER_SECOND = SAMPLE_RATE // STFT_HOP_SAMPLES  # 100: one log-mel frame every 10 ms
SILENCE_LOG_MEL = float(np.float32(math.log(LOG_OFFSET)))
"""ln(0.01) as float32: the log-mel value of true silence (an all-zero waveform)."""
WINDOW_SAMPLES = (EXAMPLE_FRAMES - 1) * STFT_HOP_SAMPLES + STFT_WINDOW_SAMPLES
"""15 600 samples (0.975 s): the sound one 96-frame example is computed from."""

_CHUNK_FRAMES = 4096


def chunked_log_mel(waveform_16k: np.ndarray, chunk_frames: int = _CHUNK_FRAMES) -> np.ndarray:
    """`log_mel_spectrogram` of a long waveform, `chunk_frames` STFT frames at a time.

    Args:
        waveform_16k: (N,) mono 16 kHz samples.

    Returns:
        (num_log_mel_frames(N), 64) float32; each row equals the float64 `log_mel_spectrogram` row cast
        to float32 (every frame depends only on its own 400 samples, so chunking changes nothing).
    """
    signal = np.asarray(waveform_16k)
    if signal.ndim != 1:
        raise ValueError(f"expected a (N,) mono waveform, got shape {signal.shape}")
    total = num_log_mel_frames(signal.shape[0])
    result = np.empty((total, NUM_MEL_BINS), dtype=np.float32)
    for first in range(0, total, chunk_frames):
        count = min(chunk_frames, total - first)
        start = first * STFT_HOP_SAMPLES
        stop = start + (count - 1) * STFT_HOP_SAMPLES + STFT_WINDOW_SAMPLES
        result[first : first + count] = log_mel_spectrogram(signal[start:stop])
    return result


def log_mel_start(time_seconds: float) -> int:
    """Index of the first log-mel frame of the example of a frame at `time_seconds`: floor(100 t + 1/2)."""
    return max(0, math.floor(time_seconds * LOG_MEL_FRAMES_PER_SECOND + 0.5 + 1e-9))


def waveform_span(waveform: np.ndarray | None, times: Sequence[float]) -> np.ndarray:
    """(N,) float32 samples of a 16 kHz waveform from the first time's example to the end of the last one's.

    Covers [min(times), max(times) + 0.975 s) with the times rounded like `log_mel_start`, cut at the end of the
    audio; `waveform` None (no audio track) gives zeros of the full length.
    """
    if len(times) == 0:
        return np.zeros(0, dtype=np.float32)
    start = log_mel_start(min(times)) * STFT_HOP_SAMPLES
    stop = log_mel_start(max(times)) * STFT_HOP_SAMPLES + WINDOW_SAMPLES
    if waveform is None:
        return np.zeros(stop - start, dtype=np.float32)
    return np.asarray(waveform[start:stop], dtype=np.float32).copy()


class FrameAudio:
    """Per-frame VGGish examples and waveform slices of one video's sound.

    Build it with `FrameAudio(waveform_16k)` for a video with audio or `FrameAudio.silent()` for one
    without; then `examples(times)` gives the (T, 1, 96, 64) input of a clip.
    """

    def __init__(self, waveform_16k: np.ndarray | None) -> None:
        """Args: waveform_16k: (N,) float32 mono 16 kHz samples, or None for a video without sound."""
        if waveform_16k is None:
            self.waveform: np.ndarray | None = None
            self.log_mel: np.ndarray | None = None
        else:
            self.waveform = np.asarray(waveform_16k, dtype=np.float32)
            self.log_mel = chunked_log_mel(self.waveform)

    @classmethod
    def silent(cls) -> "FrameAudio":
        """The sound of a video without an audio track: silence (log-mel ln 0.01 everywhere)."""
        return cls(None)

    @property
    def is_silent_track(self) -> bool:
        """True when the video had no audio track (not when its track merely is quiet)."""
        return self.log_mel is None

    def example(self, time_seconds: float) -> np.ndarray:
        """(1, 96, 64) float32 log-mel example of the frame at `time_seconds` (see the module docstring)."""
        if self.log_mel is None:
            return np.full((1, EXAMPLE_FRAMES, NUM_MEL_BINS), SILENCE_LOG_MEL, dtype=np.float32)
        start = log_mel_start(time_seconds)
        window = np.zeros((1, EXAMPLE_FRAMES, NUM_MEL_BINS), dtype=np.float32)
        available = self.log_mel[start : start + EXAMPLE_FRAMES]
        window[0, : available.shape[0]] = available
        return window

    def examples(self, times: Sequence[float]) -> np.ndarray:
        """(T, 1, 96, 64) float32 examples of the frames at `times` seconds."""
        if len(times) == 0:
            return np.zeros((0, 1, EXAMPLE_FRAMES, NUM_MEL_BINS), dtype=np.float32)
        return np.stack([self.example(t) for t in times])

    def waveform_span(self, times: Sequence[float]) -> np.ndarray:
        """(N,) float32 samples from the first time's example to the end of the last one's (`waveform_span`)."""
        return waveform_span(self.waveform, times)
