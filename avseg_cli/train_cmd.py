"""`avseg train` (placeholder, being built)."""

from __future__ import annotations

from pathlib import Path

import typer


def train(data: Path = typer.Option(..., "--data", help="Prepared data folder.")) -> None:
    """Train OV-AVSS. Example: avseg train --data data --config r50 --out runs/r50"""
    from models.errors import AVSegError

    raise AVSegError("avseg train is not available yet")
