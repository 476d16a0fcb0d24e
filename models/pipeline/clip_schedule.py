"""Which frames of a video are analysed together (the clip scheme of `avseg annotate`).

The model was trained on clips of T = `clip_len` (5) frames one second apart. With s = round(F) analysed
frames per second (F = the analysis rate, by default the video's own), the analysed frames are cut into blocks
of T x s frames; inside a block starting at frame b, clip j (j = 0 .. s-1) holds b + j, b + j + s, ...,
b + j + (T-1)s. Every frame is analysed exactly once, in a clip whose frames are s analysed frames apart: one
second when F is a whole number (25, 30), about one second for 29.97, s / F seconds otherwise (F = 2.5 gives
s = 3, 1.2 s; F below 1.5 gives s = 1, 1 / F seconds: 2 s at F = 0.5). The last block of a video is usually
partial and its clips shorter. See `models.pipeline.annotate` for the whole flow.
"""

from __future__ import annotations

import math
from fractions import Fraction


def clip_stride(analysis_rate: float | Fraction) -> int:
    """s: analysed frames per second, round(F) half up, at least 1 (25 for 25 fps, 30 for 29.97)."""
    return max(1, math.floor(Fraction(analysis_rate) + Fraction(1, 2)))


def block_clips(num_frames: int, clip_len: int, stride: int) -> list[list[int]]:
    """Positions (0-based inside a block) of the frames of each clip of a block of `num_frames` frames.

    Clip j holds j, j + stride, j + 2 stride, ... (at most `clip_len` of them); `num_frames` is at most
    `clip_len * stride` (a full block) and less for the last block of a video.
    """
    if clip_len < 1 or stride < 1:
        raise ValueError(f"clip_len and stride must be >= 1, got {clip_len}, {stride}")
    if not 0 <= num_frames <= clip_len * stride:
        raise ValueError(f"a block holds 0..{clip_len * stride} frames, got {num_frames}")
    return [list(range(j, num_frames, stride)) for j in range(min(stride, num_frames))]


def analysed_source_index(k: int, source_fps: Fraction, analysis_rate: Fraction) -> int:
    """Source frame of analysed frame k: the frame shown at k / F, floor(k x fps / F) (exact fractions)."""
    return (k * source_fps.numerator * analysis_rate.denominator) // (source_fps.denominator * analysis_rate.numerator)
