"""Encode RGB frames to an H.264 mp4 that carries the original audio stream, written atomically.

One ffmpeg subprocess reads raw rgb24 frames on its stdin and encodes them with libx264 (yuv420p,
playable everywhere). An odd width or height is padded by one black pixel row/column on the
right/bottom, because 4:2:0 video needs even sizes.

Audio: the first audio stream of `audio_source` (normally the input video) is **copied** packet for
packet (`-c:a copy`), so its samples are exactly the original ones. Codecs that do not belong in an
mp4 (`MP4_AUDIO_COPY` lists those that do: PCM, Vorbis, MP2, AMR, ... do not) are re-encoded to AAC
instead, and the writer says so in `audio_note`. The whole audio stream is kept even when it is longer
than the frames written.

The output is written under a temporary name next to `out_path` and renamed into place only when
ffmpeg has finished successfully (`models.atomic.atomic_path`); on any error, KeyboardInterrupt
included, ffmpeg is killed, the temporary file is removed and an existing `out_path` is untouched.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Literal

import numpy as np

from models.atomic import atomic_path
from models.errors import AVSegError
from models.io.ffmpeg import (
    StderrLog,
    check_media_file,
    ffmpeg_exe,
    media_path,
    open_container,
    subprocess_options,
)

MP4_AUDIO_COPY = frozenset({"aac", "mp3", "alac", "ac3", "eac3", "opus", "flac"})
"""Audio codecs copied into the mp4 as they are; any other codec is re-encoded to AAC."""

AAC_BITRATE_KBPS = 192
"""Bit rate of the AAC re-encode for audio codecs that cannot be copied."""

AudioMode = Literal["copy", "aac", "none"]


@dataclass(frozen=True)
class AudioPlan:
    """What happens to the audio: `mode` "copy", "aac" (re-encoded) or "none", and why (`note`)."""

    mode: AudioMode
    codec: str | None
    note: str


@dataclass(frozen=True)
class EncodedVideo:
    """Result of `encode_mp4` / `VideoWriter`: the file, frames written, frame rate, audio handling."""

    path: Path
    num_frames: int
    fps: Fraction
    audio: AudioPlan


def plan_audio(audio_source: str | os.PathLike | None) -> AudioPlan:
    """Decide how the first audio stream of `audio_source` goes into an mp4 (probes it with PyAV).

    Raises:
        AVSegError: `audio_source` is missing, empty, a folder or not a media file.
    """
    if audio_source is None:
        return AudioPlan("none", None, "no audio source given")
    with open_container(audio_source) as container:
        codec = container.streams.audio[0].codec_context.codec.canonical_name if container.streams.audio else None
    return audio_plan(codec, audio_source)


def audio_plan(codec: str | None, audio_source: str | os.PathLike) -> AudioPlan:
    """`plan_audio` for a source whose first audio stream's codec is already known (None: no audio stream), e.g.
    from `models.io.video.probe`."""
    if codec is None:
        return AudioPlan("none", None, f"no audio stream in {audio_source}")
    if codec in MP4_AUDIO_COPY:
        return AudioPlan("copy", codec, f"original {codec} audio copied")
    return AudioPlan(
        "aac", codec, f"{codec} audio cannot be copied into an mp4; re-encoded to AAC at {AAC_BITRATE_KBPS} kb/s"
    )


def _as_rate(fps: float | Fraction) -> Fraction:
    if isinstance(fps, bool) or not isinstance(fps, (int, float, Fraction)) or not np.isfinite(float(fps)) or fps <= 0:
        raise ValueError(f"fps must be a positive number, got {fps!r}")
    return Fraction(fps).limit_denominator(1_000_000)


class VideoWriter:
    """Context manager that encodes frames to `out_path` (mp4) with the original audio of `audio_source`.

    Example:
        with VideoWriter("out.mp4", info.fps, (info.width, info.height), audio_source="in.mp4") as writer:
            for frame in frames:
                writer.write(frame)
        print(writer.result)

    Args:
        out_path: destination .mp4 (replaced atomically when complete).
        fps: frame rate of the frames written (keep the source's exact fraction, e.g. 30000/1001).
        size: (width, height) of every frame.
        audio_source: file whose first audio stream is copied (None: no audio).
        crf, preset: libx264 quality (lower crf = better) and speed.
        sample_aspect_ratio: the pixel aspect ratio players should display (an anamorphic source's, kept so
            that the output has the source's shape on screen); None: square pixels.
        audio: how the audio goes in, when the caller already knows (`audio_plan`); None: `plan_audio` probes
            `audio_source`.
    """

    def __init__(
        self,
        out_path: str | os.PathLike,
        fps: float | Fraction,
        size: tuple[int, int],
        audio_source: str | os.PathLike | None = None,
        *,
        crf: int = 20,
        preset: str = "veryfast",
        sample_aspect_ratio: Fraction | None = None,
        audio: AudioPlan | None = None,
    ) -> None:
        self.out_path = Path(out_path)
        if sample_aspect_ratio is not None and not sample_aspect_ratio > 0:
            raise ValueError(f"sample aspect ratio must be positive, got {sample_aspect_ratio!r}")
        self.sample_aspect_ratio = None if sample_aspect_ratio is None else Fraction(sample_aspect_ratio)
        self.fps = _as_rate(fps)
        width, height = size
        if width <= 0 or height <= 0:
            raise ValueError(f"frame size must be positive, got {size}")
        self.width, self.height = int(width), int(height)
        self.audio_source = None if audio_source is None else check_media_file(audio_source)
        self.crf = crf
        self.preset = preset
        self.audio = audio if audio is not None else plan_audio(self.audio_source)
        self.num_frames = 0
        self.result: EncodedVideo | None = None
        self._stack: contextlib.ExitStack | None = None
        self._process: subprocess.Popen | None = None
        self._stderr: StderrLog | None = None

    def command(self, output: Path) -> list[str]:
        """The ffmpeg command line that writes `output`."""
        command = [
            ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
            "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{self.width}x{self.height}",
            "-framerate", f"{self.fps.numerator}/{self.fps.denominator}", "-i", "pipe:0",
        ]  # fmt: skip
        if self.audio.mode != "none":
            command += ["-i", media_path(self.audio_source)]
        command += ["-map", "0:v:0"]
        if self.audio.mode != "none":
            command += ["-map", "1:a:0"]
        filters = []
        if self.width % 2 or self.height % 2:
            filters.append("pad=ceil(iw/2)*2:ceil(ih/2)*2")
        if self.sample_aspect_ratio is not None and self.sample_aspect_ratio != 1:
            sar = self.sample_aspect_ratio.limit_denominator(65535)
            filters.append(f"setsar={sar.numerator}/{sar.denominator}")
        if filters:
            command += ["-vf", ",".join(filters)]
        command += ["-c:v", "libx264", "-preset", self.preset, "-crf", str(self.crf), "-pix_fmt", "yuv420p"]
        if self.audio.mode == "copy":
            command += ["-c:a", "copy"]
        elif self.audio.mode == "aac":
            command += ["-c:a", "aac", "-b:a", f"{AAC_BITRATE_KBPS}k"]
        command += ["-movflags", "+faststart", "-f", "mp4", media_path(output)]
        return command

    def __enter__(self) -> "VideoWriter":
        stack = contextlib.ExitStack()
        temporary = stack.enter_context(atomic_path(self.out_path, suffix=".mp4"))
        try:
            self._stderr = stack.enter_context(StderrLog())
            try:
                self._process = subprocess.Popen(
                    self.command(temporary),
                    stdin=subprocess.PIPE,
                    stdout=subprocess.DEVNULL,
                    stderr=self._stderr.file,
                    **subprocess_options(),
                )
            except OSError as error:  # the ffmpeg executable, not the output: no "cannot write <output>"
                raise AVSegError(f"cannot run ffmpeg to write {self.out_path}: {error}") from error
        except BaseException:
            stack.__exit__(*sys.exc_info())
            raise
        self._stack = stack
        return self

    def write(self, frame: np.ndarray) -> None:
        """Append one (height, width, 3) uint8 RGB frame."""
        if self._process is None:
            raise RuntimeError("VideoWriter.write() called outside its `with` block")
        frame = np.asarray(frame)
        if frame.shape != (self.height, self.width, 3) or frame.dtype != np.uint8:
            raise ValueError(
                f"expected a ({self.height}, {self.width}, 3) uint8 frame, got {frame.shape} {frame.dtype}"
            )
        try:
            self._process.stdin.write(np.ascontiguousarray(frame).data)
        except (BrokenPipeError, OSError) as error:
            self._process.wait()
            raise AVSegError(f"ffmpeg failed writing {self.out_path}: {self._stderr.summary()}") from error
        self.num_frames += 1

    def _finish(self) -> None:
        process = self._process
        try:
            process.stdin.close()
        except (BrokenPipeError, OSError):
            pass
        return_code = process.wait()
        if return_code != 0:
            raise AVSegError(f"ffmpeg failed writing {self.out_path}: {self._stderr.summary()}")
        if self.num_frames == 0:
            raise AVSegError(f"no frames to write to {self.out_path}")

    def _abort(self) -> None:
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.kill()
        process.wait()
        with contextlib.suppress(OSError):
            process.stdin.close()

    def __exit__(self, exc_type, exc, traceback) -> bool:
        stack, self._stack = self._stack, None
        try:
            if exc_type is not None:
                self._abort()
                return bool(stack.__exit__(exc_type, exc, traceback))
            try:
                self._finish()
            except BaseException:
                self._abort()
                if not stack.__exit__(*sys.exc_info()):
                    raise
                return False
            stack.__exit__(None, None, None)
            self.result = EncodedVideo(self.out_path, self.num_frames, self.fps, self.audio)
            return False
        finally:
            self._process = None


def encode_mp4(
    frames: Iterable[np.ndarray],
    out_path: str | os.PathLike,
    fps: float | Fraction,
    size: tuple[int, int],
    audio_source: str | os.PathLike | None = None,
    **options,
) -> EncodedVideo:
    """Encode an iterable of (height, width, 3) uint8 RGB frames to `out_path` with `audio_source`'s audio.

    `size` is (width, height); `options` go to `VideoWriter` (crf, preset). See the module docstring for
    the audio rule and the atomic write.

    Raises:
        AVSegError: ffmpeg failed (with its last error line), no frames, or a bad `audio_source`.
    """
    with VideoWriter(out_path, fps, size, audio_source, **options) as writer:
        for frame in frames:
            writer.write(frame)
    return writer.result
