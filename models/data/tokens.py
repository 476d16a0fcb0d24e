"""Parsing the `a_obj` column of metadata.csv into class ids."""

from __future__ import annotations

from models.data.classes import CLASS_INDEX

NON_CLASS_TOKENS = frozenset({"off-the-screen", "background"})
"""Tokens that occur in `a_obj` but name no class (the sound source is not visible, or v1m noise)."""


def split_tokens(a_obj: str) -> list[str]:
    """`a_obj` joined with `_` -> list of tokens (class names use `-`, never `_`)."""
    return [token for token in a_obj.split("_") if token != ""]


def token_ids(tokens: list[str]) -> list[int]:
    """Class ids of the tokens that are class names; `off-the-screen`, `background` and typos give none."""
    return [CLASS_INDEX[t] for t in tokens if t in CLASS_INDEX and t != "background"]
