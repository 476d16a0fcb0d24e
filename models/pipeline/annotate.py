"""`avseg annotate`: run a `VideoPredictor` over whole videos and write an overlay video, mask PNGs and JSON.

One video, start to end (every arrow streams; only one block of frames is in memory):

    probe -> decode_audio_16k -> FrameAudio (log-mel of the whole sound, once)
          -> iter_frames (the video's own rate) -> blocks of T seconds -> clips -> predictor.predict_clip
          -> per frame (`frame_outputs.finish_frame`, in worker threads or processes):
                        render_overlay -> BackgroundFrameWriter -> VideoWriter (original audio copied)
                        write_index_mask -> <stem>.masks/<frame:06d>.png
                        instance records -> <stem>.json (streamed)

The workers finish a block's frames while the predictor runs its next clips; a background thread feeds
the finished frames to the encoder while the next block is decoded and predicted.

**Which frames go together (the clip scheme).** The model was trained on clips of T = `clip_len` (5)
frames taken one second apart. Let the analysed frames be numbered 0, 1, 2, ... at the analysis rate F
(by default the video's own rate, so every frame is analysed) and let s = round(F) (at least 1) be the
number of analysed frames per second. The analysed frames are cut into blocks of T x s frames (T
seconds); inside a block starting at frame b, clip j (j = 0 .. s-1) holds the frames

    b + j, b + j + s, b + j + 2s, ..., b + j + (T-1)s

so every frame is analysed exactly once, in a clip whose frames are one second apart, like the
model's training clips. The last block of a video is usually partial: its clips are shorter (a video
shorter than one second gives clips of one frame). With `analysis_fps` F below the video's rate,
analysed frame k is the source frame shown at k / F seconds (source frame floor(k x fps / F), the rule
of `models.io.video`), and its result is held, in the overlay video, on every source frame until the
next analysed frame; mask PNGs and JSON records are written for the analysed frames only, named by
their source frame index.

**Audio.** Each analysed frame gets the 0.96 s VGGish log-mel example that starts at its timestamp
(`models.pipeline.frame_audio`); a video without an audio track is analysed as silence, with a warning.

**Memory** is bounded whatever the length: one block (T seconds of decoded frames, e.g. 86 MB at
640x360 25 fps, 1.1 GB at 1920x1080 30 fps), at most 256 MB of finished frames waiting for the encoder,
the current block's JSON records, and the sound of the whole video (about 330 MB per hour; see
`frame_audio`).

**Outputs** of `<dir>/<stem>.<ext>` (dir = `out_dir`, default the input's folder):

* `<stem>.avseg.mp4`: every source frame at the source rate with the class-coloured masks, contours,
  "label score" tags and a legend (`models.io.render`), with the input's audio track copied;
* `<stem>.masks/<frame:06d>.png`: one index PNG per analysed frame, value = vocabulary index + 1
  (0 = background), with the AVSBench palette;
* `<stem>.json`: video metadata, vocabulary, `predictor.describe()`, and per analysed frame its index,
  time and instances (label, class_id = vocabulary index + 1, score, sound_score, bbox [x, y, w, h],
  area, COCO RLE segmentation).

Every output is written under a temporary name and renamed into place when complete (the JSON last);
on any failure or Ctrl-C the temporary files are removed and earlier outputs are left as they were.
"""

from __future__ import annotations

import contextlib
import glob
import json
import math
import os
import sys
import tempfile
import time
import warnings
from concurrent.futures import BrokenExecutor, Executor, Future
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import IO, Callable, Iterator, Sequence

import numpy as np

from models.atomic import atomic_dir, atomic_open
from models.errors import AVSegError, UsageError
from models.prediction import ClipInput, FramePrediction, VideoPredictor
from models.pipeline.background_writer import BackgroundFrameWriter
from models.pipeline.frame_outputs import POOL_KINDS, FrameJob, FrameResult, finish_frame, render_pool
from models.progress import NullProgress, Progress

VIDEO_SUFFIX = ".avseg.mp4"
MASKS_SUFFIX = ".masks"
JSON_SUFFIX = ".json"
MAX_VOCABULARY = 255
"""Mask PNGs hold one byte per pixel: vocabulary index + 1 must fit in 1..255."""
JSON_FORMAT = "avseg-annotate"
JSON_FORMAT_VERSION = 1

