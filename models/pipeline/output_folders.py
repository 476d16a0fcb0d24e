"""Output folders that commands create: made when needed, checked to be writable, and removed again when a
failed or interrupted run left them empty (nothing the user had is touched)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Sequence

from models.errors import AVSegError, UsageError


def missing_folders(folder: str | os.PathLike) -> list[Path]:
    """`folder` and those of its parents that do not exist yet, outermost first: what creating it would create."""
    folder = Path(folder)
    return [path for path in (folder, *folder.parents) if not os.path.lexists(path)][::-1]


def ensure_output_dir(folder: str | os.PathLike, what: str = "the output folder") -> list[Path]:
    """Create `folder` if needed and check that files can be created in it.

    Args:
        what: how errors name the folder ("the output folder", "the --json-summary folder").

    Returns:
        The folders it created, outermost first (for `remove_empty_folders` when nothing was written).

    Raises:
        AVSegError: one line naming the folder (it lies under a regular file, is read-only, ...); a
            `UsageError` when it is a file.
    """
    folder = Path(folder)
    missing = missing_folders(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except FileExistsError:  # a path the user gave for a folder names a file: a usage error (exit code 2)
        raise UsageError(f"cannot use {folder} as {what}: it is a file") from None
    except NotADirectoryError:  # ... or lies under a file
        remove_empty_folders(missing)
        blocker = next((path for path in folder.parents if path.is_file()), folder)
        raise UsageError(f"cannot use {folder} as {what}: {blocker} is a file") from None
    except OSError as error:
        remove_empty_folders(missing)
        raise AVSegError(f"cannot write to {what} {folder}: {error.strerror or error}") from None
    return missing


def remove_empty_folders(folders: Sequence[Path]) -> None:
    """Remove those of `folders` (outermost first, as `ensure_output_dir` returns them) that are empty, innermost
    first; folders holding anything are kept."""
    for folder in reversed(folders):
        try:
            folder.rmdir()
        except OSError:
            pass
