"""The training loop of `avseg train`: the official recipe, resumable bit for bit.

The run folder (checks, resume state, log) is `models.pipeline.run_folder`; the order of the training videos
`models.pipeline.train_sampler`.

Reproducibility: every random choice of the data pipeline is derived from (seed, iteration, slot) and
every random draw of the model (dropout, point sampling) comes from torch's global generator, whose state
is saved in each checkpoint. Resuming from `last.pt` on the same device therefore continues exactly the
run that was interrupted.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from models.device import resolve_device
from models.errors import AVSegError, UsageError
from models.folder_lock import folder_lock
from models.ovavss.config import TRAIN_CONFIGS, TrainConfig, get_config
from models.pipeline.output_folders import remove_empty_folders
from models.pipeline.run_folder import (
    append_log,
    avseg_checkpoint_config,
    check_run_folder,
    load_resume_state,
    make_run_folder,
    prepare_run_folder,
    refuse_existing_run,
    remove_old_checkpoints,
)
from models.pipeline.train_sampler import ResumableBatchSampler
from models.progress import NullProgress, Progress

MAX_SEED = 2**64 - 1
"""The largest --seed: torch's generators take seeds up to 2**64-1 (numpy's seed sequences any integer >= 0)."""



@dataclass
class TrainOptions:
    """What `avseg train` was asked to do."""

    data_dir: Path
    config_name: str
    out_dir: Path
    device: str = "auto"
    max_iters: int | None = None
    resume: bool = False
    init: Path | None = None
    init_pixel_decoder: bool = False  # with `init`: load the pixel decoder too (the official training does not)
    amp: str = "off"  # "bf16" | "fp16" | "off"
    batch_size: int | None = None
    checkpoint_period: int | None = None
    keep_checkpoints: int | None = None  # the latest N numbered checkpoints are kept (0: last.pt only); None: all
    log_period: int | None = None
    seed: int | None = None
    num_workers: int = 0
    vggish_weights: str | None = None  # a path, "random", or None = look in the cache
    audio_shuffle: bool = False  # ablation: pair each clip with another clip's audio
    overrides: dict = field(default_factory=dict)  # extra TrainConfig fields (tests, experiments)


@dataclass
class TrainResult:
    iterations: int
    last_checkpoint: Path
    final_loss: float
    seconds: float
    already_done: bool = False  # a --resume of a run that had already reached max_iter: nothing was trained


def _autocast(device: torch.device, amp: str):
    if amp == "off":
        return torch.autocast(device_type=device.type, enabled=False)
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def _targets_to(targets: list[dict], device: torch.device) -> list[dict]:
    """Targets on the device (asynchronous copies), except `frame_indices`: the criterion checks them on the
    host."""
    return [{k: (v.to(device, non_blocking=True) if torch.is_tensor(v) and k != "frame_indices" else v)
             for k, v in t.items()} for t in targets]


def train(options: TrainOptions, progress: Progress | None = None, warn=print) -> TrainResult:
    """Run (or resume) a training run; writes RUN_DIR/last.pt, RUN_DIR/model_XXXXXXX.pt, RUN_DIR/log.jsonl.

    A resume of a run that already reached its last iteration trains nothing (`TrainResult.already_done`). Folders
    this call creates are removed again when it fails before anything was written into them.
    """
    progress = progress or NullProgress()
    _check_options(options)
    device = resolve_device(options.device)
    if options.amp != "off" and device.type != "cuda":
        raise UsageError("--amp needs --device cuda (on the CPU training runs in float32)")

    model_cfg = get_config(options.config_name)
    out_dir = Path(options.out_dir)
    check_run_folder(out_dir)
    with contextlib.ExitStack() as held:
        if out_dir.is_dir():  # before the checks: a run of another process is refused as such
            held.enter_context(folder_lock(out_dir, "train"))
        return _checked_train(options, progress, warn, device, model_cfg, out_dir)


def _checked_train(options: TrainOptions, progress: Progress, warn, device: torch.device, model_cfg,
                   out_dir: Path) -> TrainResult:
    """`train` after the device checks, with the run folder held by this process when it already existed."""
    if options.resume:
        resume_state = load_resume_state(out_dir, options.config_name)
        train_cfg = _resumed_train_config(options, resume_state, warn)
        vggish_arg = _resumed_vggish_arg(options, resume_state, warn)
        _warn_if_other_data(options, resume_state, warn)
        start_iter = int(resume_state["iteration"])
        if start_iter >= train_cfg.max_iter:
            return TrainResult(iterations=start_iter, last_checkpoint=out_dir / "last.pt", final_loss=float("nan"),
                               seconds=0.0, already_done=True)
    else:
        resume_state, vggish_arg = None, options.vggish_weights
        refuse_existing_run(out_dir)
        train_cfg = _new_train_config(options)
    if train_cfg.batch_size < 1 or train_cfg.max_iter < 1 or train_cfg.checkpoint_period < 1:
        raise UsageError("batch size, iterations and checkpoint period must be at least 1")
    if options.init is not None:
        _check_init_config(Path(options.init), options.config_name)

    created = make_run_folder(out_dir)
    try:
        with folder_lock(out_dir, "train"):  # released (its file removed) before empty folders are removed
            return _run(options, progress, warn, device, model_cfg, train_cfg, resume_state, vggish_arg, out_dir)
    except BaseException:
        remove_empty_folders(created)
        raise


def _check_options(options: TrainOptions) -> None:
    """Usage errors that the options alone show."""
    if options.amp not in ("off", "bf16", "fp16"):
        raise UsageError(f"unknown --amp {options.amp!r}: use bf16, fp16 or off")
    if options.init_pixel_decoder and options.init is None:
        raise UsageError("--init-pixel-decoder needs --init (the Mask2Former .pkl to take it from)")
    if options.resume and options.init is not None:
        raise UsageError("--init starts a new run and --resume continues the one in --out from its last.pt: "
                         "give one of them")
    if options.seed is not None and not 0 <= options.seed <= MAX_SEED:
        raise UsageError(f"--seed {options.seed} is out of range: use a whole number from 0 to {MAX_SEED} (2**64-1)")
    if options.keep_checkpoints is not None:
        from models.numbers_check import whole_number

        if whole_number("--keep-checkpoints", options.keep_checkpoints, UsageError) < 0:
            raise UsageError(f"--keep-checkpoints {options.keep_checkpoints} is out of range: use 0 (last.pt alone) "
                             "or more")


def _new_train_config(options: TrainOptions) -> TrainConfig:
    """The recipe of the config, with the options' changes."""
    updates = dict(options.overrides)
    for key, value in (("max_iter", options.max_iters), ("batch_size", options.batch_size),
                       ("checkpoint_period", options.checkpoint_period), ("log_period", options.log_period),
                       ("seed", options.seed)):
        if value is not None:
            updates[key] = value
    return replace(TRAIN_CONFIGS[options.config_name], **updates)


