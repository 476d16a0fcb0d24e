"""Score a folder of predicted label maps against AVSBench-OV ground truth (the official protocol).

PRED_DIR layout: one folder per video of the split, named by its uid, holding one mask PNG per
labelled frame:

    PRED_DIR/<uid>/<k>.png      k = 0 .. num_frames - 1 (index map or AVSBench colour map, any size)

Per frame, as OV-AVSS's test script does (`../shared/reference/avsbench-data.md` §6):

* GT = `labels_rgb/<k>.png` resized to 224 x 224 with PIL NEAREST, decoded by exact palette colour,
  then every class not in the video's `a_obj` list set to background;
* prediction = the mask PNG resized to 224 x 224 with torch's nearest rule (`resize_nearest`).
  The two nearest rules differ for non-integer ratios, so a prediction that equals the GT at the
  original frame size does not always score exactly 1 - the official numbers carry the same quirk;
* both go into one dataset-level confusion matrix (the reported mIoU / base / novel / harmonic) and
  into the AVSBench per-frame metrics (the secondary F-score).

Unlike the official script, which pairs GT and predictions by one global sequential zip, frames are
matched by name, and any missing, surplus or misnamed prediction is an error before any pixel is read.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.atomic import write_json
from models.data.classes import BASE_IDS, CLASS_NAMES, NOVEL_IDS
from models.data.labels import apply_aobj_filter, read_label
from models.data.prepared import PreparedData, VideoRecord
from models.errors import AVSegError, UsageError
from models.io.masks import read_index_mask, resize_nearest
from models.metrics import AVSBenchFrameMetrics, ConfusionMatrix, FrameMetricScores
from models.progress import NullProgress, Progress

EVAL_SIZE = (224, 224)
"""(height, width) at which GT and predictions are compared, as in the official evaluator."""

EVAL_SPLITS = ("val", "test")

_SHOW_NAMES = 3


@dataclass(frozen=True)
class EvalResult:
    """AVSBench-OV scores of one split; every score lies in [0, 1] or is NaN (undefined).

    Attributes:
        split: 'val' or 'test'.
        num_videos, num_frames: how many videos and labelled frames were scored.
        miou: IoU averaged over all 71 ids, background included (the paper's "mIoU").
        base_miou, novel_miou: averaged over the 40 base / 30 novel ids (background in neither).
        harmonic_miou: 2 * base * novel / (base + novel), 0 when either is undefined.
        per_class_iou: (71,) float64 dataset-level IoU per class id, NaN where a class is neither in the
            GT nor predicted.
        frame_metrics: the secondary AVSBench per-frame IoU / F-score (see `AVSBenchFrameMetrics`).
        unknown_gt_pixels: GT pixels whose colour is not a palette colour (counted as background, as the
            official code does).
    """

    split: str
    num_videos: int
    num_frames: int
    miou: float
    base_miou: float
    novel_miou: float
    harmonic_miou: float
    per_class_iou: np.ndarray
    frame_metrics: FrameMetricScores
    unknown_gt_pixels: int = 0

    @property
    def fscore(self) -> float:
        """Secondary: the AVSBench per-frame F-score (beta^2 = 0.3) averaged over all 71 bins."""
        return self.frame_metrics.fscore

    def per_class_iou_by_name(self) -> dict[str, float | None]:
        """Class name -> IoU, None where undefined; in class-id order."""
        return {name: _json_number(value) for name, value in zip(CLASS_NAMES, self.per_class_iou)}

    def to_json(self) -> dict:
        """The RESULT.json content (NaN written as null)."""
        frame = self.frame_metrics
        return {
            "split": self.split,
            "num_videos": self.num_videos,
            "num_frames": self.num_frames,
            "miou": _json_number(self.miou),
            "base_miou": _json_number(self.base_miou),
            "novel_miou": _json_number(self.novel_miou),
            "harmonic_miou": _json_number(self.harmonic_miou),
            "fscore": _json_number(self.fscore),
            "per_class_iou": self.per_class_iou_by_name(),
            "secondary": {
                "note": (
                    "AVSBench per-frame metrics (calc_color_miou_fscore), computed but not reported by "
                    "OV-AVSS; averaged over 71 bins where classes absent from the split count 0"
                ),
                "fscore": _json_number(frame.fscore),
                "fscore_no_bg": _json_number(frame.fscore_no_bg),
                "frame_miou": _json_number(frame.miou),
                "frame_miou_no_bg": _json_number(frame.miou_no_bg),
            },
            "unknown_gt_pixels": self.unknown_gt_pixels,
            "base_ids": list(BASE_IDS),
            "novel_ids": list(NOVEL_IDS),
        }


def _json_number(value: float) -> float | None:
    value = float(value)
    return None if math.isnan(value) else value


def _names(items: list[str]) -> str:
    shown = ", ".join(items[:_SHOW_NAMES])
    return shown + (", ..." if len(items) > _SHOW_NAMES else "")


def _visible_entries(folder: Path) -> list[os.DirEntry]:
    try:
        with os.scandir(folder) as entries:
            return sorted((e for e in entries if not e.name.startswith(".")), key=lambda e: e.name)
    except OSError as error:
        raise AVSegError(f"cannot read folder {folder}: {error.strerror or error}") from error


def top_level_entries(pred_dir: Path, uids: Collection[str]) -> tuple[dict[str, os.DirEntry], list[str]]:
    """PRED_DIR's folders of the videos `uids` (by name), and its visible entries that have no place there: a
    folder of no such video ("name/") or a PNG at the top level, in name order. Hidden entries and other top-level
    files (e.g. a RESULT.json) are neither."""
    present: dict[str, os.DirEntry] = {}
    unexpected: list[str] = []
    for entry in _visible_entries(pred_dir):
        if entry.is_dir():
            if entry.name in uids:
                present[entry.name] = entry
            else:
                unexpected.append(entry.name + "/")
        elif entry.name.lower().endswith(".png"):
            unexpected.append(entry.name)
    return present, unexpected


def check_prediction_layout(pred_dir: Path, records: list[VideoRecord], split: str) -> None:
    """Raise one `AVSegError` if PRED_DIR does not hold exactly one mask per labelled frame of `records`.

    Required: `<uid>/<k>.png` for every labelled frame k. Allowed besides: `<k>.png` for the other frames
    of a video (k < num_frames), hidden entries (names starting with '.') and top-level non-PNG files
    (e.g. a RESULT.json). Anything else - a folder of a video outside the split, a PNG at the top level,
    a misnamed or out-of-range frame file, a subfolder inside a video folder - is an error.
    """
    pred_dir = Path(pred_dir)
    if not pred_dir.exists():
        raise AVSegError(f"predictions folder not found: {pred_dir}")
    if not pred_dir.is_dir():
        raise UsageError(f"predictions path is not a folder: {pred_dir}")
    by_uid = {record.uid: record for record in records}
    present, unexpected = top_level_entries(pred_dir, by_uid)
    missing_videos = [uid for uid in by_uid if uid not in present]
    missing_frames: list[str] = []
    for uid, entry in present.items():
        record = by_uid[uid]
        allowed = {f"{k}.png" for k in range(record.num_frames)}
        names = set()
        for item in _visible_entries(Path(entry.path)):
            if item.name in allowed and not item.is_dir():
                names.add(item.name)
            else:
                unexpected.append(f"{uid}/{item.name}" + ("/" if item.is_dir() else ""))
        missing_frames += [f"{uid}/{k}.png" for k in record.labelled_frames if f"{k}.png" not in names]
    problems = []
    if missing_videos:
        problems.append(f"{len(missing_videos)} video folder(s) missing ({_names(missing_videos)})")
    if missing_frames:
        problems.append(f"{len(missing_frames)} frame file(s) missing ({_names(missing_frames)})")
    if unexpected:
        plural = "entry" if len(unexpected) == 1 else "entries"
        problems.append(f"{len(unexpected)} unexpected {plural} ({_names(sorted(unexpected))})")
    if problems:
        frames = sum(len(r.labelled_frames) for r in records)
        raise AVSegError(
            f"predictions in {pred_dir} do not match the {split} split ({len(records)} videos, {frames} "
            f"labelled frames, expected <uid>/<k>.png): " + "; ".join(problems)
        )


def evaluate_predictions(
    pred_dir: str | os.PathLike,
    data: PreparedData,
    split: str = "test",
    progress: Progress | None = None,
) -> EvalResult:
    """Score PRED_DIR against the GT of `split` (official AVSBench-OV protocol, see the module docstring).

    Args:
        pred_dir: folder of `<uid>/<k>.png` masks, one per labelled frame of every video in the split.
        data: the prepared data folder (`PreparedData.open(DATA_DIR)`).
        split: 'val' or 'test'.
        progress: receives one step per video.

    Raises:
        AVSegError: unknown split, empty split, missing AVSBench root, a layout mismatch (all problems in
            one message), an unreadable or invalid mask or label file.
    """
    progress = progress or NullProgress()
    if split not in EVAL_SPLITS:
        choices = ", ".join(EVAL_SPLITS)
        raise AVSegError(f"cannot evaluate split {split!r}: choose one of {choices}", exit_code=2)
    records = data.load_split(split)
    if not records:
        raise AVSegError(f"the {split} split of {data.data_dir} has no videos")
    if not Path(data.root).is_dir():
        raise AVSegError(
            f"AVSBench-semantic folder not found: {data.root} (named in {data.data_dir / 'dataset.json'})"
        )
    pred_dir = Path(pred_dir)
    check_prediction_layout(pred_dir, records, split)

    confusion = ConfusionMatrix()
    frame_metrics = AVSBenchFrameMetrics()
    height, width = EVAL_SIZE
    num_frames = 0
    unknown_pixels = 0
    progress.start(f"eval {split}", total=len(records))
    try:
        for record in records:
            for k in record.labelled_frames:
                label = read_label(record.label_path(data.root, k), size=(width, height))
                gt = apply_aobj_filter(label.index, record.class_ids)
                pred = resize_nearest(read_index_mask(pred_dir / record.uid / f"{k}.png"), height, width)
                confusion.update(gt, pred)
                frame_metrics.update(gt, pred)
                unknown_pixels += label.unknown_pixels
                num_frames += 1
            progress.advance(1, frames=num_frames)
    finally:
        progress.finish()

    scores = confusion.scores()
    return EvalResult(
        split=split,
        num_videos=len(records),
        num_frames=num_frames,
        miou=scores.miou,
        base_miou=scores.base_miou,
        novel_miou=scores.novel_miou,
        harmonic_miou=scores.harmonic_miou,
        per_class_iou=scores.per_class_iou,
        frame_metrics=frame_metrics.scores(),
        unknown_gt_pixels=unknown_pixels,
    )


RESULT_MODES = ("predictions", "open-vocabulary", "class-agnostic")
"""The "mode" of every RESULT.json `avseg eval` writes: how the scored predictions were made."""

_RESULT_JSON_MAX_BYTES = 10_000_000
"""A results JSON is a few kB; a larger file is not read to find out whether it is one (a checkpoint is not)."""


def is_results_json(path: str | os.PathLike) -> bool:
    """True when `path` is a RESULT.json an earlier `avseg eval` wrote (recognised by its content: a JSON object
    with a "split" and a known "mode", or the "miou" and "per_class_iou" of an `--predictions` result that
    predates the "mode" key), so that re-running an evaluation may replace it."""
    path = Path(path)
    try:
        if not path.is_file() or path.stat().st_size > _RESULT_JSON_MAX_BYTES:
            return False
        row = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(row, dict) or "split" not in row:
        return False
    return row.get("mode") in RESULT_MODES or ("miou" in row and "per_class_iou" in row)


def check_json_destination(path: str | os.PathLike) -> None:
    """Fail early (before any model loads or a long evaluation) if RESULT.json cannot be written at `path`, or
    would replace a file that is not an earlier results JSON (a checkpoint, a user's file).

    Writability is tried, not guessed from permissions: a temporary file is created in the destination folder and
    removed, and so are the folders that were created for it (the final write creates them again).
    """
    path = Path(path)
    if path.is_dir():
        raise AVSegError(f"cannot write {path}: it is a folder")
    if (path.exists() or path.is_symlink()) and not is_results_json(path):
        raise UsageError(f"refusing to overwrite {path}: it is not an avseg eval results JSON; choose another "
                         f"--json path (or delete the file)")
    _try_writing_next_to(path)


def _try_writing_next_to(path: Path) -> None:
    """Create and delete a temporary file in `path`'s folder (creating the missing folders, then removing them)."""
    from models.pipeline.output_folders import missing_folders, remove_empty_folders

    parent = path.parent if str(path.parent) else Path(".")
    missing = missing_folders(parent)
    existing = missing[0].parent if missing else parent
    if existing.exists() and not existing.is_dir():
        raise AVSegError(f"cannot write {path}: {existing} is not a folder")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError as error:
        raise AVSegError(f"cannot write {path}: {error.strerror or error}") from error
    finally:
        remove_empty_folders(missing)


def write_result_json(path: str | os.PathLike, result: EvalResult, pred_dir: str | os.PathLike | None = None) -> None:
    """Write RESULT.json atomically (temporary file + rename), marked as made from saved predictions; when
    `eval --save-predictions` made them, what predicted them (its `avseg-predictions.json`) as "predicted_by"."""
    from models.pipeline.evaluate_ov import RUN_FILE

    row = {"mode": "predictions"}
    row.update(result.to_json())
    if pred_dir is not None:
        row["predictions"] = str(pred_dir)
        try:
            recorded = json.loads((Path(pred_dir) / RUN_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            recorded = None
        if isinstance(recorded, dict):
            row["predicted_by"] = recorded
    write_json(path, row)
