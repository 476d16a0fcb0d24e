"""`--offline`: never download weights (global, and on the commands that load models)."""

from __future__ import annotations

import typer

OFFLINE_OPTION = typer.Option(
    False, "--offline", help="Never download weights: a missing one is reported at once in one line naming the "
    "file, where to get it and where to put it (the same as AVSEG_OFFLINE=1). Example: --offline"
)


def set_offline(offline: bool) -> None:
    """Downloads off for the rest of this command when `offline` (on otherwise, unless AVSEG_OFFLINE /
    HF_HUB_OFFLINE say so)."""
    from models.download import set_process_offline

    set_process_offline("--offline" if offline else None)
