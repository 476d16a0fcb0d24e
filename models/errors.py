"""The one exception type for failures a user can cause.

Anything raised as `AVSegError` carries a message written for the user (one line, naming the path or
value and the problem). The CLI prints it without a traceback and exits with `exit_code`. Every other
exception is a bug and shows a traceback under `--debug`.
"""

from __future__ import annotations


class AVSegError(Exception):
    """A user-facing error: bad input, missing file, unavailable device, corrupt checkpoint, ...

    Args:
        message: one line for the user, e.g. "metadata.csv not found: /data/AVSS/metadata.csv".
        exit_code: process exit code the CLI uses (1 = failed, 2 = usage error).
    """

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code

    def __str__(self) -> str:
        return self.message


class UsageError(AVSegError):
    """A wrong combination of options or values (exit code 2)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, exit_code=2)
