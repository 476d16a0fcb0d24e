"""encode_mp4 / VideoWriter: frame count, rate, copied audio, AAC fallback, odd sizes, atomic failure paths."""

from __future__ import annotations

import subprocess
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from media import audio_packets, make_audio_only, make_video, make_text_as_mp4, reference_audio, reference_frames
from models.errors import AVSegError
from models.io import mux as mux_module
from models.io.mux import VideoWriter, encode_mp4, plan_audio
from models.io.video import iter_frames, probe


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("sources")
    return {
        "aac": make_video(folder / "aac.mp4", seconds=1, fps="30000/1001"),
        "mp3": make_video(folder / "mp3.mkv", seconds=0.5, audio_codec="libmp3lame"),
        "pcm": make_video(folder / "pcm.mkv", seconds=0.5, audio_codec="pcm_s16le"),
        "vorbis": make_video(folder / "vorbis.mkv", seconds=0.5, audio_codec="libvorbis"),
        "silent": make_video(folder / "silent.mp4", seconds=0.5, audio=None),
        "audio_only": make_audio_only(folder / "audio_only.m4a", seconds=0.5),
        "text": make_text_as_mp4(folder / "text.mp4"),
    }


def frames_of(path: Path) -> list[np.ndarray]:
    info = probe(path)
    return [frame for _, _, frame in iter_frames(path, info)]


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_copies_the_original_audio_and_keeps_count_and_rate(sources, tmp_path):
    source = sources["aac"]
    info = probe(source)
    frames = frames_of(source)
    out = tmp_path / "out.mp4"
    result = encode_mp4(iter(frames), out, info.fps, (info.width, info.height), audio_source=source, crf=0)
    assert result.path == out and result.num_frames == len(frames) == 30
    assert result.audio.mode == "copy" and result.audio.codec == "aac"

    written = probe(out)
    assert written.fps == Fraction(30000, 1001)
    assert written.num_frames == 30
    assert (written.width, written.height) == (info.width, info.height)
    decoded = reference_frames(out)
    assert len(decoded) == 30
    assert np.abs(decoded.astype(int) - np.stack(frames)).mean() < 2.0  # near-lossless x264 (crf 0, yuv420p)

    assert written.has_audio and written.audio_codec == "aac"
    original, original_rate = reference_audio(source)
    copied, copied_rate = reference_audio(out)
    assert copied_rate == original_rate
    assert np.array_equal(copied, original)
    assert audio_packets(out) == audio_packets(source)
    assert leftovers(tmp_path) == []


def test_mp3_is_copied(sources, tmp_path):
    result = encode_mp4(frames_of(sources["mp3"]), tmp_path / "o.mp4", 25, (64, 48), audio_source=sources["mp3"])
    assert result.audio.mode == "copy"
    assert probe(result.path).audio_codec == "mp3"
    assert audio_packets(result.path) == audio_packets(sources["mp3"])


def test_the_plan_from_a_known_codec_is_the_probed_one_and_the_writer_takes_it(sources, tmp_path, monkeypatch):
    """annotate plans the audio from `probe`'s codec (no second probe) and hands the plan to the writer."""
    import models.io.mux as mux
    from models.io.mux import audio_plan

    for key in ("aac", "mp3", "pcm", "vorbis", "silent"):
        assert audio_plan(probe(sources[key]).audio_codec, sources[key]) == plan_audio(sources[key]), key
    plan = audio_plan("pcm_s16le", sources["pcm"])

    def no_second_probe(source):
        raise AssertionError("probed again")

    monkeypatch.setattr(mux, "plan_audio", no_second_probe)
    frames = [np.zeros((48, 64, 3), np.uint8)] * 3
    result = encode_mp4(frames, tmp_path / "out.mp4", 25, (64, 48), sources["pcm"], audio=plan)
    assert result.audio == plan and probe(result.path).audio_codec == "aac"


@pytest.mark.parametrize("key, codec", [("pcm", "pcm_s16le"), ("vorbis", "vorbis")])
def test_codecs_foreign_to_mp4_are_reencoded_to_aac_and_said_so(sources, tmp_path, key, codec):
    source = sources[key]
    plan = plan_audio(source)
    assert plan.mode == "aac" and plan.codec == codec
    assert codec in plan.note and "re-encoded to AAC" in plan.note
    result = encode_mp4(frames_of(source), tmp_path / "o.mp4", 25, (64, 48), audio_source=source)
    assert result.audio == plan
    written = probe(result.path)
    assert written.audio_codec == "aac" and written.audio_sample_rate == 44100
    samples, _ = reference_audio(result.path)
    assert samples.shape[1] >= 0.5 * 44100 and np.abs(samples).max() > 0.05  # the sine is there


def test_without_audio(sources, tmp_path):
    frames = frames_of(sources["silent"])
    result = encode_mp4(frames, tmp_path / "a.mp4", 25, (64, 48))
    assert result.audio.mode == "none" and not probe(result.path).has_audio
    result = encode_mp4(frames, tmp_path / "b.mp4", 25, (64, 48), audio_source=sources["silent"])
    assert result.audio.mode == "none" and "no audio stream" in result.audio.note
    assert not probe(result.path).has_audio and probe(result.path).num_frames == len(frames)


def test_audio_from_an_audio_only_file(sources, tmp_path):
    frames = frames_of(sources["silent"])
    result = encode_mp4(frames, tmp_path / "o.mp4", 25, (64, 48), audio_source=sources["audio_only"])
    assert result.audio.mode == "copy"
    assert audio_packets(result.path) == audio_packets(sources["audio_only"])


