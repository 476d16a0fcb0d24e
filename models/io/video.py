"""Probe a video file and stream its frames, optionally sub-sampled to an analysis frame rate.

`probe` reads the container with PyAV (the bundled ffmpeg has no ffprobe) and decodes the first video
frame, so a file it accepts has at least one decodable frame. `iter_frames` streams RGB frames from an
ffmpeg subprocess (`-f rawvideo -pix_fmt rgb24` on a pipe): one frame is in memory at a time whatever
the video's length, and the process is killed when the iterator is closed early.

Frame selection rule (both for the full rate and for a lower analysis rate F): ffmpeg's
`fps=F:round=up` filter. Output frame k has timestamp t_k = k / F seconds from the first video frame
and is the source frame *shown* at t_k, i.e. the last source frame whose presentation time is <= t_k;
frames come out while t_k is before the end of the video. For a 25 fps source and F = 1 these are
source frames 0, 25, 50, ... (t = 0, 1, 2 s); for 29.97 fps and F = 1: 0, 29, 59, ... The default
`fps=1` of ffmpeg would pick mid-second frames (12, 37, ...) instead. With `fps=None` the video's own
rate is used, which returns every frame of a constant-frame-rate video; a variable-frame-rate video is
resampled to its average rate. An F above the video's rate is lowered to it (frames are never
duplicated).

The video stream used is the file's first one that is not an embedded cover picture (album art in an
mp3/m4a does not count as video). Timestamps count from the start of the file (its earliest stream's
first timestamp, as ffmpeg counts), like the audio of `models.io.audio.decode_audio_16k`: a video
stream that starts after the file's audio begins with copies of its first frame, so frame k is the one
shown at k / F seconds into the file and stays in step with the sound.

Frames are rotated as the file's display matrix says (ffmpeg's autorotation), so they have the display
size `VideoInfo.width x VideoInfo.height`. Pixels are returned as stored: a non-square sample aspect
ratio is not applied.

Truncated or damaged files: `iter_frames` yields every frame ffmpeg can decode, then raises
`TruncatedVideoError` (an `AVSegError`; `on_truncated="warn"` issues a `TruncatedVideoWarning` and
returns instead) when ffmpeg failed, or when the decoded frames end more than `TRUNCATION_TOLERANCE_S`
before the duration in the file's header. The caller has received all good frames by then and may keep
its partial results.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator, Literal

import numpy as np

from models.errors import AVSegError, UsageError
from models.io.ffmpeg import StderrLog, check_media_file, ffmpeg_exe, media_path, open_container, start_reader

TRUNCATION_TOLERANCE_S = 0.5
"""Decoded video may end this much before the header's duration (plus one output frame) without a complaint."""


@dataclass(frozen=True)
class VideoInfo:
    """What `probe` learns about a video file.

    Attributes:
        width, height: size of the frames `iter_frames` yields, after rotation (pixels).
        fps: frame rate of the video stream (exact fraction, e.g. 30000/1001).
        num_frames: number of frames at `fps` (from the header, else duration x fps; an estimate).
        duration: length of the video stream in seconds (None when the file does not say).
        has_audio: the file has at least one audio stream.
        audio_codec: codec name of the first audio stream ("aac", "mp3", ...), None without audio.
        audio_sample_rate: its sample rate in Hz, None without audio.
        audio_channels: its channel count, None without audio.
        rotation: display rotation in degrees counter-clockwise (0, 90, 180 or 270), already applied
            to `width`/`height` and to the frames.
        duration_from_stream: `duration` is the video stream's own length (from its header or its
            Matroska DURATION tag); False when it is the whole file's, which may include longer audio.
            Only a stream's own duration is used to detect truncated files.
        stream_index: index of the video stream in the file (the first one that is not a cover picture).
        nominal_fps: the stream's nominal rate (ffmpeg's r_frame_rate) when it differs from its average rate by
            more than 1%, i.e. a variable-frame-rate video, which `iter_frames` resamples to the constant `fps`
            (the average); None for a constant-rate video.
        sample_aspect_ratio: width / height of one pixel as displayed, for the frames `iter_frames` yields
            (after rotation), when the pixels are not square (anamorphic video, e.g. 2/1 or 64/45); None for
            square or unspecified pixels.
        audio_streams: number of audio streams (only the first is decoded and kept in an overlay video).
    """

    width: int
    height: int
    fps: Fraction
    num_frames: int | None
    duration: float | None
    has_audio: bool
    audio_codec: str | None
    audio_sample_rate: int | None
    audio_channels: int | None
    rotation: int = 0
    duration_from_stream: bool = True
    stream_index: int = 0
    nominal_fps: Fraction | None = None
    sample_aspect_ratio: Fraction | None = None
    audio_streams: int = 0

    @property
    def variable_frame_rate(self) -> bool:
        """Frames are not evenly spaced: they are resampled to `fps` (see `nominal_fps`)."""
        return self.nominal_fps is not None

    def num_frames_at(self, fps: float | Fraction | None) -> int | None:
        """How many frames `iter_frames(path, self, fps)` yields for an intact file (None if unknown)."""
        rate = output_rate(self, fps)
        if self.duration is None:
            return self.num_frames if rate == self.fps else None
        if rate == self.fps and self.num_frames is not None:
            return self.num_frames
        return max(1, math.ceil(self.duration * rate - 1e-6))


