"""`avseg annotate`: not available yet (it needs the predictor API of the classification issue)."""

from __future__ import annotations

from pathlib import Path

import typer


def annotate(
    videos: list[Path] = typer.Argument(..., help="Video files or globs. Example: clips/*.mp4"),
    classes: str = typer.Option("", "--classes", help="Comma-separated class names. Example: --classes pipa,violin"),
) -> None:
    """Annotate videos with masks of the sounding objects. Example: avseg annotate video.mp4 --classes pipa,violin

    [bold]Not available yet[/]: this command needs a trained OV-AVSS checkpoint and the open-vocabulary
    classifier, which are still being built.
    """
    from models.errors import AVSegError

    raise AVSegError(
        "avseg annotate is not available yet in this version: the OV-AVSS predictor (model + CLIP classifier) "
        "is still being built; see the README's roadmap"
    )
