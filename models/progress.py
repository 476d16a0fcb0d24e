"""Progress reporting passed into long-running loops.

Library code never imports rich: it receives a `Progress` object and calls it. The CLI passes a rich
implementation (`avseg_cli.progress.RichProgress`); tests and library users get `NullProgress`.
"""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    """What a long loop reports: one task at a time, with an optional total and a status text."""

    def start(self, description: str, total: int | None = None, completed: int = 0) -> None:
        """Begin a new task (a scan, an epoch, a video) with `total` steps if known; `completed` of them are done
        already (a resumed run): shown as done, not counted in the rate."""

    def advance(self, steps: int = 1, **status: object) -> None:
        """Move the current task forward by `steps`; `status` values (loss=0.3, lr=1e-4) are shown."""

    def finish(self) -> None:
        """Close the current task."""


class NullProgress:
    """A `Progress` that reports nothing."""

    def start(self, description: str, total: int | None = None, completed: int = 0) -> None:
        pass

    def advance(self, steps: int = 1, **status: object) -> None:
        pass

    def finish(self) -> None:
        pass
