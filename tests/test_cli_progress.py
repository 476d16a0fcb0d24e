"""The command line's progress where stderr is not a terminal (a log file, a pipe): plain lines, and nothing
at all for work that never started (so a failing command's stderr is its one error line)."""

from __future__ import annotations

import io

from rich.console import Console

from avseg_cli.progress import LineProgress, RichProgress, stderr_progress


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def lines_of(console: Console) -> list[str]:
    return console.file.getvalue().splitlines()


def make(interval_s: float = 30.0) -> tuple[LineProgress, Clock, Console]:
    console = Console(file=io.StringIO(), width=200)
    clock = Clock()
    return LineProgress("frames", interval_s=interval_s, console=console, clock=clock), clock, console


def test_a_line_when_a_task_ends_and_at_most_one_per_interval_while_it_runs():
    progress, clock, console = make(interval_s=30.0)
    with progress:
        progress.start("clip.mp4", total=100)
        for step in range(100):
            clock.now += 1.0  # 1 s per frame: lines at 30, 60 and 90 s, then the final one
            progress.advance(1, loss=0.123456)
    lines = lines_of(console)
    assert lines == [
        "clip.mp4: 30/100 frames, 1 frames/s, 30 s, eta 70 s, loss=0.1235",
        "clip.mp4: 60/100 frames, 1 frames/s, 60 s, eta 40 s, loss=0.1235",
        "clip.mp4: 90/100 frames, 1 frames/s, 90 s, eta 10 s, loss=0.1235",
        "clip.mp4: 100/100 frames, 1 frames/s, in 100 s, loss=0.1235",
    ]


def test_nothing_for_a_task_that_never_advanced_and_each_task_its_own_line():
    progress, clock, console = make()
    with progress:
        progress.start("broken.mp4", total=75)  # fails before its first frame
        progress.start("[odd] name.mp4")  # the next task ends the first; no total known
        clock.now += 2.0
        progress.advance(4)
    assert lines_of(console) == ["[odd] name.mp4: 4 frames, 2 frames/s, in 2 s"]
    progress.advance(3)  # after the block: no task, nothing
    assert len(lines_of(console)) == 1


def test_a_total_that_was_an_estimate_never_reads_below_the_count():
    """A video's frame count is the header's estimate: an MPEG-PS header said 18, 20 frames were decoded."""
    progress, clock, console = make(interval_s=10.0)
    with progress:
        progress.start("mp2.mpg", total=18)
        for _ in range(20):
            clock.now += 1.0
            progress.advance(1)
    assert lines_of(console) == [
        "mp2.mpg: 10/18 frames, 1 frames/s, 10 s, eta 8 s",
        "mp2.mpg: 20/20 frames, 1 frames/s, 20 s, eta 0 s",
        "mp2.mpg: 20/20 frames, 1 frames/s, in 20 s",
    ]


def test_a_resumed_task_counts_from_where_it_was_but_rates_only_this_run():
    progress, clock, console = make(interval_s=30.0)
    with progress:
        progress.start("training", total=100, completed=40)  # 40 steps done by an earlier run
        for _ in range(30):
            clock.now += 2.0
            progress.advance(1)
    assert lines_of(console) == [
        "training: 55/100 frames, 0.5 frames/s, 30 s, eta 90 s",
        "training: 70/100 frames, 0.5 frames/s, 60 s, eta 60 s",
        "training: 70/100 frames, 0.5 frames/s, in 60 s",
    ]
    rich = RichProgress("it")
    rich.start("training", total=100, completed=40)
    task = rich._bar.tasks[0]
    assert (task.completed, task.total, task.speed) == (40, 100, None)


def test_stderr_progress_is_a_bar_on_a_terminal_only(monkeypatch):
    from avseg_cli import console

    monkeypatch.setattr(type(console.err), "is_terminal", property(lambda self: False))
    assert isinstance(stderr_progress("it"), LineProgress)
    monkeypatch.setattr(type(console.err), "is_terminal", property(lambda self: True))
    assert isinstance(stderr_progress("it"), RichProgress)
