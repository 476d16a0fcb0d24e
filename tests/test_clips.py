"""Training and evaluation clips on a tiny hand-built AVSBench-semantic tree and DATA_DIR.

The tree: a v1s train video (5 frames, only 0.png labelled), a v2 train video (10 frames, guitar in every
frame, man only in even frames, a stray "baby" pixel in frame 3 that the a_obj filter must remove), an
off-the-screen video (no class), and two test videos (v1s portrait with 5 labels, the v2 video again).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from PIL import Image

from models.data import clips as clips_module
from models.data.classes import CLASS_INDEX
from models.data.clips import TrainClipDataset, collate_train_clips, sample_clip_frames
from models.data.eval_clips import EVAL_GT_SIZE, clip_frame_ranges, gt_index_maps, iter_eval_clips, load_eval_video
from models.data.labels import index_to_rgb
from models.data.prepared import PreparedData, VideoRecord, write_dataset_json
from models.data.transforms import PIXEL_MEAN, PIXEL_STD, resize_shortest_edge_size
from models.errors import AVSegError

torch.set_num_threads(1)

GUITAR, MAN, BABY = CLASS_INDEX["guitar"], CLASS_INDEX["man"], CLASS_INDEX["baby"]
V1S, V2, OFFSCREEN, V1S_TEST = "v1s_clip", "-v2clip_0_10000", "offscreen_0_5000", "_v1s_test"
HEIGHT, WIDTH = 30, 40


def _frame_image(k: int, height: int, width: int) -> np.ndarray:
    """A frame whose content differs per k and is not left-right symmetric."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([(x * 6 + 20 * k) % 256, (y * 8) % 256, np.full_like(x, 25 * k)], axis=-1).astype(np.uint8)


def _label_map(k: int, height: int, width: int, man_every_other: bool = True) -> np.ndarray:
    index = np.zeros((height, width), dtype=np.uint8)
    index[5:20, 2 + k : 14 + k] = GUITAR  # moves right with k
    if not man_every_other or k % 2 == 0:
        index[8:28, 24:38] = MAN
    if k == 3:
        index[1, width - 10] = BABY  # annotation noise: baby is not in a_obj
    return index


def _write_video(root: Path, subset: str, uid: str, num_frames: int, labelled: list[int],
                 height: int = HEIGHT, width: int = WIDTH) -> dict[int, np.ndarray]:
    video = root / subset / uid
    (video / "frames").mkdir(parents=True)
    (video / "labels_rgb").mkdir()
    for k in range(num_frames):
        Image.fromarray(_frame_image(k, height, width)).save(video / "frames" / f"{k}.jpg", quality=95)
    maps = {}
    for k in labelled:
        maps[k] = _label_map(k, height, width)
        Image.fromarray(index_to_rgb(maps[k])).save(video / "labels_rgb" / f"{k}.png")
    soundfile.write(video / "audio.wav", np.zeros(16000 * num_frames, dtype=np.int16), 16000, subtype="PCM_16")
    return maps


def _record(uid, subset, split, a_obj, num_frames, labelled, height=HEIGHT, width=WIDTH) -> VideoRecord:
    return VideoRecord(uid=uid, subset=subset, split=split, a_obj=a_obj,
                       class_ids=[CLASS_INDEX[t] for t in a_obj if t in CLASS_INDEX], num_frames=num_frames,
                       labelled_frames=labelled, height=height, width=width)


