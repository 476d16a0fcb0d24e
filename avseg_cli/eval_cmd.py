"""`avseg eval` (placeholder, being built)."""

from __future__ import annotations

from pathlib import Path

import typer


def evaluate(data: Path = typer.Option(..., "--data", help="Prepared data folder.")) -> None:
    """Score predictions. Example: avseg eval --predictions preds --data data --split test"""
    from models.errors import AVSegError

    raise AVSegError("avseg eval is not available yet")