class TruncatedVideoError(AVSegError):
    """The video ended early or broke off with a decoding error, after `frames_decoded` good frames."""

    def __init__(self, message: str, frames_decoded: int) -> None:
        super().__init__(message)
        self.frames_decoded = frames_decoded


class TruncatedVideoWarning(UserWarning):
    """Issued instead of `TruncatedVideoError` with `iter_frames(..., on_truncated="warn")`."""


def _normalise_rotation(degrees: float | None) -> int:
    """Round a display-matrix angle to 0/90/180/270 as ffmpeg's autorotation does (other angles: 0)."""
    if degrees is None or not math.isfinite(degrees):
        return 0
    angle = float(degrees) % 360.0
    nearest = round(angle / 90.0) * 90
    if abs(angle - nearest) >= 1.0:
        return 0
    return int(nearest) % 360


def _stream_rates(stream) -> tuple[Fraction | None, Fraction | None]:
    """The frame rate of a video stream, and its nominal rate when the two disagree (variable frame rate, else None).

    The rate is the exact r_frame_rate when it agrees with the average rate within 1%, else the average rate.
    """
    average = stream.average_rate
    guessed = stream.guessed_rate
    average = Fraction(average) if average else None
    guessed = Fraction(guessed) if guessed else None
    if average and guessed and abs(average - guessed) <= 0.01 * guessed:
        return guessed, None
    if average and guessed:
        return average, guessed
    return average or guessed, None


def _is_cover_picture(stream) -> bool:
    """An embedded cover image (album art in an mp3/m4a), which ffmpeg lists as a 1-frame video stream."""
    import av

    return bool(stream.disposition & av.stream.Disposition.attached_pic)


def _stream_duration(stream) -> float | None:
    """A stream's own length in seconds: its header duration, else a Matroska "DURATION" tag."""
    if stream.duration is not None and stream.time_base is not None and stream.duration > 0:
        return float(stream.duration * stream.time_base)
    tag = (stream.metadata or {}).get("DURATION") or (stream.metadata or {}).get("duration")
    if tag:
        try:
            hours, minutes, seconds = tag.strip().split(":")
            value = int(hours) * 3600 + int(minutes) * 60 + float(seconds)
        except ValueError:
            return None
        return value if value > 0 else None
    return None