@pytest.fixture
def tree(tmp_path):
    """(PreparedData, {uid: {k: unfiltered index map}})."""
    root = tmp_path / "AVSBench-semantic"
    maps = {
        V1S: _write_video(root, "v1s", V1S, 5, [0]),
        V2: _write_video(root, "v2", V2, 10, list(range(10))),
        OFFSCREEN: _write_video(root, "v2", OFFSCREEN, 10, list(range(10))),
        V1S_TEST: _write_video(root, "v1s", V1S_TEST, 5, list(range(5)), height=WIDTH, width=HEIGHT),
    }
    data_dir = tmp_path / "data"
    (data_dir / "splits").mkdir(parents=True)
    write_dataset_json(data_dir, root, include_v1m=False)
    splits = {
        "train": [_record(V1S, "v1s", "train", ["guitar", "man"], 5, [0]),
                  _record(V2, "v2", "train", ["man", "guitar"], 10, list(range(10))),
                  _record(OFFSCREEN, "v2", "train", ["off-the-screen"], 10, list(range(10)))],
        "test": [_record(V1S_TEST, "v1s", "test", ["guitar", "man"], 5, list(range(5)), WIDTH, HEIGHT),
                 _record(V2, "v2", "test", ["man", "guitar"], 10, list(range(10)))],
    }
    for split, records in splits.items():
        lines = "".join(json.dumps(r.to_json()) + "\n" for r in records)
        (data_dir / "splits" / f"{split}.jsonl").write_text(lines, encoding="utf-8")
    return PreparedData.open(data_dir), maps


@pytest.fixture
def fake_audio(monkeypatch):
    """Replace the VGGish front end: example e of every file is filled with the value e (10 examples)."""
    calls = []

    def fake(path, num_examples=10):
        calls.append((Path(path), num_examples))
        return torch.arange(num_examples, dtype=torch.float32).view(-1, 1, 1, 1).expand(-1, 1, 96, 64).clone()

    monkeypatch.setattr(clips_module, "load_audio_examples", fake)
    return calls


def _index_of(dataset: TrainClipDataset, uid: str) -> int:
    return [r.uid for r in dataset.records].index(uid)


def _pil_resized_frame(root: Path, subset: str, uid: str, k: int, size: tuple[int, int]) -> np.ndarray:
    with Image.open(root / subset / uid / "frames" / f"{k}.jpg") as image:
        return np.asarray(image.convert("RGB").resize((size[1], size[0]), Image.BILINEAR))


