"""The AVSBench-OV selection rule: which AVSBench-semantic videos go into train / val / test.

Rule (reproduces the paper's 5,184 / 1,240 / 1,490 videos and 40,095 train frames exactly, see
`../shared/reference/avsbench-data.md` §5.2):

- train: `split == train`, subset `v1s` or `v2`, and EVERY `a_obj` token is one of the 40 base class
  names (this also drops the `off-the-screen` clips and the `h orse` typo clip);
- val / test: `split == val` / `test`, subset other than `v1m`, whatever the tokens.

`include_v1m=True` also admits v1m videos: all of them into val/test, and into train under the same
base-only rule. Frames: 5 per v1s/v1m video, 10 per v2 video; only frame 0 of a v1s train video is
labelled, every frame of every other video is.
"""

from __future__ import annotations

from models.data.classes import BASE_NAMES
from models.data.metadata import FRAMES_PER_SUBSET, MetadataRow
from models.data.prepared import SPLITS, VideoRecord


def ov_split(row: MetadataRow, include_v1m: bool = False) -> str | None:
    """The AVSBench-OV split ('train', 'val', 'test') that `row` belongs to, or None if it is left out."""
    if row.subset == "v1m" and not include_v1m:
        return None
    if row.split == "train":
        if not row.a_obj or not all(token in BASE_NAMES for token in row.a_obj):
            return None
    return row.split


def labelled_frames(subset: str, split: str) -> list[int]:
    """Frame indices that have a label PNG: [0] for v1s train, all frames otherwise."""
    if subset == "v1s" and split == "train":
        return [0]
    return list(range(FRAMES_PER_SUBSET[subset]))


def make_record(row: MetadataRow, split: str, height: int = 0, width: int = 0) -> VideoRecord:
    """The `VideoRecord` of `row` placed in `split` (height/width 0 = unknown)."""
    return VideoRecord(
        uid=row.uid,
        subset=row.subset,
        split=split,
        a_obj=list(row.a_obj),
        class_ids=row.class_ids,
        num_frames=row.num_frames,
        labelled_frames=labelled_frames(row.subset, row.split),
        height=height,
        width=width,
    )


def select_ov_videos(rows: list[MetadataRow], include_v1m: bool = False) -> dict[str, list[VideoRecord]]:
    """Split records of the selected rows, keyed 'train', 'val', 'test', each in metadata order."""
    splits: dict[str, list[VideoRecord]] = {name: [] for name in SPLITS}
    for row in rows:
        split = ov_split(row, include_v1m)
        if split is not None:
            splits[split].append(make_record(row, split))
    return splits
