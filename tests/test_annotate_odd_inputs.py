"""`avseg annotate` on awkward real-world files: odd file names, streams that do not start together, headers that
say the wrong length, several videos with one stem, and a second run over a folder holding the first run's outputs.

The pipeline runs with the fake predictor of `test_annotate`; every video is made here with ffmpeg."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from media import ffmpeg, make_late_audio, make_mkv_without_stream_durations, make_text_as_mp4, make_video
from test_annotate import VOCABULARY, FakePredictor, no_temporaries

from models.errors import AVSegError
from models.pipeline.annotate import Annotator
from models.pipeline.annotate_batch import annotate_batch
from models.pipeline.annotate_outputs import AnnotateOptions

REPO = Path(__file__).resolve().parents[1]


def read_json(path: Path) -> dict:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


@pytest.fixture(scope="module")
def short(tmp_path_factory) -> Path:
    """1 s at 10 fps, 40x30, a 16 kHz tone."""
    return make_video(tmp_path_factory.mktemp("odd") / "short.mp4", seconds=1.0, size=(40, 30), fps="10",
                      sample_rate=16000)


# ------------------------------------------------------------------------------------------------ file names


def test_media_path_keeps_relative_names_from_being_read_as_urls_or_options():
    from models.io.ffmpeg import media_path

    assert media_path("12:30 take.mp4") == os.path.join(".", "12:30 take.mp4")
    assert media_path(Path("-take.mp4")) == os.path.join(".", "-take.mp4")
    assert media_path("clips/a.mp4") == os.path.join(".", "clips", "a.mp4")
    assert media_path("/abs/12:30.mp4") == "/abs/12:30.mp4"


def test_a_colon_in_a_relative_file_name_is_a_file_not_a_protocol(short, tmp_path, monkeypatch):
    """ffmpeg and PyAV read "12:30 take.mp4" as a URL of the protocol "12" ("Protocol not found"): a file name
    with a time in it, in the current folder, could not be annotated, nor written beside itself."""
    monkeypatch.chdir(tmp_path)
    name = "12:30 take.mp4"
    Path(name).write_bytes(short.read_bytes())
    result = Annotator(FakePredictor(fps=10), VOCABULARY).annotate(Path(name))
    assert result.num_frames == 10
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "12:30 take.avseg.mp4", "12:30 take.json", "12:30 take.masks", name
    ]
    from models.io.video import probe

    written = probe(tmp_path / "12:30 take.avseg.mp4")
    assert written.num_frames == 10 and written.has_audio
    assert no_temporaries(tmp_path) == []


def latin1_name(folder: Path, source: Path) -> Path:
    """A copy of `source` named "caf\\xe9.mp4" in Latin-1 (not UTF-8), as old archives hold them."""
    path = folder / os.fsdecode(b"caf\xe9.mp4")
    try:
        path.write_bytes(source.read_bytes())
    except (OSError, UnicodeError):
        pytest.skip("this file system takes only UTF-8 file names")
    return path


def test_a_file_name_that_is_not_utf8(short, tmp_path):
    """The JSON header names the input and its outputs: a name with a Latin-1 byte failed with "internal error:
    UnicodeEncodeError" (a Python str with a lone surrogate cannot be written as UTF-8)."""
    video = latin1_name(tmp_path, short)
    annotator = Annotator(FakePredictor(fps=10), VOCABULARY, AnnotateOptions(skip_existing=True))
    result = annotator.annotate(video)
    data = read_json(result.outputs.json)
    assert data["input"] == str(video) and os.fsencode(data["outputs"]["video"]) == b"caf\xe9.avseg.mp4"
    assert data["num_frames"] == 10 and result.outputs.json.read_bytes().decode("utf-8")  # valid UTF-8
    assert [o.status for o in annotate_batch(annotator, [video]).outcomes] == ["skipped"]


# ------------------------------------------------------------------------------------------------ streams


