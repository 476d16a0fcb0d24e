"""The prepared-data folder written by `avseg prepare` and read by `train` and `eval`.

Layout of DATA_DIR:

    DATA_DIR/dataset.json          {"format": 1, "root": "/abs/AVSBench-semantic", "include_v1m": false}
    DATA_DIR/splits/train.jsonl    one `VideoRecord` per line
    DATA_DIR/splits/val.jsonl
    DATA_DIR/splits/test.jsonl
    DATA_DIR/summary.json          {"train": {"videos": N, "frames": M}, ..., "problems": [...]}

Media are never copied: records point into the AVSBench-semantic root
(`<root>/<subset>/<uid>/frames/<k>.jpg`, `labels_rgb/<k>.png`, `audio.wav`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from models.errors import AVSegError

FORMAT_VERSION = 1
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class VideoRecord:
    """One AVSBench-semantic video as selected into an AVSBench-OV split.

    Attributes:
        uid: folder name of the video (may start with '-' or '_').
        subset: 'v1s', 'v1m' or 'v2' (metadata column `label`; also the first path component).
        split: 'train', 'val' or 'test'.
        a_obj: the raw `a_obj` tokens (e.g. ['girl', 'guitar'], ['off-the-screen']).
        class_ids: palette ids of the tokens that are class names (the `a_obj` filter's allowed set, minus 0).
        num_frames: 5 (v1s, v1m) or 10 (v2).
        labelled_frames: frame indices with a label PNG ([0] for v1s train, all frames otherwise).
        height, width: frame size in pixels (0 when unknown).
    """

    uid: str
    subset: str
    split: str
    a_obj: list[str]
    class_ids: list[int]
    num_frames: int
    labelled_frames: list[int]
    height: int = 0
    width: int = 0

    def video_dir(self, root: Path) -> Path:
        return Path(root) / self.subset / self.uid

    def frame_path(self, root: Path, k: int) -> Path:
        return self.video_dir(root) / "frames" / f"{k}.jpg"

    def label_path(self, root: Path, k: int) -> Path:
        return self.video_dir(root) / "labels_rgb" / f"{k}.png"

    def audio_path(self, root: Path) -> Path:
        return self.video_dir(root) / "audio.wav"

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, row: dict) -> "VideoRecord":
        return cls(
            uid=str(row["uid"]),
            subset=str(row["subset"]),
            split=str(row["split"]),
            a_obj=list(row["a_obj"]),
            class_ids=[int(i) for i in row["class_ids"]],
            num_frames=int(row["num_frames"]),
            labelled_frames=[int(i) for i in row["labelled_frames"]],
            height=int(row.get("height", 0)),
            width=int(row.get("width", 0)),
        )


@dataclass(frozen=True)
class PreparedData:
    """An opened DATA_DIR: the AVSBench root it points to and its split files."""

    data_dir: Path
    root: Path
    include_v1m: bool = False
    extra: dict = field(default_factory=dict)

    @classmethod
    def open(cls, data_dir: str | Path) -> "PreparedData":
        """Open DATA_DIR written by `avseg prepare`; one clear `AVSegError` if it is not one."""
        data_dir = Path(data_dir)
        if not data_dir.exists():
            raise AVSegError(f"data folder not found: {data_dir} (create it with `avseg prepare`)")
        if not data_dir.is_dir():
            raise AVSegError(f"data folder is not a folder: {data_dir}")
        meta_path = data_dir / "dataset.json"
        if not meta_path.is_file():
            raise AVSegError(f"not a prepared data folder (no dataset.json): {data_dir} (run `avseg prepare`)")
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            root = Path(meta["root"])
            include_v1m = bool(meta.get("include_v1m", False))
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise AVSegError(f"unreadable dataset.json: {meta_path} ({error})") from error
        return cls(data_dir=data_dir, root=root, include_v1m=include_v1m, extra=meta)

    def split_path(self, split: str) -> Path:
        return self.data_dir / "splits" / f"{split}.jsonl"

    def load_split(self, split: str) -> list[VideoRecord]:
        """The records of one split, in file order; one clear error if the split file is missing or bad."""
        if split not in SPLITS:
            raise AVSegError(f"unknown split {split!r}: choose one of {', '.join(SPLITS)}", exit_code=2)
        path = self.split_path(split)
        if not path.is_file():
            raise AVSegError(f"split file not found: {path} (run `avseg prepare`)")
        try:
            with open(path, encoding="utf-8") as handle:
                lines = handle.read().splitlines()
        except UnicodeDecodeError as error:
            raise AVSegError(f"split file is not UTF-8 text: {path} ({error.reason} at byte {error.start}; run "
                             f"`avseg prepare` again)") from error
        except OSError as error:
            raise AVSegError(f"cannot read split file {path}: {error.strerror or error}") from error
        records = []
        for line_no, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                records.append(VideoRecord.from_json(json.loads(line)))
            except (ValueError, KeyError, TypeError) as error:
                raise AVSegError(f"malformed line {line_no} in {path}: {error}") from error
        return records


def write_dataset_json(data_dir: Path, root: Path, include_v1m: bool) -> None:
    """Write DATA_DIR/dataset.json atomically."""
    from models.atomic import write_json

    write_json(
        Path(data_dir) / "dataset.json",
        {"format": FORMAT_VERSION, "root": str(Path(root).resolve()), "include_v1m": include_v1m},
    )