_GLOB_CHARACTERS = frozenset("*?[")

WarningCallback = Callable[[str], None]


class AnnotateWarning(UserWarning):
    """Issued by `Annotator.annotate` when no `warn` callback is given (e.g. a video without audio)."""


# --------------------------------------------------------------------------------------------------
# Vocabulary and inputs


def parse_vocabulary(classes: str | None = None, classes_file: str | os.PathLike | None = None) -> list[str]:
    """The class names of `--classes a,b,c` followed by those of `--classes-file` (one name per line).

    Names are stripped of surrounding whitespace and may contain spaces ("electric guitar"); in the
    file, blank lines and lines starting with `#` are ignored, as is anything after a `#`.

    Raises:
        UsageError: the file cannot be read, the vocabulary is empty, a name appears twice (after
            stripping; case-sensitive), or there are more than 255 names.
    """
    names: list[str] = []
    if classes:
        names += [name.strip() for name in classes.split(",")]
        names = [name for name in names if name]
    if classes_file is not None:
        path = Path(classes_file)
        try:
            text = path.read_text(encoding="utf-8-sig")
        except FileNotFoundError:
            raise UsageError(f"classes file not found: {path}") from None
        except IsADirectoryError:
            raise UsageError(f"expected a classes file, found a folder: {path}") from None
        except UnicodeDecodeError:
            raise UsageError(f"classes file is not UTF-8 text: {path}") from None
        except OSError as error:
            raise UsageError(f"cannot read classes file {path}: {error.strerror or error}") from None
        for line in text.splitlines():
            name = line.split("#", 1)[0].strip()
            if name:
                names.append(name)
    hint = f" (nothing in {classes_file})" if classes_file is not None else ""
    return check_vocabulary(names, hint)


def check_vocabulary(names: Sequence[str], empty_hint: str = "") -> list[str]:
    """Stripped `names`, checked: not empty, no duplicates, no empty name, at most 255.

    Raises:
        UsageError: with one line naming the problem (and the duplicated names).
    """
    names = [str(name).strip() for name in names]
    if not names:
        raise UsageError(
            "empty vocabulary: give class names with --classes a,b,c or --classes-file FILE" + empty_hint
        )
    if not all(names):
        raise UsageError("empty class name in the vocabulary")
    seen: set[str] = set()
    duplicates = [name for name in names if name in seen or seen.add(name)]
    if duplicates:
        listed = ", ".join(repr(name) for name in dict.fromkeys(duplicates))
        raise UsageError(f"duplicate class names in the vocabulary: {listed} (each name may appear once)")
    if len(names) > MAX_VOCABULARY:
        raise UsageError(f"{len(names)} class names given; at most {MAX_VOCABULARY} fit in the mask PNGs")
    return names


def has_glob(pattern: str) -> bool:
    """True when `pattern` contains a glob character (* ? [)."""
    return any(character in _GLOB_CHARACTERS for character in pattern)


def expand_inputs(patterns: Sequence[str | os.PathLike]) -> list[Path]:
    """Expand glob patterns (for shells that do not) into sorted file paths, keeping the given order.

    A pattern that names an existing path is taken literally (even with glob characters in it); a glob
    matches recursively with `**`; the same file named twice is kept once. A glob that matches nothing
    is returned as it is, so that annotating it fails with "no file matches ...".
    """
    result: list[Path] = []
    seen: set[str] = set()

    def add(path: Path) -> None:
        key = os.path.normcase(os.path.abspath(path))
        if key not in seen:
            seen.add(key)
            result.append(path)

    for pattern in patterns:
        text = os.fspath(pattern)
        if os.path.lexists(text) or not has_glob(text):
            add(Path(text))
            continue
        matches = sorted(glob.glob(os.path.expanduser(text), recursive=True))
        if not matches:
            add(Path(text))
        for match in matches:
            add(Path(match))
    return result


# --------------------------------------------------------------------------------------------------
# Options and output names