def _resumed_train_config(options: TrainOptions, resume_state: dict, warn) -> TrainConfig:
    """The resumed run's recipe. --max-iters (to extend or shorten it), --checkpoint-period and the log period apply:
    they do not change what is trained. --batch-size and --seed would, so a value other than the run's is ignored
    with a warning."""
    saved = TrainConfig.from_dict(resume_state["train_config"])
    for flag, value, kept, what in (("--batch-size", options.batch_size, saved.batch_size, "batch size"),
                                    ("--seed", options.seed, saved.seed, "seed")):
        if value is not None and value != kept:
            warn(f"{flag} {value} ignored: the resumed run keeps {what} {kept}")
    updates = {}
    for key, value in (("max_iter", options.max_iters), ("checkpoint_period", options.checkpoint_period),
                       ("log_period", options.log_period)):
        if value is not None:
            updates[key] = value
    return replace(saved, **updates)


def _resumed_vggish_arg(options: TrainOptions, resume_state: dict, warn) -> str | None:
    """The VGGish weights of a resumed run: the run's own. A --vggish-weights path is taken as the place of the same
    (real) weights file; switching between real and random weights is ignored with a warning."""
    extra = resume_state.get("extra", {})
    saved = extra.get("vggish_weights_arg")
    given = options.vggish_weights
    if given is None or given == saved:
        return saved
    if saved == "random":
        warn(f"--vggish-weights {given} ignored: the resumed run keeps its randomly initialised VGGish "
             f"({extra.get('audio_source', 'random')})")
        return saved
    if given == "random":
        warn(f"--vggish-weights random ignored: the resumed run keeps the real VGGish weights "
             f"({saved or 'from the avseg cache'})")
        return saved
    return given


