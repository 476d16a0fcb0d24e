"""Open-vocabulary evaluation of a predictor on AVSBench-OV: predict every frame, save PNGs, score them.

As the official test script does (ovavss-spec.md §11): every video of the split, all of its frames, cut
into consecutive clips of the predictor's `clip_len` (a 10-frame video = two 5-frame clips), frame k paired
with VGGish example k of the whole audio file; the vocabulary is the 70 AVSBench names in id order, so a
label map value (vocabulary index + 1) is the AVSBench class id. The predictor resizes the frames itself
(short side 360 for r50 / swinb) and returns label maps at the original resolution.

The label maps are written as index PNGs in the layout `avseg eval --predictions` reads,

    PRED_DIR/<uid>/<k>.png        k = 0 .. num_frames - 1

and then scored by `evaluate_predictions` - the very code that scores saved predictions, so
`eval --checkpoint` and `eval --predictions PRED_DIR` agree by construction.

Resumable: each video folder is written under a temporary name and renamed when all its frames are
written, so a folder named `<uid>` is normally complete and is skipped by a later run into the same PRED_DIR
(when all its PNGs decode: a file cut short by a hard kill or a full disk makes the video be predicted again).
`PRED_DIR/avseg-predictions.json` records what produced the predictions; resuming with another checkpoint or
other options is refused rather than mixing two models' predictions, and so is a folder that holds anything but
has no such record (another method's PNGs, a data or run folder).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from models.atomic import atomic_dir, clear_interrupted_writes, write_json
from models.folder_lock import folder_lock, is_lock_file
from models.data.classes import CLASS_NAMES
from models.data.prepared import PreparedData, VideoRecord
from models.errors import AVSegError, UsageError
from models.prediction import ClipInput, VideoPredictor, predict_clips
from models.progress import NullProgress, Progress

RUN_FILE = "avseg-predictions.json"
"""Written into PRED_DIR: what produced the predictions (checked when resuming)."""

AVSBENCH_VOCABULARY: tuple[str, ...] = tuple(CLASS_NAMES[1:])
"""The 70 AVSBench class names in id order: vocabulary index i <-> class id i + 1."""

_RUN_KEYS_THAT_MUST_MATCH = (
    "checkpoint", "checkpoint_kind", "config", "iteration", "clip_model", "clip_weights", "vggish", "amp",
    "protocol", "score_threshold", "top_k", "sound_gate", "max_crops_per_frame", "templates", "short_side",
)
"""Keys of the predictor's `describe()` that a resumed run must share (OV-AVSS; all None for the zero-shot method)."""

_RUN_KEYS_ADDED_LATER = ("method", "detector", "options", "weights")
"""Keys added later (the zero-shot method's detector, options and models): a run file without them was written by
an earlier avseg and is not refused for their absence."""


@dataclass(frozen=True)
class PredictionRun:
    """What `predict_split` did.

    Attributes:
        pred_dir: the folder holding `<uid>/<k>.png`.
        num_videos: videos of the split.
        predicted, skipped: videos predicted now / found complete from an earlier run.
        num_frames: frames predicted now.
        seconds: wall time of the predictions made now.
    """

    pred_dir: Path
    num_videos: int
    predicted: int
    skipped: int
    num_frames: int
    seconds: float

    @property
    def videos_per_second(self) -> float:
        return self.predicted / self.seconds if self.seconds > 0 else float("nan")


@dataclass(frozen=True)
class OpenVocabularyEvalResult:
    """Scores (`EvalResult` of `evaluate_predictions`) plus the prediction run and the predictor description."""

    scores: object  # models.pipeline.evaluate_predictions.EvalResult
    run: PredictionRun
    predictor: dict
    saved: bool

    def to_json(self) -> dict:
        row = {"mode": "open-vocabulary"}
        row.update(self.scores.to_json())
        row.update({
            "predictor": self.predictor,
            "predictions": str(self.run.pred_dir) if self.saved else None,
            "videos_predicted": self.run.predicted,
            "videos_skipped": self.run.skipped,
            "seconds": round(self.run.seconds, 3),
        })
        return row


def video_is_complete(folder: Path, record: VideoRecord) -> bool:
    """True when `folder` holds a `<k>.png` that decodes completely for every frame of the video (a file cut short
    by a crash or a full disk is not finished work; decoding all of them is cheap at AVSBench sizes)."""
    return all(_png_decodes(folder / f"{k}.png") for k in range(record.num_frames))


def _png_decodes(path: Path) -> bool:
    """True when `path` is a file that PIL opens and decodes to the end."""
    from PIL import Image

    try:
        if not path.is_file():
            return False
        with Image.open(path) as image:
            image.load()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return False
    return True


