"""probe, iter_frames (frame selection, rotation, truncation, cleanup) and decode_audio_16k on real files."""

from __future__ import annotations

import math
import stat
import subprocess
import warnings
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from media import (
    make_audio_only,
    make_audio_with_cover,
    make_rotated,
    make_text_as_mp4,
    make_truncated,
    make_variable_rate,
    make_video,
    make_zero_byte,
    nearest_source_index,
    reference_frames,
    stereo_tones,
)
from models.errors import AVSegError, UsageError
from models.io import video as video_module
from models.io.audio import SAMPLE_RATE, decode_audio_16k
from models.io.video import (
    TruncatedVideoError,
    TruncatedVideoWarning,
    VideoInfo,
    iter_frames,
    output_rate,
    probe,
)


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("media")
    files = {
        "ramp25": make_video(folder / "ramp25.mp4", seconds=3, size=(32, 16), grey_ramp=True),
        "ramp2997": make_video(folder / "ramp2997.mp4", seconds=2, size=(32, 16), fps="30000/1001",
                               grey_ramp=True, audio=None),
        "testsrc": make_video(folder / "testsrc.mp4", seconds=0.2, size=(64, 48), audio=None),
        "odd": make_video(folder / "odd.mp4", seconds=0.4, size=(33, 21), pix_fmt="yuv444p", audio=None),
        "audio_longer": make_video(folder / "audio_longer.mkv", seconds=1, audio_seconds=2.5),
        "audio_only": make_audio_only(folder / "audio_only.m4a"),
        "cover": make_audio_with_cover(folder / "song.mp3"),
        "zero_byte": make_zero_byte(folder / "zero.mp4"),
        "text": make_text_as_mp4(folder / "notes.mp4"),
        "truncated": make_truncated(folder / "truncated.mp4", fraction=0.5),
        "no_index": make_truncated(folder / "no_index.mp4", fraction=0.6, faststart=False),
        "tones16k": make_video(folder / "tones16k.mkv", seconds=1, audio="tones", audio_codec="pcm_f32le",
                               sample_rate=16000),
        "tones48k": make_video(folder / "tones48k.mkv", seconds=1, audio="tones", audio_codec="pcm_s16le",
                               sample_rate=48000),
        "tones_aac": make_video(folder / "tones_aac.mp4", seconds=1.5, audio="tones"),
        "vfr": make_variable_rate(folder / "vfr.mp4"),
    }  # fmt: skip
    for degrees in (90, -90, 180):
        files[f"rot{degrees}"] = make_rotated(files["testsrc"], folder / f"rot{degrees}.mp4", degrees)
    return files


def collect(iterator) -> list[tuple[int, float, np.ndarray]]:
    return list(iterator)


def expected_source_indices(source_fps: Fraction, rate: Fraction, num_source_frames: int) -> list[int]:
    """Straightforward rule: output k shows the last source frame with n / source_fps <= k / rate."""
    end = Fraction(num_source_frames) / source_fps
    indices, k = [], 0
    while Fraction(k) / rate < end:
        indices.append(math.floor(Fraction(k) / rate * source_fps))
        k += 1
    return indices


# --------------------------------------------------------------------------------------------- probe


def test_probe_reads_size_rate_length_and_audio(media):
    info = probe(media["ramp25"])
    assert (info.width, info.height) == (32, 16)
    assert info.fps == Fraction(25) and isinstance(info.fps, Fraction)
    assert info.num_frames == 75
    assert info.duration == pytest.approx(3.0)
    assert info.has_audio and info.audio_codec == "aac"
    assert info.audio_sample_rate == 44100 and info.audio_channels == 2
    assert info.rotation == 0 and info.duration_from_stream

    ntsc = probe(media["ramp2997"])
    assert ntsc.fps == Fraction(30000, 1001)
    assert ntsc.num_frames == 60
    assert not ntsc.has_audio and ntsc.audio_codec is None and ntsc.audio_sample_rate is None


def test_variable_frame_rate_is_recognised_and_resampled_to_the_average(media):
    info = probe(media["vfr"])  # 20 frames at 30 fps, then 40 at 10 fps: 60 frames in 4.67 s
    assert info.variable_frame_rate and info.nominal_fps == 30
    assert 12.5 < float(info.fps) < 13.5  # the average: 60 frames over ~4.6 s
    frames = collect(iter_frames(media["vfr"], info))
    assert abs(len(frames) - 60) <= 1  # every output frame 1 / fps apart: the file's own frames are resampled
    for ntsc_like in (probe(media["ramp25"]), probe(media["ramp2997"]), probe(media["testsrc"])):
        assert not ntsc_like.variable_frame_rate and ntsc_like.nominal_fps is None


