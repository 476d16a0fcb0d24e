"""Shared rich consoles: results to stdout, messages and errors to stderr."""

from __future__ import annotations

from rich.console import Console

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)

DEBUG = {"enabled": False}
"""Set by `avseg --debug`: unexpected errors then show their traceback."""


def warn(message: str) -> None:
    """Print one warning line to stderr."""
    err.print(f"[yellow]warning:[/] {message}", soft_wrap=True)
