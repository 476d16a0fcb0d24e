"""Type checks for numeric options given through the Python API (`PredictorOptions`, `ZeroShotConfig`).

Each returns the value as a plain Python `float` / `int`, numpy scalars included, so options stay JSON-able when
they are recorded (the annotate JSON, eval results, the predictions folder's run file), and raises `error` (the
caller's exception type) naming the option for a bool, a string or anything else that is not a number.
"""

from __future__ import annotations

import numbers

import numpy as np


def real_number(name: str, value: object, error: type[Exception] = TypeError) -> float:
    """`value` as a float; `error` unless it is a real number (an int or float, numpy's too; not a bool)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise error(f"{name} must be a number, got {type(value).__name__} {value!r}")
    return float(value)


def whole_number(name: str, value: object, error: type[Exception] = TypeError) -> int:
    """`value` as an int; `error` unless it is a whole number (an int, numpy's too; not a bool, float or string)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise error(f"{name} must be a whole number (an int), got {type(value).__name__} {value!r}")
    return int(value)