def _nearest(index: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return np.asarray(Image.fromarray(index).resize((size[1], size[0]), Image.NEAREST))


def _filtered(index: np.ndarray, allowed: list[int]) -> np.ndarray:
    return np.where(np.isin(index, [0, *allowed]), index, 0).astype(np.uint8)


# ----------------------------------------------------------------------------- frame sampling


def test_sample_clip_frames_rules():
    for seed in range(50):
        ids = sample_clip_frames(10, 5, rng=np.random.default_rng(seed))
        assert len(ids) == 5 and len(set(ids)) == 5 and ids == sorted(ids) and all(0 <= k < 10 for k in ids)
        assert sample_clip_frames(5, 5, rng=np.random.default_rng(seed)) == [0, 1, 2, 3, 4]
        assert 7 in sample_clip_frames(10, 3, rng=np.random.default_rng(seed), must_include=7)
    draws = [tuple(sample_clip_frames(10, 5, rng=np.random.default_rng(seed))) for seed in range(200)]
    assert draws == [tuple(sample_clip_frames(10, 5, rng=np.random.default_rng(seed))) for seed in range(200)]
    assert len(set(draws)) > 50  # not a constant
    assert set(np.concatenate(draws)) == set(range(10))  # every frame reachable


def test_sample_clip_frames_window_and_short_videos():
    for seed in range(30):
        ids = sample_clip_frames(10, 3, rng=np.random.default_rng(seed), must_include=0, frame_range=2)
        assert 0 in ids and set(ids) <= {0, 1, 2} and len(set(ids)) == 3
        short = sample_clip_frames(3, 5, rng=np.random.default_rng(seed))
        assert len(short) == 5 and set(short) == {0, 1, 2} and short == sorted(short)
    assert sample_clip_frames(4, 1, rng=np.random.default_rng(0), must_include=2) == [2]
    with pytest.raises(ValueError, match="must_include=5"):
        sample_clip_frames(5, 5, rng=np.random.default_rng(0), must_include=5)
    with pytest.raises(ValueError, match="at least one frame"):
        sample_clip_frames(0, 5, rng=np.random.default_rng(0))


# ----------------------------------------------------------------------------- training clips


def test_dataset_skips_videos_without_classes_and_checks_index(tree, fake_audio):
    data, _ = tree
    dataset = TrainClipDataset(data)
    assert len(dataset) == 2 and dataset.skipped_uids == [OFFSCREEN]
    with pytest.raises(TypeError, match="video_index, seed"):
        dataset[0]


def test_same_seed_same_clip_and_seeds_differ(tree, fake_audio):
    data, _ = tree
    dataset = TrainClipDataset(data)
    v2 = _index_of(dataset, V2)
    first, again = dataset[(v2, 1234)], dataset[(v2, 1234)]
    for name in ("frames", "frame_ids", "audio_examples", "masks", "labels", "frame_indices", "class_ids"):
        assert torch.equal(getattr(first, name), getattr(again, name)), name
    assert (first.short_side, first.flipped) == (again.short_side, again.flipped)
    samples = [dataset[(v2, s)] for s in range(8)]
    variants = {(tuple(c.frame_ids.tolist()), c.short_side, c.flipped) for c in samples}
    assert len(variants) > 3


def test_v1s_clip_includes_frame_zero_and_only_it_is_labelled(tree, fake_audio):
    data, maps = tree
    dataset = TrainClipDataset(data, short_sides=(HEIGHT,), flip_prob=0.0)
    clip = dataset[(_index_of(dataset, V1S), 7)]
    assert clip.frame_ids.tolist() == [0, 1, 2, 3, 4]
    assert clip.frame_indices.tolist() == [0]
    assert clip.frames.shape == (5, 3, HEIGHT, WIDTH) and clip.frames.dtype == torch.uint8
    assert clip.class_ids.tolist() == [GUITAR, MAN]
    assert clip.labels.tolist() == [0, 0] and clip.labels.dtype == torch.long
    assert clip.masks.shape == (2, 1, HEIGHT, WIDTH) and clip.masks.dtype == torch.bool
    assert np.array_equal(clip.masks[0, 0].numpy(), maps[V1S][0] == GUITAR)


def test_v1s_must_include_frame_zero_with_shorter_clips(tree, fake_audio):
    data, _ = tree
    dataset = TrainClipDataset(data, clip_len=2, short_sides=(HEIGHT,))
    for seed in range(20):
        clip = dataset[(_index_of(dataset, V1S), seed)]
        assert clip.frame_ids[0].item() == 0 and clip.frame_indices.tolist() == [0]


def test_v2_clip_frames_targets_and_noise_filter(tree, fake_audio):
    data, maps = tree
    root = data.root
    dataset = TrainClipDataset(data, short_sides=(HEIGHT,), flip_prob=0.0)
    v2 = _index_of(dataset, V2)
    seen_stray_frame = False
    for seed in range(40):
        clip = dataset[(v2, seed)]
        ids = clip.frame_ids.tolist()
        assert len(ids) == 5 and len(set(ids)) == 5 and ids == sorted(ids)
        assert clip.frame_indices.tolist() == [0, 1, 2, 3, 4]
        expected = np.stack([_filtered(maps[V2][k], [GUITAR, MAN]) for k in ids])
        present = sorted(set(np.unique(expected)) - {0})
        assert clip.class_ids.tolist() == present  # man dropped when only odd frames are drawn
        for n, class_id in enumerate(present):
            assert np.array_equal(clip.masks[n].numpy(), expected == class_id)
        assert BABY not in clip.class_ids.tolist()
        seen_stray_frame |= 3 in ids
        for j, k in enumerate(ids):
            assert np.array_equal(clip.frames[j].permute(1, 2, 0).numpy(),
                                  _pil_resized_frame(root, "v2", V2, k, (HEIGHT, WIDTH)))
    assert seen_stray_frame
    assert maps[V2][3][1, 30] == BABY  # the fixture really has the stray pixel


def test_instances_absent_from_all_sampled_frames_are_dropped(tree, fake_audio):
    data, _ = tree
    dataset = TrainClipDataset(data, short_sides=(HEIGHT,), flip_prob=0.0)
    seed = next(s for s in range(100_000)
                if sample_clip_frames(10, 5, rng=np.random.default_rng(s)) == [1, 3, 5, 7, 9])
    clip = dataset[(_index_of(dataset, V2), seed)]
    assert clip.frame_ids.tolist() == [1, 3, 5, 7, 9]
    assert clip.class_ids.tolist() == [GUITAR] and clip.masks.shape == (1, 5, HEIGHT, WIDTH)
    mixed = next(s for s in range(100_000) if sample_clip_frames(10, 5, rng=np.random.default_rng(s))[:2] == [0, 1])
    clip = dataset[(_index_of(dataset, V2), mixed)]
    assert clip.class_ids.tolist() == [GUITAR, MAN]
    assert clip.masks[1, 0].any() and not clip.masks[1, 1].any()  # man: present in frame 0, empty in frame 1


def test_resized_targets_are_nearest_resized_filtered_labels(tree, fake_audio):
    data, maps = tree
    dataset = TrainClipDataset(data, short_sides=(72,), flip_prob=0.0)
    clip = dataset[(_index_of(dataset, V2), 3)]
    size = resize_shortest_edge_size(HEIGHT, WIDTH, 72)
    assert size == (72, 96) and clip.image_size == size and clip.short_side == 72
    ids = clip.frame_ids.tolist()
    expected = np.stack([_nearest(_filtered(maps[V2][k], [GUITAR, MAN]), size) for k in ids])
    for n, class_id in enumerate(clip.class_ids.tolist()):
        assert np.array_equal(clip.masks[n].numpy(), expected == class_id)
    for j, k in enumerate(ids):
        assert np.array_equal(clip.frames[j].permute(1, 2, 0).numpy(), _pil_resized_frame(data.root, "v2", V2, k, size))


def test_flip_mirrors_frames_and_masks_together(tree, fake_audio):
    data, _ = tree
    plain = TrainClipDataset(data, flip_prob=0.0)
    flipping = TrainClipDataset(data, flip_prob=1.0)
    v2 = _index_of(plain, V2)
    for seed in (0, 5):
        a, b = plain[(v2, seed)], flipping[(v2, seed)]
        assert not a.flipped and b.flipped
        assert torch.equal(a.frame_ids, b.frame_ids) and a.short_side == b.short_side
        assert torch.equal(b.frames, torch.flip(a.frames, dims=(-1,)))
        assert torch.equal(b.masks, torch.flip(a.masks, dims=(-1,)))
        assert not torch.equal(a.frames, b.frames)
        # the guitar box sits left of centre unflipped, right of centre flipped
        cols = torch.nonzero(b.masks[0].any(dim=(0, 1))).flatten().float().mean()
        assert cols > b.masks.shape[-1] / 2 - 1 and torch.nonzero(a.masks[0].any(dim=(0, 1))).float().mean() < cols


def test_audio_examples_follow_frame_ids(tree, fake_audio):
    data, _ = tree
    dataset = TrainClipDataset(data)
    v2, v1s = _index_of(dataset, V2), _index_of(dataset, V1S)
    clip = dataset[(v2, 11)]
    assert clip.audio_examples.shape == (5, 1, 96, 64) and clip.audio_examples.dtype == torch.float32
    assert clip.audio_examples[:, 0, 0, 0].tolist() == [float(k) for k in clip.frame_ids.tolist()]
    assert fake_audio[-1] == (data.root / "v2" / V2 / "audio.wav", 10)
    shuffled = dataset[(v2, 11, v1s)]  # audio-shuffle control: same frames, the other video's audio file
    assert torch.equal(shuffled.frames, clip.frames) and torch.equal(shuffled.masks, clip.masks)
    assert fake_audio[-1][0] == data.root / "v1s" / V1S / "audio.wav"


def test_audio_too_short_for_frame_is_a_clear_error(tree, monkeypatch):
    data, _ = tree
    monkeypatch.setattr(clips_module, "load_audio_examples", lambda path, num_examples=10: torch.zeros(3, 1, 96, 64))
    dataset = TrainClipDataset(data)
    with pytest.raises(AVSegError, match="audio too short for frame 4: .*audio.wav gives 3"):
        dataset[(_index_of(dataset, V1S), 0)]


def test_missing_frame_names_the_file(tree, fake_audio):
    data, _ = tree
    (data.root / "v1s" / V1S / "frames" / "2.jpg").unlink()
    dataset = TrainClipDataset(data)
    with pytest.raises(AVSegError, match=r"frame file not found: .*v1s_clip/frames/2\.jpg"):
        dataset[(_index_of(dataset, V1S), 0)]


def test_collate_pads_images_and_masks(tree, fake_audio):
    data, _ = tree
    small = TrainClipDataset(data, short_sides=(HEIGHT,), flip_prob=0.0)
    large = TrainClipDataset(data, short_sides=(72,), flip_prob=0.0)
    clips = [small[(_index_of(small, V1S), 0)], large[(_index_of(large, V2), 1)]]
    batch = collate_train_clips(clips)
    assert batch.images.shape == (2, 5, 3, 96, 96) and batch.images.dtype == torch.float32
    assert batch.image_sizes == [(HEIGHT, WIDTH), (72, 96)]
    assert batch.audio_examples.shape == (2, 5, 1, 96, 64)
    assert batch.uids == [V1S, V2] and batch.frame_ids.shape == (2, 5)
    mean = torch.tensor(PIXEL_MEAN, dtype=torch.float64).view(3, 1, 1)
    std = torch.tensor(PIXEL_STD, dtype=torch.float64).view(3, 1, 1)
    for b, clip in enumerate(clips):
        h, w = batch.image_sizes[b]
        reference = (clip.frames.double() - mean) / std
        assert torch.allclose(batch.images[b, :, :, :h, :w].double(), reference, atol=1e-5)
        assert batch.images[b, :, :, h:].eq(0).all() and batch.images[b, :, :, :, w:].eq(0).all()
        target = batch.targets[b]
        assert set(target) == {"labels", "masks", "frame_indices"}
        assert target["masks"].dtype == torch.float32
        assert target["masks"].shape == (*clip.masks.shape[:2], 96, 96)
        assert torch.equal(target["masks"][..., :h, :w], clip.masks.float())
        assert target["masks"][..., h:, :].eq(0).all() and target["masks"][..., :, w:].eq(0).all()
        assert torch.equal(target["labels"], clip.labels) and torch.equal(target["frame_indices"], clip.frame_indices)
    assert batch.targets[0]["masks"].shape[1] == 1 and batch.targets[1]["masks"].shape[1] == 5


def test_dataloader_with_workers_free_indexing(tree, fake_audio):
    data, _ = tree
    dataset = TrainClipDataset(data)
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=[[(0, 1)], [(1, 2)]], collate_fn=collate_train_clips)
    uids = [batch.uids[0] for batch in loader]
    assert uids == [dataset.records[0].uid, dataset.records[1].uid]