def test_audio_that_starts_late_is_heard_at_its_own_time(tmp_path):
    """The tone starts 1.2 s after the first frame: the frames before that hear silence, those after hear the tone
    (the samples used to be packed from t = 0, so frame 0 heard what is played at 1.2 s)."""
    from models.io.audio import SAMPLE_RATE, decode_audio_16k

    video = make_late_audio(tmp_path / "late.mp4", seconds=2.5, audio_start=1.2)
    waveform = decode_audio_16k(video)
    assert abs(len(waveform) / SAMPLE_RATE - 2.5) < 0.06  # silence before the stream, then its ~1.3 s

    def rms(start: float, stop: float) -> float:
        return float(np.sqrt(np.mean(waveform[int(start * SAMPLE_RATE):int(stop * SAMPLE_RATE)] ** 2)))

    assert rms(0.0, 1.1) < 1e-4 and rms(1.3, 2.4) > 0.05  # ffmpeg's sine: amplitude 1/8, RMS 0.088

    fake = FakePredictor(fps=10)
    result = Annotator(fake, VOCABULARY, AnnotateOptions(out_dir=tmp_path / "out")).annotate(video)
    examples = {time: clip.audio_examples[i] for clip in fake.clips for i, time in enumerate(clip.times)}
    assert np.ptp(examples[0.0]) == 0  # 0.96 s of silence: a constant log-mel
    assert np.ptp(examples[1.5]) > 1  # the tone
    from models.io.video import probe

    assert probe(result.outputs.video).num_frames == 25


def test_a_video_that_starts_after_its_audio_keeps_in_step_with_it(tmp_path):
    """The picture starts 0.5 s after the sound: frames count from the start of the file, the first one is
    held until the picture starts, and the JSON times are those of the file."""
    plain = make_video(tmp_path / "plain.mp4", seconds=1.0, fps="10", audio=None, grey_ramp=True, size=(32, 24))
    tone = tmp_path / "tone.m4a"
    ffmpeg("-f", "lavfi", "-i", "sine=d=1.5:sample_rate=16000", "-c:a", "aac", str(tone))
    video = tmp_path / "video_late.mp4"
    ffmpeg("-itsoffset", "0.5", "-i", str(plain), "-i", str(tone), "-map", "0:v", "-map", "1:a", "-c", "copy",
           str(video))
    fake = FakePredictor(fps=10)
    result = Annotator(fake, VOCABULARY, AnnotateOptions(out_dir=tmp_path / "out")).annotate(video)
    assert result.num_frames == 15
    frames = {time: clip.frames[i] for clip in fake.clips for i, time in enumerate(clip.times)}
    first = frames[0.0]
    assert all(np.array_equal(frames[k / 10], first) for k in range(5)) and not np.array_equal(frames[0.6], first)


def test_json_duration_is_that_of_the_frames_written(short, tmp_path):
    """A Matroska file without per-track durations gives only its whole length, the audio's 3 s: the JSON used to
    call that the video's duration next to 10 frames (1 s). Now `video.duration` is null (the file does not say),
    and `duration` at the end is the length of the frames written."""
    video = make_mkv_without_stream_durations(tmp_path / "untagged.mkv", seconds=1.0, audio_seconds=3.0)
    result = Annotator(FakePredictor(fps=10), VOCABULARY, AnnotateOptions(out_dir=tmp_path / "out")).annotate(video)
    data = read_json(result.outputs.json)
    assert data["num_frames"] == len(data["frames"]) == len(list(result.outputs.masks.iterdir())) == 10
    assert data["video"]["duration"] is None and data["duration"] == 1.0

    plain = Annotator(FakePredictor(fps=10), VOCABULARY, AnnotateOptions(out_dir=tmp_path / "plain")).annotate(short)
    data = read_json(plain.outputs.json)
    assert data["video"]["duration"] == 1.0 and data["duration"] == 1.0 and data["num_frames"] == 10


# ------------------------------------------------------------------------------------------------ one stem, two videos


