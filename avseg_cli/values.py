"""Parsers for option values that typer's own range checks get wrong.

typer's `min=0.0, max=1.0` lets nothing but numbers in range through, but it names a NaN "should be less than or
equal to 1" (NaN fails every comparison). These parsers say what is wrong with the value as given.
"""

from __future__ import annotations

import math

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
