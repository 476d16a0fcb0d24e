"""`avseg eval`: AVSBench-OV scores (mIoU, base / novel / harmonic mIoU, F-score) of saved predictions."""

from __future__ import annotations

import contextlib
import math
import shlex
import sys
from enum import Enum
from pathlib import Path
from typing import Iterator, Optional

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
    runs_on_cpu,
)
from avseg_cli.zeroshot_options import (
    AUDIO_THRESHOLD_OPTION,
    BOX_THRESHOLD_OPTION,
    CLAP_WEIGHTS_OPTION,
    DETECTOR_OPTION,
    DETECTOR_SIZE_OPTION,
    DETECTOR_WEIGHTS_OPTION,
    INSTANCE_POLICY_OPTION,
    NO_RESCORE_OPTION,
    SAM_WEIGHTS_OPTION,
    Detector,
    InstancePolicy,
    Method,
    ZeroShotChoices,
    zeroshot_eval_cpu_hint,
)
from avseg_cli.values import FRACTION_METAVAR, check_paths_exist, fraction


DEFAULT_SOUND_THRESHOLD = 0.5
"""`--sound-threshold` when not given (it applies to `--class-agnostic` only)."""


class EvalSplit(str, Enum):
    val = "val"
    test = "test"


def evaluate(
    predictions: Optional[Path] = typer.Option(
        None,
        "--predictions",
        metavar="PRED_DIR",
        help="Folder of predicted label maps, PRED_DIR/<uid>/<k>.png (index PNGs or AVSBench colour PNGs, "
        "any size), one per labelled frame of every video in the split.",
    ),
    data: Path = typer.Option(
        ..., "--data", metavar="DATA_DIR", help="Prepared data folder written by `avseg prepare`."
    ),
    split: EvalSplit = typer.Option(EvalSplit.test, "--split", help="Which split to score."),
    json_path: Optional[Path] = typer.Option(
        None, "--json", metavar="RESULT.json", help="Also write all numbers (and per-class IoU) to this JSON file."
    ),
    checkpoint: Optional[Path] = typer.Option(
        None, "--checkpoint", help="Evaluate a model directly: an avseg checkpoint, a converted one, or the official "
        "model_ov_avss_{r50,swinb}.pth. Predicts every frame of the split (open vocabulary = the 70 AVSBench names), "
        "then scores the predictions like --predictions; ovavss-r50 / ovavss-swinb name the official files put in "
        "the avseg cache. Example: --checkpoint model_ov_avss_r50.pth"
    ),
    save_predictions: Optional[Path] = typer.Option(
        None, "--save-predictions", metavar="DIR", help="With --checkpoint or --method zeroshot: keep the predicted label maps in "
        "DIR/<uid>/<k>.png (a later run into the same DIR skips finished videos). Example: --save-predictions preds"
    ),
    class_agnostic: bool = typer.Option(
        False, "--class-agnostic", help="With --checkpoint: score sounding-object localization only (foreground "
        "mIoU and F-score of the union of masks the sound head calls sounding; no CLIP). Example: --class-agnostic"
    ),
    device: Optional[str] = typer.Option(
        None, "--device", help="With --checkpoint or --method zeroshot: auto (the default), cpu or cuda. "
        "Example: --device cpu"
    ),
    sound_threshold: Optional[float] = typer.Option(
        None, "--sound-threshold", parser=fraction, metavar=FRACTION_METAVAR,
        help=f"With --class-agnostic: a query is sounding when P(sounding) exceeds this (default "
        f"{DEFAULT_SOUND_THRESHOLD}). Example: --sound-threshold 0.5"
    ),
    vggish_weights: Optional[str] = typer.Option(
        None, "--vggish-weights", help="With --checkpoint: path of vggish-10086976.pth (default: inside the checkpoint, "
        "~/.cache/avseg, or the random VGGish a run was trained with), or 'random' (experiments only). "
        "Example: --vggish-weights vggish-10086976.pth"
    ),
    clip_weights: Optional[str] = typer.Option(
        None, "--clip-weights", help="With --checkpoint or --method zeroshot: CLIP weights file, or an open_clip folder (open_clip_config.json "
        "+ weights) naming its own architecture, or 'random' for experiments (default: inside the checkpoint, else "
        "open_clip 'openai'). "
        "Example: --clip-weights ViT-B-16.pt"
    ),
    amp: AmpMode = AMP_OPTION,
    sound_gate: Optional[float] = SOUND_GATE_OPTION,
    max_crops: Optional[int] = MAX_CROPS_OPTION,
    protocol: CropProtocol = PROTOCOL_OPTION,
    top_k: Optional[int] = TOP_K_OPTION,
    short_side: Optional[int] = SHORT_SIDE_OPTION,
    templates: Optional[str] = TEMPLATES_OPTION,
    score_threshold: Optional[float] = SCORE_THRESHOLD_OPTION,
    method: Method = typer.Option(
        Method.auto, "--method", help="ovavss (with --checkpoint) or zeroshot (the training-free method; no "
        "checkpoint). Example: --method zeroshot"
    ),
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
    """Score predicted label maps with the official AVSBench-OV protocol: GT and predictions compared at
    224x224; mIoU = IoU of all 71 ids (background included) from one dataset-level confusion matrix; base /
    novel = mean over the 40 base / 30 novel classes; harmonic = 2*base*novel/(base+novel). The F-score
    (AVSBench per-frame, beta^2 = 0.3) is secondary: OV-AVSS does not report it.

    Examples:

    avseg eval --predictions preds --data data --split test

    avseg eval --predictions preds --data data --split val --json val_result.json

    avseg eval --checkpoint model_ov_avss_r50.pth --data data --split test --json r50.json --save-predictions preds

    avseg eval --checkpoint runs/r50/last.pt --data data --split test --class-agnostic --json agnostic.json

    avseg eval --method zeroshot --data data --split test --json zeroshot.json --save-predictions zs_preds
    """
    if offline:  # also `avseg --offline ...`
        set_offline(True)
    from models.errors import UsageError
    from models.pipeline.methods import reject_other_method_options

    zeroshot = ZeroShotChoices(detector.value, instance_policy.value, audio_threshold, box_threshold, no_rescore,
                               clap_weights, detector_weights, sam_weights, detector_size)
    ovavss = OvavssChoices(amp.value, sound_gate, max_crops, protocol.value, top_k, short_side)
    naming = NamingChoices(templates, score_threshold)
    if sound_threshold is not None and not class_agnostic:
        raise UsageError("--sound-threshold applies to --class-agnostic evaluation only (it decides which queries are "
                         "sounding there; open-vocabulary scoring does not use it)")
    if method == Method.zeroshot:
        if checkpoint is not None or predictions is not None:
            raise UsageError("--method zeroshot evaluates the training-free method: drop --checkpoint / --predictions")
        reject_other_method_options("zeroshot", {
            "--class-agnostic": class_agnostic, "--vggish-weights": vggish_weights, **ovavss.explicit(),
        })
        config = naming.zeroshot_config(zeroshot.config(), clip_weights)
        check_paths_exist({"--clip-weights": clip_weights, **zeroshot.weight_paths()})
        from models.zeroshot.predictor import ZeroShotPredictor

        _evaluate_open_vocabulary(
            lambda: ZeroShotPredictor.from_pretrained(
                config, device or "auto", clap_weights=clap_weights, detector_weights=detector_weights,
                sam_weights=sam_weights, clip_weights=clip_weights,
            ),
            "zero-shot", data, split.value, json_path, save_predictions,
        )
        return
    if checkpoint is None and method != Method.ovavss:  # nothing chose OV-AVSS: name the method these belong to
        for name, value in zeroshot.explicit().items():
            if value not in (None, False):
                raise UsageError(f"{name} applies to the zero-shot method: add --method zeroshot to evaluate it"
                                 + (" (--predictions only scores saved PNGs)" if predictions is not None else ""))
    reject_other_method_options("ovavss", zeroshot.explicit())
    if method == Method.ovavss and checkpoint is None:
        raise UsageError("--method ovavss needs --checkpoint FILE")
    if checkpoint is not None:
        if predictions is not None:
            raise UsageError("give either --predictions or --checkpoint, not both")
        from models.weights import checkpoint_path

        checkpoint = checkpoint_path(checkpoint)  # ovavss-r50 / ovavss-swinb: the official file in the cache
        check_paths_exist({"--vggish-weights": vggish_weights})
        if not class_agnostic:
            check_paths_exist({"--clip-weights": clip_weights})  # class-agnostic: refused below as not applying
            naming.template_set()  # a wrong --templates is a usage error before anything loads
            _evaluate_checkpoint_open_vocabulary(
                checkpoint, data, split.value, json_path, save_predictions, device or "auto", vggish_weights,
                clip_weights, {**ovavss.predictor_kwargs(), **naming.predictor_kwargs()},
            )
            return
        for name, value in _open_vocabulary_options(save_predictions, clip_weights, ovavss, naming).items():
            if value is not None:
                raise UsageError(f"{name} applies to open-vocabulary evaluation, not to --class-agnostic")
        _evaluate_checkpoint_class_agnostic(
            checkpoint, data, split.value, json_path, device or "auto",
            DEFAULT_SOUND_THRESHOLD if sound_threshold is None else sound_threshold, vggish_weights,
        )
        return
    if class_agnostic:
        raise UsageError("--class-agnostic needs --checkpoint")
    for name, value in _open_vocabulary_options(save_predictions, clip_weights, ovavss, naming).items():
        if value is not None:
            both = "" if name in ovavss.explicit() else " or --method zeroshot"
            raise UsageError(f"{name} needs --checkpoint{both}")
    if predictions is None:
        raise UsageError("missing option --predictions PRED_DIR (the folder of <uid>/<k>.png label maps to score), "
                         "--checkpoint FILE (evaluate an OV-AVSS model) or --method zeroshot")
    for name, value in {"--device": device, "--vggish-weights": vggish_weights}.items():
        if value is not None:
            raise UsageError(f"{name} applies to a model that predicts (--checkpoint or --method zeroshot); "
                             f"--predictions only scores saved PNGs")
    _evaluate_predictions_folder(predictions, data, split.value, json_path)


def _evaluate_predictions_folder(predictions, data, split, json_path) -> None:
    """Score the label maps in `predictions`, print the tables and save RESULT.json."""
    from avseg_cli.console import out
    from avseg_cli.progress import stderr_progress
    from models.data.prepared import PreparedData
    from models.pipeline.evaluate_predictions import (
        check_json_destination,
        evaluate_predictions,
        write_result_json,
    )

    prepared = PreparedData.open(data)
    if json_path is not None:
        check_json_destination(json_path)
    with _interruptible(), stderr_progress(unit="videos", transient=True) as progress:
        result = evaluate_predictions(predictions, prepared, split, progress)
    _warn_unknown_gt_pixels(result.unknown_gt_pixels)
    if json_path is not None:
        write_result_json(json_path, result, predictions)
    _print_tables(out, result)
    if json_path is not None:
        out.print(f"results written to {json_path}")


@contextlib.contextmanager
def _interruptible(save_predictions: Optional[Path] = None, model_run: bool = False) -> Iterator[None]:
    """Ctrl-C (and SIGTERM, which `avseg` turns into KeyboardInterrupt) ends the run with one line and exit code
    130; with --save-predictions the line is the command that resumes it (the same one: saved videos are skipped)."""
    try:
        yield
    except KeyboardInterrupt:
        from rich.markup import escape

        from avseg_cli.console import report_interrupt

        if save_predictions is not None:
            command = escape(shlex.join(["avseg", *sys.argv[1:]]))
            if _holds_saved_videos(save_predictions):
                report_interrupt(f": resume with `{command}` (the videos already saved in "
                                 f"{escape(str(save_predictions))} are skipped)")
            else:
                report_interrupt(f": no video was saved yet; `{command}` starts the run again")
        elif model_run:
            report_interrupt(": nothing was kept (with --save-predictions DIR a later run resumes where an "
                             "interrupted one stopped)")
        else:
            report_interrupt()
        raise typer.Exit(130) from None


def _warn_unknown_gt_pixels(count: int) -> None:
    """One warning line when GT labels had colours outside AVSBench's palette (scored as background, as the
    official evaluation does). Counted on the 224x224 maps that are scored, so `prepare`'s count at the original
    size differs."""
    from avseg_cli.console import warn

    if count:
        warn(f"{count} GT pixels (at the 224x224 evaluation size) had non-palette colours and were scored as "
             "background")


def _holds_saved_videos(save_predictions: Path) -> bool:
    """True when the predictions folder holds a video's folder (finished or not: a resumed run re-predicts only
    the unfinished ones), False when nothing was saved in it yet or it cannot be read."""
    try:
        return any(entry.is_dir() and not entry.name.startswith(".") for entry in save_predictions.iterdir())
    except OSError:
        return False


def _open_vocabulary_options(save_predictions, clip_weights, ovavss: OvavssChoices,
                             naming: NamingChoices) -> dict[str, object]:
    """Options that only a predicting open-vocabulary run uses (name -> value, None where not given)."""
    return {"--save-predictions": save_predictions, "--clip-weights": clip_weights, **ovavss.explicit(),
            **naming.explicit()}


def _percent(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{100 * value:.2f}"


def _print_tables(console, result) -> None:
    from rich.table import Table

    from models.data.classes import BASE_IDS, CLASS_NAMES, NOVEL_IDS

    summary = Table(
        title=f"AVSBench-OV {result.split}: {result.num_videos} videos, {result.num_frames} frames",
        title_justify="left",
        caption="F-score: mean over 71 bins as in AVSBench's code; classes absent from the split count 0.",
        caption_justify="left",
    )
    summary.add_column("metric")
    summary.add_column("%", justify="right")
    summary.add_row("mIoU (71 ids, background included)", _percent(result.miou))
    summary.add_row(f"base mIoU ({len(BASE_IDS)} classes)", _percent(result.base_miou))
    summary.add_row(f"novel mIoU ({len(NOVEL_IDS)} classes)", _percent(result.novel_miou))
    summary.add_row("harmonic mIoU", _percent(result.harmonic_miou))
    summary.add_row("[dim]F-score (secondary: AVSBench per-frame, beta^2=0.3)[/]", _percent(result.fscore))
    console.print(summary)

    kind = {i: "base" for i in BASE_IDS} | {i: "novel" for i in NOVEL_IDS} | {0: "-"}
    rows = [(CLASS_NAMES[i], kind[i], v) for i, v in enumerate(result.per_class_iou) if not math.isnan(v)]
    rows.sort(key=lambda row: (-row[2], row[0]))
    per_class = Table(title="per-class IoU", title_justify="left")
    per_class.add_column("class")
    per_class.add_column("split")
    per_class.add_column("IoU %", justify="right")
    for name, split_name, value in rows:
        per_class.add_row(name, split_name, _percent(value))
    console.print(per_class)


def _evaluate_checkpoint_class_agnostic(checkpoint, data, split, json_path, device, sound_threshold,
                                        vggish_weights) -> None:
    from rich.table import Table

    from avseg_cli.console import out
    from avseg_cli.progress import stderr_progress
    from models.atomic import write_json
    from models.data.prepared import PreparedData
    from models.pipeline.evaluate_model import evaluate_class_agnostic
    from models.pipeline.evaluate_predictions import check_json_destination
    from models.pipeline.network import load_network
    from models.device import resolve_device

    prepared = PreparedData.open(data)
    if json_path is not None:
        check_json_destination(json_path)
    torch_device = resolve_device(device)
    with _interruptible(model_run=True):
        network = load_network(checkpoint, torch_device, vggish_weights)
        with stderr_progress(unit="videos", transient=True) as progress:
            result = evaluate_class_agnostic(network.model, prepared, split, sound_threshold=sound_threshold,
                                             short_side=network.model.config.test_short_side, progress=progress)
    if json_path is not None:
        row = result.to_json()
        row.update({"checkpoint": str(checkpoint), "iteration": network.iteration, "config": network.config_name})
        write_json(json_path, row)
    table = Table(title=f"class-agnostic {split}: {result.num_videos} videos, {result.num_frames} frames "
                        f"({network.config_name}, iteration {network.iteration})", title_justify="left")
    table.add_column("metric")
    table.add_column("%", justify="right")
    table.add_row("foreground mIoU (AVSBench S4/MS3 style)", _percent(result.fg_miou))
    table.add_row("F-score (beta^2 = 0.3)", _percent(result.fscore))
    out.print(table)
    if json_path is not None:
        out.print(f"results written to {json_path}")


def _evaluate_checkpoint_open_vocabulary(checkpoint, data, split, json_path, save_predictions, device,
                                         vggish_weights, clip_weights, options: dict) -> None:
    """`options`: `AVSegPredictor.from_checkpoint` keyword arguments (amp, crops, protocol, templates, ...)."""
    from models.predictor import AVSegPredictor

    def load():
        return AVSegPredictor.from_checkpoint(
            checkpoint, device=device, vggish_weights=vggish_weights, clip_weights=clip_weights, **options
        )

    _evaluate_open_vocabulary(load, f"checkpoint {checkpoint}", data, split, json_path, save_predictions)


def _evaluate_open_vocabulary(load_predictor, what, data, split, json_path, save_predictions) -> None:
    """Predict the split with the predictor `load_predictor()` returns, score it, print and save the tables."""
    from avseg_cli.console import out, warn
    from avseg_cli.progress import stderr_progress
    from models.atomic import write_json
    from models.data.prepared import PreparedData
    from models.pipeline.evaluate_ov import check_predictions_folder, evaluate_open_vocabulary
    from models.pipeline.evaluate_predictions import check_json_destination

    prepared = PreparedData.open(data)
    if json_path is not None:
        check_json_destination(json_path)
    if save_predictions is not None:
        check_predictions_folder(save_predictions)
    with contextlib.ExitStack() as held, _interruptible(save_predictions, model_run=True):
        if save_predictions is not None and Path(save_predictions).is_dir():
            from models.folder_lock import folder_lock

            # a folder another eval is filling is refused now, not after the model loaded (predict_split holds it
            # again, nested, and takes it itself for a folder it creates)
            held.enter_context(folder_lock(save_predictions, "eval --save-predictions"))
        predictor = load_predictor()
        described = predictor.describe()
        hint = cpu_speed_hint(described)
        if runs_on_cpu(described, "zeroshot"):
            hint = zeroshot_eval_cpu_hint(sum(record.num_frames for record in prepared.load_split(split)))
        if hint:
            warn(hint)
        with stderr_progress(unit="videos", transient=True) as progress:
            result = evaluate_open_vocabulary(predictor, prepared, split, save_predictions, progress)
    _warn_unknown_gt_pixels(result.scores.unknown_gt_pixels)
    if json_path is not None:
        write_json(json_path, result.to_json())
    described = result.predictor
    label = (f"{described.get('checkpoint_kind')} {described.get('config')} {what}" if described.get("method") != "zeroshot"
             else f"zero-shot ({described.get('detector')})")
    out.print(
        f"{label}: "
        f"{result.run.predicted} videos predicted, {result.run.skipped} already saved"
        + (f" ({result.run.videos_per_second:.2f} videos/s)" if result.run.predicted else ""),
        soft_wrap=True,
    )
    _print_tables(out, result.scores)
    if save_predictions is not None:
        out.print(f"predictions saved in {save_predictions}", soft_wrap=True)
    if json_path is not None:
        out.print(f"results written to {json_path}")