def probe(path: str | os.PathLike) -> VideoInfo:
    """Read a video file's size, frame rate, length, rotation and audio stream (PyAV; decodes frame 0 only).

    Raises:
        AVSegError: one line naming the file when it does not exist, is a folder, is empty, is not a
            media file, has no video stream, or its first video frame cannot be decoded.
    """
    import av

    path = check_media_file(path)
    with open_container(path) as container:
        videos = [stream for stream in container.streams.video if not _is_cover_picture(stream)]
        if not videos:
            kinds = sorted({stream.type for stream in container.streams})
            if container.streams.video:
                kinds = ["cover picture" if kind == "video" else kind for kind in kinds]
            found = f" (it has {' and '.join(kinds)} only)" if kinds else ""
            raise AVSegError(f"no video stream in {path}{found}")
        stream = videos[0]
        stream_index = stream.index
        rate, nominal_rate = _stream_rates(stream)
        if rate is None or rate <= 0:
            raise AVSegError(f"cannot determine the frame rate of the video stream in {path}")

        duration = _stream_duration(stream)
        duration_from_stream = duration is not None
        if duration is None and container.duration is not None and container.duration > 0:
            duration = container.duration / av.time_base
        num_frames = stream.frames if stream.frames and stream.frames > 0 else None
        if num_frames is None and duration is not None:
            num_frames = max(1, round(duration * rate))

        # read everything now: PyAV stream objects are invalid once the container is closed
        audio = container.streams.audio[0] if container.streams.audio else None
        audio_codec = audio_sample_rate = audio_channels = None
        if audio is not None:
            audio_codec = audio.codec_context.codec.canonical_name
            audio_sample_rate = audio.codec_context.sample_rate or None
            audio_channels = audio.codec_context.channels or None

        try:
            first = next(container.decode(stream), None)
        except (av.error.FFmpegError, ValueError, OSError) as error:
            raise AVSegError(
                f"cannot decode the video in {path}: the file is damaged or truncated ({error})"
            ) from error
        if first is None:
            raise AVSegError(
                f"cannot decode the video in {path}: no frame could be decoded (damaged or truncated file)"
            )
        rotation = _normalise_rotation(getattr(first, "rotation", 0))
        width, height = first.width, first.height
        pixel_aspect = _pixel_aspect(stream)
        if rotation in (90, 270):
            width, height = height, width
            pixel_aspect = None if pixel_aspect is None else 1 / pixel_aspect
        audio_streams = len(container.streams.audio)

    return VideoInfo(
        width=width,
        height=height,
        fps=rate,
        num_frames=num_frames,
        duration=duration,
        has_audio=audio is not None,
        audio_codec=audio_codec,
        audio_sample_rate=audio_sample_rate,
        audio_channels=audio_channels,
        rotation=rotation,
        duration_from_stream=duration_from_stream,
        stream_index=stream_index,
        nominal_fps=nominal_rate,
        sample_aspect_ratio=pixel_aspect,
        audio_streams=audio_streams,
    )


def _pixel_aspect(stream) -> Fraction | None:
    """A video stream's sample (pixel) aspect ratio when its pixels are not square, else None."""
    ratio = stream.sample_aspect_ratio or stream.codec_context.sample_aspect_ratio
    if not ratio:
        return None
    ratio = Fraction(ratio)
    return None if ratio <= 0 or ratio == 1 else ratio


def output_rate(info: VideoInfo, fps: float | Fraction | None) -> Fraction:
    """The frame rate `iter_frames` actually uses: `fps` (capped at the video's rate) or the video's rate.

    Raises:
        UsageError: `fps` is not a positive finite number.
    """
    if fps is None:
        return info.fps
    if isinstance(fps, bool) or not isinstance(fps, (int, float, Fraction)) or not math.isfinite(fps) or fps <= 0:
        raise UsageError(f"analysis frame rate must be a positive number, got {fps!r}")
    rate = Fraction(fps).limit_denominator(1_000_000)
    return min(rate, info.fps)


def _read_exactly(stream, size: int) -> bytearray | None:
    """Read `size` bytes from a pipe; None at a clean end, the partial buffer if it ends mid-frame."""
    buffer = bytearray(size)
    view = memoryview(buffer)
    filled = 0
    while filled < size:
        count = stream.readinto(view[filled:])
        if not count:
            break
        filled += count
    if filled == 0:
        return None
    return buffer if filled == size else buffer[:filled]


