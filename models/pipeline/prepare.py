"""The `prepare` job: an AVSBench-semantic download -> a DATA_DIR with the AVSBench-OV split.

    root/metadata.csv --read_metadata--> rows --select_ov_videos--> train / val / test records
        --scan_video (each selected video, read only)--> frame size + problems
        --> DATA_DIR/splits/{train,val,test}.jsonl, DATA_DIR/summary.json, DATA_DIR/dataset.json

The root is never written to. All outputs are written atomically (temporary name, then rename; the
`splits/` folder is swapped in as a whole), and only after everything was read and checked, so a failed
run leaves the previous DATA_DIR as it was. Re-running on the same input writes the same bytes.
A dry run is a preview: it computes the split from metadata.csv alone and writes nothing at all.
Videos with a missing or unreadable frame, label or audio file (or no frames folder) are left out of their
split, since training and evaluation would stop at them; videos with problems the readers handle (frame or label
sizes that differ, unknown label colours, short audio) stay in it. All are reported.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

from models.atomic import atomic_dir, write_json, write_jsonl
from models.data.metadata import read_metadata
from models.data.prepared import SPLITS, VideoRecord, write_dataset_json
from models.data.scan import (
    EMPTY_A_OBJ,
    PROBLEM_KINDS,
    UNKNOWN_A_OBJ_TOKEN,
    Problem,
    VideoScan,
    scan_video,
)
from models.data.split import select_ov_videos
from models.errors import AVSegError, UsageError
from models.progress import NullProgress, Progress

MAX_EXAMPLES = 5
"""Examples kept per problem kind in summary.json."""


@dataclass(frozen=True)
class SplitCount:
    """Videos and frames (all frames, labelled or not) in one split."""

    videos: int
    frames: int


@dataclass(frozen=True)
class ProblemSummary:
    """All findings of one kind: how many, and the first few (in metadata order) as examples."""

    kind: str
    count: int
    examples: tuple[str, ...]


@dataclass(frozen=True)
class PrepareResult:
    """What `prepare_dataset` did.

    Attributes:
        root, out_dir: the AVSBench-semantic folder read and the DATA_DIR written.
        splits: the records per split ('train', 'val', 'test'), in metadata order (written unless a dry run).
        problems: one summary per problem kind found, in `PROBLEM_KINDS` order.
        excluded: '<subset>/<uid>' of selected videos left out: no frames folder, or a frame, label or audio
            file missing or unreadable (`models.data.scan.EXCLUDING_KINDS`).
        dry_run: True for a preview: files were not checked (height/width 0) and nothing was written.
        written: False for a dry run, when `strict` found problems, or when no selected video could be kept
            (`nothing_usable`: a --root without the videos metadata.csv lists); then nothing was written.
    """

    root: Path
    out_dir: Path
    splits: dict[str, list[VideoRecord]]
    problems: tuple[ProblemSummary, ...]
    excluded: tuple[str, ...]
    dry_run: bool
    written: bool

    @property
    def nothing_usable(self) -> bool:
        """No split has a single video: metadata.csv selects none (a dry run sees that too, and says so, as the
        real run would), or files were checked and none could be kept (an empty or wrong --root)."""
        return not any(self.splits.values())

    @property
    def empty_splits(self) -> list[str]:
        """The splits without any video, in SPLITS order (files checked)."""
        return [] if self.dry_run else [name for name in SPLITS if not self.splits[name]]

    @property
    def counts(self) -> dict[str, SplitCount]:
        return {
            name: SplitCount(len(records), sum(r.num_frames for r in records)) for name, records in self.splits.items()
        }

    @property
    def problem_count(self) -> int:
        return sum(p.count for p in self.problems)

    def summary(self) -> dict:
        """The content of DATA_DIR/summary.json."""
        data: dict = {name: {"videos": c.videos, "frames": c.frames} for name, c in self.counts.items()}
        data["problems"] = [{"kind": p.kind, "count": p.count, "examples": list(p.examples)} for p in self.problems]
        data["excluded"] = list(self.excluded)
        data["dry_run"] = self.dry_run
        return data


def prepare_dataset(
    root: str | Path,
    out_dir: str | Path,
    *,
    dry_run: bool = False,
    include_v1m: bool = False,
    strict: bool = False,
    workers: int = 1,
    progress: Progress | None = None,
) -> PrepareResult:
    """Select the AVSBench-OV videos of `root`, check their files, and write DATA_DIR `out_dir`.

    Args:
        root: AVSBench-semantic folder (metadata.csv, v1s/, v1m/, v2/). Only read.
        out_dir: DATA_DIR to write (created if needed; must not be `root` or inside it).
        dry_run: a preview: the split from metadata.csv alone (no file is checked, height/width are 0),
            returned but not written; `out_dir` is only checked, never created or changed.
        include_v1m: also select v1m videos (val/test all, train under the base-only rule).
        strict: if any problem is found, write nothing (the result has `written=False`).
        workers: threads checking videos in parallel (image decoding releases the GIL).
        progress: receives one task, "checking videos", advanced once per video.

    Raises:
        AVSegError: root missing or not a folder, metadata.csv missing or malformed, out_dir not writable.
    """
    root, out_dir = Path(root), Path(out_dir)
    _check_root(root)
    _check_output_dir(out_dir, root)
    rows = read_metadata(root / "metadata.csv")
    selected = select_ov_videos(rows, include_v1m=include_v1m)
    ordered = [record for name in SPLITS for record in selected[name]]

    findings: list[Problem] = []
    for record in ordered:
        findings.extend(_metadata_problems(record))

    splits: dict[str, list[VideoRecord]] = {name: [] for name in SPLITS}
    excluded: list[str] = []
    if dry_run:
        for record in ordered:
            splits[record.split].append(record)
    else:
        progress = progress or NullProgress()
        progress.start("checking videos", total=len(ordered))
        for record, scan in zip(ordered, _scan_all(root, ordered, workers)):
            findings.extend(scan.problems)
            if scan.excluded:
                excluded.append(f"{record.subset}/{record.uid}")
            else:
                splits[record.split].append(replace(record, height=scan.height, width=scan.width))
            progress.advance(1, problems=len(findings))
        progress.finish()

    result = PrepareResult(
        root=root, out_dir=out_dir, splits=splits, problems=summarize_problems(findings), excluded=tuple(excluded),
        dry_run=dry_run, written=False,
    )
    if dry_run or (strict and result.problems) or result.nothing_usable:
        return result
    _write_outputs(result, include_v1m)
    return replace(result, written=True)


def summarize_problems(findings: Iterable[Problem], max_examples: int = MAX_EXAMPLES) -> tuple[ProblemSummary, ...]:
    """Group findings by kind (in `PROBLEM_KINDS` order, unknown kinds last), keeping the first examples."""
    counts: dict[str, int] = {}
    examples: dict[str, list[str]] = {}
    for finding in findings:
        counts[finding.kind] = counts.get(finding.kind, 0) + 1
        kept = examples.setdefault(finding.kind, [])
        if len(kept) < max_examples:
            kept.append(finding.example)
    order = [k for k in PROBLEM_KINDS if k in counts] + sorted(k for k in counts if k not in PROBLEM_KINDS)
    return tuple(ProblemSummary(kind, counts[kind], tuple(examples[kind])) for kind in order)


def _metadata_problems(record: VideoRecord) -> list[Problem]:
    from models.data.classes import CLASS_INDEX
    from models.data.tokens import NON_CLASS_TOKENS

    name = f"{record.subset}/{record.uid}"
    if not record.a_obj:
        return [Problem(EMPTY_A_OBJ, name)]
    unknown = [t for t in record.a_obj if t not in CLASS_INDEX and t not in NON_CLASS_TOKENS]
    return [Problem(UNKNOWN_A_OBJ_TOKEN, f"{name}: {token!r}") for token in unknown]


def _scan_all(root: Path, records: list[VideoRecord], workers: int) -> Iterator[VideoScan]:
    if workers <= 1 or len(records) <= 1:
        for record in records:
            yield scan_video(root, record)
        return
    pool = ThreadPoolExecutor(max_workers=workers)
    try:
        yield from pool.map(lambda record: scan_video(root, record), records)
    finally:  # on Ctrl-C or an error, drop the queued videos instead of checking them all first
        pool.shutdown(wait=True, cancel_futures=True)


def _check_root(root: Path) -> None:
    if not root.exists():
        raise AVSegError(f"AVSBench-semantic folder not found: {root}")
    if not root.is_dir():
        raise AVSegError(f"AVSBench-semantic root is not a folder: {root}")
    metadata = root / "metadata.csv"
    if not metadata.exists():
        raise AVSegError(f"metadata.csv not found: {metadata} (is --root the AVSBench-semantic folder?)")


def _check_output_dir(out_dir: Path, root: Path) -> None:
    """Fail early (before the long scan) if `out_dir` cannot be written; create nothing."""
    out_abs, root_abs = out_dir.resolve(), root.resolve()
    if out_abs == root_abs or root_abs in out_abs.parents:
        raise UsageError(f"output folder {out_dir} is inside the AVSBench root {root}: choose a folder outside it")
    if out_dir.exists():
        if not out_dir.is_dir():
            raise UsageError(f"output folder is a file: {out_dir}")
        _check_replaceable(out_dir)
        writable_dir = out_dir
    else:
        ancestor = out_dir.absolute().parent
        while not ancestor.exists() and ancestor != ancestor.parent:
            ancestor = ancestor.parent
        if not ancestor.is_dir():
            raise UsageError(f"cannot create output folder {out_dir}: {ancestor} is a file, not a folder")
        writable_dir = ancestor
    if not os.access(writable_dir, os.W_OK | os.X_OK):
        raise AVSegError(f"output folder is not writable: {writable_dir}")


PREPARED_NAMES = ("splits", "summary.json", "dataset.json")
"""What `prepare` writes into DATA_DIR (and replaces there on a re-run)."""


def _check_replaceable(out_dir: Path) -> None:
    """Refuse an existing folder whose splits/, summary.json or dataset.json `prepare` did not write: a re-run
    replaces those of an earlier `prepare` (recognised by its dataset.json), never files of the user's own."""
    import json

    present = [name for name in PREPARED_NAMES
               if (out_dir / name).exists() and not ((out_dir / name).is_dir() and not any((out_dir / name).iterdir()))]
    if not present:
        return
    try:
        meta = json.loads((out_dir / "dataset.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        meta = None
    if isinstance(meta, dict) and {"format", "root", "include_v1m"} <= meta.keys():
        splits = out_dir / "splits"  # replaced as a whole: files of the user's in it would be lost
        own = {f"{name}.jsonl" for name in SPLITS}
        others = sorted(entry.name for entry in splits.iterdir() if entry.name not in own) if splits.is_dir() else []
        if others:
            raise UsageError(f"{splits} holds {', '.join(others[:3])}{', ...' if len(others) > 3 else ''}, which "
                             "avseg prepare did not write and would replace with the folder: move them out first")
        return
    shown = ", ".join(f"{name}/" if (out_dir / name).is_dir() else name for name in present)
    raise UsageError(f"output folder {out_dir} holds {shown} that avseg prepare did not write; choose an empty or new "
                     "folder (or a DATA_DIR made by avseg prepare, which is updated)")


def _write_outputs(result: PrepareResult, include_v1m: bool) -> None:
    out_dir = result.out_dir
    with atomic_dir(out_dir / "splits") as splits_dir:
        for name in SPLITS:
            write_jsonl(splits_dir / f"{name}.jsonl", [record.to_json() for record in result.splits[name]])
        _make_readable(splits_dir)
    write_json(out_dir / "summary.json", result.summary())
    write_dataset_json(out_dir, result.root, include_v1m)
    for name in ("summary.json", "dataset.json"):
        _make_readable(out_dir / name)


def _make_readable(path: Path) -> None:
    """Give a freshly written temp file/folder the usual permissions (mkstemp/mkdtemp make them owner-only)."""
    umask = os.umask(0)
    os.umask(umask)
    mode = 0o777 if path.is_dir() else 0o666
    try:
        os.chmod(path, mode & ~umask)
        if path.is_dir():
            for child in path.iterdir():
                os.chmod(child, (0o777 if child.is_dir() else 0o666) & ~umask)
    except OSError:
        pass
