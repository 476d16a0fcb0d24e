"""Small test media made on the fly with the bundled ffmpeg (lavfi sources), and PyAV reference readers.

Every maker writes one file and returns its path. Videos are tiny (tens of pixels, a few seconds) so a
test file can make several in well under a second each.

* `make_video`: testsrc (or a grey ramp whose frame n has the uniform level 16 + 2n, so a decoded
  frame identifies its source index) plus an optional sine / stereo tone track.
* `make_rotated`: a copy of a video with a display-matrix rotation (stream copy, no re-encode).
* `make_late_audio`: a video whose audio stream starts some time after its first frame (non-zero start time).
* `make_mkv_without_stream_durations`: a Matroska file that gives only its whole length (no per-stream DURATION).
* `make_audio_only`, `make_audio_with_cover`, `make_zero_byte`, `make_text_as_mp4`, `make_truncated`: the failure cases.
* `reference_frames`, `reference_audio`, `audio_packets`: independent readers through PyAV.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np

LEFT_HZ, LEFT_AMPLITUDE = 440.0, 0.5
RIGHT_HZ, RIGHT_AMPLITUDE = 1000.0, 0.25


def ffmpeg(*args: str) -> None:
    """Run the bundled ffmpeg with `args`; fail the test with its stderr if it fails."""
    import imageio_ffmpeg

    command = [imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"ffmpeg {' '.join(args)} failed: {result.stderr.strip()}")


def stereo_tones_expression(sample_rate: int) -> str:
    """lavfi aevalsrc: left = 0.5 sin(2 pi 440 t), right = 0.25 sin(2 pi 1000 t)."""
    return (
        f"aevalsrc={LEFT_AMPLITUDE}*sin(2*PI*{LEFT_HZ}*t)|{RIGHT_AMPLITUDE}*sin(2*PI*{RIGHT_HZ}*t)"
        f":s={sample_rate}:c=stereo"
    )


def stereo_tones(times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The left and right tones of `stereo_tones_expression` at `times` (float64)."""
    left = LEFT_AMPLITUDE * np.sin(2 * np.pi * LEFT_HZ * times)
    right = RIGHT_AMPLITUDE * np.sin(2 * np.pi * RIGHT_HZ * times)
    return left, right


def make_video(
    path: Path,
    *,
    seconds: float = 2.0,
    size: tuple[int, int] = (64, 48),
    fps: str = "25",
    audio: str | None = "sine",
    audio_codec: str = "aac",
    sample_rate: int = 44100,
    video_codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    grey_ramp: bool = False,
    faststart: bool = False,
    audio_seconds: float | None = None,
) -> Path:
    """Write a test video.

    Args:
        size: (width, height).
        fps: frame rate as ffmpeg spells it ("25", "30000/1001").
        audio: None (no audio stream), "sine" (440 Hz, stereo) or "tones" (`stereo_tones_expression`).
        grey_ramp: frame n is uniformly grey with luma 16 + 2n (lossless x264), instead of testsrc.
        audio_seconds: length of the audio (default `seconds`).
    """
    width, height = size
    audio_length = seconds if audio_seconds is None else audio_seconds
    if grey_ramp:
        video = f"color=c=black:size={width}x{height}:rate={fps}:duration={seconds},geq=lum='16+2*N':cb=128:cr=128"
    else:
        video = f"testsrc=duration={seconds}:size={width}x{height}:rate={fps}"
    args = ["-f", "lavfi", "-i", video]
    if audio == "sine":
        sine = f"sine=frequency=440:duration={audio_length}:sample_rate={sample_rate}"
        args += ["-f", "lavfi", "-i", sine, "-ac", "2"]
    elif audio == "tones":
        args += ["-f", "lavfi", "-i", stereo_tones_expression(sample_rate) + f":d={audio_length}"]
    elif audio is not None:
        raise ValueError(audio)
    args += ["-c:v", video_codec]
    if video_codec == "libx264":
        args += ["-pix_fmt", pix_fmt, "-preset", "ultrafast"]
        if grey_ramp:
            args += ["-qp", "0"]
    if audio is not None:
        args += ["-c:a", audio_codec]
    if faststart:
        args += ["-movflags", "+faststart"]
    ffmpeg(*args, str(path))
    return path


def make_rotated(source: Path, path: Path, degrees: int) -> Path:
    """Copy `source` with a display rotation of `degrees` counter-clockwise (no re-encoding)."""
    ffmpeg("-display_rotation", str(degrees), "-i", str(source), "-c", "copy", str(path))
    return path


def make_anamorphic(source: Path, path: Path, sample_aspect_ratio: str) -> Path:
    """Re-encode `source` with non-square pixels ("2/1": each pixel shown twice as wide as high), audio copied."""
    ffmpeg("-i", str(source), "-vf", f"setsar={sample_aspect_ratio}", "-c:v", "libx264", "-preset", "ultrafast",
           "-pix_fmt", "yuv420p", "-c:a", "copy", str(path))
    return path


def make_two_audio_tracks(source: Path, path: Path) -> Path:
    """Copy `source` with its audio track twice (a second language, a commentary track)."""
    ffmpeg("-i", str(source), "-map", "0:v", "-map", "0:a", "-map", "0:a", "-c", "copy", str(path))
    return path