@dataclass(frozen=True)
class AnnotateOptions:
    """What `Annotator` writes and how densely it analyses.

    Attributes:
        out_dir: folder for the outputs (None: next to each input video).
        analysis_fps: analyse only this many frames per second (None: every frame; capped at the
            video's rate); results are held until the next analysed frame.
        write_video, write_masks, write_json: which of the three outputs to write.
        skip_existing: `annotate_batch` skips a video whose requested outputs all exist.
        alpha: opacity of the mask fill in the overlay video.
        crf, preset: libx264 quality and speed of the overlay video.
        workers: threads or processes that render, paint and encode the results of a block while the
            predictor runs its next clips (None: min(8, CPU count); 1 thread: everything in the calling
            thread). The outputs do not depend on it.
        render_workers: "threads" or "processes". Processes do not compete with the predictor for the GIL
            (a CUDA predictor's Python side holds it, and so does most rendering); see
            `models.pipeline.frame_outputs`.
    """

    out_dir: Path | None = None
    analysis_fps: float | None = None
    write_video: bool = True
    write_masks: bool = True
    write_json: bool = True
    skip_existing: bool = False
    alpha: float = 0.5
    crf: int = 20
    preset: str = "veryfast"
    workers: int | None = None
    render_workers: str = "threads"

    def __post_init__(self) -> None:
        fps = self.analysis_fps
        if fps is not None and (
            isinstance(fps, bool) or not isinstance(fps, (int, float, Fraction)) or not math.isfinite(fps) or fps <= 0
        ):
            raise UsageError(f"--analysis-fps must be a positive number of frames per second, got {fps!r}")
        if not (self.write_video or self.write_masks or self.write_json):
            raise UsageError("nothing to write: --no-video, --no-masks and --no-json were all given")
        if not 0.0 <= self.alpha <= 1.0:
            raise UsageError(f"alpha must be in [0, 1], got {self.alpha}")
        if self.workers is not None and (isinstance(self.workers, bool) or self.workers < 1):
            raise UsageError(f"workers must be at least 1, got {self.workers!r}")
        if self.render_workers not in POOL_KINDS:
            raise UsageError(f"--render-workers must be threads or processes, got {self.render_workers!r}")

    def worker_count(self) -> int:
        """The number of threads `workers` means here."""
        return self.workers if self.workers is not None else max(1, min(8, os.cpu_count() or 1))


@dataclass(frozen=True)
class OutputPaths:
    """The outputs of one video; None for those not requested."""

    video: Path | None
    masks: Path | None
    json: Path | None

    def requested(self) -> list[Path]:
        return [path for path in (self.video, self.masks, self.json) if path is not None]

    def all_exist(self) -> bool:
        return all(path.exists() for path in self.requested())

    def as_dict(self) -> dict[str, str | None]:
        return {name: None if path is None else str(path) for name, path in
                (("video", self.video), ("masks", self.masks), ("json", self.json))}


def output_paths(video: str | os.PathLike, options: AnnotateOptions = AnnotateOptions()) -> OutputPaths:
    """`<dir>/<stem>.avseg.mp4`, `<dir>/<stem>.masks/`, `<dir>/<stem>.json` (dir = out_dir or the input's)."""
    video = Path(video)
    folder = Path(options.out_dir) if options.out_dir is not None else video.parent
    stem = video.stem if video.suffix else video.name
    return OutputPaths(
        video=folder / f"{stem}{VIDEO_SUFFIX}" if options.write_video else None,
        masks=folder / f"{stem}{MASKS_SUFFIX}" if options.write_masks else None,
        json=folder / f"{stem}{JSON_SUFFIX}" if options.write_json else None,
    )


