"""Prompt templates: the exact official ViLD set, user template files and their errors."""

from __future__ import annotations

import pytest

from models.errors import AVSegError
from models.ovavss.prompts import (
    VILD_TEMPLATES,
    fill_template,
    read_templates,
    resolve_templates,
    template_set_id,
    validate_templates,
)

# Typed from ovavss-spec.md §7.2 (note the missing trailing periods of templates 2-5).
EXPECTED_VILD = [
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
]


def test_vild_templates_are_the_official_strings():
    assert list(VILD_TEMPLATES) == EXPECTED_VILD
    assert resolve_templates("vild") == VILD_TEMPLATES


def test_fill_template_keeps_names_verbatim():
    assert fill_template("a photo of a {}.", "hair-dryer") == "a photo of a hair-dryer."
    assert fill_template("There is a {} in the scene", "crème brûlée") == "There is a crème brûlée in the scene"
    # A name with braces is inserted as is (str.format would fail or substitute).
    assert fill_template("This is a photo of a {}", "odd {} name") == "This is a photo of a odd {} name"


def test_read_templates_file(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_bytes("a {} here\r\n\n   \nthe sound of a {}.\nünïcode {} line \n".encode("utf-8"))
    assert read_templates(path) == ("a {} here", "the sound of a {}.", "ünïcode {} line")
    assert resolve_templates(path) == read_templates(path)
    assert resolve_templates(str(path)) == read_templates(path)


@pytest.mark.parametrize(
    "content, expected",
    [
        ("a photo\n", "exactly one '{}' (found 0)"),
        ("a {} and a {}\n", "exactly one '{}' (found 2)"),
        ("a {0} photo\n", "exactly one '{}' (found 0)"),
        ("a {} photo {name}\n", "besides its one '{}'"),
        ("a {} photo }\n", "besides its one '{}'"),
    ],
)
def test_bad_template_lines_name_file_and_line(tmp_path, content, expected):
    path = tmp_path / "prompts.txt"
    path.write_text("fine {}\n" + content, encoding="utf-8")
    with pytest.raises(AVSegError) as info:
        read_templates(path)
    message = str(info.value)
    assert f"{path}:2:" in message and expected in message
    assert "\n" not in message


def test_template_file_errors(tmp_path):
    with pytest.raises(AVSegError, match="prompt template file not found"):
        read_templates(tmp_path / "missing.txt")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n", encoding="utf-8")
    with pytest.raises(AVSegError, match="no prompt templates in"):
        read_templates(empty)
    latin = tmp_path / "latin.txt"
    latin.write_bytes("caf\xe9 {}\n".encode("latin-1"))
    with pytest.raises(AVSegError, match="not UTF-8"):
        read_templates(latin)
    with pytest.raises(AVSegError, match="unknown prompt template set 'imagenet'"):
        resolve_templates("imagenet")
    with pytest.raises(AVSegError, match="expected a prompt template file, found a folder"):
        resolve_templates(tmp_path)
    with pytest.raises(AVSegError, match="prompt template file not a regular file: /dev/null"):
        resolve_templates("/dev/null")
    with pytest.raises(AVSegError, match="prompt template file not found: .*missing.txt"):
        resolve_templates(tmp_path / "missing.txt")


def test_a_template_file_saved_by_any_editor_gives_the_same_set(tmp_path):
    """A byte-order mark, CRLF line ends and spaces around a line change nothing (CLIP's tokenizer drops them too),
    so the same prompts have the same set id whichever editor saved them."""
    plain = tmp_path / "plain.txt"
    plain.write_text("a photo of a {}.\nthe sound of a {}\n", encoding="utf-8")
    windows = tmp_path / "windows.txt"
    windows.write_bytes("\ufeff  a photo of a {}. \r\n\r\nthe sound of a {}\t\r\n".encode("utf-8"))
    assert read_templates(windows) == read_templates(plain) == ("a photo of a {}.", "the sound of a {}")
    assert template_set_id(read_templates(windows)) == template_set_id(read_templates(plain))


def test_validate_templates():
    assert validate_templates(["x {}"]) == ("x {}",)
    with pytest.raises(AVSegError, match="no prompt templates"):
        validate_templates([])
    with pytest.raises(AVSegError, match="found 2"):
        validate_templates(["{} {}"], source="--templates")


def test_template_set_id_depends_on_content_and_order():
    assert template_set_id(VILD_TEMPLATES) == template_set_id(list(EXPECTED_VILD))
    assert template_set_id(["a {}", "b {}"]) != template_set_id(["b {}", "a {}"])
    assert template_set_id(["a {}"]) != template_set_id(["a {}."])
    # No ambiguity from joining: ("ab {}",) vs ("a", "b {}") style splits differ.
    assert template_set_id(["a {}b {}"]) != template_set_id(["a {}", "b {}"])