def test_probe_matroska_uses_the_video_streams_own_duration(media):
    info = probe(media["audio_longer"])  # 1 s of video, 2.5 s of audio
    assert info.duration == pytest.approx(1.0)
    assert info.duration_from_stream
    assert info.num_frames == 25


@pytest.mark.parametrize("degrees, expected_rotation, quarter_turns", [(90, 90, 1), (-90, 270, 3), (180, 180, 2)])
def test_rotation_is_reported_and_applied(media, degrees, expected_rotation, quarter_turns):
    path = media[f"rot{degrees}"]
    info = probe(path)
    assert info.rotation == expected_rotation
    swapped = expected_rotation in (90, 270)
    assert (info.width, info.height) == ((48, 64) if swapped else (64, 48))
    stored = reference_frames(media["testsrc"])  # PyAV: the frames as stored, unrotated
    frames = collect(iter_frames(path, info))
    assert len(frames) == len(stored)
    for (_, _, frame), original in zip(frames, stored):
        assert frame.shape == (info.height, info.width, 3)
        # display rotation is counter-clockwise, like np.rot90
        assert np.array_equal(frame, np.rot90(original, quarter_turns))


@pytest.mark.parametrize(
    "key, expected",
    [
        ("missing", "file not found"),
        ("folder", "found a folder"),
        ("zero_byte", "empty file (0 bytes)"),
        ("text", "cannot read"),
        ("audio_only", "no video stream"),
        ("cover", "(it has audio and cover picture only)"),
        ("no_index", "cannot read"),
    ],
)
def test_probe_failures_are_one_line_naming_the_file(media, key, expected):
    path = {"missing": media["ramp25"].with_name("nope.mp4"), "folder": media["ramp25"].parent}.get(key) or media[key]
    with pytest.raises(AVSegError) as caught:
        probe(path)
    message = str(caught.value)
    assert expected in message
    assert str(path) in message
    assert "\n" not in message


def test_probe_reports_unreadable_permissions(media, tmp_path):
    path = tmp_path / "locked.mp4"
    path.write_bytes(media["testsrc"].read_bytes())
    path.chmod(0)
    try:
        if path.stat().st_mode & stat.S_IRUSR or _running_as_root():
            pytest.skip("permissions are not enforced for this user")
        with pytest.raises(AVSegError, match="permission denied"):
            probe(path)
    finally:
        path.chmod(0o644)


def _running_as_root() -> bool:
    import os

    return hasattr(os, "geteuid") and os.geteuid() == 0


# ---------------------------------------------------------------------------------------- iter_frames


def test_full_rate_yields_every_frame_exactly(media):
    info = probe(media["ramp25"])
    reference = reference_frames(media["ramp25"])
    frames = collect(iter_frames(media["ramp25"], info))
    assert len(frames) == 75 == info.num_frames_at(None)
    for k, (index, timestamp, frame) in enumerate(frames):
        assert index == k
        assert timestamp == pytest.approx(k / 25)
        assert frame.dtype == np.uint8 and frame.shape == (16, 32, 3)
        assert np.array_equal(frame, reference[k])


@pytest.mark.parametrize(
    "key, fps",
    [("ramp25", 1), ("ramp25", 5), ("ramp25", 7), ("ramp25", 0.5), ("ramp25", 2.5),
     ("ramp2997", 1), ("ramp2997", 10), ("ramp2997", None)],
)  # fmt: skip
def test_subsampling_picks_the_frame_shown_at_k_over_fps(media, key, fps):
    path = media[key]
    info = probe(path)
    reference = reference_frames(path)
    rate = output_rate(info, fps)
    expected = expected_source_indices(info.fps, rate, len(reference))
    frames = collect(iter_frames(path, info, fps=fps))
    assert [nearest_source_index(frame, reference) for _, _, frame in frames] == expected
    assert [index for index, _, _ in frames] == list(range(len(expected)))
    assert [timestamp for _, timestamp, _ in frames] == pytest.approx([k / float(rate) for k in range(len(expected))])
    assert info.num_frames_at(fps) == len(expected)


