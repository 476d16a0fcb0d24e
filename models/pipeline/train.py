"""The training loop of `avseg train`: the official recipe, resumable bit for bit.

Reproducibility: every random choice of the data pipeline is derived from (seed, iteration, slot) and
every random draw of the model (dropout, point sampling) comes from torch's global generator, whose state
is saved in each checkpoint. Resuming from `last.pt` on the same device therefore continues exactly the
run that was interrupted.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import re
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from models.device import resolve_device
from models.atomic import temporary_target
from models.errors import AVSegError, UsageError
from models.ovavss.config import TRAIN_CONFIGS, TrainConfig, get_config
from models.pipeline.output_folders import missing_folders, remove_empty_folders
from models.progress import NullProgress, Progress

MAX_SEED = 2**64 - 1
"""The largest --seed: torch's generators take seeds up to 2**64-1 (numpy's seed sequences any integer >= 0)."""

_RUN_FILE = re.compile(r"last\.pt|model_\d+\.pt|log\.jsonl")
"""Names of the files a run writes into its folder (atomically: an interrupted write leaves a temporary one)."""


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


def _newest_readable_checkpoint(out_dir: Path) -> Path | None:
    """The run folder's newest `model_*.pt` that loads as a training checkpoint, for advice when `last.pt` is
    missing or damaged; None when there is none."""
    from models.checkpoint import load_checkpoint

    for path in sorted(out_dir.glob("model_*.pt"), reverse=True):
        try:
            if load_checkpoint(path).get("kind") == "train":
                return path
        except AVSegError:
            continue
    return None


def _sample_seed(seed: int, iteration: int, slot: int) -> int:
    return int(np.random.SeedSequence([seed, iteration, slot]).generate_state(1)[0])


class ResumableBatchSampler:
    """Yields, for iterations start..stop-1, a list of (video_index, sample_seed) per batch.

    Videos are visited in a fresh permutation per epoch, derived from (seed, epoch) alone, so the
    sequence does not depend on where a run was resumed.
    """

    def __init__(self, num_videos: int, batch_size: int, seed: int, start: int, stop: int,
                 shuffle_audio: bool = False) -> None:
        if num_videos == 0:
            raise AVSegError("the training split has no videos")
        self.num_videos = num_videos
        self.batch_size = batch_size
        self.seed = seed
        self.start = start
        self.stop = stop
        self.shuffle_audio = shuffle_audio

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def _video_at(self, position: int) -> int:
        epoch, offset = divmod(position, self.num_videos)
        perm = np.random.default_rng([self.seed, epoch]).permutation(self.num_videos)
        return int(perm[offset])

    def __iter__(self) -> Iterator[list[tuple]]:
        for iteration in range(self.start, self.stop):
            batch = []
            for slot in range(self.batch_size):
                position = iteration * self.batch_size + slot
                item = (self._video_at(position), _sample_seed(self.seed, iteration, slot))
                if self.shuffle_audio:
                    other = np.random.default_rng([self.seed, iteration, slot, 7]).integers(self.num_videos)
                    item = item + (int(other),)
                batch.append(item)
            yield batch


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
    _check_run_folder(out_dir)
    if options.resume:
        resume_state = _load_resume_state(out_dir, options.config_name)
        train_cfg = _resumed_train_config(options, resume_state, warn)
        vggish_arg = _resumed_vggish_arg(options, resume_state, warn)
        _warn_if_other_data(options, resume_state, warn)
        start_iter = int(resume_state["iteration"])
        if start_iter >= train_cfg.max_iter:
            return TrainResult(iterations=start_iter, last_checkpoint=out_dir / "last.pt", final_loss=float("nan"),
                               seconds=0.0, already_done=True)
    else:
        resume_state, vggish_arg = None, options.vggish_weights
        _refuse_existing_run(out_dir)
        train_cfg = _new_train_config(options)
    if train_cfg.batch_size < 1 or train_cfg.max_iter < 1 or train_cfg.checkpoint_period < 1:
        raise UsageError("batch size, iterations and checkpoint period must be at least 1")
    if options.init is not None:
        _check_init_config(Path(options.init), options.config_name)

    created = _make_run_folder(out_dir)
    try:
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


def _check_run_folder(out_dir: Path) -> None:
    """Usage errors for an --out that cannot be a folder: an existing file, or a path under one."""
    for path in (out_dir, *out_dir.parents):
        if not os.path.lexists(path):
            continue
        if os.path.isdir(path):
            return
        if path == out_dir:
            raise UsageError(f"--out {out_dir} is a file, not a folder: give the run folder (e.g. --out runs/r50)")
        raise UsageError(f"--out {out_dir} is under {path}, which is a file, not a folder")


def _make_run_folder(out_dir: Path) -> list[Path]:
    """Create the run folder (and missing parents); returns the folders created, outermost first (for
    `remove_empty_folders`)."""
    created = missing_folders(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        remove_empty_folders(created)
        raise AVSegError(f"cannot create the run folder {out_dir}: {error.strerror or error} "
                         "(choose a writable --out)") from error
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise AVSegError(f"cannot write in the run folder {out_dir}: permission denied (choose a writable --out)")
    return created


def _load_resume_state(out_dir: Path, config_name: str) -> dict:
    """The run folder's last.pt, checked; the errors name the newest readable numbered checkpoint if there is one."""
    from models.checkpoint import load_checkpoint

    last_path = out_dir / "last.pt"
    if not last_path.is_file():
        fallback = _newest_readable_checkpoint(out_dir)
        advice = f" (the run folder holds {fallback.name}: copy it to last.pt to resume from it)" if fallback else ""
        raise AVSegError(f"nothing to resume: {last_path} does not exist{advice}")
    try:
        resume_state = load_checkpoint(last_path)
    except AVSegError as error:
        fallback = _newest_readable_checkpoint(out_dir)
        if fallback is None:
            raise
        raise AVSegError(f"{error.message}; the run folder also holds {fallback.name} (the newest readable numbered "
                         f"checkpoint): copy it to last.pt to resume from there") from error
    if resume_state.get("kind") != "train":
        raise AVSegError(f"{last_path} is not a training checkpoint")
    if resume_state.get("config_name") != config_name:
        raise AVSegError(f"{last_path} was trained with --config {resume_state.get('config_name')}, not {config_name}")
    return resume_state


