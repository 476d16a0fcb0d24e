"""`models.progress.Progress` for the command line: a rich bar (counts, rate, ETA, status values) on a terminal,
plain lines when stderr is a log file or a pipe (`LineProgress`)."""

from __future__ import annotations

import time
from typing import Callable

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress as _RichProgressBar,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from avseg_cli.console import err


class LineProgress:
    """Progress as plain lines, for a stderr that is not a terminal (where rich draws a live bar only once, when
    it stops): one line when a task that did something ends, and one at most every `interval_s` while it runs,
    e.g. `clip.mp4: 120/250 frames, 24.1 frames/s, 42 s, eta 5 s`. Nothing for a task that never advanced.

    Args:
        unit: what a step is ("frames", "it", "video").
        interval_s: least time between two running lines.
        console: where the lines go (stderr); clock: seconds (tests replace it).
    """

    def __init__(self, unit: str = "it", interval_s: float = 30.0, console=None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.unit = unit
        self.interval_s = float(interval_s)
        self.console = console if console is not None else err
        self.clock = clock
        self._description: str | None = None
        self._total: int | None = None
        self._completed = self._done_before = 0  # steps done, of which before this run (a resumed one)
        self._status = ""
        self._started = self._last_line = 0.0

    def __enter__(self) -> "LineProgress":
        return self

    def __exit__(self, *exc) -> None:
        self.finish()

    def start(self, description: str, total: int | None = None, completed: int = 0) -> None:
        self.finish()
        self._description, self._total, self._status = description, total, ""
        self._completed = self._done_before = completed
        self._started = self._last_line = self.clock()

    def advance(self, steps: int = 1, **status: object) -> None:
        if self._description is None:
            return
        self._completed += steps
        if status:
            self._status = " ".join(f"{k}={_fmt(v)}" for k, v in status.items())
        now = self.clock()
        if now - self._last_line >= self.interval_s:
            self._last_line = now
            self._print(now, final=False)

    def finish(self) -> None:
        if self._description is not None and self._completed > self._done_before:
            self._print(self.clock(), final=True)
        self._description = None

    def _print(self, now: float, final: bool) -> None:
        from rich.markup import escape

        elapsed = max(now - self._started, 0.0)
        done = self._completed - self._done_before  # in this run: the rate and ETA are this run's
        total = None if self._total is None else max(self._total, self._completed)  # an estimate may be passed
        count = f"{self._completed}/{total}" if total is not None else str(self._completed)
        parts = [f"{count} {self.unit}"]
        if elapsed > 0:
            parts.append(f"{done / elapsed:.3g} {self.unit}/s")
        parts.append(f"{'in ' if final else ''}{elapsed:.0f} s")
        if not final and total and done > 0 and elapsed > 0:
            parts.append(f"eta {(total - self._completed) * elapsed / done:.0f} s")
        if self._status:
            parts.append(self._status)
        self.console.print(escape(f"{self._description}: {', '.join(parts)}"), soft_wrap=True, highlight=False)


def stderr_progress(unit: str = "it", transient: bool = False) -> "RichProgress | LineProgress":
    """The progress display for stderr: a `RichProgress` bar on a terminal, `LineProgress` lines otherwise (a log
    file, a pipe). Use it as a context manager around the long-running call."""
    return RichProgress(unit, transient) if err.is_terminal else LineProgress(unit)


class RichProgress:
    """Progress bar on stderr; use as a context manager around the long-running call."""

    def __init__(self, unit: str = "it", transient: bool = False) -> None:
        self._bar = _RichProgressBar(
            SpinnerColumn(),
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[status]}"),
            console=err,
            transient=transient,
        )
        self._unit = unit
        self._task = None

    def __enter__(self) -> "RichProgress":
        self._bar.start()
        return self

    def __exit__(self, *exc) -> None:
        self._bar.stop()

    def start(self, description: str, total: int | None = None, completed: int = 0) -> None:
        self.finish()
        self._task = self._bar.add_task(description, total=total, completed=completed, rate="", status="")

    def advance(self, steps: int = 1, **status: object) -> None:
        if self._task is None:
            return
        self._bar.advance(self._task, steps)
        task = self._bar.tasks[self._task]
        speed = task.speed
        rate = f"{speed:.2f} {self._unit}/s" if speed else ""
        text = " ".join(f"{k}={_fmt(v)}" for k, v in status.items())
        self._bar.update(self._task, rate=rate, status=text)

    def finish(self) -> None:
        if self._task is not None:
            self._bar.stop_task(self._task)
            self._task = None


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


class ByteBar:
    """A rich byte progress bar for one download, driven by `progress(done, total)` callbacks.

    Made on the first call; `close()` removes it. Where the terminal cannot show a second live display
    (rich before 14 inside another bar or spinner), one line names the download instead.
    """

    def __init__(self, label: str) -> None:
        self.label = label
        self._progress: _RichProgressBar | None = None
        self._task = None
        self._announced = False

    def __call__(self, done: int, total: int | None) -> None:
        if self._progress is None and not self._announced:
            from rich.errors import LiveError
            from rich.progress import DownloadColumn, TransferSpeedColumn

            bar = _RichProgressBar(
                TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                TimeRemainingColumn(), console=err, transient=True,
            )
            try:
                bar.start()
            except LiveError:
                self._announced = True
                size = f" ({total / 1e6:.0f} MB)" if total else ""
                err.print(f"downloading {self.label}{size} ...")
                return
            self._progress = bar
            self._task = bar.add_task(self.label, total=total)
        if self._progress is not None:
            self._progress.update(self._task, completed=done, total=total)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
