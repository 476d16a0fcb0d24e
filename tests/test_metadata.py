"""metadata.csv reader: columns, tokens, oddities, malformed files."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from models.data.metadata import METADATA_COLUMNS, MetadataRow, format_metadata, read_metadata
from models.errors import AVSegError

HEADER = "vid,uid,s_min,s_sec,a_obj,split,label\n"


def write(tmp_path: Path, text: str, name: str = "metadata.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8"))
    return path


def test_reads_rows_with_tokens_and_odd_uids(tmp_path):
    path = write(
        tmp_path,
        HEADER
        + "--iSerV5DbY,--iSerV5DbY_68000_78000,1,8,man_hair-dryer,train,v2\n"
        + "_-apT0tfo6U,_-apT0tfo6U_60000_70000,1,0,girl_guitar,train,v2\n"
        + "RmYRkbGXZPY,RmYRkbGXZPY,0,0,background,train,v1m\n"
        + "zVfLHhs9uv8,zVfLHhs9uv8_3000_8000,0,3,h orse,train,v1s\n"
        + "abc,abc_0_10000,0,0,off-the-screen,test,v2\n",
    )
    rows = read_metadata(path)
    assert [r.uid for r in rows] == [
        "--iSerV5DbY_68000_78000", "_-apT0tfo6U_60000_70000", "RmYRkbGXZPY", "zVfLHhs9uv8_3000_8000", "abc_0_10000",
    ]  # fmt: skip
    first = rows[0]
    assert first == MetadataRow(
        vid="--iSerV5DbY", uid="--iSerV5DbY_68000_78000", s_min=1, s_sec=8, a_obj=("man", "hair-dryer"),
        split="train", subset="v2", line=2,
    )
    assert first.class_ids == [41, 31]  # man, hair-dryer: alphabetical palette ids
    assert first.num_frames == 10 and rows[2].num_frames == 5
    assert rows[1].a_obj == ("girl", "guitar")
    # oddities are kept, not dropped
    assert rows[2].a_obj == ("background",) and rows[2].class_ids == [] and rows[2].unknown_tokens == ()
    assert rows[3].a_obj == ("h orse",) and rows[3].class_ids == [] and rows[3].unknown_tokens == ("h orse",)
    assert rows[4].a_obj == ("off-the-screen",) and rows[4].class_ids == [] and rows[4].unknown_tokens == ()
    assert [r.line for r in rows] == [2, 3, 4, 5, 6]


def test_crlf_bom_quotes_and_blank_lines(tmp_path):
    text = "\ufeff" + HEADER.replace("\n", "\r\n") + '"a,b",x_0_5000,0,0,"dog_cat",val,v1s\r\n\r\ny,y_0_5000,0,0,dog,test,v1s'
    rows = read_metadata(write(tmp_path, text))
    assert [(r.vid, r.uid, r.a_obj, r.split) for r in rows] == [
        ("a,b", "x_0_5000", ("dog", "cat"), "val"), ("y", "y_0_5000", ("dog",), "test"),
    ]  # fmt: skip
    assert rows[1].line == 4  # header 1, row 2, blank 3


def test_format_round_trip(tmp_path):
    rows = [
        MetadataRow("-a", "-a_0_5000", 0, 0, ("dog", "cat"), "train", "v1s", 2),
        MetadataRow("b,c", "b_0_10000", 2, 5, ("h orse",), "test", "v2", 3),
    ]
    path = write(tmp_path, format_metadata(rows))
    assert read_metadata(path) == rows
    assert path.read_text().splitlines()[0] == ",".join(METADATA_COLUMNS)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("", "metadata.csv is empty"),
        ("vid,uid,a_obj,split,label\nx,x,dog,train,v1s\n", "found vid,uid,a_obj,split,label"),
        ("uid,vid,s_min,s_sec,a_obj,split,label\n", "found uid,vid,s_min,s_sec,a_obj,split,label"),
        (HEADER, "no rows"),
        (HEADER + "x,x_0_5000,0,0,dog,train,v1s\nx,y_0_5000,0,0,dog,train\n", "line 3: expected 7 fields, found 6"),
        (HEADER + "x,x_0_5000,0,0,dog,train,v1s,extra\n", "line 2: expected 7 fields, found 8"),
        (HEADER + "x,x_0_5000,0,zero,dog,train,v1s\n", "line 2: s_min/s_sec must be integers"),
        (HEADER + "x,x_0_5000,0,0,dog,training,v1s\n", "line 2: split 'training'"),
        (HEADER + "x,x_0_5000,0,0,dog,train,v3\n", "line 2: label 'v3'"),
        (HEADER + "x,../x,0,0,dog,train,v1s\n", "line 2: uid '../x' is not a folder name"),
        (HEADER + "x,,0,0,dog,train,v1s\n", "line 2: uid '' is not a folder name"),
        (HEADER + "x,x_0_5000,0,0,dog,train,v1s\nx,x_0_5000,0,0,cat,val,v1s\n", "already listed on line 2"),
    ],
)
def test_malformed_files_name_file_and_line(tmp_path, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(AVSegError) as info:
        read_metadata(path)
    message = str(info.value)
    assert expected in message
    assert str(path) in message
    assert "\n" not in message


def test_missing_folder_and_non_utf8(tmp_path):
    with pytest.raises(AVSegError, match="metadata.csv not found: .*nope.csv"):
        read_metadata(tmp_path / "nope.csv")
    (tmp_path / "dir.csv").mkdir()
    with pytest.raises(AVSegError, match="is not a file"):
        read_metadata(tmp_path / "dir.csv")
    path = tmp_path / "latin.csv"
    path.write_bytes(HEADER.encode() + "x,x_0_5000,0,0,d\xe9j\xe0,train,v1s\n".encode("latin-1"))
    with pytest.raises(AVSegError, match="not UTF-8 text"):
        read_metadata(path)


def test_real_metadata_matches_plain_csv(real_metadata_csv):
    rows = read_metadata(real_metadata_csv)
    with open(real_metadata_csv, newline="", encoding="utf-8") as handle:
        raw = list(csv.reader(handle))[1:]
    assert len(rows) == len(raw) == 11356
    assert [(r.vid, r.uid, r.split, r.subset, "_".join(r.a_obj)) for r in rows] == [
        (f[0], f[1], f[5], f[6], f[4]) for f in raw
    ]
    by_subset = {s: sum(r.subset == s for r in rows) for s in ("v1s", "v1m", "v2")}
    assert by_subset == {"v1s": 4932, "v1m": 424, "v2": 6000}
    assert sum(r.a_obj == ("off-the-screen",) for r in rows) == 27
    assert sorted(r.uid for r in rows if r.a_obj == ("background",)) == [
        "IrYMIVbDsh8_0", "OBx79oY-RTc_0", "RmYRkbGXZPY", "SA6kKf9H3H4_0", "SA6kKf9H3H4_1",
    ]  # fmt: skip
    assert [(r.uid, r.unknown_tokens) for r in rows if r.unknown_tokens] == [("zVfLHhs9uv8_3000_8000", ("h orse",))]
    token_counts = [len(r.a_obj) for r in rows]
    assert [token_counts.count(n) for n in (1, 2, 3, 4, 5)] == [9091, 1811, 384, 60, 10]
    # start times: uid = <vid>_<start_ms>_<start_ms + clip length> for v1s / v2
    for r in rows:
        if r.subset != "v1m":
            start_ms = (60 * r.s_min + r.s_sec) * 1000
            assert r.uid == f"{r.vid}_{start_ms}_{start_ms + r.num_frames * 1000}"
