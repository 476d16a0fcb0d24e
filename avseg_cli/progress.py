"""A rich implementation of `models.progress.Progress`: bar, counts, rate, ETA and status values."""

from __future__ import annotations

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

    def start(self, description: str, total: int | None = None) -> None:
        self.finish()
        self._task = self._bar.add_task(description, total=total, rate="", status="")

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