def _warn_if_other_data(options: TrainOptions, resume_state: dict, warn) -> None:
    """A resumed run trains on --data; say so when the run was started on another folder."""
    saved = resume_state.get("extra", {}).get("data_dir")
    if saved is None or _same_path(Path(saved), Path(options.data_dir)):
        return
    warn(f"--data {options.data_dir} is not the folder the run was trained on ({saved}): the resumed run trains on "
         f"{options.data_dir}")


def _same_path(a: Path, b: Path) -> bool:
    return a == b or a.resolve() == b.resolve()


def _check_init_config(path: Path, config_name: str) -> None:
    """An avseg checkpoint of another --config would initialise almost nothing: refuse it."""
    init_config = avseg_checkpoint_config(path)
    if init_config is not None and init_config != config_name:
        raise UsageError(f"--init {path} is a checkpoint of --config {init_config}, not {config_name}: train with "
                         f"--config {init_config}, or initialise from a {config_name} checkpoint")


def _check_init_fits(report, path: Path, config_name: str) -> None:
    """Refuse an --init file whose tensors mostly have other shapes than the model's: a Mask2Former or official file
    of another model size (an avseg checkpoint's config is checked earlier, by `_check_init_config`)."""
    if len(report.skipped_shape) <= len(report.loaded):
        return
    key = report.skipped_shape[0]
    found, wanted = report.shape_mismatches[key]
    raise UsageError(f"--init {path} does not fit --config {config_name}: {len(report.loaded)} tensors fit, "
                     f"{len(report.skipped_shape)} have other shapes (e.g. {key} {tuple(found)} in the file, "
                     f"{tuple(wanted)} in the model): it is made for another model size (r50 files: --config r50, "
                     "Swin-B files: --config swinb)")


def _frozen_note(report) -> str:
    """Why an --init file lacks the VGGish tensors: training checkpoints never hold the frozen audio encoder."""
    from models.ovavss.model import TRAINED_PREFIXES

    frozen = [key for key in report.missing if not key.startswith(TRAINED_PREFIXES)]
    if not frozen:
        return ""
    which = "are" if len(frozen) == len(report.missing) else f"include {len(frozen)}"
    return (f" (the {len(report.missing)} not in the checkpoint {which} the frozen VGGish audio encoder's: training "
            "checkpoints never hold it, it comes from --vggish-weights)")


