"""VGGish input: audio file -> waveform -> log-mel examples of 0.96 s (spec section 1.2).

The numbers are VGGish's (torchvggish `vggish_params` / `mel_features`), computed in numpy float64:

- mono = mean over channels; resample to 16 kHz with resampy (`kaiser_best`) only if the rate differs;
- STFT: 400-sample (25 ms) periodic-Hann frames every 160 samples (10 ms), 512-point rfft magnitude
  (257 bins), no padding: `1 + (num_samples - 400) // 160` frames;
- 64 HTK-mel bands between 125 and 7500 Hz (triangles linear in mel over bins at linspace(0, 8000, 257),
  DC bin zeroed), then ln(mel + 0.01);
- examples of 96 frames with hop 96 (0.96 s, no overlap), incomplete tail dropped: `frames // 96` examples,
  so 5 s of audio give 5 examples and 10 s give 10;
- the model always gets `num_examples` (10) examples: missing ones are zeros *in the log-mel domain* (not
  silence, which would be ln 0.01), extra ones are dropped (the official code crashes on more than 10).

Waveforms shorter than one STFT window (400 samples) give zero examples instead of the reference's error.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from models.errors import AVSegError

if TYPE_CHECKING:  # torch is imported where tensors are made, so the numpy front end stays light
    import torch

SAMPLE_RATE = 16_000
STFT_WINDOW_SAMPLES = 400
STFT_HOP_SAMPLES = 160
FFT_LENGTH = 512
NUM_MEL_BINS = 64
MEL_MIN_HZ = 125.0
MEL_MAX_HZ = 7500.0
LOG_OFFSET = 0.01
EXAMPLE_FRAMES = 96
EXAMPLE_HOP_FRAMES = 96
NUM_EXAMPLES = 10


def hertz_to_mel(frequencies_hz: np.ndarray | float) -> np.ndarray:
    """HTK mel scale: 1127 ln(1 + f / 700)."""
    return 1127.0 * np.log(1.0 + np.asarray(frequencies_hz, dtype=np.float64) / 700.0)


def periodic_hann(length: int) -> np.ndarray:
    """Periodic Hann window 0.5 - 0.5 cos(2 pi n / length), n = 0..length-1 (float64)."""
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(length) / length)


@lru_cache(maxsize=1)
def _mel_matrix() -> np.ndarray:
    num_bins = FFT_LENGTH // 2 + 1
    bin_mel = hertz_to_mel(np.linspace(0.0, SAMPLE_RATE / 2, num_bins))  # (257,)
    edges = np.linspace(hertz_to_mel(MEL_MIN_HZ), hertz_to_mel(MEL_MAX_HZ), NUM_MEL_BINS + 2)
    lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]  # (64,) each
    rising = (bin_mel[:, None] - lower) / (centre - lower)
    falling = (upper - bin_mel[:, None]) / (upper - centre)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights[0, :] = 0.0
    weights.setflags(write=False)
    return weights


def mel_matrix() -> np.ndarray:
    """(257, 64) float64 matrix mapping STFT magnitudes (row vectors) to HTK mel band energies."""
    return _mel_matrix().copy()


def num_log_mel_frames(num_samples: int) -> int:
    """STFT frames of a 16 kHz waveform: 1 + (num_samples - 400) // 160, or 0 below one window."""
    if num_samples < STFT_WINDOW_SAMPLES:
        return 0
    return 1 + (num_samples - STFT_WINDOW_SAMPLES) // STFT_HOP_SAMPLES


def num_examples_for(num_samples: int) -> int:
    """Log-mel examples of a 16 kHz waveform of `num_samples` samples (before padding)."""
    frames = num_log_mel_frames(num_samples)
    if frames < EXAMPLE_FRAMES:
        return 0
    return 1 + (frames - EXAMPLE_FRAMES) // EXAMPLE_HOP_FRAMES


def log_mel_spectrogram(waveform_16k: np.ndarray) -> np.ndarray:
    """(num_samples,) mono 16 kHz float -> (num_log_mel_frames, 64) float64 ln(mel + 0.01)."""
    signal = np.asarray(waveform_16k, dtype=np.float64)
    frames = num_log_mel_frames(signal.shape[0])
    if frames == 0:
        return np.zeros((0, NUM_MEL_BINS), dtype=np.float64)
    windows = np.lib.stride_tricks.sliding_window_view(signal, STFT_WINDOW_SAMPLES)[::STFT_HOP_SAMPLES][:frames]
    magnitude = np.abs(np.fft.rfft(windows * periodic_hann(STFT_WINDOW_SAMPLES), n=FFT_LENGTH))
    return np.log(magnitude @ _mel_matrix() + LOG_OFFSET)