def test_odd_size_is_padded_to_even(tmp_path):
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (21, 33, 3), dtype=np.uint8)
    frames = [np.roll(base, k, axis=1) for k in range(5)]
    result = encode_mp4(frames, tmp_path / "odd.mp4", 10, (33, 21), crf=0)
    info = probe(result.path)
    assert (info.width, info.height) == (34, 22) and info.num_frames == 5
    decoded = reference_frames(result.path)
    # content in the top-left 33x21; chroma is 4:2:0, so compare smooth versions of the frames
    assert np.abs(decoded[:, :21, :33].astype(int).mean(axis=3) - np.stack(frames).mean(axis=3)).mean() < 25
    assert decoded[:, :, 33].mean() < 40 and decoded[:, 21, :].mean() < 40  # black padding


class RecordingPopen(subprocess.Popen):
    instances: list[subprocess.Popen] = []

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        RecordingPopen.instances.append(self)


@pytest.mark.parametrize("exception", [RuntimeError("model crashed"), KeyboardInterrupt()])
def test_interrupted_encoding_leaves_nothing_and_kills_ffmpeg(tmp_path, monkeypatch, exception):
    RecordingPopen.instances = []
    monkeypatch.setattr(mux_module.subprocess, "Popen", RecordingPopen)
    out = tmp_path / "out.mp4"
    out.write_bytes(b"previous result")

    def frames():
        for _ in range(3):
            yield np.zeros((48, 64, 3), np.uint8)
        raise exception

    with pytest.raises(type(exception)):
        encode_mp4(frames(), out, 25, (64, 48))
    (process,) = RecordingPopen.instances
    assert process.returncode is not None and process.returncode < 0  # killed, not finalised
    assert out.read_bytes() == b"previous result"
    assert leftovers(tmp_path) == []


def test_ffmpeg_failure_is_one_clear_line(tmp_path):
    out = tmp_path / "out.mp4"
    with pytest.raises(AVSegError) as caught:
        encode_mp4([np.zeros((48, 64, 3), np.uint8)] * 3, out, 25, (64, 48), preset="no-such-preset")
    message = str(caught.value)
    assert message.startswith(f"ffmpeg failed writing {out}: ")
    assert "invalid preset 'no-such-preset'" in message  # ffmpeg's first line: the cause
    assert "Nothing was written" in message  # and its last line
    assert "\n" not in message and "@ 0x" not in message
    assert not out.exists() and leftovers(tmp_path) == []


def test_an_ffmpeg_that_cannot_run_is_named_as_such(tmp_path, monkeypatch):
    """Not "cannot write out.mp4: Permission denied": the output is fine, the executable is not."""
    broken = tmp_path / "ffmpeg"
    broken.write_text("not a program")  # not executable
    monkeypatch.setattr(mux_module, "ffmpeg_exe", lambda: str(broken))
    out = tmp_path / "out.mp4"
    out.write_bytes(b"previous result")
    with pytest.raises(AVSegError, match=rf"^cannot run ffmpeg to write {out}: \[Errno 13\] Permission denied"):
        encode_mp4([np.zeros((48, 64, 3), np.uint8)] * 3, out, 25, (64, 48))
    assert out.read_bytes() == b"previous result" and sorted(p.name for p in tmp_path.iterdir()) == ["ffmpeg",
                                                                                                     "out.mp4"]


def test_wrong_frame_shape_is_rejected_and_cleaned_up(tmp_path):
    out = tmp_path / "out.mp4"
    with pytest.raises(ValueError, match=r"\(48, 64, 3\) uint8"):
        encode_mp4([np.zeros((48, 64, 3), np.uint8), np.zeros((48, 65, 3), np.uint8)], out, 25, (64, 48))
    assert not out.exists() and leftovers(tmp_path) == []


def test_no_frames_is_an_error(tmp_path):
    with pytest.raises(AVSegError, match="no frames"):
        encode_mp4([], tmp_path / "out.mp4", 25, (64, 48))
    assert leftovers(tmp_path) == []


def test_bad_audio_source_fails_before_encoding(sources, tmp_path):
    with pytest.raises(AVSegError, match="cannot read") as caught:
        VideoWriter(tmp_path / "out.mp4", 25, (64, 48), audio_source=sources["text"])
    assert str(sources["text"]) in str(caught.value)
    with pytest.raises(AVSegError, match="file not found"):
        VideoWriter(tmp_path / "out.mp4", 25, (64, 48), audio_source=tmp_path / "missing.mp4")


def test_writer_used_directly(sources, tmp_path):
    with VideoWriter(tmp_path / "w.mp4", Fraction(25), (64, 48), audio_source=sources["aac"]) as writer:
        for value in (0, 128, 255):
            writer.write(np.full((48, 64, 3), value, np.uint8))
    assert writer.result.num_frames == 3 and writer.result.audio.mode == "copy"
    decoded = reference_frames(tmp_path / "w.mp4")
    assert [round(float(frame.mean())) for frame in decoded] == pytest.approx([0, 128, 255], abs=3)
    with pytest.raises(RuntimeError, match="outside"):
        writer.write(np.zeros((48, 64, 3), np.uint8))


@pytest.mark.parametrize("fps", [0, -5, float("nan")])
def test_bad_rate(tmp_path, fps):
    with pytest.raises(ValueError, match="fps"):
        VideoWriter(tmp_path / "o.mp4", fps, (64, 48))
