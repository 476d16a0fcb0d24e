"""`avseg prepare` (placeholder, being built)."""

from __future__ import annotations

from pathlib import Path

import typer


def prepare(root: Path = typer.Option(..., "--root", help="AVSBench-semantic folder.")) -> None:
    """Build the AVSBench-OV split. Example: avseg prepare --root AVSBench-semantic --out data"""
    from models.errors import AVSegError

    raise AVSegError("avseg prepare is not available yet")