# ----------------------------------------------------------------------------- real VGGish front end


def test_audio_examples_with_real_front_end(tmp_path):
    audio = pytest.importorskip("models.ovavss.audio")
    if not hasattr(audio, "read_wav_examples"):
        pytest.skip("models.ovavss.audio.read_wav_examples not written yet")
    # 10 s at 16 kHz; VGGish example e covers samples [15360 e, 15360 e + 15600): give each its own tone.
    rate, hop = 16000, 15360
    freqs = 400.0 + 300.0 * np.minimum(np.arange(rate * 10) // hop, 9)
    phase = 2 * np.pi * np.cumsum(freqs) / rate
    soundfile.write(tmp_path / "audio.wav", (0.5 * np.sin(phase) * 32767).astype(np.int16), rate, subtype="PCM_16")
    examples = clips_module.load_audio_examples(tmp_path / "audio.wav", 10)
    assert examples.shape == (10, 1, 96, 64)
    peak_bin = examples[:, 0, 48].argmax(dim=-1)  # the middle log-mel frame of each example
    assert (peak_bin[1:] > peak_bin[:-1]).all()  # example e holds tone e: the fixture is what we think
    ids = [1, 3, 4, 7, 9]
    selected = clips_module.select_audio_examples(examples, ids, tmp_path / "audio.wav")
    assert selected[:, 0, 48].argmax(dim=-1).tolist() == peak_bin[ids].tolist()


# ----------------------------------------------------------------------------- evaluation clips


def test_clip_frame_ranges():
    assert clip_frame_ranges(10) == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]
    assert clip_frame_ranges(5) == [[0, 1, 2, 3, 4]]
    assert clip_frame_ranges(7) == [[0, 1, 2, 3, 4], [5, 6]]
    with pytest.raises(ValueError):
        clip_frame_ranges(0)