def test_one_fps_on_25fps_gives_whole_seconds(media):
    """deps.md §3: t = 0, 1, 2 s are source frames 0, 25, 50 (not ffmpeg's default mid-second 12, 37, 62)."""
    info = probe(media["ramp25"])
    reference = reference_frames(media["ramp25"])
    frames = collect(iter_frames(media["ramp25"], info, fps=1))
    assert [nearest_source_index(frame, reference) for _, _, frame in frames] == [0, 25, 50]
    assert [timestamp for _, timestamp, _ in frames] == [0.0, 1.0, 2.0]


def test_rate_above_the_source_is_capped_not_duplicated(media):
    info = probe(media["ramp25"])
    assert output_rate(info, 60) == Fraction(25)
    assert len(collect(iter_frames(media["ramp25"], info, fps=60))) == 75


@pytest.mark.parametrize("fps", [0, -1, float("nan"), float("inf"), "1"])
def test_bad_analysis_rate_is_a_usage_error(media, fps):
    info = probe(media["ramp25"])
    with pytest.raises(UsageError, match="frame rate"):
        iter_frames(media["ramp25"], info, fps=fps)  # checked at the call, before ffmpeg starts


def test_odd_size_frames(media):
    info = probe(media["odd"])
    assert (info.width, info.height) == (33, 21)
    reference = reference_frames(media["odd"])
    frames = collect(iter_frames(media["odd"], info))
    assert len(frames) == len(reference) == 10
    for (_, _, frame), expected in zip(frames, reference):
        assert frame.shape == (21, 33, 3)
        assert np.abs(frame.astype(int) - expected).max() <= 2  # two yuv444p -> rgb24 conversions


def test_frames_are_independent_writable_arrays(media):
    info = probe(media["ramp25"])
    frames = [frame for _, _, frame in iter_frames(media["ramp25"], info, fps=5)]
    frames[0][:] = 255
    assert frames[1].max() < 255
    assert frames[1].flags.writeable


class RecordingPopen(subprocess.Popen):
    instances: list[subprocess.Popen] = []

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        RecordingPopen.instances.append(self)


def test_closing_early_kills_ffmpeg(media, monkeypatch):
    path = make_video(media["ramp25"].with_name("long.mp4"), seconds=20, size=(32, 16), audio=None)
    info = probe(path)
    RecordingPopen.instances = []
    monkeypatch.setattr(subprocess, "Popen", RecordingPopen)
    frames = iter_frames(path, info)
    first = [next(frames) for _ in range(3)]
    assert [index for index, _, _ in first] == [0, 1, 2]
    (process,) = RecordingPopen.instances
    assert process.poll() is None  # still decoding the remaining 497 frames
    frames.close()
    assert process.returncode is not None and process.returncode < 0  # killed by a signal
    assert process.stdout.closed


def test_truncated_file_yields_good_frames_then_raises(media):
    path = media["truncated"]
    info = probe(path)  # the index at the front still promises 3 s
    assert info.duration == pytest.approx(3.0)
    reference = reference_frames(path)  # what PyAV can decode
    collected = []
    with pytest.raises(TruncatedVideoError) as caught:
        for item in iter_frames(path, info):
            collected.append(item)
    assert 0 < len(collected) < 75
    assert caught.value.frames_decoded == len(collected)
    assert len(collected) >= len(reference) - 1
    for (_, _, frame), expected in zip(collected, reference):
        assert np.array_equal(frame, expected)
    message = str(caught.value)
    assert str(path) in message and "truncated" in message and "3.00 s" in message
    assert "\n" not in message and "@ 0x" not in message


def test_truncated_file_can_warn_instead(media):
    path = media["truncated"]
    info = probe(path)
    with pytest.warns(TruncatedVideoWarning, match="truncated"):
        frames = collect(iter_frames(path, info, on_truncated="warn"))
    assert 0 < len(frames) < 75


def test_subsampled_truncated_file_is_detected(media):
    path = media["truncated"]
    info = probe(path)
    with pytest.raises(TruncatedVideoError):
        collect(iter_frames(path, info, fps=1))