def make_variable_rate(path: Path, size: tuple[int, int] = (64, 48)) -> Path:
    """A variable-frame-rate video without audio: 20 frames at 30 fps, then 40 frames at 10 fps (60 frames, 4.67 s)."""
    width, height = size
    ffmpeg("-f", "lavfi", "-i", f"testsrc=size={width}x{height}:rate=30:duration=2",
           "-vf", "setpts='if(lt(N,20),N/30,20/30+(N-20)/10)/TB'", "-fps_mode", "vfr",
           "-c:v", "libx264", "-pix_fmt", "yuv420p", "-preset", "ultrafast", str(path))
    return path


def make_late_audio(path: Path, *, seconds: float = 2.0, audio_start: float = 0.8, fps: str = "10") -> Path:
    """A 64x48 video of `seconds` whose 440 Hz tone starts `audio_start` seconds after the first frame and lasts
    until the end (an audio stream with a start time, as a recorder that started the sound late makes)."""
    video, audio = path.with_name(path.stem + ".v.mp4"), path.with_name(path.stem + ".a.m4a")
    make_video(video, seconds=seconds, fps=fps, audio=None)
    ffmpeg("-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds - audio_start}:sample_rate=16000",
           "-c:a", "aac", str(audio))
    ffmpeg("-i", str(video), "-itsoffset", str(audio_start), "-i", str(audio), "-map", "0:v", "-map", "1:a",
           "-c", "copy", str(path))
    video.unlink()
    audio.unlink()
    return path


def make_mkv_without_stream_durations(path: Path, *, seconds: float = 1.0, audio_seconds: float = 3.0) -> Path:
    """A Matroska file whose tracks carry no DURATION tag (as other muxers than ffmpeg's write them): its header
    gives only the whole file's length, here the longer audio's `audio_seconds` for `seconds` of 10 fps video."""
    made = path.with_name(path.stem + ".tagged.mkv")
    make_video(made, seconds=seconds, fps="10", audio_seconds=audio_seconds)
    data = made.read_bytes()
    assert data.count(b"DURATION") == 2, "expected one DURATION tag per track"
    path.write_bytes(data.replace(b"DURATION", b"DURATIOX"))  # same length: the file stays valid
    made.unlink()
    return path


def make_audio_only(path: Path, seconds: float = 1.0, codec: str = "aac") -> Path:
    """An audio file (no video stream): the stereo tones at 44.1 kHz."""
    ffmpeg("-f", "lavfi", "-i", stereo_tones_expression(44100) + f":d={seconds}", "-c:a", codec, str(path))
    return path


def make_audio_with_cover(path: Path, seconds: float = 1.0) -> Path:
    """An mp3 with an embedded cover picture (a 1-frame mjpeg stream marked attached_pic)."""
    ffmpeg(
        "-f", "lavfi", "-i", f"sine=d={seconds}", "-f", "lavfi", "-i", "color=c=red:s=32x32:d=0.04",
        "-map", "0:a", "-map", "1:v", "-c:a", "libmp3lame", "-c:v", "mjpeg", "-frames:v", "1",
        "-disposition:v:0", "attached_pic", str(path),
    )  # fmt: skip
    return path


def make_zero_byte(path: Path) -> Path:
    path.write_bytes(b"")
    return path


def make_text_as_mp4(path: Path) -> Path:
    """A text file with a video extension."""
    path.write_text("this is not a video\n" * 50)
    return path


def make_truncated(path: Path, fraction: float = 0.5, seconds: float = 3.0, faststart: bool = True) -> Path:
    """An mp4 cut to `fraction` of its bytes.

    With `faststart` the index is at the front, so the header still promises the full length while
    only the first part of the frames is there; without it the index (at the end) is lost and the file
    cannot be opened at all.
    """
    full = path.with_name(path.stem + ".full.mp4")
    make_video(full, seconds=seconds, faststart=faststart)
    data = full.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    full.unlink()
    return path


def reference_frames(path: Path) -> np.ndarray:
    """All frames of the first video stream as (N, H, W, 3) uint8 RGB, decoded by PyAV (no rotation)."""
    import av

    with av.open(str(path)) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])


def reference_audio(path: Path) -> tuple[np.ndarray, int]:
    """The first audio stream decoded by PyAV: (channels, samples) float32 planar, sample rate."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        chunks = []
        for frame in container.decode(stream):
            chunks.append(frame.to_ndarray().astype(np.float32).reshape(frame.layout.nb_channels, -1))
        return np.concatenate(chunks, axis=1), stream.codec_context.sample_rate


def audio_packets(path: Path) -> list[bytes]:
    """The payloads of every packet of the first audio stream, in file order."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        return [bytes(packet) for packet in container.demux(stream) if packet.size]


def nearest_source_index(frame: np.ndarray, sources: np.ndarray) -> int:
    """Index of the source frame (N, H, W, 3) closest to `frame` in mean absolute difference."""
    difference = np.abs(sources.astype(np.int16) - frame.astype(np.int16)).mean(axis=(1, 2, 3))
    return int(difference.argmin())
