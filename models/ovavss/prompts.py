"""Prompt templates that turn a class name into CLIP text ("a photo of a {}.").

The official OV-AVSS code uses detectron2-era ViLD's 14 templates (`PROMPT_NAME: "vild"`, ovavss-spec.md
§7.2), reproduced here character for character, including the inconsistent trailing periods. Users may
supply their own set as a text file with one template per line, each containing exactly one `{}`.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Iterable, Sequence

from models.errors import AVSegError

VILD_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "This is a photo of a {}",
    "There is a {} in the scene",
    "There is the {} in the scene",
    "a photo of a {} in the scene",
    "a photo of a small {}.",
    "a photo of a medium {}.",
    "a photo of a large {}.",
    "This is a photo of a small {}.",
    "This is a photo of a medium {}.",
    "This is a photo of a large {}.",
    "There is a small {} in the scene.",
    "There is a medium {} in the scene.",
    "There is a large {} in the scene.",
)

TEMPLATE_SETS: dict[str, tuple[str, ...]] = {"vild": VILD_TEMPLATES}

PLACEHOLDER = "{}"


def template_problem(template: str) -> str | None:
    """Why `template` is not usable (None when it is): it must hold exactly one `{}` and no other brace."""
    count = template.count(PLACEHOLDER)
    if count != 1:
        return f"must contain exactly one '{{}}' (found {count})"
    rest = template.replace(PLACEHOLDER, "", 1)
    if "{" in rest or "}" in rest:
        return "contains a '{' or '}' besides its one '{}'"
    return None


def validate_templates(templates: Sequence[str], source: str = "templates") -> tuple[str, ...]:
    """Check a template set and return it as a tuple; raises `AVSegError` naming `source` and the template."""
    templates = tuple(templates)
    if not templates:
        raise AVSegError(f"{source}: no prompt templates")
    for template in templates:
        problem = template_problem(template)
        if problem is not None:
            raise AVSegError(f"{source}: prompt template {template!r} {problem}")
    return templates


def read_templates(path: str | os.PathLike) -> tuple[str, ...]:
    """Templates from a UTF-8 text file, one per line (a byte-order mark and the spaces around each line dropped,
    as CLIP's tokenizer drops them anyway); blank lines are skipped."""
    path = Path(path)
    if path.is_dir():
        raise AVSegError(f"expected a prompt template file, found a folder: {path}")
    if not path.is_file():
        found = "not a regular file" if os.path.lexists(path) else "not found"
        raise AVSegError(f"prompt template file {found}: {path}")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise AVSegError(f"prompt template file is not UTF-8 text: {path} ({error.reason} at byte {error.start})") from error
    except OSError as error:
        raise AVSegError(f"cannot read prompt template file {path}: {error.strerror or error}") from error
    templates = []
    for line_number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        problem = template_problem(line)
        if problem is not None:
            raise AVSegError(f"{path}:{line_number}: prompt template {line!r} {problem}")
        templates.append(line)
    if not templates:
        raise AVSegError(f"no prompt templates in {path} (expected one template per line, each with one '{{}}')")
    return tuple(templates)


def resolve_templates(spec: str | os.PathLike) -> tuple[str, ...]:
    """A named built-in set ("vild") or the path of a template file."""
    if isinstance(spec, str) and spec in TEMPLATE_SETS:
        return TEMPLATE_SETS[spec]
    path = Path(spec)
    if not os.path.lexists(path) and path.parent == Path(".") and not path.suffix:
        raise AVSegError(
            f"unknown prompt template set {str(spec)!r}: use one of {sorted(TEMPLATE_SETS)} or the path of a text "
            f"file with one template per line"
        )
    return read_templates(path)


def fill_template(template: str, class_name: str) -> str:
    """The prompt for one class name; the name is inserted verbatim (hyphens, spaces, braces kept)."""
    return template.replace(PLACEHOLDER, class_name, 1)


def template_set_id(templates: Sequence[str]) -> str:
    """A short, stable identifier of a template set (its order matters only through the mean, but is kept)."""
    digest = hashlib.sha256("\x1f".join(templates).encode("utf-8")).hexdigest()
    return digest[:16]


def clip_text_key(name: str) -> str:
    """What CLIP's tokenizer sees of a name: lower case, runs of whitespace as one space, no outer spaces.

    Two names with the same key get the same tokens, hence the same text embedding.
    """
    return " ".join(name.split()).lower()


def first_clip_duplicate(names: Iterable[str]) -> tuple[str, str] | None:
    """The first two of `names` that CLIP reads the same (`clip_text_key`), in order: (earlier, later); None when
    CLIP tells them all apart. Such names would get one embedding and share one object's probability."""
    first_of: dict[str, str] = {}
    for name in names:
        key = clip_text_key(name)
        if key in first_of:
            return first_of[key], name
        first_of[key] = name
    return None