def to_mono_16k(waveform: np.ndarray, sample_rate: int) -> np.ndarray:
    """(N,) or (N, C) samples at `sample_rate` -> (M,) float64 mono at 16 kHz, as the official code makes them:
    the mean over channels, then resampy (only for other rates; an empty waveform stays empty)."""
    data = np.asarray(waveform, dtype=np.float64)
    if data.ndim == 2:
        data = data.mean(axis=1)
    if sample_rate != SAMPLE_RATE and data.shape[0]:
        import resampy  # imports numba (slow); only needed for rates other than 16 kHz

        data = resampy.resample(data, int(sample_rate), SAMPLE_RATE)
    return data


def waveform_to_log_mel_examples(waveform: np.ndarray, sample_rate: int) -> np.ndarray:
    """Waveform -> VGGish log-mel examples.

    Args:
        waveform: (N,) mono or (N, C) multi-channel samples, nominally in [-1, 1).
        sample_rate: samples per second of `waveform`; anything but 16000 is resampled with resampy.

    Returns:
        (n, 96, 64) float32, n = number of complete 0.96 s examples (may be 0).
    """
    data = np.asarray(waveform, dtype=np.float64)
    if data.ndim not in (1, 2):
        raise ValueError(f"waveform must be (N,) or (N, C), got shape {data.shape}")
    if int(sample_rate) != sample_rate or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive integer, got {sample_rate}")
    if int(data.shape[0] * float(SAMPLE_RATE) / float(sample_rate)) < STFT_WINDOW_SAMPLES:
        return np.zeros((0, EXAMPLE_FRAMES, NUM_MEL_BINS), dtype=np.float32)  # shorter than one STFT window
    data = to_mono_16k(data, int(sample_rate))
    log_mel = log_mel_spectrogram(data)
    count = num_examples_for(data.shape[0])
    # Example hop == example length, so the examples are consecutive blocks of 96 frames.
    examples = log_mel[: count * EXAMPLE_FRAMES].reshape(count, EXAMPLE_FRAMES, NUM_MEL_BINS)
    return np.ascontiguousarray(examples, dtype=np.float32)


def read_wav(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Read an audio file the way the official code does: soundfile as int16, divided by 32768.

    Returns:
        (waveform, sample_rate): float64 (N,) for mono or (N, C) for multi-channel files, in [-1, 1).

    Raises:
        AVSegError: the file is missing or soundfile cannot decode it.
    """
    import soundfile

    path = Path(path)
    if not path.exists():
        raise AVSegError(f"audio file not found: {path}")
    if not path.is_file():
        raise AVSegError(f"audio path is not a file: {path}")
    try:
        data, sample_rate = soundfile.read(str(path), dtype="int16")
    except (RuntimeError, OSError, ValueError, TypeError) as error:  # LibsndfileError is a RuntimeError
        reason = " ".join(str(error).split()) or type(error).__name__
        if reason.startswith("Error opening") and "': " in reason:  # drop libsndfile's repeat of the path
            reason = reason.split("': ", 1)[1]
        raise AVSegError(f"cannot read audio file {path}: {reason}") from error
    return data / 32768.0, int(sample_rate)


def pad_examples(examples: np.ndarray, num_examples: int = NUM_EXAMPLES) -> np.ndarray:
    """(n, 96, 64) -> (num_examples, 96, 64): zero-pad at the end, or keep the first num_examples if n is larger."""
    examples = np.asarray(examples)
    if examples.ndim != 3 or examples.shape[1:] != (EXAMPLE_FRAMES, NUM_MEL_BINS):
        raise ValueError(f"examples must be (n, {EXAMPLE_FRAMES}, {NUM_MEL_BINS}), got shape {examples.shape}")
    if num_examples < 0:
        raise ValueError(f"num_examples must be >= 0, got {num_examples}")
    padded = np.zeros((num_examples, EXAMPLE_FRAMES, NUM_MEL_BINS), dtype=examples.dtype)
    keep = min(num_examples, examples.shape[0])
    padded[:keep] = examples[:keep]
    return padded


def read_wav_examples(path: str | os.PathLike, num_examples: int = NUM_EXAMPLES) -> torch.Tensor:
    """Audio file -> padded VGGish input: float32 tensor (num_examples, 1, 96, 64) (read + front end + pad)."""
    waveform, sample_rate = read_wav(path)
    examples = pad_examples(waveform_to_log_mel_examples(waveform, sample_rate), num_examples)
    import torch  # imported here so the numpy-only front end loads fast

    return torch.from_numpy(examples).unsqueeze(1)
