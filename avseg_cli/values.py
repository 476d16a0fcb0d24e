"""Checks of option values, each refusing a bad one in one line that says what is wrong with it.

`fraction` parses numbers from 0 to 1: typer's `min=0.0, max=1.0` lets nothing else through, but it names a NaN
"should be less than or equal to 1" (NaN fails every comparison). `check_paths_exist` refuses weights paths that
are not there before any model is looked for: otherwise the first error could be about another model's missing
default weights and never name the path the user mistyped.
"""

from __future__ import annotations

import math
import os

import typer

FRACTION_METAVAR = "<0 to 1>"


def fraction(value: str) -> float:
    """`value` as a float from 0 to 1 inclusive; `typer.BadParameter` for text, NaN, infinities and numbers out
    of range (shown by click as "Invalid value for '--option': ...")."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise typer.BadParameter(f"{value!r} is not a number (give one from 0 to 1)") from None
    if math.isnan(number) or not 0.0 <= number <= 1.0:
        raise typer.BadParameter(f"{value} is not a number from 0 to 1")
    return number


def check_paths_exist(paths: dict[str, str | os.PathLike | None]) -> None:
    """A usage error (exit 2, as for a missing --checkpoint) for the first option given a path that does not exist;
    options not given (None) and the word "random" (random weights for experiments) pass.

    Args:
        paths: option name ("--clip-weights") -> the value given.
    """
    from models.errors import UsageError
    from models.weights import RANDOM

    for option, value in paths.items():
        if value is None or str(value) == RANDOM:
            continue
        path = os.path.expanduser(os.fspath(value))
        if not os.path.exists(path):
            if os.path.islink(path):  # `ls` lists it: say why it is not there
                raise UsageError(f"{option} {value}: a link to {os.readlink(path)}, which is not there")
            raise UsageError(f"{option} {value}: no such file or folder")
