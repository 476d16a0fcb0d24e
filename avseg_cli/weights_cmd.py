"""`avseg weights`: list the named weights and where they are, fetch one, convert an official checkpoint."""

from __future__ import annotations

from pathlib import Path

import typer

weights_app = typer.Typer(
    name="weights",
    help="Weights avseg uses: where they come from, whether they are cached, and fetching / converting them. "
    "Cache folder: $AVSEG_CACHE (default ~/.cache/avseg). Example: avseg weights list",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


def _size(megabytes: int | None) -> str:
    if megabytes is None:
        return "?"
    return f"~{megabytes / 1000:.1f} GB" if megabytes >= 1000 else f"~{megabytes} MB"


@weights_app.command("list")
def list_weights() -> None:
    """Show every named weight: what it is for, its size, whether it is on this machine and where.

    Example: avseg weights list
    """
    from rich.table import Table

    from avseg_cli.console import out
    from models.hub_models import hub_label
    from models.weights import (
        REGISTRY, SOURCE_HF, SOURCE_MANUAL, SOURCE_OPEN_CLIP, cache_dir, cached_file_problem, cached_path,
    )

    table = Table(title=f"avseg weights (cache: {cache_dir()})", title_justify="left")
    # names, paths and URLs fold onto more lines rather than being cut with "…" (e.g. piped at 80 columns)
    table.add_column("name", overflow="fold")
    table.add_column("for")
    table.add_column("size", justify="right", no_wrap=True)
    table.add_column("cached", no_wrap=True)
    table.add_column("path / how to get it", overflow="fold")
    for weight in REGISTRY.values():
        path = cached_path(weight)
        if weight.source == SOURCE_HF:
            where = f"{hub_label(weight)}: " + (
                str(path) if path is not None else f"avseg weights fetch {weight.name} (Hugging Face cache)"
            )
        elif path is not None:
            where = str(path)
        elif weight.source == SOURCE_MANUAL:
            where = f"manual: {weight.url} -> {cache_dir() / weight.filename}"
        elif weight.source == SOURCE_OPEN_CLIP:
            where = f"avseg weights fetch {weight.name} (Hugging Face cache)"
        else:
            where = f"avseg weights fetch {weight.name} -> {cache_dir() / weight.filename}"
        problem = None if path is None else cached_file_problem(weight, path)
        if problem is not None:
            cached = "[red]damaged[/]"
            again = (f"get it again: {weight.url}" if weight.source == SOURCE_MANUAL
                     else f"avseg weights fetch --force {weight.name}")
            where = f"{path}: {problem}; {again}"
        else:
            cached = "[green]yes[/]" if path is not None else "no"
        table.add_row(weight.name, weight.purpose, _size(weight.approx_size_mb), cached, where)
    out.print(table)


@weights_app.command("fetch", no_args_is_help=True)
def fetch(
    names: list[str] = typer.Argument(
        ..., metavar="NAME...", help="Names from `avseg weights list`, or `zeroshot` for every model the zero-shot "
        "method needs. Example: vggish", show_default=False,
    ),
    force: bool = typer.Option(False, "--force", help="Download again even if the file is cached. Example: --force"),
) -> None:
    """Download named weights into the cache (checked against their hash when one is known). Hugging Face
    models (e.g. sam-vit-base) are downloaded at their pinned commit into the Hugging Face cache.

    Examples:

    avseg weights fetch vggish

    avseg weights fetch zeroshot      # clap-htsat-unfused grounding-dino-tiny sam-vit-base clip-vit-b-16
    """
    from rich.markup import escape

    from avseg_cli.console import err, out, report_interrupt
    from avseg_cli.progress import ByteBar
    from models.errors import AVSegError
    from models.weights import ZEROSHOT_WEIGHTS, fetch_weight, get_weight

    expanded: list[str] = []
    for name in names:
        for item in (ZEROSHOT_WEIGHTS if name == "zeroshot" else (name,)):
            if item not in expanded:
                expanded.append(item)
    weights = [get_weight(name) for name in expanded]  # every name is checked before anything is downloaded
    failed = 0
    for weight in weights:  # one failure does not stop the others: each gets its line
        bar = ByteBar(weight.name)
        try:
            path = fetch_weight(weight, force=force, progress=bar)
        except KeyboardInterrupt:
            bar.close()
            report_interrupt(f": {weight.name} was not downloaded; run the same command again")
            raise typer.Exit(130) from None
        except AVSegError as error:
            if len(weights) == 1:
                raise
            bar.close()
            err.print(f"[bold red]error:[/] {escape(error.message)}", soft_wrap=True)
            failed += 1
            continue
        finally:
            bar.close()
        out.print(f"{weight.name}: {path}")
    if failed:
        raise typer.Exit(1)


@weights_app.command("convert", no_args_is_help=True)
def convert(
    official: Path = typer.Argument(..., help="Official OV-AVSS checkpoint. Example: model_ov_avss_r50.pth"),
    output: Path = typer.Argument(..., help="avseg checkpoint to write. Example: ov_avss_r50.pt"),
    force: bool = typer.Option(False, "--force", help="Replace OUTPUT if it exists. Example: --force"),
) -> None:
    """Convert an official OV-AVSS checkpoint (detectron2 format) into an avseg checkpoint that loads faster
    and says what it holds (model config, VGGish and CLIP when present).

    Example: avseg weights convert model_ov_avss_r50.pth ov_avss_r50.pt
    """
    from avseg_cli.console import out
    from models.official_conversion import convert_official_checkpoint

    report = convert_official_checkpoint(official, output, overwrite=force)
    out.print(report.summary(), soft_wrap=True)
