"""What `avseg annotate` is asked to do: the vocabulary (`--classes`, `--classes-file`) and the input videos
(paths and glob patterns, for shells that do not expand them)."""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Sequence

from models.errors import UsageError
from models.ovavss.prompts import first_clip_duplicate

MAX_VOCABULARY = 255
"""Mask PNGs hold one byte per pixel: vocabulary index + 1 must fit in 1..255."""

_GLOB_CHARACTERS = frozenset("*?[")


def parse_vocabulary(classes: str | None = None, classes_file: str | os.PathLike | None = None) -> list[str]:
    """The class names of `--classes a,b,c` followed by those of `--classes-file` (one name per line).

    Names are stripped of surrounding whitespace and may contain spaces ("electric guitar"); in the
    file, blank lines and lines starting with `#` are ignored, as is anything after a `#`.

    Raises:
        UsageError: the file cannot be read, the vocabulary is empty, a name appears twice (after
            stripping, ignoring case and repeated spaces, which CLIP does not see), or there are more than 255
            names.
    """
    names: list[str] = []
    if classes:
        names += [name.strip() for name in classes.split(",")]
        names = [name for name in names if name]
    if classes_file is not None:
        path = Path(classes_file)
        try:
            text = path.read_text(encoding="utf-8-sig")
        except FileNotFoundError:
            raise UsageError(f"classes file not found: {path}") from None
        except IsADirectoryError:
            raise UsageError(f"expected a classes file, found a folder: {path}") from None
        except UnicodeDecodeError:
            raise UsageError(f"classes file is not UTF-8 text: {path}") from None
        except OSError as error:
            raise UsageError(f"cannot read classes file {path}: {error.strerror or error}") from None
        for line in text.splitlines():
            name = line.split("#", 1)[0].strip()
            if name:
                names.append(name)
    hint = f" (nothing in {classes_file})" if classes_file is not None else ""
    return check_vocabulary(names, hint)


def check_vocabulary(names: Sequence[str], empty_hint: str = "") -> list[str]:
    """Stripped `names`, checked: not empty, no duplicates, no empty name, at most 255.

    Raises:
        UsageError: with one line naming the problem (and the duplicated names).
    """
    names = [str(name).strip() for name in names]
    if not names:
        raise UsageError(
            "empty vocabulary: give class names with --classes a,b,c or --classes-file FILE" + empty_hint
        )
    if not all(names):
        raise UsageError("empty class name in the vocabulary")
    seen: set[str] = set()
    duplicates = [name for name in names if name in seen or seen.add(name)]
    if duplicates:
        listed = ", ".join(repr(name) for name in dict.fromkeys(duplicates))
        raise UsageError(f"duplicate class names in the vocabulary: {listed} (each name may appear once)")
    same = first_clip_duplicate(names)
    if same is not None:
        raise UsageError(
            f"duplicate class names in the vocabulary: {same[0]!r} and {same[1]!r} (CLIP reads text in "
            "lower case with single spaces, so it cannot tell them apart)"
        )
    if len(names) > MAX_VOCABULARY:
        raise UsageError(f"{len(names)} class names given; at most {MAX_VOCABULARY} fit in the mask PNGs")
    return names


def has_glob(pattern: str) -> bool:
    """True when `pattern` contains a glob character (* ? [)."""
    return any(character in _GLOB_CHARACTERS for character in pattern)


def expand_inputs(patterns: Sequence[str | os.PathLike]) -> list[Path]:
    """Expand glob patterns (for shells that do not) into sorted file paths, keeping the given order.

    A pattern that names an existing path is taken literally (even with glob characters in it); a glob
    matches recursively with `**`; the same file named twice is kept once. A glob that matches nothing
    is returned as it is, so that annotating it fails with "no file matches ...".
    """
    result: list[Path] = []
    seen: set[str] = set()

    def add(path: Path) -> None:
        key = os.path.normcase(os.path.abspath(path))
        if key not in seen:
            seen.add(key)
            result.append(path)

    for pattern in patterns:
        text = os.fspath(pattern)
        if os.path.lexists(text) or not has_glob(text):
            add(Path(text))
            continue
        matches = sorted(glob.glob(os.path.expanduser(text), recursive=True))
        if not matches:
            add(Path(text))
        for match in matches:
            add(Path(match))
    return result