def test_iter_eval_clips_splits_videos_and_resizes(tree, fake_audio):
    data, _ = tree
    videos = list(iter_eval_clips(data, "test"))
    assert [v.record.uid for v in videos] == [V1S_TEST, V2]
    portrait, landscape = videos
    assert len(portrait.clips) == 1 and len(landscape.clips) == 2
    assert portrait.clips[0].frame_ids.tolist() == [0, 1, 2, 3, 4]
    assert [c.frame_ids.tolist() for c in landscape.clips] == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]
    assert portrait.clips[0].original_size == (WIDTH, HEIGHT)
    assert portrait.clips[0].frames.shape == (5, 3, 480, 360)  # portrait 40x30 -> short side 360
    assert landscape.clips[1].original_size == (HEIGHT, WIDTH)
    assert landscape.clips[1].frames.shape == (5, 3, 360, 480)
    for clip in landscape.clips:
        assert clip.uid == V2 and clip.frames.dtype == torch.uint8 and clip.image_size == (360, 480)
        assert clip.audio_examples.shape == (5, 1, 96, 64)
        assert clip.audio_examples[:, 0, 0, 0].tolist() == [float(k) for k in clip.frame_ids.tolist()]
        for j, k in enumerate(clip.frame_ids.tolist()):
            assert np.array_equal(clip.frames[j].permute(1, 2, 0).numpy(),
                                  _pil_resized_frame(data.root, "v2", V2, k, (360, 480)))
    assert all(num == 10 for _, num in fake_audio)


