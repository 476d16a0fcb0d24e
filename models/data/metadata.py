"""Reading AVSBench-semantic `metadata.csv`: one `MetadataRow` per video, oddities kept, not cleaned.

The file has exactly the columns `vid,uid,s_min,s_sec,a_obj,split,label` (header required). `label` is
the subset tag (`v1s`, `v1m`, `v2`), not a class. `a_obj` holds the sounding classes joined with `_`.
Irregular tokens are kept as they are: `off-the-screen` and `background` name no class, and a token
that is no class name at all (the real file has `h orse`) is listed by `MetadataRow.unknown_tokens`
so that `avseg prepare` reports it instead of silently dropping it.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from models.data.classes import CLASS_INDEX
from models.data.tokens import NON_CLASS_TOKENS, split_tokens, token_ids
from models.errors import AVSegError

METADATA_COLUMNS: tuple[str, ...] = ("vid", "uid", "s_min", "s_sec", "a_obj", "split", "label")
"""The header of metadata.csv, in order."""

SUBSETS: tuple[str, ...] = ("v1s", "v1m", "v2")
"""Values of the `label` column; also the first path component of every video folder."""

SPLIT_NAMES: tuple[str, ...] = ("train", "val", "test")
"""Values of the `split` column."""

FRAMES_PER_SUBSET: dict[str, int] = {"v1s": 5, "v1m": 5, "v2": 10}
"""Frames (one per second) of a video of each subset."""


@dataclass(frozen=True)
class MetadataRow:
    """One row of metadata.csv.

    Attributes:
        vid: YouTube id of the source video.
        uid: folder name `<subset>/<uid>/` (may start with '-' or '_').
        s_min, s_sec: start of the clip in the source video (0, 0 for v1m).
        a_obj: the raw `a_obj` tokens, in file order (e.g. ('girl', 'guitar'), ('off-the-screen',), ('h orse',)).
        split: 'train', 'val' or 'test'.
        subset: 'v1s', 'v1m' or 'v2' (the `label` column).
        line: 1-based line number in the file (the header is line 1).
    """

    vid: str
    uid: str
    s_min: int
    s_sec: int
    a_obj: tuple[str, ...]
    split: str
    subset: str
    line: int

    @property
    def num_frames(self) -> int:
        """5 for v1s and v1m, 10 for v2."""
        return FRAMES_PER_SUBSET[self.subset]

    @property
    def class_ids(self) -> list[int]:
        """Palette ids of the tokens that are class names (none for `off-the-screen`, `background`, typos)."""
        return token_ids(list(self.a_obj))

    @property
    def unknown_tokens(self) -> tuple[str, ...]:
        """Tokens that are neither a class name nor a known non-class token (e.g. the typo 'h orse')."""
        return tuple(t for t in self.a_obj if t not in CLASS_INDEX and t not in NON_CLASS_TOKENS)

    @property
    def a_obj_text(self) -> str:
        """The `a_obj` field as written in the file."""
        return "_".join(self.a_obj)


def read_metadata(path: str | Path) -> list[MetadataRow]:
    """Read metadata.csv into rows, in file order.

    Raises `AVSegError` (one line naming the file, and the line number where it applies) when the file
    is missing, is not UTF-8 text, has other columns than `METADATA_COLUMNS`, has a row with the wrong
    number of fields, a non-integer start time, an unknown split or subset, an empty uid or one that is
    not a plain folder name, a uid listed twice, or no rows at all.
    """
    path = Path(path)
    if not path.exists():
        raise AVSegError(f"metadata.csv not found: {path}")
    if not path.is_file():
        raise AVSegError(f"metadata.csv is not a file: {path}")
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            return _parse(csv.reader(handle), path)
    except UnicodeDecodeError as error:
        raise AVSegError(f"metadata.csv is not UTF-8 text: {path} ({error.reason} at byte {error.start})") from error
    except csv.Error as error:
        raise AVSegError(f"malformed metadata.csv: {path}: {error}") from error
    except OSError as error:
        raise AVSegError(f"cannot read metadata.csv: {path}: {error.strerror or error}") from error


def _parse(reader, path: Path) -> list[MetadataRow]:
    header = next(reader, None)
    if header is None:
        raise AVSegError(f"metadata.csv is empty: {path} (expected the header {','.join(METADATA_COLUMNS)})")
    found = tuple(name.strip() for name in header)
    if found != METADATA_COLUMNS:
        raise AVSegError(
            f"metadata.csv has the wrong columns: {path}: expected {','.join(METADATA_COLUMNS)}, "
            f"found {','.join(found) if any(found) else '(empty header)'}"
        )
    rows: list[MetadataRow] = []
    first_line_of_uid: dict[str, int] = {}
    for fields in reader:
        line = reader.line_num
        if not fields or all(not f.strip() for f in fields):
            continue
        if len(fields) != len(METADATA_COLUMNS):
            raise AVSegError(
                f"malformed metadata.csv: {path}, line {line}: expected {len(METADATA_COLUMNS)} fields, "
                f"found {len(fields)}"
            )
        vid, uid, s_min, s_sec, a_obj, split, subset = (f.strip() for f in fields)
        where = f"{path}, line {line}"
        if not uid or uid in (".", "..") or "/" in uid or "\\" in uid:
            raise AVSegError(f"malformed metadata.csv: {where}: uid {uid!r} is not a folder name")
        try:
            start_min, start_sec = int(s_min), int(s_sec)
        except ValueError as error:
            raise AVSegError(
                f"malformed metadata.csv: {where}: s_min/s_sec must be integers, found {s_min!r}, {s_sec!r}"
            ) from error
        if split not in SPLIT_NAMES:
            raise AVSegError(f"malformed metadata.csv: {where}: split {split!r} is not one of {', '.join(SPLIT_NAMES)}")
        if subset not in SUBSETS:
            raise AVSegError(f"malformed metadata.csv: {where}: label {subset!r} is not one of {', '.join(SUBSETS)}")
        if uid in first_line_of_uid:
            raise AVSegError(
                f"malformed metadata.csv: {where}: uid {uid!r} already listed on line {first_line_of_uid[uid]}"
            )
        first_line_of_uid[uid] = line
        rows.append(
            MetadataRow(
                vid=vid, uid=uid, s_min=start_min, s_sec=start_sec, a_obj=tuple(split_tokens(a_obj)),
                split=split, subset=subset, line=line,
            )
        )
    if not rows:
        raise AVSegError(f"metadata.csv has a header but no rows: {path}")
    return rows


def format_metadata(rows: list[MetadataRow]) -> str:
    """The text of a metadata.csv holding `rows` (header, LF line ends, as in the real file)."""
    lines = [",".join(METADATA_COLUMNS)]
    for row in rows:
        fields = [row.vid, row.uid, str(row.s_min), str(row.s_sec), row.a_obj_text, row.split, row.subset]
        lines.append(",".join(_quote(f) for f in fields))
    return "\n".join(lines) + "\n"


def _quote(field: str) -> str:
    if any(ch in field for ch in ',"\n\r'):
        return '"' + field.replace('"', '""') + '"'
    return field
