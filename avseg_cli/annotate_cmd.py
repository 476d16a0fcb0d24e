"""`avseg annotate`: segment and name the sounding objects of videos; overlay video, mask PNGs and JSON."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from avseg_cli.naming_options import SCORE_THRESHOLD_OPTION, TEMPLATES_OPTION, NamingChoices
from avseg_cli.offline import OFFLINE_OPTION, set_offline
from avseg_cli.ovavss_options import (
    AMP_OPTION,
    MAX_CROPS_OPTION,
    PROTOCOL_OPTION,
    SHORT_SIDE_OPTION,
    SOUND_GATE_OPTION,
    TOP_K_OPTION,
    AmpMode,
    CropProtocol,
    OvavssChoices,
    cpu_speed_hint,
)
from avseg_cli.zeroshot_options import (
    AUDIO_THRESHOLD_OPTION,
    BOX_THRESHOLD_OPTION,
    CLAP_WEIGHTS_OPTION,
    DETECTOR_OPTION,
    DETECTOR_SIZE_OPTION,
    DETECTOR_WEIGHTS_OPTION,
    INSTANCE_POLICY_OPTION,
    METHOD_OPTION,
    NO_RESCORE_OPTION,
    SAM_WEIGHTS_OPTION,
    Detector,
    InstancePolicy,
    Method,
    ZeroShotChoices,
    load_zeroshot_predictor,
    zeroshot_cpu_hint,
)
from avseg_cli.values import check_paths_exist


class RenderWorkers(str, Enum):
    threads = "threads"
    processes = "processes"


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


def load_predictor(
    checkpoint: Path, device: str, vggish_weights: Optional[str], clip_weights: Optional[str], **options: object
):
    """The OV-AVSS predictor of `checkpoint` (`models.predictor.AVSegPredictor`), imported lazily; `options` are
    `from_checkpoint` keyword arguments (`OvavssChoices.predictor_kwargs`, `NamingChoices.predictor_kwargs`)."""
    from models.predictor import AVSegPredictor

    return AVSegPredictor.from_checkpoint(
        checkpoint, device=device, vggish_weights=vggish_weights, clip_weights=clip_weights, **options
    )


def annotate(
    videos: list[str] = typer.Argument(
        ..., metavar="VIDEO", help="Video files or globs (expanded here too). Example: clips/*.mp4",
        show_default=False,
    ),
    classes: Optional[str] = typer.Option(
        None, "--classes", help="Comma-separated class names (may contain spaces). Example: --classes pipa,violin"
    ),
    classes_file: Optional[Path] = typer.Option(
        None, "--classes-file", help="File with one class name per line (blank lines and # comments ignored); "
        "added after --classes. Example: --classes-file instruments.txt"
    ),
    checkpoint: Optional[Path] = typer.Option(
        None, "--checkpoint", help="OV-AVSS checkpoint: ours (`avseg train`) or an official one (selects "
        "--method ovavss); ovavss-r50 / ovavss-swinb name the official files put in the avseg cache. "
        "Example: --checkpoint runs/r50/last.pt"
    ),
    method: Method = METHOD_OPTION,
    out: Optional[Path] = typer.Option(
        None, "--out", help="Output folder (default: next to each video). Example: --out annotated"
    ),
    analysis_fps: Optional[float] = typer.Option(
        None, "--analysis-fps", help="Analyse only F frames per second (default: every frame); each result is "
        "held until the next in the overlay video; mask PNGs and JSON records are written for the analysed frames. "
        "Example: --analysis-fps 5"
    ),
    no_video: bool = typer.Option(False, "--no-video", help="Do not write <stem>.avseg.mp4."),
    no_masks: bool = typer.Option(False, "--no-masks", help="Do not write <stem>.masks/<frame>.png."),
    no_json: bool = typer.Option(False, "--no-json", help="Do not write <stem>.json."),
    skip_existing: bool = typer.Option(
        False, "--skip-existing", help="Skip videos whose requested outputs all exist already, unless their "
        "<stem>.json says another vocabulary, predictor or analysis rate made them (those are annotated again)."
    ),
    json_summary: Optional[Path] = typer.Option(
        None, "--json-summary", help="Also write the status of every video to this JSON file (for scripts). "
        "Example: --json-summary summary.json"
    ),
    device: Device = typer.Option(Device.auto, "--device", help="Where the model runs. Example: --device cpu"),
    render_workers: RenderWorkers = typer.Option(
        RenderWorkers.threads, "--render-workers", help="Draw the overlays and write the masks in threads, or in "
        "worker processes (these do not compete with the predictor for Python's GIL; for fast GPU predictors). "
        "Example: --render-workers processes"
    ),
    vggish_weights: Optional[str] = typer.Option(
        None, "--vggish-weights", help="VGGish weights file (vggish-10086976.pth) for the predictor, or 'random' "
        "(experiments only: seeded random weights, as a run trained with --vggish-weights random)."
    ),
    clip_weights: Optional[str] = typer.Option(
        None, "--clip-weights", help="CLIP weights file (or open_clip folder) for naming the masks (both methods), "
        "or 'random' (experiments only: names are then meaningless)."
    ),
    amp: AmpMode = AMP_OPTION,
    sound_gate: Optional[float] = SOUND_GATE_OPTION,
    max_crops: Optional[int] = MAX_CROPS_OPTION,
    protocol: CropProtocol = PROTOCOL_OPTION,
    top_k: Optional[int] = TOP_K_OPTION,
    short_side: Optional[int] = SHORT_SIDE_OPTION,
    templates: Optional[str] = TEMPLATES_OPTION,
    score_threshold: Optional[float] = SCORE_THRESHOLD_OPTION,
    detector: Detector = DETECTOR_OPTION,
    detector_size: Optional[int] = DETECTOR_SIZE_OPTION,
    instance_policy: InstancePolicy = INSTANCE_POLICY_OPTION,
    audio_threshold: Optional[float] = AUDIO_THRESHOLD_OPTION,
    box_threshold: Optional[float] = BOX_THRESHOLD_OPTION,
    no_rescore: bool = NO_RESCORE_OPTION,
    clap_weights: Optional[str] = CLAP_WEIGHTS_OPTION,
    detector_weights: Optional[str] = DETECTOR_WEIGHTS_OPTION,
    sam_weights: Optional[str] = SAM_WEIGHTS_OPTION,
    offline: bool = OFFLINE_OPTION,
) -> None:
    """Find the objects that make the sound in videos, segment them in every frame and name them from
    your class names. Writes, next to each video (or into --out): VIDEO.avseg.mp4 (masks, labels and
    scores drawn over the video, original audio kept), VIDEO.masks/NNNNNN.png (one index PNG per analysed frame,
    value = class number in --classes, 0 = background, AVSBench colours) and VIDEO.json (per analysed frame: label,
    score, sound score, box and COCO RLE mask of every object).

    Frames are analysed in clips of 5 frames one second apart (with --analysis-fps F: round(F) analysed frames
    apart), so every frame is analysed once with the one-second context the model was trained with; each frame
    hears the 0.96 s of sound from its own time.

    Two methods: OV-AVSS with a trained --checkpoint, or, without one, the training-free zero-shot method
    (CLAP decides which names are sounding in each frame's second of audio, Grounding DINO finds them,
    SAM segments them, CLIP names the masks; the models are downloaded once, ~2.3 GB, into the Hugging Face
    cache; `avseg weights list` shows them).

    Exit code: 0 all videos done (or skipped), 1 some failed, 2 usage error, 130 interrupted.

    Examples:

    avseg annotate concert.mp4 --classes pipa,violin

    avseg annotate concert.mp4 --classes pipa,violin --checkpoint ovavss_r50.pth

    avseg annotate "clips/*.mp4" --classes-file classes.txt --checkpoint last.pt --out annotated --skip-existing

    avseg annotate long.mkv --classes "acoustic guitar,man" --checkpoint last.pt --analysis-fps 5 --no-masks

    avseg annotate concert.mp4 --classes pipa,violin --checkpoint last.pt --device cpu --max-crops 3
    """
    if offline:  # also `avseg --offline ...`
        set_offline(True)
    from avseg_cli.console import report_interrupt

    try:
        _annotate(
            videos, classes, classes_file, checkpoint, out, analysis_fps, no_video, no_masks, no_json,
            skip_existing, json_summary, device.value, vggish_weights, clip_weights, method.value,
            OvavssChoices(amp.value, sound_gate, max_crops, protocol.value, top_k, short_side),
            NamingChoices(templates, score_threshold), render_workers.value,
            ZeroShotChoices(detector.value, instance_policy.value, audio_threshold, box_threshold, no_rescore,
                             clap_weights, detector_weights, sam_weights, detector_size),
        )
    except KeyboardInterrupt:
        report_interrupt()
        raise typer.Exit(130) from None


def _annotate(
    videos, classes, classes_file, checkpoint, out, analysis_fps, no_video, no_masks, no_json,
    skip_existing, json_summary, device, vggish_weights, clip_weights, method, ovavss, naming, render_workers,
    zeroshot,
) -> None:
    from models.errors import UsageError
    from models.pipeline.annotate_inputs import expand_inputs, parse_vocabulary
    from models.pipeline.annotate_outputs import AnnotateOptions
    from models.pipeline.output_folders import ensure_output_dir, remove_empty_folders

    vocabulary = parse_vocabulary(classes, classes_file)
    options = AnnotateOptions(
        out_dir=out,
        analysis_fps=analysis_fps,
        write_video=not no_video,
        write_masks=not no_masks,
        write_json=not no_json,
        skip_existing=skip_existing,
        render_workers=render_workers,
    )
    from models.pipeline.methods import choose_method, reject_other_method_options

    method = choose_method(method, checkpoint)
    if method == "ovavss":
        reject_other_method_options(method, zeroshot.explicit())
        from models.weights import checkpoint_path

        checkpoint = checkpoint_path(checkpoint)
        if not checkpoint.exists():
            raise UsageError(f"checkpoint not found: {checkpoint}")
        if checkpoint.is_dir():
            raise UsageError(f"expected a checkpoint file, found a folder: {checkpoint}")
        naming.template_set()  # a wrong --templates is a usage error before anything loads
        zeroshot_config = None
    else:
        reject_other_method_options(method, {"--vggish-weights": vggish_weights, **ovavss.explicit()})
        zeroshot_config = naming.zeroshot_config(zeroshot.config(), clip_weights)
    check_paths_exist({"--vggish-weights": vggish_weights, "--clip-weights": clip_weights,
                       **zeroshot.weight_paths()})
    inputs = expand_inputs(videos)
    created: list[Path] = []
    if json_summary is not None:
        if json_summary.is_dir():
            raise UsageError(f"--json-summary must be a file, found a folder: {json_summary}")
        if any(_same_path(json_summary, path) for path in inputs):
            raise UsageError(f"--json-summary {json_summary} would overwrite an input video")
        created += ensure_output_dir(json_summary.parent if str(json_summary.parent) else Path("."),
                                     "the --json-summary folder")
    if out is not None:
        created += ensure_output_dir(out)
    try:
        _run_batch(inputs, method, checkpoint, device, vggish_weights, clip_weights, ovavss, naming, zeroshot,
                   zeroshot_config, vocabulary, options, analysis_fps, json_summary)
    finally:
        remove_empty_folders(created)  # the folders this run made and left empty (all failed, interrupted)


def _run_batch(inputs, method, checkpoint, device, vggish_weights, clip_weights, ovavss, naming, zeroshot,
               zeroshot_config, vocabulary, options, analysis_fps, json_summary) -> None:
    from avseg_cli.console import DEBUG, err, warn
    from models.pipeline.annotate import Annotator
    from models.pipeline.annotate_batch import BatchInterrupted, annotate_batch, failed_before_loading

    nothing_readable = failed_before_loading(inputs, options)
    if nothing_readable is not None:  # no model to load for that (the zero-shot models take a while)
        _report(nothing_readable, json_summary, interrupted=False)
        return
    if method == "ovavss":
        with err.status(f"loading the model from {checkpoint} ..."):
            predictor = load_predictor(checkpoint, device, vggish_weights, clip_weights, **ovavss.predictor_kwargs(),
                                       **naming.predictor_kwargs())
        hint = cpu_speed_hint(predictor.describe())
        if hint:
            warn(hint)
    else:
        # no spinner here: first use downloads the models with their own progress bars
        predictor = load_zeroshot_predictor(zeroshot_config, device, zeroshot.clap_weights,
                                            zeroshot.detector_weights, zeroshot.sam_weights, clip_weights)
        hint = zeroshot_cpu_hint(predictor.describe(), analysis_fps)
        if hint:
            warn(hint)
    annotator = Annotator(predictor, vocabulary, options)

    interrupted = False
    with _BatchBars(show_overall=len(inputs) > 1) as bars:
        try:
            result = annotate_batch(
                annotator,
                inputs,
                file_progress=bars.file,
                overall_progress=bars.overall,
                warn=warn,
                raise_unexpected=DEBUG["enabled"],
            )
        except BatchInterrupted as stop:
            result = stop.result
            interrupted = True
    _report(result, json_summary, interrupted)


def _report(result, json_summary, interrupted: bool) -> None:
    """The summary table, one line per failure, the --json-summary file and the exit code of a batch."""
    from rich.markup import escape

    from avseg_cli.console import err, out as stdout, report_interrupt
    from models.errors import AVSegError
    from models.pipeline.annotate_batch import iter_failures

    _print_summary(stdout, result)
    for line in iter_failures(result):
        err.print(f"[bold red]error:[/] {escape(_printable(line))}", soft_wrap=True)
    if json_summary is not None:
        from models.atomic import write_json

        try:
            write_json(json_summary, result.as_dict())
        except AVSegError as error:
            err.print(f"[bold red]error:[/] {escape(error.message)}", soft_wrap=True)
            raise typer.Exit(130 if interrupted else 1) from None
    if interrupted:
        report_interrupt(": the video being annotated was left without outputs")
        raise typer.Exit(130)
    if result.exit_code:
        raise typer.Exit(result.exit_code)


def _printable(text: str) -> str:
    """`text` with the bytes of a file name that is not UTF-8 (lone surrogates in Python: "caf\\udce9.mp4") shown as
    "caf\\xe9.mp4": a terminal whose stdout is strict UTF-8 cannot print them, and the summary table failed there
    with "internal error: UnicodeEncodeError" after every video was done."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate that does not stand for a byte
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _same_path(a: Path, b: Path) -> bool:
    import os

    return os.path.normcase(os.path.abspath(a)) == os.path.normcase(os.path.abspath(b))