def test_load_eval_video_other_settings(tree, fake_audio):
    data, _ = tree
    record = data.load_split("test")[1]
    video = load_eval_video(record, data.root, clip_len=4, short_side=60)
    assert [c.frame_ids.tolist() for c in video.clips] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert video.clips[0].frames.shape == (4, 3, 60, 80)


def test_gt_index_maps_filter_and_resize(tree):
    data, maps = tree
    record = data.load_split("test")[1]
    gt = gt_index_maps(record, data.root)
    assert sorted(gt) == list(range(10))
    for k, index in gt.items():
        assert index.dtype == np.uint8 and index.shape == (HEIGHT, WIDTH)
        assert np.array_equal(index, _filtered(maps[V2][k], [GUITAR, MAN]))
    assert gt[3][1, 30] == 0 and maps[V2][3][1, 30] == BABY
    squashed = gt_index_maps(record, data.root, size=EVAL_GT_SIZE)
    for k, index in squashed.items():
        assert index.shape == (224, 224)
        assert np.array_equal(index, _nearest(_filtered(maps[V2][k], [GUITAR, MAN]), (224, 224)))
    v1s_train = data.load_split("train")[0]
    assert sorted(gt_index_maps(v1s_train, data.root)) == [0]
    wide = gt_index_maps(data.load_split("test")[0], data.root, size=(20, 50))
    assert wide[0].shape == (20, 50)


