"""The annotate pipeline with a fake predictor: clip scheme, audio alignment, outputs, batch, bad input."""

from __future__ import annotations

import errno
import json
import math
import os
import subprocess
import sys
import textwrap
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from media import (
    audio_packets,
    make_anamorphic,
    make_audio_only,
    make_rotated,
    make_text_as_mp4,
    make_truncated,
    make_two_audio_tracks,
    make_video,
    make_zero_byte,
    nearest_source_index,
    reference_frames,
)
from models.errors import AVSegError, UsageError
from models.pipeline import annotate as annotate_module
from models.pipeline.annotate import Annotator
from models.pipeline.annotate_batch import BatchInterrupted, annotate_batch, iter_failures
from models.pipeline.annotate_inputs import expand_inputs, parse_vocabulary
from models.pipeline.annotate_outputs import AnnotateOptions, output_paths
from models.pipeline.clip_schedule import analysed_source_index, block_clips, clip_stride
from models.pipeline.frame_audio import FrameAudio, chunked_log_mel, log_mel_start
from models.prediction import ClipInput, FramePrediction, Instance

VOCABULARY = ["pipa", "violin", "acoustic guitar"]


class FakePredictor:
    """A `VideoPredictor` whose answer for a frame depends only on the frame's source index n = round(t x fps).

    Frame n: class c = n % len(vocabulary), a rectangle of value c + 1 whose left edge moves with n, one
    instance with score 0.5 + c / 10 and a NaN sound score for odd n. Every clip it receives is kept in
    `clips` (unless keep_clips=False).
    """

    def __init__(
        self, fps: float, clip_len: int = 5, interrupt_on_call: int | None = None, keep_clips: bool = True
    ) -> None:
        self.fps = fps
        self.keep_clips = keep_clips
        self.calls = 0
        self.clip_len = clip_len
        self.interrupt_on_call = interrupt_on_call
        self.vocabulary: list[str] = []
        self.vocabulary_calls = 0
        self.clips: list[ClipInput] = []
        self.videos_seen: list[tuple[int, int]] = []

    def set_vocabulary(self, names) -> None:
        self.vocabulary = list(names)
        self.vocabulary_calls += 1

    def describe(self) -> dict:
        return {"method": "fake", "clip_len": self.clip_len}

    def source_index(self, t: float) -> int:
        return int(round(t * self.fps))

    def expected(self, n: int, height: int, width: int) -> FramePrediction:
        c = n % len(self.vocabulary)
        label_map = np.zeros((height, width), np.uint8)
        left = n % max(1, width // 2)
        label_map[height // 4 : height // 2 + 1, left : left + width // 3] = c + 1
        sound = float("nan") if n % 2 else 0.25
        instance = Instance(label_map > 0, self.vocabulary[c], c, 0.5 + c / 10, sound, query=n % 7)
        return FramePrediction(label_map, [instance])

    def predict_clip(self, clip: ClipInput) -> list[FramePrediction]:
        self.calls += 1
        if self.keep_clips:
            self.clips.append(clip)
        if self.interrupt_on_call is not None and self.calls == self.interrupt_on_call:
            raise KeyboardInterrupt
        assert clip.frames.dtype == np.uint8 and clip.frames.ndim == 4 and len(clip.frames) <= self.clip_len
        assert clip.audio_examples.shape == (len(clip.frames), 1, 96, 64)
        assert clip.audio_examples.dtype == np.float32
        height, width = clip.frames.shape[1:3]
        return [self.expected(self.source_index(t), height, width) for t in clip.times]


def no_temporaries(folder: Path) -> list[str]:
    """Names of temporary files/folders (".<name>.*.tmp*") anywhere under `folder`."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob(".*") if ".tmp" in p.name or ".old-" in p.name)


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("annotate_media")
    return {
        # 6.5 s at 10 fps: one full block of 50 frames (10 clips of 5) and a partial one of 15
        "main": make_video(folder / "main.mp4", seconds=6.5, size=(64, 48), fps="10", audio="tones",
                           sample_rate=16000),
        "ramp": make_video(folder / "ramp.mp4", seconds=2.0, size=(32, 24), fps="25", grey_ramp=True, audio=None),
        "silent": make_video(folder / "silent.mp4", seconds=1.2, size=(48, 32), fps="10", audio=None),
        "short": make_video(folder / "short.mp4", seconds=1.0, size=(40, 30), fps="10", sample_rate=16000),
    }


# ------------------------------------------------------------------------------------------------
# vocabulary and inputs


def test_vocabulary_from_classes_and_file(tmp_path):
    file = tmp_path / "classes.txt"
    file.write_text("# instruments\n\n  acoustic guitar  \nerhu # Chinese fiddle\n\n#man\n", encoding="utf-8")
    assert parse_vocabulary(" pipa , violin,") == ["pipa", "violin"]
    assert parse_vocabulary("pipa", file) == ["pipa", "acoustic guitar", "erhu"]
    assert parse_vocabulary(None, file) == ["acoustic guitar", "erhu"]


@pytest.mark.parametrize(
    "classes, file_text, expected",
    [
        ("", None, "empty vocabulary"),
        (" , ,", None, "empty vocabulary"),
        (None, "# only comments\n\n", "empty vocabulary"),
        ("pipa,violin, pipa", None, "duplicate class names in the vocabulary: 'pipa'"),
        ("violin", "violin\n", "duplicate class names in the vocabulary: 'violin'"),
        ("Pipa,violin,pipa", None, "'Pipa' and 'pipa' .CLIP reads text in lower case with single spaces, so it cannot tell them apart"),
        ("electric guitar,electric  guitar", None, "'electric guitar' and 'electric  guitar'"),
        (",".join(f"c{i}" for i in range(256)), None, "at most 255"),
    ],
)
def test_bad_vocabularies_are_usage_errors(tmp_path, classes, file_text, expected):
    file = None
    if file_text is not None:
        file = tmp_path / "classes.txt"
        file.write_text(file_text)
    with pytest.raises(UsageError, match=expected) as caught:
        parse_vocabulary(classes, file)
    assert caught.value.exit_code == 2 and "\n" not in caught.value.message


def test_missing_classes_file_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="classes file not found: .*nope.txt"):
        parse_vocabulary("pipa", tmp_path / "nope.txt")
    with pytest.raises(UsageError, match="found a folder"):
        parse_vocabulary("pipa", tmp_path)


def test_clip_text_does_not_tell_case_or_repeated_spaces_apart():
    """What the vocabulary check relies on: CLIP's tokenizer gives such names the very same tokens."""
    import open_clip
    import torch

    from models.ovavss.prompts import clip_text_key

    names = ["Pipa", "pipa", "electric  guitar", "electric guitar", " Électrique\t", "électrique", "Straße",
             "strasse", "STRASSE"]
    tokens = open_clip.tokenize(names)
    for i, first in enumerate(names):
        for j, second in enumerate(names):
            same_key = clip_text_key(first) == clip_text_key(second)
            assert same_key == torch.equal(tokens[i], tokens[j]), (first, second)
    assert clip_text_key("Pipa") == clip_text_key("pipa") and clip_text_key("Straße") != clip_text_key("strasse")
    # the first pair CLIP cannot tell apart, in order; both the command line and the API refuse by it
    from models.ovavss.prompts import first_clip_duplicate

    assert first_clip_duplicate(["violin", "Pipa", "cello", "pipa ", "PIPA"]) == ("Pipa", "pipa ")
    assert first_clip_duplicate(["a", "b", "a"]) == ("a", "a")
    assert first_clip_duplicate(["Straße", "strasse"]) is None and first_clip_duplicate([]) is None


def test_expand_inputs_globs_literals_and_duplicates(tmp_path):
    for name in ("b.mp4", "a.mp4", "c.mkv", "odd[1].mp4"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "d.mp4").write_bytes(b"x")
    found = expand_inputs([str(tmp_path / "*.mp4"), str(tmp_path / "a.mp4"), str(tmp_path / "odd[1].mp4"),
                           str(tmp_path / "none*.mp4"), str(tmp_path / "**" / "d.mp4")])
    assert [p.relative_to(tmp_path).as_posix() if p.is_absolute() else str(p) for p in found] == [
        "a.mp4", "b.mp4", "odd[1].mp4", "none*.mp4", "sub/d.mp4"
    ]


def test_output_names(tmp_path):
    video = tmp_path / "in" / "my clip.v2.mov"
    outputs = output_paths(video)
    assert outputs.video == tmp_path / "in" / "my clip.v2.avseg.mp4"
    assert outputs.masks == tmp_path / "in" / "my clip.v2.masks"
    assert outputs.json == tmp_path / "in" / "my clip.v2.json"
    only_json = output_paths(video, AnnotateOptions(out_dir=tmp_path / "o", write_video=False, write_masks=False))
    assert only_json.requested() == [tmp_path / "o" / "my clip.v2.json"]


@pytest.mark.parametrize("kwargs, expected", [
    ({"write_video": False, "write_masks": False, "write_json": False}, "nothing to write"),
    ({"analysis_fps": 0}, "positive"),
    ({"analysis_fps": float("nan")}, "positive"),
    ({"render_workers": "fibers"}, "--render-workers must be threads or processes"),
])
def test_bad_options_are_usage_errors(kwargs, expected):
    with pytest.raises(UsageError, match=expected):
        AnnotateOptions(**kwargs)


# ------------------------------------------------------------------------------------------------
# clip scheme


def reference_clips(num_frames: int, clip_len: int, per_second: int) -> list[list[int]]:
    """Straightforward definition: blocks of clip_len x per_second frames; clip j of a block holds its
    frames j, j + s, j + 2s, ... (global indices)."""
    clips = []
    block = clip_len * per_second
    for start in range(0, num_frames, block):
        stop = min(start + block, num_frames)
        for j in range(per_second):
            members = [start + j + i * per_second for i in range(clip_len) if start + j + i * per_second < stop]
            if members:
                clips.append(members)
    return clips


@pytest.mark.parametrize(
    "num_frames, clip_len, stride", [(250, 5, 25), (17, 5, 25), (65, 5, 10), (7, 3, 1), (1, 5, 30)]
)
def test_block_clips_cover_every_frame_once_one_second_apart(num_frames, clip_len, stride):
    block = clip_len * stride
    got = []
    for start in range(0, num_frames, block):
        size = min(block, num_frames - start)
        got += [[start + p for p in clip] for clip in block_clips(size, clip_len, stride)]
    assert got == reference_clips(num_frames, clip_len, stride)
    assert sorted(i for clip in got for i in clip) == list(range(num_frames))
    assert all(b - a == stride for clip in got for a, b in zip(clip, clip[1:]))


def test_clip_stride_rounds_the_analysis_rate():
    assert clip_stride(Fraction(25)) == 25
    assert clip_stride(Fraction(30000, 1001)) == 30
    assert clip_stride(Fraction(5, 2)) == 3
    assert clip_stride(Fraction(1, 2)) == 1


@pytest.mark.parametrize("rate", [Fraction(7), Fraction(1), Fraction(10), Fraction(25, 3)])
def test_analysed_frames_are_the_ones_ffmpeg_picks_at_that_rate(media, rate):
    from models.io.video import iter_frames, probe

    path = media["ramp"]
    info = probe(path)
    sources = reference_frames(path)
    picked = [nearest_source_index(frame, sources) for _, _, frame in iter_frames(path, info, rate)]
    ours = []
    k = 0
    while (n := analysed_source_index(k, info.fps, rate)) < len(sources):
        ours.append(n)
        k += 1
    assert ours == picked


# ------------------------------------------------------------------------------------------------
# audio alignment


def test_log_mel_start_rounds_to_the_10ms_hop_half_up():
    assert [log_mel_start(t) for t in (0.0, 0.004, 0.005, 0.0149, 0.025, 1.0, 2 / 3)] == [0, 0, 1, 1, 3, 100, 67]


def test_chunked_log_mel_equals_the_whole_spectrogram():
    from models.ovavss.audio_frontend import log_mel_spectrogram

    rng = np.random.default_rng(0)
    waveform = (0.3 * rng.standard_normal(16000 * 3 + 123)).astype(np.float32)
    reference = log_mel_spectrogram(waveform.astype(np.float64))
    got = chunked_log_mel(waveform, chunk_frames=37)
    assert got.dtype == np.float32 and got.shape == reference.shape == (299, 64)
    np.testing.assert_allclose(got, reference, rtol=0, atol=1e-5)


def test_frame_examples_start_at_the_frame_time_and_pad_with_zeros():
    from models.ovavss.audio_frontend import log_mel_spectrogram

    rng = np.random.default_rng(1)
    waveform = (0.2 * rng.standard_normal(16000 * 2)).astype(np.float32)  # 2 s: 198 log-mel frames
    reference = log_mel_spectrogram(waveform.astype(np.float64))
    audio = FrameAudio(waveform)
    times = [0.0, 0.025, 0.5, 1.5]
    examples = audio.examples(times)
    assert examples.shape == (4, 1, 96, 64) and examples.dtype == np.float32
    for example, t in zip(examples, times):
        start = math.floor(100 * t + 0.5)
        expected = np.zeros((96, 64))
        rows = reference[start : start + 96]
        expected[: len(rows)] = rows
        np.testing.assert_allclose(example[0], expected, rtol=0, atol=1e-5)
    assert np.all(examples[3, 0, 198 - 150 :] == 0.0)  # past the end: zeros, not silence
    span = audio.waveform_span([0.5, 1.0])
    np.testing.assert_array_equal(span, waveform[8000 : 16000 + 15600])


def test_no_audio_track_is_true_silence():
    from models.ovavss.audio_frontend import log_mel_spectrogram

    silence = log_mel_spectrogram(np.zeros(16000))
    audio = FrameAudio.silent()
    examples = audio.examples([0.0, 12.34])
    assert audio.is_silent_track
    np.testing.assert_array_equal(examples, np.float32(silence[0, 0]))
    assert silence[0, 0] == pytest.approx(math.log(0.01))
    assert audio.waveform_span([0.0]).shape == (15600,) and not audio.waveform_span([0.0]).any()


# ------------------------------------------------------------------------------------------------
# one video end to end


def read_json(path: Path) -> dict:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def test_every_frame_gets_its_own_prediction_from_one_second_clips(media, tmp_path):
    from models.io.audio import decode_audio_16k
    from models.io.rle import rle_to_mask
    from models.ovavss.audio_frontend import log_mel_spectrogram

    path = media["main"]
    sources = reference_frames(path)
    assert len(sources) == 65
    fake = FakePredictor(fps=10)
    annotator = Annotator(fake, VOCABULARY, AnnotateOptions(out_dir=tmp_path))
    assert fake.vocabulary == VOCABULARY and fake.vocabulary_calls == 1
    result = annotator.annotate(path, warn=lambda message: pytest.fail(message))
    assert (result.num_frames, result.num_analysed_frames, result.width, result.height) == (65, 65, 64, 48)

    # clips: exactly the reference scheme, in order; frames are the right source frames
    got = [[fake.source_index(t) for t in clip.times] for clip in fake.clips]
    assert got == reference_clips(65, 5, 10)
    assert got[0] == [0, 10, 20, 30, 40] and got[10] == [50, 60] and got[-1] == [59]
    reference_log_mel = log_mel_spectrogram(decode_audio_16k(path).astype(np.float64))
    for clip in fake.clips:
        for frame, t, example in zip(clip.frames, clip.times, clip.audio_examples):
            n = fake.source_index(t)
            assert t == pytest.approx(n / 10)
            assert nearest_source_index(frame, sources) == n
            assert np.abs(frame.astype(int) - sources[n]).max() <= 2
            start = 10 * n
            expected = np.zeros((96, 64))
            rows = reference_log_mel[start : start + 96]
            expected[: len(rows)] = rows
            np.testing.assert_allclose(example[0], expected, rtol=0, atol=1e-4)
        assert clip.waveform_16k is not None and len(clip.waveform_16k) > 0

    # mask PNGs: one per frame, the fake's label map of that very frame, AVSBench palette
    masks = sorted(p.name for p in result.outputs.masks.iterdir())
    assert masks == [f"{n:06d}.png" for n in range(65)]
    for n in (0, 7, 33, 64):
        with Image.open(result.outputs.masks / f"{n:06d}.png") as image:
            assert image.mode == "P"
            assert image.getpalette()[3:6] == [128, 0, 0]
            np.testing.assert_array_equal(np.asarray(image), fake.expected(n, 48, 64).label_map)

    # JSON: metadata, vocabulary, predictor, one record per frame with RLE that decodes to the mask
    data = read_json(result.outputs.json)
    assert data["format"] == "avseg-annotate" and data["vocabulary"] == VOCABULARY
    assert data["predictor"] == {"method": "fake", "clip_len": 5}
    assert data["video"]["width"] == 64 and data["video"]["fps"] == 10.0 and data["video"]["has_audio"]
    assert data["num_frames"] == data["num_analysed_frames"] == 65
    assert [frame["frame"] for frame in data["frames"]] == list(range(65))
    for record in data["frames"]:
        n = record["frame"]
        assert record["time"] == pytest.approx(n / 10)
        expected = fake.expected(n, 48, 64).instances[0]
        (instance,) = record["instances"]
        assert instance["label"] == expected.label and instance["class_id"] == expected.class_index + 1
        assert instance["score"] == pytest.approx(expected.score)
        assert instance["sound_score"] == (None if n % 2 else 0.25)
        assert instance["query"] == n % 7
        mask = rle_to_mask(instance["segmentation"])
        np.testing.assert_array_equal(mask, expected.mask)
        rows, cols = np.nonzero(expected.mask)
        assert instance["bbox"] == [cols.min(), rows.min(), cols.max() - cols.min() + 1, rows.max() - rows.min() + 1]

    # overlay video: every frame at the source rate, original audio packets copied
    from models.io.render import render_overlay
    from models.io.video import probe

    written = probe(result.outputs.video)
    assert (written.width, written.height, written.fps, written.num_frames) == (64, 48, Fraction(10), 65)
    assert audio_packets(result.outputs.video) == audio_packets(path)
    decoded = reference_frames(result.outputs.video)
    for n in (0, 33, 64):
        prediction = fake.expected(n, 48, 64)
        instances = [(i.label, i.score, i.class_index + 1, i.mask) for i in prediction.instances]
        expected_frame = render_overlay(sources[n], prediction.label_map, instances,
                                        class_names=("background", *VOCABULARY))
        error = np.abs(decoded[n].astype(int) - expected_frame).mean()
        without_overlay = np.abs(decoded[n].astype(int) - sources[n]).mean()
        assert error < 0.25 * without_overlay, (error, without_overlay)  # the overlay is really there
    assert no_temporaries(tmp_path) == []


def test_analysis_fps_analyses_fewer_frames_and_holds_results(media, tmp_path):
    path = media["main"]
    fake = FakePredictor(fps=10)
    result = Annotator(fake, VOCABULARY, AnnotateOptions(out_dir=tmp_path, analysis_fps=2)).annotate(path)
    analysed = [n for n in range(65) if n % 5 == 0]  # 2 fps on 10 fps: frames 0, 5, 10, ...
    assert result.num_frames == 65 and result.num_analysed_frames == len(analysed) == 13
    got = [[fake.source_index(t) for t in clip.times] for clip in fake.clips]
    # two analysed frames per second: blocks of 10, clip j holds analysed j, j+2, j+4, ...
    assert got == [[analysed[k] for k in clip] for clip in reference_clips(13, 5, 2)]
    assert sorted(p.name for p in result.outputs.masks.iterdir()) == [f"{n:06d}.png" for n in analysed]
    data = read_json(result.outputs.json)
    assert [f["frame"] for f in data["frames"]] == analysed
    assert data["analysis"]["analysis_fps"] == 2.0 and data["num_frames"] == 65
    decoded = reference_frames(result.outputs.video)
    assert len(decoded) == 65
    # frame 7 shows the result of analysed frame 5 (held), not its own
    from models.io.render import render_overlay

    sources = reference_frames(path)
    held = fake.expected(5, 48, 64)
    own = fake.expected(7, 48, 64)

    def drawn(prediction):
        instances = [(i.label, i.score, i.class_index + 1, i.mask) for i in prediction.instances]
        return render_overlay(sources[7], prediction.label_map, instances, class_names=("background", *VOCABULARY))

    assert np.abs(decoded[7].astype(int) - drawn(held)).mean() < np.abs(decoded[7].astype(int) - drawn(own)).mean()


def test_video_without_audio_is_annotated_as_silent_with_a_warning(media, tmp_path):
    fake = FakePredictor(fps=10)
    messages: list[str] = []
    annotator = Annotator(fake, VOCABULARY, AnnotateOptions(out_dir=tmp_path))
    result = annotator.annotate(media["silent"], warn=messages.append)
    assert len(messages) == 1 and "no audio track" in messages[0] and "silent.mp4" in messages[0]
    assert result.warnings == messages
    for clip in fake.clips:
        np.testing.assert_array_equal(clip.audio_examples, np.float32(math.log(0.01)))
    data = read_json(result.outputs.json)
    assert data["video"]["has_audio"] is False and "silence" in data["analysis"]["audio"]
    from models.io.video import probe

    assert not probe(result.outputs.video).has_audio


def test_default_warning_is_a_python_warning(media, tmp_path):
    with pytest.warns(annotate_module.AnnotateWarning, match="no audio track"):
        Annotator(FakePredictor(fps=10), VOCABULARY, AnnotateOptions(out_dir=tmp_path, write_video=False)).annotate(
            media["silent"]
        )


def test_rotated_video_is_annotated_upright(media, tmp_path):
    rotated = make_rotated(media["short"], tmp_path / "rotated.mp4", 90)
    fake = FakePredictor(fps=10)
    result = Annotator(fake, VOCABULARY, AnnotateOptions(out_dir=tmp_path / "out")).annotate(rotated)
    assert (result.width, result.height) == (30, 40)
    assert fake.clips[0].frames.shape[1:] == (40, 30, 3)
    from models.io.video import probe

    written = probe(result.outputs.video)
    assert (written.width, written.height, written.rotation) == (30, 40, 0)
    with Image.open(result.outputs.masks / "000000.png") as image:
        assert image.size == (30, 40)


@pytest.mark.parametrize("rotation, recorded", [(0, "2/1"), (90, "1/2")])
def test_anamorphic_video_keeps_its_pixel_shape_in_the_overlay(media, tmp_path, rotation, recorded):
    """Non-square pixels (SAR 2:1): the overlay tells players the same shape (upright, so 1:2 once rotated),
    and the JSON says so; the masks stay on the stored pixel grid."""
    from models.io.video import probe

    video = make_anamorphic(media["short"], tmp_path / "wide.mp4", "2/1")
    if rotation:
        video = make_rotated(video, tmp_path / "wide_rotated.mp4", rotation)
    assert probe(video).sample_aspect_ratio == Fraction(recorded)
    result = Annotator(FakePredictor(fps=10), VOCABULARY, AnnotateOptions(out_dir=tmp_path / "out")).annotate(video)
    written = probe(result.outputs.video)
    assert written.sample_aspect_ratio == Fraction(recorded) and written.rotation == 0
    assert (written.width, written.height) == ((40, 30) if rotation == 0 else (30, 40))
    assert read_json(result.outputs.json)["video"]["sample_aspect_ratio"] == recorded
    plain = Annotator(FakePredictor(fps=10), VOCABULARY, AnnotateOptions(out_dir=tmp_path / "plain"))
    square = plain.annotate(media["short"])
    assert probe(square.outputs.video).sample_aspect_ratio is None
    assert read_json(square.outputs.json)["video"]["sample_aspect_ratio"] is None


def test_json_says_what_the_overlay_audio_is_and_the_tracks_left_out(media, tmp_path):
    two = make_two_audio_tracks(media["short"], tmp_path / "two.mp4")
    messages: list[str] = []
    annotator = Annotator(FakePredictor(fps=10), VOCABULARY, AnnotateOptions(out_dir=tmp_path / "out"))
    data = read_json(annotator.annotate(two, warn=messages.append).outputs.json)
    assert messages == [f"{two}: 2 audio tracks; only the first is analysed and kept in the overlay video"]
    assert data["video"]["audio_streams"] == 2 and data["outputs"]["video_audio"] == "original aac audio copied"
    assert data["bbox_format"].startswith("[x, y, width, height]")
    silent = annotator.annotate(media["silent"], warn=messages.append)
    assert read_json(silent.outputs.json)["outputs"]["video_audio"].startswith("no audio stream")
    no_video = Annotator(FakePredictor(fps=10), VOCABULARY, AnnotateOptions(out_dir=tmp_path / "j", write_video=False))
    assert read_json(no_video.annotate(media["short"]).outputs.json)["outputs"]["video_audio"] is None


def test_analysis_rate_above_the_video_rate_is_said(media, tmp_path):
    messages: list[str] = []
    options = AnnotateOptions(out_dir=tmp_path / "out", analysis_fps=50.0)
    result = Annotator(FakePredictor(fps=10), VOCABULARY, options).annotate(media["short"], warn=messages.append)
    assert messages == [f"{media['short']}: --analysis-fps 50 is above the video's 10 fps; every frame is analysed"]
    assert result.num_analysed_frames == result.num_frames == 10
    options = AnnotateOptions(out_dir=tmp_path / "out", analysis_fps=10.0)
    Annotator(FakePredictor(fps=10), VOCABULARY, options).annotate(media["short"], warn=messages.append)
    assert len(messages) == 1


def test_matroska_odd_size_ntsc_rate_and_pcm_audio(tmp_path):
    video = make_video(tmp_path / "odd.mkv", seconds=1.0, size=(33, 25), fps="30000/1001", audio_codec="pcm_s16le",
                       pix_fmt="yuv444p")
    fake = FakePredictor(fps=30000 / 1001)
    messages: list[str] = []
    annotator = Annotator(fake, VOCABULARY, AnnotateOptions(out_dir=tmp_path / "out"))
    result = annotator.annotate(video, warn=messages.append)
    assert result.num_frames == result.num_analysed_frames == 30
    assert [len(clip.frames) for clip in fake.clips] == [1] * 30  # 1 s at s = 30 per second: 30 one-frame clips
    assert len(messages) == 1 and "re-encoded to AAC" in messages[0]
    from models.io.video import probe

    written = probe(result.outputs.video)
    assert written.fps == Fraction(30000, 1001) and written.num_frames == 30 and written.audio_codec == "aac"
    data = read_json(result.outputs.json)
    assert data["video"]["fps_fraction"] == "30000/1001"
    assert [f["time"] for f in data["frames"]][:3] == [0.0, round(1001 / 30000, 6), round(2002 / 30000, 6)]
    with Image.open(result.outputs.masks / "000029.png") as image:
        assert image.size == (33, 25)


def test_outputs_do_not_depend_on_the_workers(media, tmp_path):
    """One thread, three threads and two worker processes write the same masks, JSON and video frames."""
    outputs = {}
    for workers, kind in ((1, "threads"), (3, "threads"), (2, "processes")):
        out = tmp_path / f"{kind}{workers}"
        options = AnnotateOptions(out_dir=out, workers=workers, render_workers=kind)
        Annotator(FakePredictor(fps=10), VOCABULARY, options).annotate(media["main"])
        masks = {p.name: p.read_bytes() for p in (out / "main.masks").iterdir()}
        outputs[kind, workers] = (masks, (out / "main.json").read_bytes(), reference_frames(out / "main.avseg.mp4"))
    reference = outputs["threads", 1]
    assert len(reference[0]) == 65
    for key in (("threads", 3), ("processes", 2)):
        assert outputs[key][0] == reference[0], key
        assert outputs[key][1] == reference[1], key
        np.testing.assert_array_equal(outputs[key][2], reference[2])


def test_only_requested_outputs_are_written_next_to_the_input(media, tmp_path):
    source = tmp_path / "clip.mp4"
    source.write_bytes(media["short"].read_bytes())
    options = AnnotateOptions(write_video=False, write_masks=False)
    result = Annotator(FakePredictor(fps=10), VOCABULARY, options).annotate(source)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.json", "clip.mp4"]
    assert result.outputs.video is None and result.outputs.json == tmp_path / "clip.json"


def test_rerun_replaces_outputs_atomically(media, tmp_path):
    annotator = Annotator(FakePredictor(fps=10), VOCABULARY, AnnotateOptions(out_dir=tmp_path))
    annotator.annotate(media["short"])
    (tmp_path / "short.masks" / "stale.png").write_bytes(b"old")
    annotator.annotate(media["short"])
    assert "stale.png" not in os.listdir(tmp_path / "short.masks")
    assert len(os.listdir(tmp_path / "short.masks")) == 10
    assert no_temporaries(tmp_path) == []


# ------------------------------------------------------------------------------------------------
# bad input: one line naming the file, nothing written


def bad_inputs(folder: Path) -> dict[str, tuple[Path, str]]:
    (folder / "a folder.mp4").mkdir()
    return {
        "missing": (folder / "missing.mp4", "file not found"),
        "folder": (folder / "a folder.mp4", "found a folder"),
        "text": (make_text_as_mp4(folder / "text.mp4"), "not a media file"),
        "empty": (make_zero_byte(folder / "empty.mp4"), "empty file"),
        "truncated": (make_truncated(folder / "truncated.mp4", seconds=2.0), "truncated"),
        "no index": (make_truncated(folder / "noindex.mp4", seconds=1.0, faststart=False), "truncated"),
        "audio only": (make_audio_only(folder / "audio.m4a"), "no video stream"),
        "glob": (folder / "nothing*.mp4", "no file matches"),
    }


def test_bad_inputs_fail_with_one_line_and_leave_nothing(tmp_path):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    out = tmp_path / "out"
    annotator = Annotator(FakePredictor(fps=25), VOCABULARY, AnnotateOptions(out_dir=out))
    for key, (path, expected) in bad_inputs(inputs).items():
        with pytest.raises(AVSegError) as caught:
            annotator.annotate(path)
        message = caught.value.message
        assert expected in message, (key, message)
        assert str(path) in message and "\n" not in message, (key, message)
        assert caught.value.exit_code == 1
        assert not out.exists() or list(out.iterdir()) == [], (key, list(out.iterdir()))


def test_output_over_the_input_is_refused(media, tmp_path):
    video = tmp_path / "clip.json"  # a real video with the name the JSON output would get
    video.write_bytes(media["short"].read_bytes())
    before = video.read_bytes()
    with pytest.raises(AVSegError, match="refusing to write an output over the input video itself"):
        Annotator(FakePredictor(fps=10), VOCABULARY).annotate(video)
    assert video.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.json"]


def test_output_folder_under_a_regular_file(media, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    annotator = Annotator(FakePredictor(fps=10), VOCABULARY, AnnotateOptions(out_dir=blocker / "out"))
    with pytest.raises(UsageError) as caught:
        annotator.annotate(media["short"])
    assert caught.value.message == f"cannot use {blocker / 'out'} as the output folder: {blocker} is a file"


@pytest.mark.parametrize("target", ["video", "masks", "json"])
def test_disk_full_while_writing_removes_every_temporary(media, tmp_path, monkeypatch, target):
    from models.io import masks as masks_module
    from models.io.mux import VideoWriter

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    if target == "video":
        monkeypatch.setattr(VideoWriter, "write", full)
    elif target == "masks":
        monkeypatch.setattr(masks_module.Image.Image, "save", full)
    else:
        monkeypatch.setattr(annotate_module._FramesJson, "add", full)
    annotator = Annotator(FakePredictor(fps=10), VOCABULARY, AnnotateOptions(out_dir=tmp_path / "out"))
    with pytest.raises(AVSegError, match="No space left on device") as caught:
        annotator.annotate(media["short"])
    assert "\n" not in caught.value.message
    assert list((tmp_path / "out").iterdir()) == []


def test_predictor_bugs_are_not_user_errors(media, tmp_path):
    class Short(FakePredictor):
        def predict_clip(self, clip):
            return super().predict_clip(clip)[:-1]

    with pytest.raises(RuntimeError, match="returned 0 frame predictions for a clip of 1 frames"):
        Annotator(Short(fps=10), VOCABULARY, AnnotateOptions(out_dir=tmp_path)).annotate(media["short"])
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------------
# batches


def copies(media: Path, folder: Path, names: list[str]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in names:
        (folder / name).write_bytes(media.read_bytes())
        paths.append(folder / name)
    return paths


def test_batch_goes_on_after_failures_and_skips_existing(media, tmp_path):
    good = copies(media["short"], tmp_path / "in", ["a.mp4", "b.mp4"])
    bad = make_text_as_mp4(tmp_path / "in" / "broken.mp4")
    out = tmp_path / "out"
    annotator = Annotator(FakePredictor(fps=10), VOCABULARY, AnnotateOptions(out_dir=out, skip_existing=True))
    seen = []
    result = annotate_batch(annotator, [good[0], bad, good[1]], on_outcome=seen.append)
    assert [o.status for o in result.outcomes] == ["done", "failed", "done"] == [o.status for o in seen]
    assert result.exit_code == 1
    (failure,) = iter_failures(result)
    assert failure.startswith(f"cannot read {bad}") and "\n" not in failure
    summary = result.as_dict()
    assert summary["counts"] == {"done": 2, "skipped": 0, "failed": 1, "interrupted": 0, "not run": 0}
    assert summary["files"][0]["frames"] == 10 and summary["files"][0]["outputs"]["json"] == str(out / "a.json")
    json.dumps(summary)

    again = annotate_batch(annotator, good)
    assert [o.status for o in again.outcomes] == ["skipped", "skipped"] and again.exit_code == 0


def test_batch_refuses_colliding_output_names(media, tmp_path):
    first = copies(media["short"], tmp_path / "x", ["clip.mp4"])[0]
    second = copies(media["short"], tmp_path / "y", ["clip.mp4"])[0]
    annotator = Annotator(FakePredictor(fps=10), VOCABULARY, AnnotateOptions(out_dir=tmp_path / "out"))
    result = annotate_batch(annotator, [first, second])
    assert [o.status for o in result.outcomes] == ["done", "failed"]
    assert "would overwrite those of" in result.outcomes[1].error and str(first) in result.outcomes[1].error


@pytest.mark.parametrize("render_workers", ["threads", "processes"])
def test_ctrl_c_removes_the_partial_video_and_keeps_finished_ones(media, tmp_path, render_workers):
    videos = copies(media["main"], tmp_path / "in", ["one.mp4", "two.mp4", "three.mp4"])
    out = tmp_path / "out"
    # one.mp4 takes 20 predictor calls (10 + 10); interrupt in the middle of two.mp4
    fake = FakePredictor(fps=10, interrupt_on_call=20 + 3)
    annotator = Annotator(fake, VOCABULARY, AnnotateOptions(out_dir=out, render_workers=render_workers))
    with pytest.raises(BatchInterrupted) as caught:
        annotate_batch(annotator, videos)
    assert isinstance(caught.value, KeyboardInterrupt)
    result = caught.value.result
    assert [o.status for o in result.outcomes] == ["done", "interrupted", "not run"]
    assert result.exit_code == 130 and result.as_dict()["interrupted"] is True
    assert sorted(p.name for p in out.iterdir()) == ["one.avseg.mp4", "one.json", "one.masks"]
    assert no_temporaries(out) == []
    read_json(out / "one.json")


# ------------------------------------------------------------------------------------------------
# memory does not grow with the length of the video

_MEMORY_SCRIPT = textwrap.dedent(
    """
    import resource, sys
    sys.path.insert(0, sys.argv[3])
    from pathlib import Path
    from models.device import prepare_cpu
    prepare_cpu()  # as the CLI does (resolve_device): freed memory is kept for reuse
    from test_annotate import FakePredictor, VOCABULARY
    from models.pipeline.annotate import Annotator
    from models.pipeline.annotate_outputs import AnnotateOptions
    predictor = FakePredictor(fps=5, keep_clips=False)
    result = Annotator(predictor, VOCABULARY, AnnotateOptions(out_dir=Path(sys.argv[2]))).annotate(sys.argv[1])
    print(result.num_frames, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    """
)


def peak_rss_mb(video: Path, out: Path) -> tuple[int, float]:
    tests = Path(__file__).resolve().parent
    completed = subprocess.run(
        [sys.executable, "-c", _MEMORY_SCRIPT, str(video), str(out), str(tests)],
        capture_output=True, text=True, cwd=tests.parent, check=False,
    )
    assert completed.returncode == 0, completed.stderr
    frames, kilobytes = completed.stdout.split()[-2:]
    return int(frames), int(kilobytes) / 1024


@pytest.mark.slow
def test_ten_minutes_take_no_more_memory_than_ten_seconds(tmp_path):
    short = make_video(tmp_path / "short.mp4", seconds=10, size=(64, 48), fps="5", sample_rate=16000)
    long = make_video(tmp_path / "long.mp4", seconds=600, size=(64, 48), fps="5", sample_rate=16000)
    short_frames, short_peak = peak_rss_mb(short, tmp_path / "short_out")
    long_frames, long_peak = peak_rss_mb(long, tmp_path / "long_out")
    assert (short_frames, long_frames) == (50, 3000)
    print(f"peak RSS: 10 s {short_peak:.0f} MB, 10 min {long_peak:.0f} MB")
    # the frames stream; only the sound (64 kB/s waveform + 25.6 kB/s log-mel) grows with the length
    assert long_peak - short_peak < 200, (short_peak, long_peak)
    assert long_peak < short_peak + 500
