"""`avseg annotate`: run a `VideoPredictor` over whole videos and write an overlay video, mask PNGs and JSON.

One video, start to end (every arrow streams; only one block of frames is in memory):

    probe -> decode_audio_16k -> FrameAudio (log-mel of the whole sound, once)
          -> iter_frames (the video's own rate) -> blocks of T seconds -> clips -> predictor.predict_clips
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

so every frame is analysed exactly once, in a clip whose frames are s analysed frames apart: one second,
like the model's training clips, when F is a whole number (about one second for 29.97; s / F seconds
otherwise, e.g. 1.2 s at F = 2.5 and 2 s at F = 0.5: `models.pipeline.clip_schedule`). The last block of a
video is usually partial: its clips are shorter (a video shorter than one second gives clips of one frame).
With `analysis_fps` F below the video's rate, analysed frame k is the source frame shown at k / F seconds
(source frame floor(k x fps / F), the rule of `models.io.video`), and its result is held, in the overlay
video, on every source frame until the next analysed frame; mask PNGs and JSON records are written for the
analysed frames only, named by their source frame index.

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
  area, COCO RLE segmentation); at the end, the frames written (`num_frames`, `num_analysed_frames`) and
  their length (`duration` = num_frames / fps). `video.duration` is what the file's header says of its video
  stream (null when it says nothing of it: a streamed Matroska file, or a file that only gives its whole
  length, which may be the longer audio's), so it can differ from the frames actually decoded.

Every output is written under a temporary name and renamed into place when complete (the JSON last);
on any failure or Ctrl-C the temporary files are removed and earlier outputs are left as they were.

Beside this module: `annotate_inputs` (vocabulary, input globs), `annotate_outputs` (options, output names,
output folder checks), `clip_schedule` (the clip scheme above) and `annotate_batch` (many videos, outcomes,
exit code).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import math
import os
import sys
import time
import warnings
from concurrent.futures import BrokenExecutor, Executor, Future
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import IO, Callable, Iterator, Sequence

import numpy as np

from models.atomic import atomic_dir, atomic_open, clear_interrupted_writes, json_dumps
from models.errors import AVSegError
from models.prediction import ClipInput, FramePrediction, VideoPredictor, predict_clips
from models.pipeline.annotate_inputs import check_vocabulary, has_glob
from models.pipeline.annotate_outputs import AnnotateOptions, OutputPaths, check_not_input, output_paths
from models.pipeline.background_writer import BackgroundFrameWriter
from models.pipeline.clip_schedule import analysed_source_index, block_clips, clip_stride
from models.pipeline.frame_outputs import FrameJob, FrameResult, finish_frame, render_pool
from models.pipeline.output_folders import ensure_output_dir
from models.progress import NullProgress, Progress

JSON_FORMAT = "avseg-annotate"
JSON_FORMAT_VERSION = 1

WarningCallback = Callable[[str], None]


class AnnotateWarning(UserWarning):
    """Issued by `Annotator.annotate` when no `warn` callback is given (e.g. a video without audio)."""


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


def check_glob_matched(video: Path) -> None:
    """A glob pattern left as it is by `expand_inputs` matched no file: one-line `AVSegError`."""
    if not os.path.lexists(video) and has_glob(str(video)):
        raise AVSegError(f"no file matches {video}")


def input_problem(video: str | os.PathLike) -> str | None:
    """Why `video` cannot be annotated at all, found without a predictor (no file matches a glob, missing, a
    folder, empty, not a video, no video stream, first frame undecodable: `probe`'s checks), or None."""
    from models.io.video import probe

    try:
        check_glob_matched(Path(video))
        probe(video)
    except AVSegError as error:
        return error.message
    return None


_SETTINGS_NOT_COMPARED = frozenset({"device", "templates_file"})
"""Predictor description keys that do not make outputs differ (where it ran; a template file's name, not content)."""

_FRAMES_KEY = ',\n  "frames": ['
"""Where `_FramesJson` ends the header and starts the frame records."""


def read_json_header(path: Path, limit: int = 1 << 20) -> dict | None:
    """The header of a `<stem>.json` (everything but the frame records and counts), read from the start of the
    file without loading the records; None when the file is unreadable or not an avseg annotate JSON."""
    try:
        with open(path, encoding="utf-8") as handle:
            head = handle.read(limit)
        end = head.find(_FRAMES_KEY)
        header = json.loads(head[:end] + "\n}") if end >= 0 else None
    except (OSError, ValueError):
        return None
    if not isinstance(header, dict) or header.get("format") != JSON_FORMAT:
        return None
    return header


def recorded_input(json_path: Path) -> str | None:
    """The input an existing avseg annotate JSON says it was made from ("input"), or None."""
    header = read_json_header(json_path) if json_path.is_file() else None
    recorded = header.get("input") if header is not None else None
    return recorded if isinstance(recorded, str) and recorded else None


def output_source(path: Path) -> str | None:
    """The video that `path` is an avseg annotate output of, as its `<stem>.json` records it ("input"): for an
    overlay `<stem>.avseg.mp4`, a mask PNG in `<stem>.masks/`, or the JSON itself; None for anything else (and for
    outputs of a run without JSON, which nothing vouches for)."""
    from models.pipeline.annotate_outputs import JSON_SUFFIX, MASKS_SUFFIX, VIDEO_SUFFIX

    name = path.name
    if name.endswith(VIDEO_SUFFIX) and len(name) > len(VIDEO_SUFFIX):
        json_path = path.with_name(name[: -len(VIDEO_SUFFIX)] + JSON_SUFFIX)
    elif name.endswith(JSON_SUFFIX):
        json_path = path
    elif path.parent.name.endswith(MASKS_SUFFIX) and len(path.parent.name) > len(MASKS_SUFFIX):
        json_path = path.parent.with_name(path.parent.name[: -len(MASKS_SUFFIX)] + JSON_SUFFIX)
    else:
        return None
    return recorded_input(json_path)


def _made_from(recorded: str, video: Path) -> bool:
    """Whether the input an annotate JSON records is `video`: the same file name, and, where the recorded path
    still names a file from here, that file (or a copy of it: the same size). `d1/clip.mp4` and `d2/clip.mp4`
    write the same outputs with --out; a recorded path that is not found (another working folder, a moved
    folder) leaves the name alone to decide."""
    if os.path.normcase(Path(recorded).name) != os.path.normcase(video.name):
        return False
    try:
        if os.path.isfile(recorded) and video.is_file():
            return os.path.samefile(recorded, video) or os.path.getsize(recorded) == video.stat().st_size
    except OSError:
        pass
    return True


def check_outputs_owner(video: Path, json_path: Path) -> None:
    """Refuse to replace (or skip as done) the outputs of another video with the same stem (`a.mp4` and `a.mov`
    both write `a.json`): the `<stem>.json` beside them names the file they were made from.

    Raises:
        AVSegError: one line naming both videos, when that JSON is an avseg annotate JSON of another file (another
            name, or the same name in another folder: `_made_from`). Outputs without a readable JSON, and those of
            a file with the same name whose recorded path is not found, are this video's.
    """
    recorded = recorded_input(json_path)
    if recorded is None or _made_from(recorded, video):
        return
    raise AVSegError(
        f"{video}: refusing to replace the outputs of {recorded} ({json_path} says they were made from it; the two "
        "files have the same name stem): annotate it into another --out folder, or remove those outputs first"
    )


class _FramesJson:
    """The `<stem>.json` file, written as it goes: header, one record per analysed frame, counts.

    The records arrive in frame order; the file is valid JSON (and renamed into place) only when the
    block exits without an error.
    """

    def __init__(self, path: Path, header: dict) -> None:
        self.path = path
        self.header = header
        self.counts: dict[str, float] = {}
        self._stack: contextlib.ExitStack | None = None
        self._handle: IO | None = None
        self._written = 0

    def __enter__(self) -> "_FramesJson":
        stack = contextlib.ExitStack()
        self._handle = stack.enter_context(atomic_open(self.path))
        self._stack = stack
        text = json_dumps(self.header, indent=2, default=str)
        self._handle.write(text[:-1].rstrip() + _FRAMES_KEY)
        return self

    def add(self, record: dict) -> None:
        separator = ",\n    " if self._written else "\n    "
        self._handle.write(separator + json_dumps(record, separators=(",", ":")))
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
        importlib.import_module("models.io.render")  # once, here: not first inside the render worker threads

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
        clips = [
            (positions, [self.analysed[p][0] for p in positions], [self.analysed[p][1] for p in positions])
            for positions in block_clips(len(self.analysed), self.clip_len, self.stride)
        ]  # (positions, source indices, times) of each clip
        inputs = (self._clip_input(sources, times) for _, sources, times in clips)  # built as the predictor asks
        results = predict_clips(self.annotator.predictor, inputs)
        for (positions, sources, times), predictions in zip(clips, results, strict=True):
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

    def _clip_input(self, sources: Sequence[int], times: Sequence[float]) -> ClipInput:
        """The clip of the buffered source frames `sources`, shown at `times`, with its audio."""
        return ClipInput(
            frames=np.stack([self.frames[s] for s in sources]),
            audio_examples=self.audio.examples(times),
            waveform_16k=self.audio.waveform_span(times),
            times=tuple(times),
        )

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

    def settings_difference(self, video: str | os.PathLike, header: dict) -> str | None:
        """What differs between this annotator's settings and those an annotate JSON `header` records for `video`:
        "another vocabulary", "another predictor or predictor options (top_k: 10 then, 3 now)" or "another
        analysis rate"; None when nothing does. The device the predictor ran on and the name of a prompt
        template file (its content counts) do not matter."""
        from models.io.video import output_rate, probe

        if header.get("vocabulary") != list(self.vocabulary):
            return "another vocabulary"
        describe = getattr(self.predictor, "describe", None)
        now = json.loads(json.dumps(describe() if callable(describe) else None, default=str))
        before = header.get("predictor")
        if isinstance(now, dict) and isinstance(before, dict):
            from models.pipeline.settings import leaf_differences

            keys = [key for key in dict.fromkeys([*before, *now]) if key not in _SETTINGS_NOT_COMPARED]
            leaves = [leaf for key in keys for leaf in leaf_differences(before.get(key), now.get(key), key)]
            if leaves:
                name, then, current = leaves[0]
                return f"another predictor or predictor options ({name}: {then!r} then, {current!r} now)"
        elif now != before:
            return "another predictor"
        try:
            rate = float(output_rate(probe(Path(video)), self.options.analysis_fps))
        except AVSegError:
            return None
        recorded = header.get("analysis", {}).get("analysis_fps") if isinstance(header.get("analysis"), dict) else None
        if not isinstance(recorded, (int, float)) or not math.isclose(rate, float(recorded), rel_tol=1e-9):
            return "another analysis rate"
        return None

    def check_outputs_owner(self, video: str | os.PathLike) -> None:
        """`check_outputs_owner` for the outputs `annotate(video)` would write (their JSON read also with
        `write_json=False`)."""
        check_outputs_owner(Path(video), self._json_beside(video))

    def made_existing_outputs(self, video: str | os.PathLike) -> bool:
        """The JSON among the outputs `annotate(video)` would write exists and says it was made from `video`."""
        recorded = recorded_input(self._json_beside(video))
        return recorded is not None and _made_from(recorded, Path(video))

    def _output_names(self, video: str | os.PathLike) -> set[str]:
        """The names of every output `annotate(video)` may write, requested or not."""
        every_output = replace(self.options, write_video=True, write_masks=True, write_json=True)
        return {path.name for path in output_paths(video, every_output).requested()}

    def _json_beside(self, video: str | os.PathLike) -> Path:
        return output_paths(video, replace(self.options, write_json=True)).json

    def _remove_stale_json(self, video: Path, note: Callable[[str], None]) -> None:
        """After a run that wrote no JSON: an earlier run's `<stem>.json` beside the new outputs, made with other
        settings, no longer describes them (its class numbers would name the new masks wrongly), so it is removed.
        A JSON made with the same settings, or a file that is not an avseg JSON, is left alone."""
        path = output_paths(video, replace(self.options, write_json=True)).json
        header = read_json_header(path) if path.is_file() else None
        if header is None:
            return
        difference = self.settings_difference(video, header)
        if difference is None:
            return
        try:
            path.unlink()
        except OSError as error:
            note(f"{video}: could not remove {path}, which an earlier run made with {difference} and which no longer "
                 f"describes the new outputs: {error.strerror or error}")
            return
        note(f"{video}: removed {path.name}: an earlier run made it with {difference}, so it no longer describes the "
             "new outputs")

    def check_existing_outputs(self, video: str | os.PathLike) -> tuple[bool, str | None]:
        """For `--skip-existing`, once all requested outputs of `video` exist: (annotate it again?, why / a warning).

        Its `<stem>.json` (read also when this run does not write JSON) tells which settings made the outputs:
        other settings, or a requested JSON that cannot be read, mean annotating again; without a readable JSON
        the outputs are trusted, with a warning that the settings could not be checked.
        """
        path = output_paths(video, replace(self.options, write_json=True)).json
        header = read_json_header(path) if path.is_file() else None
        if header is None:
            if self.options.write_json:
                return True, f"annotating it again: its {path.name} cannot be read (damaged, or not avseg's)"
            return False, (f"skipped without checking which settings made its outputs: there is no readable "
                           f"{path.name} beside them")
        difference = self.settings_difference(video, header)
        if difference is not None:
            return True, f"annotating it again: its outputs were made with {difference}"
        recorded = header.get("outputs") if isinstance(header.get("outputs"), dict) else {}
        for kind, wanted in (("masks", self.options.write_masks), ("video", self.options.write_video)):
            if wanted and not recorded.get(kind):
                return True, (f"annotating it again: the run that wrote its {path.name} made no {kind}, so the "
                              f"{kind} beside it may come from other settings")
        return False, None

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
                damaged or truncated, outputs not writable (disk full included), an output that would
                replace the input, or outputs of another video with the same stem (`check_outputs_owner`).
                Nothing is left behind: all outputs are written atomically.
        """
        from models.io.video import output_rate, probe

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
        check_glob_matched(video)
        outputs = self.outputs_for(video)
        check_not_input(video, outputs)
        self.check_outputs_owner(video)
        info = probe(video)
        analysis_rate = output_rate(info, self.options.analysis_fps)
        folder = outputs.requested()[0].parent
        ensure_output_dir(folder)
        with self._outputs_held(video, note) as held:
            return self._annotate_held(video, info, analysis_rate, outputs, progress, note, messages, started, held)

    @contextlib.contextmanager
    def _outputs_held(self, video: Path, note: Callable[[str], None]) -> Iterator[bool]:
        """Hold `video`'s outputs in their folder against another avseg process for the block (`output_lock`;
        yields whether they are held), once who made the existing ones is checked again (another process may have
        written them since `annotate` first checked) and, where they are held, what an interrupted run of them
        left is tidied away (`clear_interrupted_writes`: a killed run's partial overlay, masks and JSON; a masks
        folder moved aside is put back), with a note naming it."""
        from models.folder_lock import output_lock

        json_path = self._json_beside(video)
        with contextlib.ExitStack() as stack:
            try:
                held = stack.enter_context(output_lock(json_path, "annotate",
                                                       f"outputs named {json_path.with_suffix('')}.*"))
            except AVSegError as error:
                raise AVSegError(f"{video}: {error.message}") from None
            self.check_outputs_owner(video)
            if held:
                tidied = clear_interrupted_writes(json_path.parent, self._output_names(video))
                removed = [path.name for path, action in tidied if action == "removed"]
                put_back = [path.name for path, action in tidied if action == "put back"]
                if removed:
                    note(f"{video}: removed what an interrupted run left: {', '.join(removed)}")
                if put_back:
                    note(f"{video}: put back the outputs an interrupted run had moved aside: {', '.join(put_back)}")
            yield held

    def _annotate_held(self, video: Path, info, analysis_rate: Fraction, outputs: OutputPaths, progress: Progress,
                       note: Callable[[str], None], messages: list[str], started: float, held: bool) -> VideoResult:
        """The rest of `annotate`, once the outputs are held (`_outputs_held`; `held`: whether they could be):
        `messages` collects what `note` was given, `started` is when `annotate` was called (`perf_counter`)."""
        from models.io.audio import decode_audio_16k
        from models.io.mux import VideoWriter, audio_plan
        from models.io.video import iter_frames
        from models.pipeline.frame_audio import FrameAudio

        folder = outputs.requested()[0].parent
        if info.has_audio:
            waveform = decode_audio_16k(video, info.audio_channels)
            audio = FrameAudio(waveform) if waveform is not None else FrameAudio.silent()
        else:
            audio = FrameAudio.silent()
        if audio.is_silent_track:
            note(f"{video}: no audio track; annotated as silent (no sounding objects is a valid answer)")
        if info.variable_frame_rate:
            note(f"{video}: variable frame rate (nominal {float(info.nominal_fps):.4g} fps, {float(info.fps):.4g} on "
                 f"average): resampled to a constant {float(info.fps):.4g} fps, so the output frames and their "
                 "numbers in the masks and JSON follow that rate, not the file's own frames")

        if info.audio_streams > 1:
            note(f"{video}: {info.audio_streams} audio tracks; only the first is analysed"
                 + (" and kept in the overlay video" if outputs.video is not None else ""))
        if self.options.analysis_fps is not None and analysis_rate == info.fps and self.options.analysis_fps > info.fps:
            note(f"{video}: --analysis-fps {self.options.analysis_fps:g} is above the video's "
                 f"{float(info.fps):.4g} fps; every frame is analysed")
        overlay_audio = audio_plan(info.audio_codec, video) if outputs.video is not None else None
        header = self._json_header(video, info, analysis_rate, audio, outputs, overlay_audio)
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
                                    crf=self.options.crf, preset=self.options.preset,
                                    sample_aspect_ratio=info.sample_aspect_ratio, audio=overlay_audio)
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
                    frames_json.counts = {"num_frames": runner.num_frames, "num_analysed_frames": runner.num_analysed,
                                          "duration": round(float(runner.num_frames / info.fps), 6)}
        except BaseException as error:
            if held:  # what an output's own cleanup left (a second Ctrl-C can cut it short) goes too
                with contextlib.suppress(OSError):
                    clear_interrupted_writes(folder, self._output_names(video))
            if isinstance(error, OSError):
                raise AVSegError(f"{video}: cannot write the outputs in {folder}: {error.strerror or error}") from error
            raise
        if outputs.json is None:
            self._remove_stale_json(video, note)
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

    def _json_header(self, video: Path, info, analysis_rate: Fraction, audio, outputs: OutputPaths,
                     overlay_audio) -> dict:
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
                "variable_frame_rate": info.variable_frame_rate,
                "duration": info.duration if info.duration_from_stream else None,  # the frames: "duration" at the end
                "rotation": info.rotation,
                "sample_aspect_ratio": None if info.sample_aspect_ratio is None else (
                    f"{info.sample_aspect_ratio.numerator}/{info.sample_aspect_ratio.denominator}"),
                "has_audio": info.has_audio,
                "audio_streams": info.audio_streams,
                "audio_codec": info.audio_codec,
                "audio_sample_rate": info.audio_sample_rate,
                "audio_channels": info.audio_channels,
            },
            "vocabulary": list(self.vocabulary),
            "class_ids": "class_id and mask PNG value i = vocabulary[i - 1]; 0 = background",
            "bbox_format": "[x, y, width, height] in pixels, x and y of the top-left corner (COCO)",
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
                "video_audio": None if overlay_audio is None else overlay_audio.note,
            },
        }