# ----------------------------------------------------------------------------- shared generator + prepare


def test_synthetic_dataset_end_to_end(tmp_path):
    synthetic = pytest.importorskip("models.data.synthetic")
    prepare = pytest.importorskip("models.pipeline.prepare")
    specs = [
        synthetic.SyntheticVideoSpec(split="train", subset="v1s", sounding=("guitar",), silent=("cat",)),
        synthetic.SyntheticVideoSpec(split="train", subset="v2", sounding=("dog", "piano"), noise_class="horse"),
        synthetic.SyntheticVideoSpec(split="test", subset="v2", sounding=("violin",), silent=("car",)),
    ]
    dataset = synthetic.make_synthetic_avsbench(tmp_path / "avs", specs, size=(32, 48))
    prepare.prepare_dataset(tmp_path / "avs", tmp_path / "data")
    data = PreparedData.open(tmp_path / "data")

    train = TrainClipDataset(data, short_sides=(32,), flip_prob=0.0)
    assert sorted(r.uid for r in train.records) == sorted(v.uid for v in dataset.split("train"))
    for index, record in enumerate(train.records):
        video = dataset.video(record.uid)
        clip = train[(index, 3)]
        ids = clip.frame_ids.tolist()
        labelled = [ids[j] for j in clip.frame_indices.tolist()]
        expected = np.stack([video.label_index(k) for k in labelled])  # clean GT: the noise block is filtered out
        assert clip.class_ids.tolist() == sorted(set(np.unique(expected)) - {0})
        for n, class_id in enumerate(clip.class_ids.tolist()):
            assert np.array_equal(clip.masks[n].numpy(), expected == class_id)
        assert clip.audio_examples.shape == (5, 1, 96, 64) and clip.audio_examples.abs().sum() > 0
        if record.subset == "v1s":
            assert ids == [0, 1, 2, 3, 4] and labelled == [0]

    (test_video,) = list(iter_eval_clips(data, "test"))
    truth = dataset.video(test_video.record.uid)
    assert [c.frame_ids.tolist() for c in test_video.clips] == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]
    assert test_video.clips[0].original_size == (32, 48) and test_video.clips[0].image_size == (360, 540)
    gt = gt_index_maps(test_video.record, data.root)
    assert all(np.array_equal(gt[k], truth.label_index(k)) for k in range(10))


def test_train_batch_pin_memory_pins_what_training_copies_to_the_gpu(monkeypatch):
    """`DataLoader(pin_memory=True)` calls `TrainBatch.pin_memory`: images, audio, labels and masks are pinned
    (values unchanged), frame indices and the bookkeeping fields are left as they are."""
    from models.data.clips import TrainBatch

    pinned = []

    def fake_pin(tensor):  # pinning needs a GPU; record which tensors would be pinned
        pinned.append(tensor)
        return tensor.clone()

    monkeypatch.setattr(torch.Tensor, "pin_memory", fake_pin)
    frames = torch.arange(2)
    batch = TrainBatch(images=torch.rand(1, 2, 3, 32, 32), audio_examples=torch.rand(1, 2, 1, 96, 64),
                       targets=[{"labels": torch.zeros(1, dtype=torch.long), "masks": torch.rand(1, 2, 32, 32),
                                 "frame_indices": frames}],
                       image_sizes=[(30, 31)], uids=["v"], frame_ids=torch.tensor([[0, 1]]))
    result = batch.pin_memory()
    assert isinstance(result, TrainBatch) and len(pinned) == 4
    assert {id(t) for t in pinned} == {id(batch.images), id(batch.audio_examples), id(batch.targets[0]["labels"]),
                                       id(batch.targets[0]["masks"])}
    assert torch.equal(result.images, batch.images) and result.images is not batch.images
    assert torch.equal(result.targets[0]["masks"], batch.targets[0]["masks"])
    assert result.targets[0]["frame_indices"] is frames and result.uids == ["v"] and result.frame_ids is batch.frame_ids