def _refuse_existing_run(out_dir: Path) -> None:
    """A new run never takes over a folder that holds checkpoints (last.pt or model_*.pt) of another run."""
    if (out_dir / "last.pt").exists():
        raise AVSegError(f"{out_dir} already holds a run (last.pt): use --resume to continue it, or another --out")
    numbered = sorted(out_dir.glob("model_*.pt"))
    if not numbered:
        return
    fallback = _newest_readable_checkpoint(out_dir)
    how = (f"to continue it, copy {fallback.name} (its newest readable checkpoint) to last.pt and use --resume"
           if fallback else "none of them is readable")
    raise AVSegError(f"{out_dir} already holds checkpoints of a run ({numbered[-1].name}, no last.pt): {how}; "
                     "or choose another --out")


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
    init_config = _avseg_checkpoint_config(path)
    if init_config is not None and init_config != config_name:
        raise UsageError(f"--init {path} is a checkpoint of --config {init_config}, not {config_name}: train with "
                         f"--config {init_config}, or initialise from a {config_name} checkpoint")


def run_config_name(out_dir: str | os.PathLike) -> str | None:
    """The config a run folder's last.pt was trained with (None when there is no readable last.pt)."""
    return _avseg_checkpoint_config(Path(out_dir) / "last.pt")


def _avseg_checkpoint_config(path: Path) -> str | None:
    """The config name of an avseg checkpoint, read without loading its tensors (memory-mapped); None for any other
    file, readable or not (`read_init_checkpoint` says what is wrong with it)."""
    try:
        with open(path, "rb") as handle:
            if handle.read(4) != b"PK\x03\x04":  # not a zip: not a torch.save file of this century
                return None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - unreadable files are reported by read_init_checkpoint
        return None
    if isinstance(obj, dict) and "avseg_format" in obj and isinstance(obj.get("config_name"), str):
        return obj["config_name"]
    return None


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


def _prepare_run_folder(out_dir: Path, log_path: Path, start_iter: int, resumed: bool) -> None:
    """Remove what interrupted writes left (temporary files) and start the log over, or, on resume, cut it back to
    the checkpoint's iteration."""
    for path in out_dir.iterdir():
        target = temporary_target(path.name)
        if target is not None and _RUN_FILE.fullmatch(target) and path.is_file():
            with contextlib.suppress(OSError):
                path.unlink()
    if resumed:
        _cut_log_back(log_path, start_iter)
        return
    try:  # the log of a run that saved no checkpoint (no others are here: `_refuse_existing_run`)
        log_path.unlink(missing_ok=True)
    except OSError as error:
        raise AVSegError(f"cannot remove the old log {log_path}: {error.strerror or error}") from error


def _cut_log_back(log_path: Path, iteration: int) -> None:
    """Drop the records of steps after `iteration` (logged after the checkpoint that a run resumes from: they are
    logged again) and lines left incomplete by an interrupted write; other records stay where they are. The log is
    rewritten atomically, and only when this changes it."""
    from models.atomic import atomic_open

    try:
        text = log_path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return
    except OSError as error:
        raise AVSegError(f"cannot read {log_path}: {error.strerror or error}") from error
    kept = "".join(line + "\n" for line in text.splitlines() if _log_line_kept(line, iteration))
    if kept != text:
        with atomic_open(log_path) as handle:
            handle.write(kept)


def _log_line_kept(line: str, iteration: int) -> bool:
    try:
        record = json.loads(line)
    except ValueError:
        return False  # cut short by an interrupted write
    step = record.get("iteration") if isinstance(record, dict) else None
    return not isinstance(step, int) or step <= iteration


def _append_log(log_path: Path, row: dict) -> None:
    try:
        with open(log_path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")
    except OSError as error:
        raise AVSegError(f"cannot write {log_path}: {error.strerror or error}") from error


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
    from models.pipeline.network import RANDOM_VGGISH_SEED_KEY, setup_audio_encoder

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
        from models.official import read_init_checkpoint

        init_sd, left_out = read_init_checkpoint(options.init, options.init_pixel_decoder)

    # Model, initialised deterministically from the seed.
    torch.manual_seed(train_cfg.seed)
    random.seed(train_cfg.seed)
    np.random.seed(train_cfg.seed % (2**32))
    model = build_ovavss(model_cfg)
    if vggish_arg == "random":
        warn("VGGish is randomly initialised (--vggish-weights random): audio features are not the real ones")
    audio_source = setup_audio_encoder(model, vggish_arg, train_cfg.seed)
    if init_sd is not None:
        from models.official import load_matching

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
        if numbered:
            save_checkpoint(out_dir / f"model_{iteration:07d}.pt", state)
        save_checkpoint(last_path, state)

    audio_cache = AudioEmbeddingCache(model.audio_encoder)
    log_path = out_dir / "log.jsonl"
    _prepare_run_folder(out_dir, log_path, start_iter, resumed=resume_state is not None)
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
                _append_log(log_path, row)
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