def _same_file(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return os.path.normcase(os.path.abspath(a)) == os.path.normcase(os.path.abspath(b))


def check_not_input(video: Path, outputs: OutputPaths) -> None:
    """Refuse outputs that would replace the input video itself (e.g. an input named `clip.json`)."""
    for path in outputs.requested():
        if _same_file(path, video):
            raise AVSegError(
                f"{video}: refusing to write an output over the input video itself ({path}); "
                "rename the video or choose another --out folder"
            )


def ensure_output_dir(folder: str | os.PathLike) -> Path:
    """Create `folder` if needed and check that files can be created in it.

    Raises:
        AVSegError: one line naming the folder (e.g. it lies under a regular file, or is read-only).
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except FileExistsError:
        raise AVSegError(f"cannot use {folder} as the output folder: it is a file") from None
    except OSError as error:
        raise AVSegError(f"cannot write to the output folder {folder}: {error.strerror or error}") from None
    return folder


# --------------------------------------------------------------------------------------------------
# The clip scheme


def clip_stride(analysis_rate: float | Fraction) -> int:
    """s: analysed frames per second, round(F) half up, at least 1 (25 for 25 fps, 30 for 29.97)."""
    return max(1, math.floor(Fraction(analysis_rate) + Fraction(1, 2)))


def block_clips(num_frames: int, clip_len: int, stride: int) -> list[list[int]]:
    """Positions (0-based inside a block) of the frames of each clip of a block of `num_frames` frames.

    Clip j holds j, j + stride, j + 2 stride, ... (at most `clip_len` of them); `num_frames` is at most
    `clip_len * stride` (a full block) and less for the last block of a video.
    """
    if clip_len < 1 or stride < 1:
        raise ValueError(f"clip_len and stride must be >= 1, got {clip_len}, {stride}")
    if not 0 <= num_frames <= clip_len * stride:
        raise ValueError(f"a block holds 0..{clip_len * stride} frames, got {num_frames}")
    return [list(range(j, num_frames, stride)) for j in range(min(stride, num_frames))]


def analysed_source_index(k: int, source_fps: Fraction, analysis_rate: Fraction) -> int:
    """Source frame of analysed frame k: the frame shown at k / F, floor(k x fps / F) (exact fractions)."""
    return (k * source_fps.numerator * analysis_rate.denominator) // (source_fps.denominator * analysis_rate.numerator)


# --------------------------------------------------------------------------------------------------
# Results


@dataclass
class VideoResult:
    """What `Annotator.annotate` did for one video."""

    input: Path
    outputs: OutputPaths
    num_frames: int
    num_analysed_frames: int
    seconds: float
    width: int
    height: int
    fps: float
    warnings: list[str] = field(default_factory=list)


class _FramesJson:
    """The `<stem>.json` file, written as it goes: header, one record per analysed frame, counts.

    The records arrive in frame order; the file is valid JSON (and renamed into place) only when the
    block exits without an error.
    """

    def __init__(self, path: Path, header: dict) -> None:
        self.path = path
        self.header = header
        self.counts: dict[str, int] = {}
        self._stack: contextlib.ExitStack | None = None
        self._handle: IO | None = None
        self._written = 0

    def __enter__(self) -> "_FramesJson":
        stack = contextlib.ExitStack()
        self._handle = stack.enter_context(atomic_open(self.path))
        self._stack = stack
        text = json.dumps(self.header, indent=2, ensure_ascii=False, default=str)
        self._handle.write(text[:-1].rstrip() + ',\n  "frames": [')
        return self

    def add(self, record: dict) -> None:
        separator = ",\n    " if self._written else "\n    "
        self._handle.write(separator + json.dumps(record, ensure_ascii=False, separators=(",", ":")))
        self._written += 1

    def __exit__(self, exc_type, exc, traceback) -> bool:
        stack, self._stack = self._stack, None
        if exc_type is None:
            tail = "".join(f',\n  "{key}": {json.dumps(value)}' for key, value in self.counts.items())
            try:
                self._handle.write(("\n  ]" if self._written else "]") + tail + "\n}\n")
            except BaseException:
                if not stack.__exit__(*sys.exc_info()):
                    raise
                return False
        return bool(stack.__exit__(exc_type, exc, traceback))


# --------------------------------------------------------------------------------------------------
# One video


class _BlockRunner:
    """Buffers one block of decoded frames, runs its clips through the predictor and writes the results."""

    def __init__(
        self,
        annotator: "Annotator",
        info,
        analysis_rate: Fraction,
        audio,
        writer,
        masks_dir: Path | None,
        frames_json: _FramesJson | None,
        progress: Progress,
        pool: Executor | None = None,
    ) -> None:
        from models.io.render import OverlayInstance  # noqa: F401  (import once, early)

        self.pool = pool
        self.annotator = annotator
        self.info = info
        self.analysis_rate = analysis_rate
        self.audio = audio
        self.writer = writer
        self.masks_dir = masks_dir
        self.frames_json = frames_json
        self.progress = progress
        self.clip_len = annotator.clip_len
        self.stride = clip_stride(analysis_rate)
        self.block_len = self.clip_len * self.stride
        self.frames: dict[int, np.ndarray] = {}  # source index -> frame (all frames when rendering)
        self.block_sources = 0  # source frames seen in the current block
        self.analysed: list[tuple[int, float]] = []  # (source index, time) of the block's analysed frames
        self.next_k = 0
        self.next_source = 0
        self.num_frames = 0
        self.num_analysed = 0
        self.class_names = ("background", *annotator.vocabulary)

    def feed(self, index: int, timestamp: float, frame: np.ndarray) -> None:
        """Take the next decoded source frame (indices 0, 1, 2, ... at the video's rate)."""
        analysed = index == self.next_source
        if analysed:
            if len(self.analysed) == self.block_len:
                self.flush()
            self.analysed.append((index, timestamp))
            self.next_k += 1
            self.next_source = analysed_source_index(self.next_k, self.info.fps, self.analysis_rate)
        if analysed or self.writer is not None:
            self.frames[index] = frame
        self.block_sources += 1
        self.num_frames += 1

    def flush(self) -> None:
        """Analyse and write the buffered block."""
        if not self.analysed:
            return
        first_source = self.analysed[0][0]
        end_source = first_source + self.block_sources
        records: dict[int, dict] = {}
        pending: list[Future] = []
        for positions in block_clips(len(self.analysed), self.clip_len, self.stride):
            sources = [self.analysed[p][0] for p in positions]
            times = [self.analysed[p][1] for p in positions]
            clip = ClipInput(
                frames=np.stack([self.frames[s] for s in sources]),
                audio_examples=self.audio.examples(times),
                waveform_16k=self.audio.waveform_span(times),
                times=tuple(times),
            )
            predictions = self.annotator.predictor.predict_clip(clip)
            if len(predictions) != len(positions):
                raise RuntimeError(
                    f"the predictor returned {len(predictions)} frame predictions for a clip of {len(positions)} frames"
                )
            for position, source, timestamp, prediction in zip(positions, sources, times, predictions):
                self._check(prediction)
                held_until = self.analysed[position + 1][0] if position + 1 < len(self.analysed) else end_source
                shown = range(source, held_until) if self.writer is not None else range(0)
                job = FrameJob(
                    position=position, source=source, timestamp=timestamp, frames=[self.frames[s] for s in shown],
                    prediction=prediction,
                    mask_path=self.masks_dir / f"{source:06d}.png" if self.masks_dir is not None else None,
                    want_record=self.frames_json is not None, class_names=self.class_names,
                    alpha=self.annotator.options.alpha,
                )
                if self.pool is None:
                    self._store(source, finish_frame(job), records)
                else:
                    pending.append((source, self.pool.submit(finish_frame, job)))
        for source, future in pending:
            # re-raises the first failure; the rest are cancelled by the pool's shutdown
            self._store(source, _pool_result(future), records)
        if self.frames_json is not None:
            for position in sorted(records):
                self.frames_json.add(records[position])
        if self.writer is not None:
            for s in range(first_source, end_source):
                self.writer.put(self.frames[s])  # written by the background thread, in order
        self.progress.advance(self.block_sources)
        self.num_analysed += len(self.analysed)
        self.frames.clear()
        self.analysed.clear()
        self.block_sources = 0

    def _store(self, source: int, result: FrameResult, records: dict[int, dict]) -> None:
        """Put a finished frame's rendered frames in place of the source frames and keep its JSON record."""
        for offset, rendered in enumerate(result.rendered):
            self.frames[source + offset] = rendered
        if result.record is not None:
            records[result.position] = result.record

    def _check(self, prediction: FramePrediction) -> None:
        label_map = np.asarray(prediction.label_map)
        expected = (self.info.height, self.info.width)
        if label_map.shape != expected:
            raise RuntimeError(f"the predictor returned a {label_map.shape} label map for {expected} frames")
        if label_map.size and int(label_map.max()) > len(self.annotator.vocabulary):
            raise RuntimeError(
                f"the predictor returned label {int(label_map.max())} for a vocabulary of "
                f"{len(self.annotator.vocabulary)} names"
            )


def _pool_result(future: Future) -> FrameResult:
    """A job's result; a worker process that died (e.g. killed for memory) is one clear error."""
    try:
        return future.result()
    except BrokenExecutor as error:
        raise AVSegError(f"a render worker process stopped unexpectedly ({error}); try --render-workers threads") \
            from error


class Annotator:
    """Annotates videos with one predictor and one vocabulary.

    Example:
        annotator = Annotator(predictor, ["pipa", "violin"], AnnotateOptions(out_dir=Path("out")))
        result = annotator.annotate("concert.mp4")

    Args:
        predictor: any `VideoPredictor`; its `set_vocabulary` is called here, once.
        vocabulary: the class names (checked: non-empty, no duplicates, at most 255).
        options: outputs and analysis rate.
    """

    def __init__(
        self, predictor: VideoPredictor, vocabulary: Sequence[str], options: AnnotateOptions = AnnotateOptions()
    ) -> None:
        self.vocabulary: tuple[str, ...] = tuple(check_vocabulary(vocabulary))
        clip_len = getattr(predictor, "clip_len", None)
        if isinstance(clip_len, bool) or not isinstance(clip_len, int) or clip_len < 1:
            raise ValueError(f"predictor.clip_len must be a positive int, got {clip_len!r}")
        self.predictor = predictor
        self.clip_len = clip_len
        self.options = options
        predictor.set_vocabulary(list(self.vocabulary))

    def outputs_for(self, video: str | os.PathLike) -> OutputPaths:
        """Where `annotate(video)` writes."""
        return output_paths(video, self.options)

    def annotate(
        self,
        video: str | os.PathLike,
        progress: Progress | None = None,
        warn: WarningCallback | None = None,
    ) -> VideoResult:
        """Annotate one video file and write its outputs (see the module docstring).

        Args:
            video: any file the bundled ffmpeg reads.
            progress: advanced by one step per source frame written (`start` gets the file name).
            warn: receives one-line warnings (no audio track, audio re-encoded); default: `warnings.warn`.

        Raises:
            AVSegError: one line naming the file: missing, a folder, empty, not a video, no video stream,
                damaged or truncated, outputs not writable (disk full included), or an output that would
                replace the input. Nothing is left behind: all outputs are written atomically.
        """
        from models.io.audio import decode_audio_16k
        from models.io.mux import VideoWriter
        from models.io.video import iter_frames, output_rate, probe
        from models.pipeline.frame_audio import FrameAudio

        progress = progress or NullProgress()
        video = Path(video)
        messages: list[str] = []

        def note(message: str) -> None:
            messages.append(message)
            if warn is not None:
                warn(message)
            else:
                warnings.warn(message, AnnotateWarning, stacklevel=3)

        started = time.perf_counter()
        if not os.path.lexists(video) and has_glob(str(video)):
            raise AVSegError(f"no file matches {video}")
        outputs = self.outputs_for(video)
        check_not_input(video, outputs)
        info = probe(video)
        analysis_rate = output_rate(info, self.options.analysis_fps)
        folder = outputs.requested()[0].parent
        ensure_output_dir(folder)

        if info.has_audio:
            waveform = decode_audio_16k(video, info.audio_channels)
            audio = FrameAudio(waveform) if waveform is not None else FrameAudio.silent()
        else:
            audio = FrameAudio.silent()
        if audio.is_silent_track:
            note(f"{video}: no audio track; annotated as silent (no sounding objects is a valid answer)")

        header = self._json_header(video, info, analysis_rate, audio, outputs)
        total = info.num_frames_at(None)
        try:
            with contextlib.ExitStack() as stack:
                # entered first, exited (renamed) last: the JSON appears only when everything else did
                frames_json = stack.enter_context(_FramesJson(outputs.json, header)) if outputs.json else None
                masks_dir = stack.enter_context(atomic_dir(outputs.masks)) if outputs.masks else None
                writer = frame_queue = None
                if outputs.video is not None:
                    writer = stack.enter_context(
                        VideoWriter(outputs.video, info.fps, (info.width, info.height), audio_source=video,
                                    crf=self.options.crf, preset=self.options.preset)
                    )
                    if writer.audio.mode == "aac":
                        note(f"{video}: {writer.audio.note}")
                    # exited before the writer: every queued frame is written before ffmpeg is closed
                    frame_queue = stack.enter_context(BackgroundFrameWriter(writer, info.width * info.height * 3))
                # exited first: running tasks end and queued ones are dropped before any output is removed
                pool = stack.enter_context(render_pool(self.options.worker_count(), self.options.render_workers))
                runner = _BlockRunner(self, info, analysis_rate, audio, frame_queue, masks_dir, frames_json, progress,
                                      pool)
                progress.start(video.name, total=total)
                try:
                    with contextlib.closing(iter_frames(video, info)) as frames:
                        for index, timestamp, frame in frames:
                            runner.feed(index, timestamp, frame)
                    runner.flush()
                finally:
                    progress.finish()
                if frames_json is not None:
                    frames_json.counts = {"num_frames": runner.num_frames, "num_analysed_frames": runner.num_analysed}
        except OSError as error:
            raise AVSegError(
                f"{video}: cannot write the outputs in {folder}: {error.strerror or error}"
            ) from error
        return VideoResult(
            input=video,
            outputs=outputs,
            num_frames=runner.num_frames,
            num_analysed_frames=runner.num_analysed,
            seconds=time.perf_counter() - started,
            width=info.width,
            height=info.height,
            fps=float(info.fps),
            warnings=messages,
        )

    def _json_header(self, video: Path, info, analysis_rate: Fraction, audio, outputs: OutputPaths) -> dict:
        from models import __version__

        describe = getattr(self.predictor, "describe", None)
        return {
            "format": JSON_FORMAT,
            "format_version": JSON_FORMAT_VERSION,
            "avseg_version": __version__,
            "input": str(video),
            "video": {
                "width": info.width,
                "height": info.height,
                "fps": float(info.fps),
                "fps_fraction": f"{info.fps.numerator}/{info.fps.denominator}",
                "duration": info.duration,
                "rotation": info.rotation,
                "has_audio": info.has_audio,
                "audio_codec": info.audio_codec,
                "audio_sample_rate": info.audio_sample_rate,
                "audio_channels": info.audio_channels,
            },
            "vocabulary": list(self.vocabulary),
            "class_ids": "class_id and mask PNG value i = vocabulary[i - 1]; 0 = background",
            "analysis": {
                "analysis_fps": float(analysis_rate),
                "clip_len": self.clip_len,
                "clip_stride": clip_stride(analysis_rate),
                "audio": "silence (no audio track)" if audio.is_silent_track
                else getattr(self.predictor, "audio_description",
                             "VGGish log-mel window of 0.96 s starting at each frame's time"),
            },
            "predictor": describe() if callable(describe) else None,
            "outputs": {
                "video": outputs.video.name if outputs.video else None,
                "masks": outputs.masks.name if outputs.masks else None,
            },
        }


# --------------------------------------------------------------------------------------------------
# Many videos

STATUS_DONE = "done"
STATUS_SKIPPED = "skipped"
STATUS_FAILED = "failed"
STATUS_INTERRUPTED = "interrupted"
STATUS_NOT_RUN = "not run"


@dataclass
class FileOutcome:
    """One input of a batch: `status` done / skipped / failed / interrupted / not run."""

    input: Path
    status: str
    outputs: OutputPaths | None = None
    result: VideoResult | None = None
    error: str | None = None
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        result = self.result
        return {
            "input": str(self.input),
            "status": self.status,
            "error": self.error,
            "outputs": None if self.outputs is None else self.outputs.as_dict(),
            "frames": None if result is None else result.num_frames,
            "analysed_frames": None if result is None else result.num_analysed_frames,
            "seconds": None if result is None else round(result.seconds, 3),
            "warnings": list(self.warnings),
        }


@dataclass
class BatchResult:
    """All outcomes of `annotate_batch`, in input order."""

    outcomes: list[FileOutcome]
    interrupted: bool = False

    def count(self, status: str) -> int:
        return sum(outcome.status == status for outcome in self.outcomes)

    @property
    def exit_code(self) -> int:
        """130 when interrupted, 1 when a file failed, else 0 (skipped files count as success)."""
        if self.interrupted:
            return 130
        return 1 if self.count(STATUS_FAILED) else 0

    def as_dict(self) -> dict:
        statuses = (STATUS_DONE, STATUS_SKIPPED, STATUS_FAILED, STATUS_INTERRUPTED, STATUS_NOT_RUN)
        return {
            "exit_code": self.exit_code,
            "interrupted": self.interrupted,
            "counts": {status: self.count(status) for status in statuses},
            "files": [outcome.as_dict() for outcome in self.outcomes],
        }


class BatchInterrupted(KeyboardInterrupt):
    """Ctrl-C during `annotate_batch`; `result` holds what was done (the current file's outputs removed)."""

    def __init__(self, result: BatchResult) -> None:
        super().__init__("interrupted")
        self.result = result


def _planned_conflicts(inputs: Sequence[Path], annotator: Annotator) -> dict[int, str]:
    """Inputs whose outputs would overwrite another input or the outputs of an earlier input."""
    conflicts: dict[int, str] = {}
    input_keys = {os.path.normcase(os.path.abspath(path)): path for path in inputs}
    claimed: dict[str, Path] = {}
    for number, video in enumerate(inputs):
        for path in annotator.outputs_for(video).requested():
            key = os.path.normcase(os.path.abspath(path))
            if key in input_keys:
                conflicts[number] = (
                    f"{video}: refusing to write {path}: it is an input of this run; "
                    "rename it or choose another --out folder"
                )
                break
            if key in claimed and claimed[key] != video:
                conflicts[number] = (
                    f"{video}: its outputs would overwrite those of {claimed[key]} (same file name); "
                    "annotate them into different --out folders"
                )
                break
            claimed[key] = video
    return conflicts


def annotate_batch(
    annotator: Annotator,
    inputs: Sequence[str | os.PathLike],
    *,
    file_progress: Progress | None = None,
    overall_progress: Progress | None = None,
    warn: WarningCallback | None = None,
    on_outcome: Callable[[FileOutcome], None] | None = None,
    raise_unexpected: bool = False,
) -> BatchResult:
    """Annotate several videos one after the other; a failure is recorded and the batch goes on.

    Args:
        inputs: video paths (expand globs first with `expand_inputs`).
        file_progress: per-video progress (frames); overall_progress: one step per input.
        warn: receives one-line warnings; on_outcome: called after each input with its outcome.
        raise_unexpected: re-raise exceptions other than `AVSegError` (bugs) instead of recording them.

    Raises:
        BatchInterrupted: on Ctrl-C (KeyboardInterrupt), after removing the current video's temporary
            files; completed outputs stay. Its `result` lists every input's status.
    """
    videos = [Path(path) for path in inputs]
    outcomes: list[FileOutcome] = []
    overall = overall_progress or NullProgress()
    conflicts = _planned_conflicts(videos, annotator)
    overall.start("all videos", total=len(videos))
    try:
        for number, video in enumerate(videos):
            outputs = annotator.outputs_for(video)
            file_warnings: list[str] = []

            def collect(message: str, _sink=file_warnings) -> None:
                _sink.append(message)
                if warn is not None:
                    warn(message)

            try:
                if number in conflicts:
                    raise AVSegError(conflicts[number])
                if annotator.options.skip_existing and outputs.all_exist():
                    outcome = FileOutcome(video, STATUS_SKIPPED, outputs)
                else:
                    result = annotator.annotate(video, file_progress, collect)
                    outcome = FileOutcome(video, STATUS_DONE, outputs, result, warnings=file_warnings)
            except KeyboardInterrupt:
                outcomes.append(FileOutcome(video, STATUS_INTERRUPTED, outputs, error="interrupted",
                                            warnings=file_warnings))
                outcomes.extend(FileOutcome(rest, STATUS_NOT_RUN, annotator.outputs_for(rest))
                                for rest in videos[number + 1:])
                raise BatchInterrupted(BatchResult(outcomes, interrupted=True)) from None
            except AVSegError as error:
                outcome = FileOutcome(video, STATUS_FAILED, outputs, error=error.message, warnings=file_warnings)
            except Exception as error:
                if raise_unexpected:
                    raise
                outcome = FileOutcome(
                    video, STATUS_FAILED, outputs, error=f"{video}: internal error: {type(error).__name__}: {error}",
                    warnings=file_warnings,
                )
            outcomes.append(outcome)
            if on_outcome is not None:
                on_outcome(outcome)
            overall.advance(1)
    finally:
        overall.finish()
    return BatchResult(outcomes)


def iter_failures(result: BatchResult) -> Iterator[str]:
    """One line per failed input, each naming the file and the reason."""
    for outcome in result.outcomes:
        if outcome.status == STATUS_FAILED:
            message = outcome.error or "failed"
            yield message if str(outcome.input) in message else f"{outcome.input}: {message}"
