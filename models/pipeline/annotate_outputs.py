"""Where `avseg annotate` writes, and with which options: `AnnotateOptions`, the three output names of a video
(`<stem>.avseg.mp4`, `<stem>.masks/`, `<stem>.json`), and the checks that no input is overwritten and that the
output folder is writable (`models.pipeline.output_folders`)."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Sequence

from models.errors import AVSegError, UsageError
from models.pipeline.frame_outputs import POOL_KINDS

VIDEO_SUFFIX = ".avseg.mp4"
MASKS_SUFFIX = ".masks"
JSON_SUFFIX = ".json"


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


def earlier_outputs_among(inputs: Sequence[Path], options: AnnotateOptions) -> dict[int, Path]:
    """Inputs that are outputs avseg writes for another input of the same run (`<stem>.avseg.mp4`,
    `<stem>.masks` and the PNGs in it, `<stem>.json`, in the run's output folder or beside that input): an
    earlier run's outputs picked up by a glob (`avseg annotate 'clips/*'` run twice, `'clips/**'`). Maps their
    index to that other input.

    Only inputs not named like an output (`.avseg.mp4`, `.masks`, `.json`) count as the other input, so an
    output is never attributed to another output of the same video."""
    every_output = replace(options, write_video=True, write_masks=True, write_json=True)
    beside = replace(every_output, out_dir=None)
    owners: dict[str, Path] = {}
    for video in inputs:
        if _named_like_an_output(video):
            continue
        for paths in (output_paths(video, every_output), output_paths(video, beside)):
            for path in paths.requested():
                owners.setdefault(_key(path), video)
    found = {}
    for index, video in enumerate(inputs):
        owner = owners.get(_key(video))
        if owner is None and video.parent.name.endswith(MASKS_SUFFIX):
            owner = owners.get(_key(video.parent))  # a mask PNG of an earlier run
        if owner is not None:
            found[index] = owner
    return found


def output_folder_among(inputs: Sequence[Path], options: AnnotateOptions) -> list[int]:
    """Indices of the inputs that are the run's output folder itself: `avseg annotate clips/* --out clips/annotated`
    run a second time, when the shell's glob picks up `clips/annotated`."""
    if options.out_dir is None:
        return []
    folder = Path(options.out_dir)
    return [index for index, video in enumerate(inputs) if _same_file(video, folder)]


def _key(path: Path) -> str:
    return os.path.normcase(os.path.abspath(path))


def _named_like_an_output(path: Path) -> bool:
    return path.name.endswith((VIDEO_SUFFIX, JSON_SUFFIX, MASKS_SUFFIX))


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