def _print_summary(console, result) -> None:
    from rich.markup import escape
    from rich.table import Table

    from models.pipeline.annotate_batch import STATUS_DONE, STATUS_FAILED, STATUS_SKIPPED

    counts = ", ".join(
        f"{result.count(status)} {status}" for status in (STATUS_DONE, STATUS_SKIPPED, STATUS_FAILED)
        if result.count(status) or status == STATUS_DONE
    )
    table = Table(title=f"avseg annotate: {len(result.outcomes)} video(s): {counts}", title_justify="left")
    table.add_column("video", overflow="fold")  # paths fold rather than being cut with "…"
    table.add_column("status")
    table.add_column("frames", justify="right")
    table.add_column("seconds", justify="right")
    table.add_column("frames/s", justify="right")
    table.add_column("outputs / reason", overflow="fold")
    styles = {"done": "green", "skipped": "cyan", "failed": "red", "interrupted": "red", "not run": "dim"}
    for outcome in result.outcomes:
        run = outcome.result
        frames = seconds = rate = ""
        if run is not None:
            frames = str(run.num_frames)
            seconds = f"{run.seconds:.1f}"
            rate = f"{run.num_frames / run.seconds:.1f}" if run.seconds > 0 else ""
        if outcome.status in ("done", "skipped") and outcome.outputs is not None:
            detail = ", ".join(path.name for path in outcome.outputs.requested())
            folder = outcome.outputs.requested()[0].parent if outcome.outputs.requested() else None
            if folder is not None:
                detail = f"{folder}/: {detail}"
        else:
            detail = outcome.error or ""
        style = styles.get(outcome.status, "")
        table.add_row(
            escape(_printable(str(outcome.input))), f"[{style}]{outcome.status}[/]", frames, seconds, rate,
            escape(_printable(detail)),
        )
    console.print(table)


