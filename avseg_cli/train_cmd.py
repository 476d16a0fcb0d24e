"""`avseg train`: thin wrapper around `models.pipeline.train.train`."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from avseg_cli.console import out, report_interrupt, warn
from avseg_cli.offline import OFFLINE_OPTION, set_offline
from avseg_cli.ovavss_options import AmpMode

if TYPE_CHECKING:
    from models.pipeline.train import TrainOptions


def train(
    data: Path = typer.Option(..., "--data", help="Prepared data folder (from `avseg prepare`). Example: --data data"),
    config: str = typer.Option(None, "--config", help="Model configuration: r50 (the default), swinb or tiny; with --resume, the run's own. Example: --config tiny"),
    out_dir: Path = typer.Option(..., "--out", help="Run folder for checkpoints and logs. Example: --out runs/r50"),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda (auto = cuda when available). Example: --device cuda"),
    max_iters: int = typer.Option(None, "--max-iters", min=1, help="Stop after this many iterations (default: the recipe's, 96,228 for r50). Example: --max-iters 1000"),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last.pt. Example: --resume"),
    init: Path = typer.Option(None, "--init", help="Initialise from a Mask2Former COCO .pkl (model_final_3c8ec9.pkl for r50). Example: --init model_final_3c8ec9.pkl"),
    init_pixel_decoder: bool = typer.Option(False, "--init-pixel-decoder", help="With --init, also take the pixel decoder from the file (the official training leaves it randomly initialised: its legacy-format hook renames those keys away). Example: --init model_final_3c8ec9.pkl --init-pixel-decoder"),
    amp: AmpMode = typer.Option(AmpMode.off, "--amp", help="Mixed precision on CUDA: bf16, fp16 or off. Example: --amp bf16"),
    batch_size: int = typer.Option(None, "--batch-size", min=1, help="Clips per iteration (official: 1). Example: --batch-size 2"),
    checkpoint_period: int = typer.Option(None, "--checkpoint-period", min=1, help="Save every N iterations (official: 2000). Example: --checkpoint-period 500"),
    keep_checkpoints: int = typer.Option(None, "--keep-checkpoints", min=0, help="Keep only the N latest numbered checkpoints (model_NNNNNNN.pt), deleting older ones as new ones are saved; 0 keeps last.pt alone (default: keep all, as the official training). Example: --keep-checkpoints 3"),
    seed: int = typer.Option(None, "--seed", min=0, help="Random seed, 0 to 2**64-1 (official: 42). Example: --seed 1"),
    workers: int = typer.Option(0, "--workers", min=0, help="Data-loading worker processes. Example: --workers 4"),
    vggish_weights: str = typer.Option(None, "--vggish-weights", help="Path of vggish-10086976.pth, or 'random' for experiments without it (default: the avseg cache, ~/.cache/avseg, downloaded there on first use). Example: --vggish-weights vggish-10086976.pth"),
    offline: bool = OFFLINE_OPTION,
) -> None:
    """Train the OV-AVSS sound-source localization network (class-agnostic) on AVSBench-OV base classes.

    Example: avseg train --data data --config r50 --out runs/r50 --device cuda --init model_final_3c8ec9.pkl

    Checkpoints: RUN_DIR/last.pt and RUN_DIR/model_NNNNNNN.pt (written atomically); log: RUN_DIR/log.jsonl.
    """
    if offline:  # also `avseg --offline ...`
        set_offline(True)
    from avseg_cli.progress import stderr_progress
    from avseg_cli.values import check_paths_exist
    from models.pipeline.train import TrainOptions, train as run_training

    check_paths_exist({"--vggish-weights": vggish_weights})
    options = TrainOptions(
        data_dir=data, config_name=config or _default_config(out_dir, resume), out_dir=out_dir, device=device, max_iters=max_iters, resume=resume,
        init=init, init_pixel_decoder=init_pixel_decoder, amp=amp.value, batch_size=batch_size,
        checkpoint_period=checkpoint_period, keep_checkpoints=keep_checkpoints, seed=seed,
        num_workers=workers, vggish_weights=vggish_weights,
    )
    try:
        with stderr_progress(unit="it") as progress:
            result = run_training(options, progress=progress, warn=warn)
    except KeyboardInterrupt:
        from rich.markup import escape

        report_interrupt(escape(interrupt_hint(options, _device_used(device))))
        raise typer.Exit(130)
    if result.already_done:
        out.print(f"nothing to do: the run in {out_dir} is already at iteration {result.iterations}, its last "
                  f"(a larger --max-iters extends it)", soft_wrap=True)
        return
    out.print(f"trained to iteration {result.iterations} in {result.seconds:.0f} s; "
              f"final loss {result.final_loss:.4f}; checkpoint {result.last_checkpoint}")


def _default_config(out_dir: Path, resume: bool) -> str:
    """The config when --config is not given: the run's own for --resume (read from its last.pt), else r50."""
    from models.pipeline.run_folder import run_config_name

    return (run_config_name(out_dir) if resume else None) or "r50"


def _device_used(device: str) -> str:
    """The device `--device` stands for on this machine (`auto` -> cuda or cpu)."""
    from models.device import resolve_device
    from models.errors import AVSegError

    try:
        return str(resolve_device(device))
    except AVSegError:
        return device


def interrupt_hint(options: TrainOptions, device: str) -> str:
    """What follows "interrupted" when a run is stopped: the command that resumes it from its last.pt, or, when it
    saved none (or never created its folder), the command that starts it again. Both name the device the run used,
    so that a resume on another machine does not switch device."""
    args = ["avseg", "train", "--data", str(options.data_dir), "--config", options.config_name,
            "--out", str(options.out_dir), "--device", device]
    if options.amp != "off":
        args += ["--amp", options.amp]
    if options.vggish_weights is not None:
        args += ["--vggish-weights", options.vggish_weights]
    if options.max_iters is not None:
        args += ["--max-iters", str(options.max_iters)]
    if options.checkpoint_period is not None:
        args += ["--checkpoint-period", str(options.checkpoint_period)]
    if options.keep_checkpoints is not None:
        args += ["--keep-checkpoints", str(options.keep_checkpoints)]
    out_dir = Path(options.out_dir)
    if (out_dir / "last.pt").is_file():
        return f": resume with `{shlex.join([*args, '--resume'])}`"
    if options.batch_size is not None:
        args += ["--batch-size", str(options.batch_size)]
    if options.seed is not None:
        args += ["--seed", str(options.seed)]
    if options.init is not None:
        args += ["--init", str(options.init)] + (["--init-pixel-decoder"] if options.init_pixel_decoder else [])
    when = "the first checkpoint" if out_dir.is_dir() else "anything was saved"
    return f" before {when} (nothing to resume): start again with `{shlex.join(args)}`"