def check_predictions_folder(pred_dir: str | os.PathLike) -> Path:
    """`pred_dir` as a Path, checked before any model is loaded: a usage error when it names something that is not
    a folder, or a folder that holds anything but has no RUN_FILE (another method's PNGs, a data or run folder):
    only an earlier run's own, recorded predictions are ever skipped as finished. A new or empty folder is fine."""
    pred_dir = Path(pred_dir)
    if pred_dir.exists() and not pred_dir.is_dir():
        raise UsageError(f"predictions path is not a folder: {pred_dir}")
    if not pred_dir.is_dir() or (pred_dir / RUN_FILE).is_file():
        return pred_dir
    try:
        names = sorted(name for name in os.listdir(pred_dir) if not is_lock_file(name))
    except OSError as error:
        raise AVSegError(f"cannot read folder {pred_dir}: {error.strerror or error}") from error
    if names:
        shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
        raise UsageError(
            f"{pred_dir} is not empty ({shown}) and holds no {RUN_FILE}, so these are not predictions an "
            f"`avseg eval --save-predictions` run saved: use a new or empty folder for --save-predictions"
        )
    return pred_dir


def _check_no_foreign_entries(pred_dir: Path, uids: set[str]) -> None:
    """Refuse, before predicting, entries that would make the saved predictions fail to score: a folder that is
    no video of the split, a PNG at the top level (the rules of `check_prediction_layout`)."""
    from models.pipeline.evaluate_predictions import top_level_entries

    foreign = top_level_entries(pred_dir, uids)[1]
    if foreign:
        shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        plural = "entry that is" if len(foreign) == 1 else "entries that are"
        raise AVSegError(f"{pred_dir} holds {len(foreign)} {plural} no prediction of this split ({shown}): move them "
                         f"out, or use a new folder for --save-predictions")


def _check_run_file(pred_dir: Path, description: dict, split: str) -> None:
    """Refuse to resume into PRED_DIR written by another model / other options; write the run file otherwise."""
    from models.pipeline.settings import leaf_differences

    wanted = {key: description.get(key) for key in _RUN_KEYS_THAT_MUST_MATCH + _RUN_KEYS_ADDED_LATER}
    wanted["split"] = split
    wanted = json.loads(json.dumps(wanted))  # compared as stored: tuples become lists
    path = pred_dir / RUN_FILE
    if path.is_file():
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise AVSegError(f"unreadable {path} ({error}); delete it or use another predictions folder") from error
        compared = [key for key in wanted if key in stored or key not in _RUN_KEYS_ADDED_LATER]
        leaves = [leaf for key in compared for leaf in leaf_differences(stored.get(key), wanted[key], key)]
        if leaves:
            shown = "; ".join(f"{name}: {before!r} there, {now!r} now" for name, before, now in leaves[:2])
            more = f"; {len(leaves) - 2} more" if len(leaves) > 2 else ""
            raise AVSegError(
                f"{pred_dir} holds predictions of another run ({shown}{more}): use a new folder for "
                f"--save-predictions, or delete this one"
            )
        return
    write_json(path, wanted)


def read_waveform_16k(path: Path) -> np.ndarray:
    """(N,) float32 mono 16 kHz samples of an AVSBench wav, read like the official code (soundfile int16 / 32768,
    channel mean, resampy to 16 kHz when the file has another rate)."""
    from models.ovavss.audio_frontend import read_wav, to_mono_16k

    return to_mono_16k(*read_wav(path)).astype(np.float32)


def _video_clips(record: VideoRecord, root: Path, clip_len: int, with_waveform: bool = False):
    """Yield (frame ids, ClipInput) of one video at the original resolution, in frame order.

    Frame k of an AVSBench video is at k seconds. With `with_waveform` each clip also carries the 16 kHz
    waveform from its first frame on (cut by `frame_audio.waveform_span`), for methods with their own audio model.
    """
    from models.data.clips import NUM_AUDIO_EXAMPLES, load_audio_examples, select_audio_examples
    from models.data.eval_clips import clip_frame_ranges
    from models.data.transforms import read_frame
    from models.pipeline.frame_audio import waveform_span

    audio_path = record.audio_path(root)
    examples = load_audio_examples(audio_path, max(NUM_AUDIO_EXAMPLES, record.num_frames))
    waveform = read_waveform_16k(audio_path) if with_waveform else None
    for ids in clip_frame_ranges(record.num_frames, clip_len):
        frames = [read_frame(record.frame_path(root, k)) for k in ids]
        size = frames[0].shape[:2]
        for k, frame in zip(ids, frames):
            if frame.shape[:2] != size:
                raise AVSegError(
                    f"frame {record.frame_path(root, k)} is {frame.shape[1]}x{frame.shape[0]}, the video's first frame "
                    f"{size[1]}x{size[0]}: all frames of a video must have one size"
                )
        times = tuple(float(k) for k in ids)
        yield ids, ClipInput(
            frames=np.stack(frames),
            audio_examples=select_audio_examples(examples, ids, audio_path).numpy(),
            waveform_16k=waveform_span(waveform, times) if with_waveform else None,
            times=times,
        )


