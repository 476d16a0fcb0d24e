"""`avseg prepare`: thin wrapper around `models.pipeline.prepare.prepare_dataset`."""

from __future__ import annotations

from pathlib import Path

import typer

from avseg_cli.console import err, out, report_interrupt, warn

MAX_EXAMPLES_SHOWN = 3


def prepare(
    root: Path = typer.Option(
        ..., "--root", help="The AVSBench-semantic folder (holds metadata.csv, v1s/, v1m/, v2/); it is only read. "
        "Example: --root ~/datasets/AVSBench-semantic",
    ),
    out_dir: Path = typer.Option(
        ..., "--out", help="DATA_DIR to write: dataset.json, splits/{train,val,test}.jsonl, summary.json "
        "(media stay in --root). Example: --out data/avsbench-ov",
    ),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Preview: compute the split from metadata.csv alone, without checking any file, "
        "and show it; nothing is written. Example: --dry-run",
    ),
    strict: bool = typer.Option(
        False, "--strict", help="Exit with code 1 and write nothing if any problem is found "
        "(missing or unreadable files, unknown label colours, short audio, unknown a_obj tokens). Example: --strict",
    ),
    include_v1m: bool = typer.Option(
        False, "--include-v1m", help="Also use the v1m subset (left out of AVSBench-OV): all of it in val/test, "
        "base-only videos in train. Example: --include-v1m",
    ),
    workers: int = typer.Option(
        4, "--workers", min=1, help="Threads checking videos in parallel. Example: --workers 8",
    ),
) -> None:
    """Build the AVSBench-OV split (40 base / 30 novel classes) from an AVSBench-semantic download.

    Example: avseg prepare --root ~/datasets/AVSBench-semantic --out data

    Train: v1s/v2 train videos whose sounding classes are all base. Val, test: all v1s/v2 videos.

    Frames, labels and audio of every selected video are checked; problems go to a table and summary.json.
    """
    from avseg_cli.progress import stderr_progress
    from models.pipeline.prepare import prepare_dataset

    try:
        with stderr_progress(unit="videos", transient=True) as progress:
            result = prepare_dataset(
                root, out_dir, dry_run=dry_run, include_v1m=include_v1m, strict=strict, workers=workers,
                progress=progress,
            )
    except KeyboardInterrupt:  # the split is written only once every video was checked
        report_interrupt(f": nothing was written to {_escape(str(out_dir))}; run the same command again")
        raise typer.Exit(130) from None
    _print_tables(result)
    if result.nothing_usable:
        err.print(
            f"[bold red]error:[/] {_none_usable(len(result.excluded))}: is {_escape(str(root))} the whole "
            f"AVSBench-semantic download (v1s/, v1m/, v2/ beside metadata.csv)? Nothing was written to "
            f"{_escape(str(out_dir))}",
            soft_wrap=True,
        )
        raise typer.Exit(1)
    for name in result.empty_splits:
        warn(f"the {name} split has no usable video")
    if result.written:
        out.print(f"wrote the split to {out_dir} (dataset.json, splits/, summary.json)", soft_wrap=True)
    elif result.dry_run and not (strict and result.problems):
        out.print(f"dry run: nothing was written to {_escape(str(out_dir))}", soft_wrap=True)
    else:
        err.print(
            f"[bold red]error:[/] {result.problem_count} problem(s) found with --strict; nothing was written to "
            f"{_escape(str(out_dir))}",
            soft_wrap=True,
        )
        raise typer.Exit(1)


def _none_usable(left_out: int) -> str:
    if left_out == 0:
        return "metadata.csv selects no AVSBench-OV video"
    return f"none of the {left_out:,} selected videos could be used (the problems are listed above)"


def _print_tables(result) -> None:
    from rich.table import Table

    if result.problems:
        table = Table(title="Problems", title_justify="left")
        table.add_column("kind")
        table.add_column("count", justify="right")
        table.add_column("first examples", overflow="fold")
        for problem in result.problems:
            examples = list(problem.examples[:MAX_EXAMPLES_SHOWN])
            if problem.count > len(examples):
                examples.append(f"... and {problem.count - len(examples)} more")
            table.add_row(_escape(problem.kind), f"{problem.count:,}", _escape("\n".join(examples)))
        out.print(table)
    elif not result.dry_run:
        out.print("no problems found")
    if result.excluded:
        more = len(result.excluded) - MAX_EXAMPLES_SHOWN
        listed = ", ".join(result.excluded[:MAX_EXAMPLES_SHOWN]) + (f" and {more:,} more" if more > 0 else "")
        out.print(_escape(f"{len(result.excluded):,} video(s) left out (no frames folder, or a frame, label or audio "
                          f"file missing or unreadable): {listed}"), soft_wrap=True)

    if result.dry_run:
        out.print("dry run: split from metadata.csv only, files were not checked")
    table = Table(title="AVSBench-OV split", title_justify="left")
    table.add_column("split")
    table.add_column("videos", justify="right")
    table.add_column("frames", justify="right")
    for name, count in result.counts.items():
        table.add_row(name, f"{count.videos:,}", f"{count.frames:,}")
    out.print(table)


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)
