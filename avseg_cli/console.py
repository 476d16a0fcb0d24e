"""Shared rich consoles: results to stdout, messages and errors to stderr."""

from __future__ import annotations

import os

from rich.console import Console

PIPED_WIDTH = 160
"""Columns of a console writing to a file or a pipe (rich's default there is 80) when COLUMNS is not set: tables
stay readable in logs and `| less` instead of folding every path over several lines."""


def _console(stderr: bool) -> Console:
    console = Console(stderr=stderr, highlight=False)
    if not console.is_terminal and not os.environ.get("COLUMNS"):
        console.width = PIPED_WIDTH
    return console


out = _console(stderr=False)
err = _console(stderr=True)

DEBUG = {"enabled": False}
"""Set by `avseg --debug`: unexpected errors then show their traceback."""


def warn(message: str) -> None:
    """Print one warning line to stderr."""
    err.print(f"[yellow]warning:[/] {message}", soft_wrap=True)


INTERRUPT = {"reported": False}
"""Set once a command has printed the line it ends with when interrupted (`report_interrupt`); `avseg` prints a
plain one for a command stopped before it could (e.g. while importing torch)."""


def report_interrupt(detail: str = "") -> None:
    """Print the one line an interrupted command ends with: "interrupted" and `detail` (rich markup, escaped)."""
    INTERRUPT["reported"] = True
    err.print(f"[bold red]interrupted[/]{detail}", soft_wrap=True)
