"""The `avseg` Typer app. Each subcommand lives in its own module and is a thin call into `models`.

Heavy imports (torch, the model) happen inside the commands, so `avseg --help` stays fast.
"""

from __future__ import annotations

import os
import signal
import sys
import warnings

import typer

from avseg_cli import annotate_cmd, eval_cmd, prepare_cmd, train_cmd, weights_cmd
from avseg_cli.console import DEBUG, err
from avseg_cli.offline import OFFLINE_OPTION, set_offline

app = typer.Typer(
    name="avseg",
    help=(
        "Open-vocabulary audio-visual semantic segmentation: find the objects that make the sound in a "
        "video, segment them frame by frame and name them from any list of class names.\n\n"
        "Example: avseg annotate video.mp4 --classes pipa,violin"
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


def _version(value: bool) -> None:
    if value:
        from models import __version__

        typer.echo(f"avseg {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks for errors (for bug reports)."),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
    offline: bool = OFFLINE_OPTION,
) -> None:
    """Global options. Example: avseg --debug prepare --root AVSBench-semantic --out data"""
    DEBUG["enabled"] = debug
    from avseg_cli.progress import ByteBar
    from models.download import set_default_progress

    set_default_progress(ByteBar)  # weights a command downloads on first use get a byte bar
    set_offline(offline)  # every command starts from here: a previous in-process run's --offline is dropped


app.command("prepare", no_args_is_help=True)(prepare_cmd.prepare)
app.command("train", no_args_is_help=True)(train_cmd.train)
app.command("eval", no_args_is_help=True)(eval_cmd.evaluate)
app.command("annotate", no_args_is_help=True)(annotate_cmd.annotate)
app.add_typer(weights_cmd.weights_app, name="weights")


TERMINATED = {"signal": False}
"""Set when SIGTERM arrived: the run then ends as an interrupted one (cleanup included), with exit code 143."""


def _terminate_like_ctrl_c(main_pid: int):
    """A SIGTERM handler that interrupts the command the way Ctrl-C does (`KeyboardInterrupt`), so that its
    temporary files are removed and finished outputs kept; child processes forked from this one (data loaders,
    render workers) keep the default behaviour and just end."""

    def handler(signum, frame) -> None:
        if os.getpid() != main_pid:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        TERMINATED["signal"] = True
        raise KeyboardInterrupt

    return handler


def run() -> None:
    """Console-script entry point: runs the app and turns user errors into one line + exit code.

    Click's own usage errors (an unknown option, a value out of range, a missing argument) are one `error:` line
    too, naming the command's --help, instead of click's usage text and boxed message. SIGTERM (`kill`, a job
    scheduler's time limit) ends a command as Ctrl-C does, with exit code 143 instead of 130.
    """
    TERMINATED["signal"] = False
    try:
        previous = signal.signal(signal.SIGTERM, _terminate_like_ctrl_c(os.getpid()))
    except ValueError:  # not the main thread (avseg run from a thread): SIGTERM keeps its handler
        previous = None
    previous_showwarning = warnings.showwarning
    warnings.showwarning = _warning_line
    try:
        _run_app()
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        warnings.showwarning = previous_showwarning


def _warning_line(message, category, filename, lineno, file=None, line=None) -> None:
    """Python warnings (avseg's own and libraries') as one `warning:` line, like every other message."""
    from rich.markup import escape

    err.print(f"[yellow]warning:[/] {escape(' '.join(str(message).split()))}", soft_wrap=True)


def _run_app() -> None:
    """`run` without the signal handling: the app, its errors as one line each, the exit code."""
    from avseg_cli.console import INTERRUPT
    from models.errors import AVSegError

    INTERRUPT["reported"] = False
    try:
        code = app(standalone_mode=False)
    except AVSegError as error:
        if DEBUG["enabled"]:
            raise
        from rich.markup import escape

        err.print(f"[bold red]error:[/] {escape(error.message)}", soft_wrap=True)
        sys.exit(error.exit_code)
    except KeyboardInterrupt:
        err.print("[bold red]terminated[/]" if TERMINATED["signal"] else "[bold red]interrupted[/]")
        sys.exit(143 if TERMINATED["signal"] else 130)
    except Exception as error:
        kinds = {kind.__name__ for kind in type(error).__mro__}  # click's classes, or typer's copy of click
        if "ClickException" in kinds or "Abort" in kinds:
            _exit_for_click_error(error, kinds)
        if DEBUG["enabled"]:  # a bug: one line unless --debug
            raise
        from rich.markup import escape

        err.print(
            f"[bold red]internal error:[/] {escape(f'{type(error).__name__}: {error}')} "
            "(run with --debug for the traceback)",
            soft_wrap=True,
        )
        sys.exit(1)
    code = code if isinstance(code, int) else 0
    if code == 130 and not INTERRUPT["reported"]:  # stopped before the command could say so (typer exits quietly)
        err.print("[bold red]terminated[/]" if TERMINATED["signal"] else "[bold red]interrupted[/]")
    sys.exit(143 if code == 130 and TERMINATED["signal"] else code)


def _exit_for_click_error(error: Exception, kinds: set[str]) -> None:
    """Exit for an exception of click's (`kinds`: the names of its classes): one line, click's exit code."""
    from rich.markup import escape

    if "NoArgsIsHelpError" in kinds:  # `avseg annotate` alone: its help was printed
        sys.exit(2)
    if "ClickException" in kinds:
        context = getattr(error, "ctx", None)
        hint = f" (see: {context.command_path} --help)" if "UsageError" in kinds and context is not None else ""
        err.print(f"[bold red]error:[/] {escape(error.format_message())}{escape(hint)}", soft_wrap=True)
        sys.exit(getattr(error, "exit_code", 2))
    # Abort: click's name for an EOFError that escaped a command, a bug
    if DEBUG["enabled"]:
        raise error
    cause = error.__cause__ or error.__context__
    what = f"{type(cause).__name__}: {cause}" if cause is not None else "aborted"
    err.print(f"[bold red]internal error:[/] {escape(what)} (run with --debug for the traceback)", soft_wrap=True)
    sys.exit(1)


if __name__ == "__main__":
    run()