def test_audio_longer_than_video_is_not_truncation(media):
    info = probe(media["audio_longer"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(collect(iter_frames(media["audio_longer"], info))) == 25


def fake_ffmpeg(tmp_path: Path, stdout_bytes: int, stderr_line: str, exit_code: int) -> str:
    script = tmp_path / "fake-ffmpeg"
    script.write_text(
        f"#!/bin/sh\nhead -c {stdout_bytes} /dev/zero\necho '{stderr_line}' >&2\nexit {exit_code}\n"
    )
    script.chmod(0o755)
    return str(script)


def test_ffmpeg_failure_midway_raises_with_its_last_line(media, tmp_path, monkeypatch):
    info = VideoInfo(4, 2, Fraction(25), 50, 2.0, False, None, None, None)
    frame_bytes = 4 * 2 * 3
    script = fake_ffmpeg(tmp_path, frame_bytes + 5, "[h264 @ 0x55aa] Invalid NAL unit size", 1)
    monkeypatch.setattr(video_module, "ffmpeg_exe", lambda: script)
    collected = []
    with pytest.raises(TruncatedVideoError) as caught:
        for item in iter_frames(media["ramp25"], info):
            collected.append(item)
    assert len(collected) == 1
    assert "Invalid NAL unit size" in str(caught.value) and "@ 0x" not in str(caught.value)
    assert str(media["ramp25"]) in str(caught.value)


def test_ffmpeg_failure_before_any_frame(media, tmp_path, monkeypatch):
    info = VideoInfo(4, 2, Fraction(25), 50, 2.0, False, None, None, None)
    script = fake_ffmpeg(tmp_path, 0, "Error opening input: Invalid data", 1)
    monkeypatch.setattr(video_module, "ffmpeg_exe", lambda: script)
    with pytest.raises(AVSegError, match="cannot decode the video") as caught:
        collect(iter_frames(media["ramp25"], info))
    assert not isinstance(caught.value, TruncatedVideoError)
    assert "Invalid data" in str(caught.value)


# ----------------------------------------------------------------------------------------- audio


def test_audio_is_the_channel_mean_exactly(media):
    """16 kHz float source: no resampling, so the result is mean(L, R) up to float32 rounding."""
    samples = decode_audio_16k(media["tones16k"])
    assert samples.dtype == np.float32 and samples.ndim == 1
    assert len(samples) == SAMPLE_RATE
    left, right = stereo_tones(np.arange(len(samples)) / SAMPLE_RATE)
    np.testing.assert_allclose(samples, (left + right) / 2, atol=1e-6)
    # not ffmpeg's -ac 1 downmix, which would be (L + R) / sqrt(2)
    assert np.abs(samples).max() == pytest.approx(np.abs((left + right) / 2).max(), rel=1e-3)


def test_audio_is_resampled_to_16k(media):
    samples = decode_audio_16k(media["tones48k"])
    assert len(samples) == SAMPLE_RATE
    left, right = stereo_tones(np.arange(len(samples)) / SAMPLE_RATE)
    interior = slice(400, -400)  # the resampling filter's edges
    np.testing.assert_allclose(samples[interior], ((left + right) / 2)[interior], atol=3e-4)


def test_aac_audio_from_mp4(media):
    samples = decode_audio_16k(media["tones_aac"], channels=2)
    assert len(samples) == round(1.5 * SAMPLE_RATE)
    left, right = stereo_tones(np.arange(len(samples)) / SAMPLE_RATE)
    error = samples[1600:-1600] - ((left + right) / 2)[1600:-1600]
    assert np.sqrt(np.mean(error**2)) < 0.01  # lossy codec


def test_audio_only_file(media):
    samples = decode_audio_16k(media["audio_only"])
    assert len(samples) == SAMPLE_RATE
    left, right = stereo_tones(np.arange(len(samples)) / SAMPLE_RATE)
    assert np.sqrt(np.mean((samples[1600:-1600] - ((left + right) / 2)[1600:-1600]) ** 2)) < 0.01


def test_no_audio_stream_gives_none(media):
    assert decode_audio_16k(media["ramp2997"]) is None


@pytest.mark.parametrize(
    "key, expected", [("zero_byte", "empty file"), ("text", "cannot read"), ("missing", "not found")]
)
def test_audio_errors_name_the_file(media, key, expected):
    path = media["ramp25"].with_name("nope.mp4") if key == "missing" else media[key]
    with pytest.raises(AVSegError, match=expected) as caught:
        decode_audio_16k(path)
    assert str(path) in str(caught.value)