def iter_frames(
    path: str | os.PathLike,
    info: VideoInfo,
    fps: float | Fraction | None = None,
    *,
    on_truncated: Literal["raise", "warn"] = "raise",
) -> Iterator[tuple[int, float, np.ndarray]]:
    """Stream a video's frames as `(index, timestamp_seconds, frame)` with frame (H, W, 3) uint8 RGB.

    Args:
        path: the video file (probed as `info`).
        info: `probe(path)`; fixes the frame size and the source rate.
        fps: analysis frame rate F; None = the video's own rate. Frame k is the source frame shown at
            t = k / F (see the module docstring for the exact rule).
        on_truncated: "raise" a `TruncatedVideoError` after the last decodable frame of a truncated or
            damaged file, or "warn" with a `TruncatedVideoWarning` and stop.

    Yields:
        index k (0, 1, ...), timestamp k / F in seconds from the first video frame, and a new writable
        (info.height, info.width, 3) uint8 array per frame.

    Arguments are checked when `iter_frames` is called (UsageError for a bad `fps`, AVSegError for a
    missing file); ffmpeg starts at the first `next()`. The ffmpeg subprocess is killed when the
    iterator is closed or garbage-collected before the end.
    """
    if on_truncated not in ("raise", "warn"):
        raise ValueError(f"on_truncated must be 'raise' or 'warn', got {on_truncated!r}")
    path = check_media_file(path)
    rate = output_rate(info, fps)
    # fps=...:round=up picks the frame shown at k / F; the final scale is a no-op that pins the size
    # (a stream whose resolution changes midway would otherwise desynchronise the raw pipe).
    video_filter = f"fps=fps={rate.numerator}/{rate.denominator}:round=up,scale={info.width}:{info.height}"
    command = [
        ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error",
        "-i", media_path(path),
        "-map", f"0:{info.stream_index}", "-vf", video_filter,
        "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1",
    ]  # fmt: skip
    return _stream_frames(command, path, info, rate, on_truncated)


def _stream_frames(
    command: list[str], path: Path, info: VideoInfo, rate: Fraction, on_truncated: str
) -> Iterator[tuple[int, float, np.ndarray]]:
    """The generator behind `iter_frames`: run `command`, cut its stdout into frames, check the end."""
    width, height = info.width, info.height
    frame_bytes = width * height * 3
    stderr = StderrLog()
    process = None
    finished = False
    count = 0
    try:
        process = start_reader(command, stderr, str(path))
        partial = False
        while True:
            buffer = _read_exactly(process.stdout, frame_bytes)
            if buffer is None:
                break
            if len(buffer) < frame_bytes:
                partial = True
                break
            frame = np.frombuffer(buffer, dtype=np.uint8).reshape(height, width, 3)
            yield count, float(count / rate), frame
            count += 1
        return_code = process.wait()
        finished = True
        _check_end(path, info, rate, count, return_code, partial, stderr, on_truncated)
    finally:
        if process is not None:
            if not finished and process.poll() is None:
                process.kill()
            process.wait()
            process.stdout.close()
        stderr.close()


def _check_end(
    path: Path,
    info: VideoInfo,
    rate: Fraction,
    count: int,
    return_code: int,
    partial: bool,
    stderr: StderrLog,
    on_truncated: str,
) -> None:
    """Raise or warn when ffmpeg failed or the decoded frames stop well before the header's duration."""
    if return_code != 0 and count == 0:
        raise AVSegError(f"cannot decode the video in {path}: {stderr.summary()}")
    decoded_seconds = float(count / rate)
    message = None
    if return_code != 0 or partial:
        message = (
            f"{path}: decoding stopped after {count} frames ({decoded_seconds:.2f} s): "
            f"{stderr.summary()}; the file is damaged or truncated"
        )
    elif (
        info.duration is not None
        and info.duration_from_stream
        and info.duration - decoded_seconds > TRUNCATION_TOLERANCE_S
    ):
        detail = stderr.summary(default="")
        message = (
            f"{path}: only {decoded_seconds:.2f} s of video could be decoded but the file says "
            f"{info.duration:.2f} s; the file is truncated or damaged" + (f" ({detail})" if detail else "")
        )
    if message is None:
        return
    if on_truncated == "warn":
        warnings.warn(message, TruncatedVideoWarning, stacklevel=3)
        return
    raise TruncatedVideoError(message, frames_decoded=count)