def _run(options: TrainOptions, progress: Progress, warn, device: torch.device, model_cfg, train_cfg: TrainConfig,
         resume_state: dict | None, vggish_arg: str | None, out_dir: Path) -> TrainResult:
    """The training itself, in the run folder `out_dir` (it exists); `train` has checked the options."""
    from models.checkpoint import (
        CHECKPOINT_FORMAT,
        capture_rng_state,
        restore_rng_state,
        save_checkpoint,
    )
    from models.data.clips import TrainClipDataset, collate_train_clips
    from models.data.prepared import PreparedData
    from models.ovavss.criterion import build_criterion, weighted_total
    from models.ovavss.model import build_ovavss
    from models.ovavss.optim import (
        build_optimizer,
        build_scheduler,
        clip_full_model_grad_norm,
        regroup_per_parameter_state,
    )
    from models.pipeline.audio_cache import AudioEmbeddingCache
    from models.vggish_setup import RANDOM_VGGISH_SEED_KEY, setup_training_vggish

    last_path = out_dir / "last.pt"
    data = PreparedData.open(options.data_dir)
    dataset = TrainClipDataset(
        data, split="train", clip_len=model_cfg.clip_len, short_sides=model_cfg.train_short_sides,
        max_size=model_cfg.max_size, flip_prob=train_cfg.flip_prob,
    )
    if len(dataset) == 0:
        raise AVSegError(f"the train split of {options.data_dir} has no videos")

    init_sd = left_out = None
    if options.init is not None and resume_state is None:  # read (and checked) before anything else is said
        from models.training_init import read_init_checkpoint

        init_sd, left_out = read_init_checkpoint(options.init, options.init_pixel_decoder)

    # Model, initialised deterministically from the seed.
    torch.manual_seed(train_cfg.seed)
    random.seed(train_cfg.seed)
    np.random.seed(train_cfg.seed % (2**32))
    model = build_ovavss(model_cfg)
    if vggish_arg == "random":
        warn("VGGish is randomly initialised (--vggish-weights random): audio features are not the real ones")
    audio_source = setup_training_vggish(model, vggish_arg, train_cfg.seed)
    if init_sd is not None:
        from models.training_init import load_matching

        report = load_matching(model, init_sd)
        _check_init_fits(report, Path(options.init), options.config_name)
        note = (f"; the pixel decoder keeps its random initialisation, as in the official training ({len(left_out)} "
                "tensors of the file not used; --init-pixel-decoder loads them)") if left_out else ""
        warn(f"initialised from {options.init}: {report.summary()}{_frozen_note(report)}{note}")
    model.to(device)
    model.train()

    criterion = build_criterion(train_cfg, model_cfg.dec_layers).to(device)
    weight_dict = criterion.weight_dict
    optimizer = build_optimizer(model, train_cfg)
    scheduler = build_scheduler(optimizer, train_cfg)
    params = [p for p in model.parameters() if p.requires_grad]  # model order: the clipped norm's summation
    # order (and so its last bit) does not depend on how the optimizer groups the parameters
    scaler = torch.amp.GradScaler(device.type, enabled=options.amp == "fp16")

    start_iter = 0
    if resume_state is not None:
        missing = model.load_state_dict(resume_state["model"], strict=False)
        bad = [k for k in missing.missing_keys if k.startswith(("backbone.", "sem_seg_head."))]
        if bad or missing.unexpected_keys:
            raise AVSegError(f"{last_path} does not match config {options.config_name} "
                             f"({len(bad)} missing, {len(missing.unexpected_keys)} unexpected keys)")
        try:
            optimizer_state, scheduler_state = regroup_per_parameter_state(
                optimizer, resume_state["optimizer"], resume_state["scheduler"])
        except KeyError as error:
            raise AVSegError(f"{last_path}: its optimizer state has no entry for parameter {error}") from error
        optimizer.load_state_dict(optimizer_state)
        scheduler.load_state_dict(scheduler_state)
        if "scaler" in resume_state and resume_state["scaler"]:
            scaler.load_state_dict(resume_state["scaler"])
        start_iter = int(resume_state["iteration"])
        restore_rng_state(resume_state["rng"])
    sampler = ResumableBatchSampler(len(dataset), train_cfg.batch_size, train_cfg.seed, start_iter,
                                    train_cfg.max_iter, shuffle_audio=options.audio_shuffle)
    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=sampler, collate_fn=collate_train_clips, num_workers=options.num_workers,
        persistent_workers=False,
        # page-locked batches: their copies to the GPU (non_blocking below) do not make each step wait for the
        # previous one to finish on the GPU
        pin_memory=device.type == "cuda",
        # A private generator: creating the loader's iterator must not draw from the global torch RNG,
        # or a resumed run would see a different random stream than an uninterrupted one.
        generator=torch.Generator().manual_seed(train_cfg.seed),
    )

    def checkpoint(iteration: int, numbered: bool) -> None:
        state = {
            "avseg_format": CHECKPOINT_FORMAT,
            "kind": "train",
            "config_name": options.config_name,
            "config": model_cfg.to_dict(),
            "train_config": train_cfg.to_dict(),
            "model": {k: v.detach().cpu() for k, v in model.trained_state_dict().items()},
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict() if scaler.is_enabled() else {},
            "iteration": iteration,
            "rng": capture_rng_state(),
            "extra": {"vggish_weights_arg": vggish_arg, RANDOM_VGGISH_SEED_KEY: train_cfg.seed,
                      "audio_source": audio_source, "data_dir": str(options.data_dir)},
        }
        numbered = numbered and options.keep_checkpoints != 0
        if numbered:
            save_checkpoint(out_dir / f"model_{iteration:07d}.pt", state)
        save_checkpoint(last_path, state)
        if options.keep_checkpoints is not None:  # the older ones go once the new one is saved
            failed = remove_old_checkpoints(out_dir, options.keep_checkpoints, iteration)
            if failed:
                warn(f"--keep-checkpoints {options.keep_checkpoints}: could not delete {', '.join(failed)}")

    audio_cache = AudioEmbeddingCache(model.audio_encoder)
    log_path = out_dir / "log.jsonl"
    prepare_run_folder(out_dir, log_path, start_iter, resumed=resume_state is not None)
    writer = _tensorboard_writer(out_dir, purge_step=start_iter + 1)
    # the bar counts iterations of the run: a resumed run starts at 2000/96228, not 0/94228
    progress.start("training", total=train_cfg.max_iter, completed=start_iter)
    started = time.perf_counter()
    total_value = float("nan")
    iteration = start_iter
    try:
        for batch in loader:
            images = batch.images.to(device, non_blocking=True)
            audio = audio_cache.embed(batch.audio_examples, device)
            targets = _targets_to(batch.targets, device)
            with _autocast(device, options.amp):
                outputs = model(images, audio_embeddings=audio)
            outputs = _to_float(outputs)
            try:
                losses = criterion(outputs, targets)
                total = weighted_total(losses, weight_dict)
                total_value = float(total.detach())
                if not math.isfinite(total_value):
                    raise AVSegError(f"the loss is {total_value}")
            except AVSegError as error:
                raise AVSegError(
                    f"training diverged at iteration {iteration} ({error}): stopped; the last good checkpoint is "
                    f"{last_path if last_path.exists() else '(none yet)'}"
                ) from error
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(total).backward()
            scaler.unscale_(optimizer)
            # a tensor, read only when logged: reading it every step would wait for the backward on a GPU
            grad_norm = clip_full_model_grad_norm(params, train_cfg.clip_grad_norm)
            scaler.step(optimizer)
            scaler.update()
            with warnings.catch_warnings():
                # with fp16 the GradScaler skips steps whose gradients overflowed (the first ones, while it
                # calibrates); the schedule still advances by iteration, as in detectron2's AMP trainer
                warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step\\(\\)` before")
                scheduler.step()
            iteration += 1
            lr = _head_lr(optimizer)
            progress.advance(1, loss=total_value, lr=lr)
            if iteration % train_cfg.log_period == 0 or iteration == train_cfg.max_iter:
                row = {"iteration": iteration, "loss": total_value, "lr": lr, "grad_norm": float(grad_norm),
                       "time": round(time.perf_counter() - started, 3)}
                row.update({k: float(v.detach()) for k, v in losses.items() if not k[-1].isdigit()})
                append_log(log_path, row)
                if writer is not None:
                    for key, value in row.items():
                        if key != "iteration":
                            writer.add_scalar(f"train/{key}", value, iteration)
            if iteration % train_cfg.checkpoint_period == 0 or iteration == train_cfg.max_iter:
                checkpoint(iteration, numbered=iteration % train_cfg.checkpoint_period == 0)
    finally:
        progress.finish()
        if writer is not None:
            writer.close()
    return TrainResult(iterations=iteration, last_checkpoint=last_path, final_loss=total_value,
                       seconds=time.perf_counter() - started)


def _head_lr(optimizer: torch.optim.Optimizer) -> float:
    """The learning rate of the head (the backbone's is a fraction of it): the largest of the groups'."""
    return max(float(group["lr"]) for group in optimizer.param_groups)


def _to_float(outputs: dict) -> dict:
    result = {k: (v.float() if torch.is_tensor(v) else v) for k, v in outputs.items() if k != "aux_outputs"}
    if "aux_outputs" in outputs:
        result["aux_outputs"] = [{k: v.float() for k, v in aux.items()} for aux in outputs["aux_outputs"]]
    return result


def _tensorboard_writer(out_dir: Path, purge_step: int):
    """A TensorBoard writer (None without the optional package); `purge_step` hides the events of steps from there
    on that an earlier, interrupted writer logged (they are logged again)."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # needs the optional tensorboard package
    except Exception:
        return None
    return SummaryWriter(str(out_dir / "tensorboard"), purge_step=purge_step)
