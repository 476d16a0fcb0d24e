"""The run folder of `avseg train`: checking and creating it, finding what it holds, and its log.

A run folder holds `last.pt`, numbered `model_<iteration>.pt` checkpoints and `log.jsonl`, each written
atomically (`models.atomic`). A new run never takes over a folder with checkpoints of another run; a resumed
run reads `last.pt` (advice names the newest readable numbered checkpoint when it is missing or damaged) and
cuts the log back to the checkpoint's iteration.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import warnings
from pathlib import Path

import torch

from models.atomic import temporary_target
from models.errors import AVSegError, UsageError
from models.pipeline.output_folders import missing_folders, remove_empty_folders

_RUN_FILE = re.compile(r"last\.pt|model_\d+\.pt|log\.jsonl")
"""Names of the files a run writes into its folder (atomically: an interrupted write leaves a temporary one)."""


def newest_readable_checkpoint(out_dir: Path) -> Path | None:
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


def check_run_folder(out_dir: Path) -> None:
    """Usage errors for an --out that cannot be a folder: an existing file, or a path under one."""
    for path in (out_dir, *out_dir.parents):
        if not os.path.lexists(path):
            continue
        if os.path.isdir(path):
            return
        if path == out_dir:
            raise UsageError(f"--out {out_dir} is a file, not a folder: give the run folder (e.g. --out runs/r50)")
        raise UsageError(f"--out {out_dir} is under {path}, which is a file, not a folder")


def make_run_folder(out_dir: Path) -> list[Path]:
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


def load_resume_state(out_dir: Path, config_name: str) -> dict:
    """The run folder's last.pt, checked; the errors name the newest readable numbered checkpoint if there is one."""
    from models.checkpoint import load_checkpoint

    last_path = out_dir / "last.pt"
    if not last_path.is_file():
        fallback = newest_readable_checkpoint(out_dir)
        advice = f" (the run folder holds {fallback.name}: copy it to last.pt to resume from it)" if fallback else ""
        raise AVSegError(f"nothing to resume: {last_path} does not exist{advice}")
    try:
        resume_state = load_checkpoint(last_path)
    except AVSegError as error:
        fallback = newest_readable_checkpoint(out_dir)
        if fallback is None:
            raise
        raise AVSegError(f"{error.message}; the run folder also holds {fallback.name} (the newest readable numbered "
                         f"checkpoint): copy it to last.pt to resume from there") from error
    if resume_state.get("kind") != "train":
        raise AVSegError(f"{last_path} is not a training checkpoint")
    if resume_state.get("config_name") != config_name:
        raise AVSegError(f"{last_path} was trained with --config {resume_state.get('config_name')}, not {config_name}")
    return resume_state


_NUMBERED = re.compile(r"model_(\d+)\.pt")


def remove_old_checkpoints(out_dir: Path, keep: int, iteration: int) -> list[str]:
    """Delete the numbered checkpoints `model_<iteration>.pt` of `out_dir` up to `iteration` (the one just saved)
    but the `keep` latest; `last.pt` and those of later iterations (left by a run that was rolled back to an
    earlier checkpoint) are never touched. Returns the names of those that could not be deleted (the caller warns)."""
    numbered = sorted((int(match.group(1)), path) for path in out_dir.iterdir()
                      if (match := _NUMBERED.fullmatch(path.name)) and int(match.group(1)) <= iteration
                      and path.is_file())
    failed = []
    for _, path in numbered[: max(0, len(numbered) - keep)]:
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        except OSError as error:
            failed.append(f"{path.name} ({error.strerror or error})")
    return failed


def refuse_existing_run(out_dir: Path) -> None:
    """A new run never takes over a folder that holds checkpoints (last.pt or model_*.pt) of another run."""
    if (out_dir / "last.pt").exists():
        raise AVSegError(f"{out_dir} already holds a run (last.pt): use --resume to continue it, or another --out")
    numbered = sorted(out_dir.glob("model_*.pt"))
    if not numbered:
        return
    fallback = newest_readable_checkpoint(out_dir)
    how = (f"to continue it, copy {fallback.name} (its newest readable checkpoint) to last.pt and use --resume"
           if fallback else "none of them is readable")
    raise AVSegError(f"{out_dir} already holds checkpoints of a run ({numbered[-1].name}, no last.pt): {how}; "
                     "or choose another --out")


def run_config_name(out_dir: str | os.PathLike) -> str | None:
    """The config a run folder's last.pt was trained with (None when there is no readable last.pt)."""
    return avseg_checkpoint_config(Path(out_dir) / "last.pt")


def avseg_checkpoint_config(path: Path) -> str | None:
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


def prepare_run_folder(out_dir: Path, log_path: Path, start_iter: int, resumed: bool) -> None:
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
    try:  # the log of a run that saved no checkpoint (no others are here: `refuse_existing_run`)
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


def append_log(log_path: Path, row: dict) -> None:
    try:
        with open(log_path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")
    except OSError as error:
        raise AVSegError(f"cannot write {log_path}: {error.strerror or error}") from error
