"""The AVSBench-OV selection rule, on hand-made rows and on the real metadata.csv."""

from __future__ import annotations

from collections import Counter

from models.data.classes import BASE_NAMES, CLASS_INDEX, NOVEL_NAMES
from models.data.metadata import MetadataRow, read_metadata
from models.data.split import labelled_frames, make_record, ov_split, select_ov_videos


def row(uid: str, a_obj: str, split: str, subset: str) -> MetadataRow:
    return MetadataRow(uid, uid, 0, 0, tuple(a_obj.split("_")), split, subset, 2)


def test_rule_on_each_case():
    cases = [
        (row("a", "dog_guitar", "train", "v1s"), "train", "train"),  # all base
        (row("b", "dog_violin", "train", "v2"), None, None),  # one novel token
        (row("c", "off-the-screen", "train", "v2"), None, None),  # not a base name
        (row("d", "h orse", "train", "v1s"), None, None),  # typo: not a base name
        (row("e", "dog", "train", "v1m"), None, "train"),  # v1m only with include_v1m
        (row("f", "background", "train", "v1m"), None, None),  # 'background' is not a base name
        (row("g", "violin", "val", "v1s"), "val", "val"),  # val/test keep novel
        (row("h", "off-the-screen", "test", "v2"), "test", "test"),
        (row("i", "violin_dog", "test", "v1m"), None, "test"),
    ]
    for r, default, with_v1m in cases:
        assert ov_split(r) == default, r.uid
        assert ov_split(r, include_v1m=True) == with_v1m, r.uid
    empty = MetadataRow("z", "z", 0, 0, (), "train", "v1s", 2)
    assert ov_split(empty) is None


def test_frames_and_records():
    assert labelled_frames("v1s", "train") == [0]
    assert labelled_frames("v1s", "val") == [0, 1, 2, 3, 4]
    assert labelled_frames("v1m", "train") == [0, 1, 2, 3, 4]
    assert labelled_frames("v2", "train") == list(range(10))
    record = make_record(row("-x_0_10000", "girl_guitar", "test", "v2"), "test")
    assert (record.uid, record.subset, record.split, record.num_frames) == ("-x_0_10000", "v2", "test", 10)
    assert record.a_obj == ["girl", "guitar"] and record.class_ids == [26, 28]
    assert (record.height, record.width) == (0, 0)


def test_selection_keeps_metadata_order():
    rows = [
        row("t2", "dog", "train", "v2"), row("v1", "cat", "val", "v1s"), row("t1", "cat", "train", "v1s"),
        row("m1", "cat", "val", "v1m"),
    ]  # fmt: skip
    splits = select_ov_videos(rows)
    assert {k: [r.uid for r in v] for k, v in splits.items()} == {"train": ["t2", "t1"], "val": ["v1"], "test": []}
    assert [r.uid for r in select_ov_videos(rows, include_v1m=True)["val"]] == ["v1", "m1"]


def test_real_metadata_counts(real_metadata_csv):
    rows = read_metadata(real_metadata_csv)
    splits = select_ov_videos(rows)
    counts = {name: (len(v), sum(r.num_frames for r in v)) for name, v in splits.items()}
    assert counts == {"train": (5184, 40095), "val": (1240, 8700), "test": (1490, 11200)}
    assert sum(len(r.labelled_frames) for r in splits["train"]) == 30699
    assert Counter(r.subset for r in splits["train"]) == {"v1s": 2349, "v2": 2835}
    assert Counter(r.subset for r in splits["val"]) == {"v1s": 740, "v2": 500}
    assert Counter(r.subset for r in splits["test"]) == {"v1s": 740, "v2": 750}
    # train holds base classes only; val/test keep novel classes and off-the-screen clips
    assert all(set(r.a_obj) <= BASE_NAMES for r in splits["train"])
    assert sum(r.a_obj == ["off-the-screen"] for r in splits["val"]) == 2
    assert sum(r.a_obj == ["off-the-screen"] for r in splits["test"]) == 4
    assert any(set(r.a_obj) & NOVEL_NAMES for r in splits["test"])
    # per-class video counts from the appendix table (train-OV / val-OV / test-OV)
    expected = {
        "guitar": (802, 99, 137), "man": (793, 160, 155), "woman": (681, 91, 140), "boat": (86, 0, 31),
        "missile-rocket": (21, 2, 1), "violin": (0, 47, 76), "axe": (0, 2, 0), "leopard": (0, 0, 6),
        "tabla": (0, 49, 46), "utv": (0, 1, 0),
    }  # fmt: skip
    for name, numbers in expected.items():
        cid = CLASS_INDEX[name]
        got = tuple(sum(cid in r.class_ids for r in splits[s]) for s in ("train", "val", "test"))
        assert got == numbers, name


def test_real_metadata_with_v1m(real_metadata_csv):
    splits = select_ov_videos(read_metadata(real_metadata_csv), include_v1m=True)
    assert {k: len(v) for k, v in splits.items()} == {"train": 5409, "val": 1304, "test": 1554}
    v1m_train = [r for r in splits["train"] if r.subset == "v1m"]
    assert len(v1m_train) == 225 and all(r.labelled_frames == [0, 1, 2, 3, 4] for r in v1m_train)


def test_split_rule_on_synthetic_dataset(tmp_path):
    from models.data.synthetic import SyntheticVideoSpec, make_synthetic_avsbench

    specs = [
        SyntheticVideoSpec("train", "v1s", ("dog",), ("cat",)),
        SyntheticVideoSpec("train", "v2", ("violin",), ("dog",)),  # novel sounding: out of train
        SyntheticVideoSpec("train", "v2", (), ("dog",), off_screen=True),  # off-the-screen: out of train
        SyntheticVideoSpec("train", "v1m", ("dog",), ("cat",)),
        SyntheticVideoSpec("val", "v1s", ("violin",), ("dog",)),
        SyntheticVideoSpec("test", "v2", ("dog",), ("violin",)),
        SyntheticVideoSpec("test", "v1m", ("dog",), ("cat",)),
    ]
    dataset = make_synthetic_avsbench(tmp_path / "root", specs)
    splits = select_ov_videos(read_metadata(dataset.root / "metadata.csv"))
    uids = [v.uid for v in dataset.videos]
    assert {k: [r.uid for r in v] for k, v in splits.items()} == {
        "train": [uids[0]], "val": [uids[4]], "test": [uids[5]],
    }
    with_v1m = select_ov_videos(read_metadata(dataset.root / "metadata.csv"), include_v1m=True)
    assert [r.uid for r in with_v1m["train"]] == [uids[0], uids[3]]
    assert [r.uid for r in with_v1m["test"]] == [uids[5], uids[6]]