def test_outputs_of_another_video_with_the_same_stem_are_neither_replaced_nor_skipped(short, tmp_path):
    """`a.mp4` annotated, then `a.mkv` into the same folder: its outputs have the same names. They used to be
    replaced silently, and with --skip-existing `a.mkv` was reported as skipped with `a.mp4`'s outputs."""
    folder = tmp_path / "clips"
    folder.mkdir()
    first = folder / "a.mp4"
    first.write_bytes(short.read_bytes())
    other = folder / "a.mkv"
    ffmpeg("-i", str(first), "-c", "copy", str(other))
    annotator = Annotator(FakePredictor(fps=10), VOCABULARY, AnnotateOptions(skip_existing=True))
    annotator.annotate(first)
    before = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}

    with pytest.raises(AVSegError) as caught:
        annotator.annotate(other)
    message = caught.value.message
    assert "refusing to replace the outputs of" in message and str(first) in message and "\n" not in message
    result = annotate_batch(annotator, [other])
    assert [o.status for o in result.outcomes] == ["failed"] and "refusing to replace" in result.outcomes[0].error
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()} == before
    assert read_json(folder / "a.json")["input"] == str(first)
    assert [o.status for o in annotate_batch(annotator, [first]).outcomes] == ["skipped"]  # its own: still done
    # both in one run, the new one first (a glob sorts a.mkv before a.mp4): the one that made the outputs keeps them
    both = annotate_batch(annotator, [other, first])
    assert [o.status for o in both.outcomes] == ["failed", "skipped"]
    assert f"would overwrite those of {first}" in both.outcomes[0].error
    assert no_temporaries(folder) == []


def test_outputs_of_a_video_with_the_same_name_in_another_folder_are_neither_replaced_nor_skipped(
        short, tmp_path, monkeypatch):
    """`d2/clip.mp4` annotated with --out, then `d1/clip.mp4` (another video) into the same folder: only the names
    were compared, so d1 was "skipped" on d2's outputs or replaced them, and with both in one run d1 kept them and
    d2, which made them, was refused."""
    monkeypatch.chdir(tmp_path)
    made, other = Path("d2") / "clip.mp4", Path("d1") / "clip.mp4"
    made.parent.mkdir()
    made.write_bytes(short.read_bytes())
    make_video(tmp_path / "d1.mp4", seconds=2.0, size=(40, 30), fps="10", sample_rate=16000)
    other.parent.mkdir()
    (tmp_path / "d1.mp4").rename(other)
    annotator = Annotator(FakePredictor(fps=10), VOCABULARY, AnnotateOptions(out_dir=Path("o"), skip_existing=True))
    assert [o.status for o in annotate_batch(annotator, [made]).outcomes] == ["done"]
    before = {p.name: p.read_bytes() for p in Path("o").iterdir() if p.is_file()}
    with pytest.raises(AVSegError, match="refusing to replace the outputs of d2/clip.mp4"):
        annotator.annotate(other)
    assert [o.status for o in annotate_batch(annotator, [other]).outcomes] == ["failed"]
    both = annotate_batch(annotator, [other, made])
    assert [o.status for o in both.outcomes] == ["failed", "skipped"]
    assert {p.name: p.read_bytes() for p in Path("o").iterdir() if p.is_file()} == before
    # the same video by another path, or a copy of the folder, is still the same video's
    assert [o.status for o in annotate_batch(annotator, [tmp_path / made]).outcomes] == ["skipped"]
    copied = tmp_path / "copy" / "clip.mp4"
    copied.parent.mkdir()
    copied.write_bytes(made.read_bytes())
    assert [o.status for o in annotate_batch(annotator, [copied]).outcomes] == ["skipped"]


# ------------------------------------------------------------------------------------------------ second runs