def predict_split(
    predictor: VideoPredictor,
    data: PreparedData,
    split: str,
    pred_dir: str | Path,
    progress: Progress | None = None,
    write_mask: Callable[[Path, np.ndarray], None] | None = None,
) -> PredictionRun:
    """Predict every frame of every video of `split` into PRED_DIR/<uid>/<k>.png (resumable).

    Args:
        predictor: any `VideoPredictor`; its vocabulary is set to the 70 AVSBench names.
        data: the prepared data folder.
        split: 'val' or 'test'.
        pred_dir: output folder (created; videos already complete in it are skipped).
        progress: one step per video, with the rate in videos/s.
        write_mask: how a label map is written (default: `write_index_mask`, an index PNG).
    """
    from models.io.masks import write_index_mask
    from models.pipeline.evaluate_predictions import EVAL_SPLITS

    progress = progress or NullProgress()
    write_mask = write_mask or write_index_mask
    if split not in EVAL_SPLITS:
        raise AVSegError(f"cannot evaluate split {split!r}: choose one of {', '.join(EVAL_SPLITS)}", exit_code=2)
    records = data.load_split(split)
    if not records:
        raise AVSegError(f"the {split} split of {data.data_dir} has no videos")
    if not Path(data.root).is_dir():
        raise AVSegError(f"AVSBench-semantic folder not found: {data.root} (named in {data.data_dir / 'dataset.json'})")
    pred_dir = check_predictions_folder(pred_dir)
    try:
        pred_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise AVSegError(f"cannot create {pred_dir}: {error.strerror or error}") from error

    with folder_lock(pred_dir, "eval --save-predictions"):  # another process would remove this one's temporaries
        return _predict_into(predictor, data, split, pred_dir, records, progress, write_mask)


def _predict_into(predictor: VideoPredictor, data: PreparedData, split: str, pred_dir: Path,
                  records: list[VideoRecord], progress: Progress, write_mask) -> PredictionRun:
    """`predict_split` in the checked, existing PRED_DIR that this process holds."""
    predictor.set_vocabulary(AVSBENCH_VOCABULARY)
    _check_run_file(pred_dir, predictor.describe(), split)
    uids = {record.uid for record in records}
    _check_no_foreign_entries(pred_dir, uids)
    clear_interrupted_writes(pred_dir, uids)  # the video folders an interrupted run was writing

    with_waveform = bool(getattr(predictor, "needs_waveform", False))
    predicted = skipped = num_frames = 0
    seconds = 0.0
    progress.start(f"predicting {split}", total=len(records))
    try:
        for record in records:
            folder = pred_dir / record.uid
            if folder.is_dir() and video_is_complete(folder, record):
                skipped += 1
                progress.advance(1, skipped=skipped)
                continue
            started = time.perf_counter()
            with atomic_dir(folder) as tmp:
                clips = list(_video_clips(record, data.root, predictor.clip_len, with_waveform))  # 2 for 10 frames
                results = predict_clips(predictor, (clip for _, clip in clips))
                for (ids, _), frames in zip(clips, results, strict=True):
                    if len(frames) != len(ids):
                        raise RuntimeError(f"the predictor returned {len(frames)} frames for a clip of {len(ids)}")
                    for k, frame in zip(ids, frames):
                        write_mask(tmp / f"{k}.png", frame.label_map)
            seconds += time.perf_counter() - started
            predicted += 1
            num_frames += record.num_frames
            rate = predicted / seconds if seconds > 0 else 0.0
            progress.advance(1, frames=num_frames, videos_per_s=round(rate, 3))
    except BaseException:  # interrupted (Ctrl-C, SIGTERM made KeyboardInterrupt) or failed: no temporaries left
        with contextlib.suppress(OSError):
            clear_interrupted_writes(pred_dir, uids)  # the video folders an interrupted run was writing
        raise
    finally:
        progress.finish()
    return PredictionRun(pred_dir=pred_dir, num_videos=len(records), predicted=predicted, skipped=skipped,
                         num_frames=num_frames, seconds=seconds)


def evaluate_open_vocabulary(
    predictor: VideoPredictor,
    data: PreparedData,
    split: str = "test",
    save_dir: str | Path | None = None,
    progress: Progress | None = None,
) -> OpenVocabularyEvalResult:
    """Predict the split (into `save_dir`, or a temporary folder deleted afterwards) and score it with the
    official AVSBench-OV metrics (`evaluate_predictions`)."""
    from models.pipeline.evaluate_predictions import evaluate_predictions

    if save_dir is not None:
        run = predict_split(predictor, data, split, save_dir, progress)
        scores = evaluate_predictions(run.pred_dir, data, split, progress)
        return OpenVocabularyEvalResult(scores=scores, run=run, predictor=predictor.describe(), saved=True)
    with tempfile.TemporaryDirectory(prefix="avseg-eval-") as tmp:
        run = predict_split(predictor, data, split, Path(tmp) / "predictions", progress)
        scores = evaluate_predictions(run.pred_dir, data, split, progress)
        return OpenVocabularyEvalResult(scores=scores, run=run, predictor=predictor.describe(), saved=False)
