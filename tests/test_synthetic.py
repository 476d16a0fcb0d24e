"""The synthetic AVSBench-semantic generator: real layout, consistent labels/frames/audio, knobs, determinism."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile
from PIL import Image

from models.data.classes import BASE_NAMES, CLASS_INDEX, NOVEL_NAMES, PALETTE
from models.data.labels import apply_aobj_filter, read_label
from models.data.metadata import read_metadata
from models.data.synthetic import (
    OFF_SCREEN_FREQUENCY_HZ,
    SyntheticVideoSpec,
    class_appearance,
    class_sound,
    make_synthetic_avsbench,
)
from models.errors import AVSegError


def tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.fixture(scope="module")
def default_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("syn") / "AVSBench-semantic"
    start = time.perf_counter()
    dataset = make_synthetic_avsbench(root, seed=0)
    return dataset, time.perf_counter() - start


def test_default_layout_and_metadata(default_dataset):
    dataset, seconds = default_dataset
    assert seconds < 6.0  # ~1 s on one free core; loose bound for a loaded machine
    root = dataset.root
    assert len(dataset.videos) == 12
    assert [len(dataset.split(s)) for s in ("train", "val", "test")] == [6, 3, 3]
    rows = read_metadata(root / "metadata.csv")
    assert [r.uid for r in rows] == [v.uid for v in dataset.videos]
    assert any(r.uid.startswith("-") for r in rows)
    assert (root / "label2idx.json").is_file()
    for row, video in zip(rows, dataset.videos):
        assert row.subset == video.subset and row.split == video.split and row.a_obj == video.a_obj
        assert row.uid == f"{row.vid}_0_{video.num_frames * 1000}"
        assert set(row.a_obj) == {o.class_name for o in video.sounding_objects}
        assert len(video.objects) >= 2 and video.sounding_objects and video.silent_objects
        shapes_colours = {(o.shape, o.color) for o in video.objects}
        assert len(shapes_colours) == len(video.objects)
        if video.split == "train":
            assert {o.class_name for o in video.objects} <= BASE_NAMES
        vdir = video.video_dir(root)
        frames = sorted(p.name for p in (vdir / "frames").iterdir())
        assert frames == [f"{k}.jpg" for k in range(video.num_frames)]
        expected_labels = ["0.png"] if (video.subset, video.split) == ("v1s", "train") else [
            f"{k}.png" for k in range(video.num_frames)
        ]
        assert sorted(p.name for p in (vdir / "labels_rgb").iterdir()) == sorted(expected_labels)
        assert sorted(p.name for p in (vdir / "labels_semantic").iterdir()) == sorted(expected_labels)
        assert video.num_frames == (10 if video.subset == "v2" else 5)
    novel_clips = [v for v in dataset.videos if {o.class_name for o in v.sounding_objects} & NOVEL_NAMES]
    assert novel_clips and all(v.split != "train" for v in novel_clips)


def test_audio_files(default_dataset):
    dataset, _ = default_dataset
    rates = set()
    for video in dataset.videos:
        info = soundfile.info(str(video.video_dir(dataset.root) / "audio.wav"))
        assert info.subtype == "PCM_16"
        assert info.frames == video.num_frames * info.samplerate
        assert (info.samplerate, info.channels) == (video.sample_rate, video.channels)
        rates.add((info.samplerate, info.channels))
    assert (44100, 2) in rates and (16000, 1) in rates


def test_labels_mark_only_sounding_objects_and_frames_show_all(default_dataset):
    dataset, _ = default_dataset
    for video in dataset.videos:
        vdir = video.video_dir(dataset.root)
        for k in range(video.num_frames):
            frame = np.asarray(Image.open(vdir / "frames" / f"{k}.jpg").convert("RGB")).astype(int)
            assert frame.shape == (video.height, video.width, 3)
            for obj in video.objects:  # every object, sounding or not, is visible in its colour
                interior = obj.masks[k] & np.roll(obj.masks[k], 1, 0) & np.roll(obj.masks[k], -1, 0)
                interior &= np.roll(obj.masks[k], 1, 1) & np.roll(obj.masks[k], -1, 1)
                median_colour = np.median(frame[interior], axis=0)  # away from JPEG-blurred edges
                assert np.abs(median_colour - np.array(obj.color)).max() < 16, (video.uid, obj.class_name)
                ys, xs = np.nonzero(obj.masks[k])
                assert obj.boxes[k] == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        for k in video.labelled_frames:
            decoded = read_label(vdir / "labels_rgb" / f"{k}.png")
            assert decoded.unknown_pixels == 0
            expected = np.zeros((video.height, video.width), dtype=np.uint8)
            for obj in video.objects:
                if obj.sounding:
                    expected[obj.masks[k]] = obj.class_id
            np.testing.assert_array_equal(decoded.index, expected)
            np.testing.assert_array_equal(decoded.index, video.label_index(k))
            semantic = Image.open(vdir / "labels_semantic" / f"{k}.png")
            assert semantic.mode == "L"
            np.testing.assert_array_equal(np.asarray(semantic), expected)
            for obj in video.silent_objects:
                assert not expected[obj.masks[k]].any()
            assert video.sounding_mask(k).sum() < video.all_objects_mask(k).sum()


def test_objects_move_and_never_overlap(default_dataset):
    dataset, _ = default_dataset
    for video in dataset.videos:
        for obj in video.objects:
            assert obj.masks.shape == (video.num_frames, video.height, video.width)
            assert all(obj.masks[k].sum() > 20 for k in range(video.num_frames))
            assert len(set(obj.boxes)) > 1, (video.uid, obj.class_name)  # it moves
        coverage = sum(o.masks.astype(int) for o in video.objects)
        assert coverage.max() == 1


def spectrum_peak(signal: np.ndarray, rate: int, frequency: float) -> float:
    """Magnitude near `frequency` relative to the median spectrum magnitude (a plain DFT, no VGGish)."""
    magnitude = np.abs(np.fft.rfft(signal))
    freqs = np.fft.rfftfreq(len(signal), 1.0 / rate)
    band = (freqs > frequency * 0.98) & (freqs < frequency * 1.02)
    return float(magnitude[band].max() / np.median(magnitude))


def test_audio_holds_the_sounding_classes_only(default_dataset):
    dataset, _ = default_dataset
    for video in dataset.videos:
        data, rate = soundfile.read(str(video.video_dir(dataset.root) / "audio.wav"), always_2d=True)
        mono = data.mean(axis=1)
        for obj in video.objects:
            frequency, _ = class_sound(obj.class_id)
            peak = spectrum_peak(mono, rate, frequency)
            if obj.sounding:
                assert peak > 50, (video.uid, obj.class_name, peak)
            else:
                assert peak < 10, (video.uid, obj.class_name, peak)


def test_class_signatures_are_distinct():
    frequencies = sorted([class_sound(i)[0] for i in range(1, 71)] + [OFF_SCREEN_FREQUENCY_HZ])
    assert min(b / a for a, b in zip(frequencies, frequencies[1:])) > 1.04
    assert 125 < frequencies[0] and frequencies[-1] < 7500  # inside the VGGish mel range
    pool = ["guitar", "cat", "dog", "horse", "airplane", "keyboard", "piano", "car", "violin", "accordion",
            "marimba", "saxophone"]  # fmt: skip
    pool_freqs = sorted(class_sound(CLASS_INDEX[n])[0] for n in pool)
    assert min(b / a for a, b in zip(pool_freqs, pool_freqs[1:])) > 1.2
    colours = [np.array(class_appearance(CLASS_INDEX[n])[1]) for n in pool]
    assert min(np.abs(a - b).sum() for i, a in enumerate(colours) for b in colours[i + 1:]) > 80


def test_deterministic_for_a_seed(tmp_path):
    specs = [SyntheticVideoSpec("val", "v2", ("dog",), ("cat",), sample_rate=44100, channels=2),
             SyntheticVideoSpec("train", "v1s", ("guitar",), ("piano",))]  # fmt: skip
    a = make_synthetic_avsbench(tmp_path / "a", specs, seed=3)
    b = make_synthetic_avsbench(tmp_path / "b", specs, seed=3)
    c = make_synthetic_avsbench(tmp_path / "c", specs, seed=4)
    assert tree_digest(a.root) == tree_digest(b.root)
    assert tree_digest(a.root) != tree_digest(c.root)
    assert np.array_equal(a.videos[0].objects[0].masks, b.videos[0].objects[0].masks)


def test_knobs(tmp_path):
    specs = [
        SyntheticVideoSpec("train", "v1s", ("guitar",), ("dog",), noise_class="baby", uid="-noise_0_5000"),
        SyntheticVideoSpec("val", "v2", ("dog",), ("cat",), unknown_colour_pixels=7, size=(48, 80)),
        SyntheticVideoSpec("test", "v2", (), ("dog", "cat"), off_screen=True),
        SyntheticVideoSpec("train", "v1s", ("horse",), ("dog",), a_obj_text="h orse"),
        SyntheticVideoSpec("test", "v1s", ("dog",), ("cat",), audio_seconds=4.5, sample_rate=22050),
        SyntheticVideoSpec("val", "v1m", ("dog",), ("cat",)),
    ]
    dataset = make_synthetic_avsbench(tmp_path / "root", specs)
    root = dataset.root
    noisy, unknown, off_screen, typo, short, v1m = dataset.videos

    # stray pixels of a class not in a_obj; the a_obj filter removes exactly them
    label = read_label(noisy.video_dir(root) / "labels_rgb" / "0.png").index
    assert noisy.uid == "-noise_0_5000"
    assert (label == CLASS_INDEX["baby"]).sum() == 9 == noisy.noise_masks[0].sum()
    filtered = apply_aobj_filter(label, [CLASS_INDEX["guitar"]])
    np.testing.assert_array_equal(filtered, noisy.label_index(0))
    semantic = np.asarray(Image.open(noisy.video_dir(root) / "labels_semantic" / "0.png"))
    np.testing.assert_array_equal(semantic, label)

    # unknown colours: counted by the reader, background in labels_semantic
    for k in unknown.labelled_frames:
        decoded = read_label(unknown.video_dir(root) / "labels_rgb" / f"{k}.png")
        assert decoded.unknown_pixels == 7 and decoded.index.shape == (48, 80)
        rgb = np.asarray(Image.open(unknown.video_dir(root) / "labels_rgb" / f"{k}.png"))
        assert (rgb == (1, 2, 3)).all(axis=2).sum() == 7
        assert not (rgb == (1, 2, 3)).all(axis=2)[unknown.all_objects_mask(k)].any()

    # off-the-screen: nothing visible is sounding, labels are background, the sound is still there
    assert off_screen.a_obj == ("off-the-screen",) and not off_screen.sounding_objects
    for k in off_screen.labelled_frames:
        assert not read_label(off_screen.video_dir(root) / "labels_rgb" / f"{k}.png").index.any()
    data, rate = soundfile.read(str(off_screen.video_dir(root) / "audio.wav"))
    assert spectrum_peak(data, rate, OFF_SCREEN_FREQUENCY_HZ) > 50

    rows = {r.uid: r for r in read_metadata(root / "metadata.csv")}
    assert rows[typo.uid].a_obj == ("h orse",) and rows[typo.uid].unknown_tokens == ("h orse",)
    assert read_label(typo.video_dir(root) / "labels_rgb" / "0.png").index.max() == CLASS_INDEX["horse"]

    info = soundfile.info(str(short.video_dir(root) / "audio.wav"))
    assert info.samplerate == 22050 and abs(info.duration - 4.5) < 1e-3

    assert v1m.uid == rows[v1m.uid].vid and rows[v1m.uid].subset == "v1m"
    assert sorted(p.name for p in (v1m.video_dir(root) / "labels_rgb").iterdir()) == [f"{k}.png" for k in range(5)]


def test_palette_colours_in_rgb_labels(tmp_path):
    dataset = make_synthetic_avsbench(tmp_path / "r", [SyntheticVideoSpec("val", "v1s", ("woman", "guitar"), ("dog",))])
    video = dataset.videos[0]
    rgb = np.asarray(Image.open(video.video_dir(dataset.root) / "labels_rgb" / "2.png"))
    colours = {tuple(c) for c in rgb.reshape(-1, 3)}
    assert colours == {(0, 0, 0), (32, 128, 128), (64, 64, 128)}  # background, woman (70), guitar (28)
    assert tuple(PALETTE[70]) == (32, 128, 128)


@pytest.mark.parametrize(
    "spec, message",
    [
        (SyntheticVideoSpec("train", "v3", ("dog",), ("cat",)), "unknown subset"),
        (SyntheticVideoSpec("train", "v1s", ("doggo",), ("cat",)), "unknown class name 'doggo'"),
        (SyntheticVideoSpec("train", "v1s", ("dog",), ("dog",)), "distinct classes"),
        (SyntheticVideoSpec("train", "v1s", ("dog",), (), off_screen=True), "off-the-screen"),
    ],
)
def test_bad_specs(tmp_path, spec, message):
    with pytest.raises(AVSegError, match=message):
        make_synthetic_avsbench(tmp_path / "r", [spec])


def test_refuses_a_non_empty_folder(tmp_path):
    (tmp_path / "keep.txt").write_text("x")
    with pytest.raises(AVSegError, match="must be new or empty"):
        make_synthetic_avsbench(tmp_path, num_train=1, num_val=0, num_test=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]