def test_a_second_run_leaves_out_its_output_folder_and_the_mask_pngs(short, tmp_path):
    """`avseg annotate clips/* --out clips/annotated` run twice: the shell's glob now also gives the output folder
    (which failed as "found a folder", exit code 1, at every run), and `clips/**` the mask PNGs of the first run
    (each "annotated" as a 1-frame video)."""
    folder = tmp_path / "clips"
    folder.mkdir()
    video = folder / "a.mp4"
    video.write_bytes(short.read_bytes())
    out = folder / "annotated"
    annotator = Annotator(FakePredictor(fps=10), VOCABULARY, AnnotateOptions(out_dir=out, skip_existing=True))
    assert annotate_batch(annotator, [video]).exit_code == 0
    pngs = sorted((out / "a.masks").iterdir())
    messages: list[str] = []
    result = annotate_batch(annotator, [video, out, *pngs[:2]], warn=messages.append)
    assert [(o.input, o.status) for o in result.outcomes] == [(video, "skipped")] and result.exit_code == 0
    assert f"leaving out {out}: it is the output folder of this run (--out)" in messages
    assert f"leaving out {pngs[0]}: it is an output avseg writes for {video}" in messages
    assert sorted(p.name for p in out.iterdir()) == ["a.avseg.mp4", "a.json", "a.masks"]


def test_outputs_of_a_video_outside_the_glob_are_left_out(short, tmp_path):
    """`avseg annotate vids/s.mov` in place, then `avseg annotate 'vids/*.mp4' --out other`: the glob gives the
    overlay s.avseg.mp4 but not s.mov; it was annotated as a video (other/s.avseg.avseg.mp4). Outputs a run made
    without JSON are not recognised (nothing says whose they are), and other videos are annotated as before."""
    vids = tmp_path / "vids"
    vids.mkdir()
    source = vids / "s.mov"
    source.write_bytes(short.read_bytes())
    assert annotate_batch(Annotator(FakePredictor(fps=10), VOCABULARY, AnnotateOptions()), [source]).exit_code == 0
    other = vids / "t.mp4"
    other.write_bytes(short.read_bytes())
    annotator = Annotator(FakePredictor(fps=10), VOCABULARY, AnnotateOptions(out_dir=tmp_path / "other"))
    picked = [vids / "s.avseg.mp4", other, vids / "s.json", *sorted((vids / "s.masks").iterdir())[:1]]
    messages: list[str] = []
    result = annotate_batch(annotator, picked, warn=messages.append)
    assert [(o.input, o.status) for o in result.outcomes] == [(other, "done")] and result.exit_code == 0
    assert sorted(p.name for p in (tmp_path / "other").iterdir()) == ["t.avseg.mp4", "t.json", "t.masks"]
    for path in picked[:1] + picked[2:]:
        assert f"leaving out {path}: it is an output avseg wrote for {source}" in messages, messages


def test_batch_script_names_each_failed_video_once(tmp_path):
    """examples/batch.sh lists the failed videos after the run; an error that names its file already was
    printed as "FILE: FILE: reason"."""
    videos = tmp_path / "videos"
    videos.mkdir()
    broken = make_text_as_mp4(videos / "broken.mp4")
    checkpoint = tmp_path / "model.pt"
    checkpoint.write_bytes(b"never loaded: no input is readable")
    env = {key: value for key, value in os.environ.items() if key != "AVSEG_CHECKPOINT"}
    env.update(AVSEG_CHECKPOINT=str(checkpoint), AVSEG_CACHE=str(tmp_path / "cache"), COLUMNS="200",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}")
    completed = subprocess.run(["bash", str(REPO / "examples" / "batch.sh"), str(videos), str(tmp_path / "out")],
                               capture_output=True, text=True, env=env, timeout=120)
    assert completed.returncode == 1, completed.stderr
    listed = [line for line in completed.stderr.splitlines() if line.startswith("  ")]
    assert len(listed) == 1 and listed[0].startswith(f"  cannot read {broken} as video or audio"), completed.stderr
    assert listed[0].count(str(broken)) == 1
