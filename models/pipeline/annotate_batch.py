"""`avseg annotate` over many videos: one after the other, a failure recorded and the batch going on, Ctrl-C
leaving completed outputs in place, and a result per input (done / skipped / failed / interrupted / not run)
for the summary table, `--json-summary` and the exit code."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

from models.errors import AVSegError
from models.pipeline.annotate_outputs import (
    AnnotateOptions,
    OutputPaths,
    earlier_outputs_among,
    output_folder_among,
    output_paths,
)
from models.progress import NullProgress, Progress

if TYPE_CHECKING:  # pragma: no cover
    from models.pipeline.annotate import Annotator, VideoResult, WarningCallback


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
    """Inputs whose outputs would overwrite another input or the outputs of an earlier input (of the input whose
    existing outputs they are, when there are some: `a.mov` added beside `a.mp4` annotated before)."""
    conflicts: dict[int, str] = {}
    input_keys = {os.path.normcase(os.path.abspath(path)): path for path in inputs}
    claimed: dict[str, Path] = {}
    # an input whose outputs exist already (its JSON names it) keeps them; the others with its stem are refused
    order = sorted(range(len(inputs)), key=lambda number: not annotator.made_existing_outputs(inputs[number]))
    for number in order:
        video = inputs[number]
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


def _leave_out_outputs(videos: list[Path], options: AnnotateOptions, warn: WarningCallback | None) -> list[Path]:
    """`videos` without the earlier outputs a glob picked up (`earlier_outputs_among`; with more than one input,
    `output_source` for outputs of videos that are not among them) and without the run's output folder
    (`output_folder_among`), each left out with a warning. A lone input is annotated whatever it is."""
    from models.pipeline.annotate import output_source

    reasons = {index: f"it is an output avseg writes for {source}"
               for index, source in earlier_outputs_among(videos, options).items()}
    for index in output_folder_among(videos, options):
        reasons.setdefault(index, "it is the output folder of this run (--out)")
    for index, video in enumerate(videos if len(videos) > 1 else ()):  # named on its own, an output is an input
        if index not in reasons and (source := output_source(video)) is not None:
            reasons[index] = f"it is an output avseg wrote for {source}"
    for index, reason in sorted(reasons.items()):
        if warn is not None:
            warn(f"leaving out {videos[index]}: {reason}")
    return [video for index, video in enumerate(videos) if index not in reasons]


def failed_before_loading(inputs: Sequence[str | os.PathLike], options: AnnotateOptions) -> BatchResult | None:
    """The batch's result when no input can be annotated at all (each missing, a folder, empty, not a video, ...:
    `input_problem`), so a predictor need not be loaded to say so; None when at least one input may work."""
    from models.pipeline.annotate import input_problem

    outcomes = []
    for video in map(Path, inputs):
        problem = input_problem(video)
        if problem is None:
            return None
        outcomes.append(FileOutcome(video, STATUS_FAILED, output_paths(video, options), error=problem))
    return BatchResult(outcomes)


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
    videos = _leave_out_outputs([Path(path) for path in inputs], annotator.options, warn)
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
                skip = annotator.options.skip_existing and outputs.all_exist()
                if skip:
                    annotator.check_outputs_owner(video)  # another video's outputs are not this one's, done
                    again, message = annotator.check_existing_outputs(video)
                    skip = not again
                    if message is not None:
                        collect(f"{video}: {message}")
                if skip:
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