class _BatchBars:
    """Two rich bars on stderr sharing one live display: the current video (frames) and all videos; where
    stderr is not a terminal, `LineProgress` lines instead (per video, and for all videos when there are several)."""

    def __init__(self, show_overall: bool) -> None:
        from avseg_cli.console import err

        self.bar = None
        if not err.is_terminal:
            from avseg_cli.progress import LineProgress
            from models.progress import NullProgress

            self.file = LineProgress("frames")
            self.overall = LineProgress("videos") if show_overall else NullProgress()
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.bar = Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[unit]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[rate]}"),
            console=err,
        )
        self.overall = _BarTask(self.bar, "videos", visible=show_overall, show_rate=False)
        self.file = _BarTask(self.bar, "frames")

    def __enter__(self) -> "_BatchBars":
        if self.bar is not None:
            self.bar.start()
        return self

    def __exit__(self, *exc_info) -> None:
        if self.bar is not None:
            self.bar.stop()


class _BarTask:
    """One row of a rich Progress as a `models.progress.Progress`: each `start` resets the row."""

    def __init__(self, bar, unit: str, visible: bool = True, show_rate: bool = True) -> None:
        self.bar = bar
        self.unit = unit
        self.show_rate = show_rate
        self.visible = visible
        self.task = None

    def start(self, description: str, total: int | None = None, completed: int = 0) -> None:
        from rich.markup import escape

        if self.task is None:
            self.task = self.bar.add_task(
                escape(description), total=total, completed=completed, unit=self.unit, rate="", visible=self.visible
            )
        else:
            # reset() replaces the task's fields: give all of them again
            self.bar.reset(self.task, total=total, completed=completed, description=escape(description),
                           unit=self.unit, rate="")

    def advance(self, steps: int = 1, **status: object) -> None:
        if self.task is None:
            return
        self.bar.advance(self.task, steps)
        speed = self.bar.tasks[self.task].speed if self.show_rate else None
        self.bar.update(self.task, rate=f"{speed:.1f} {self.unit}/s" if speed else "")

    def finish(self) -> None:
        if self.task is not None:
            task = self.bar.tasks[self.task]
            if task.total is None or task.completed > task.total:
                self.bar.update(self.task, total=task.completed)
