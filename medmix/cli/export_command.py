"""`medmix export`: a typer command over `medmix.export.export`, registered by medmix/cli/main.py.

Progress (rows, rate, ETA) and warnings go to stderr; the summary line to stdout; errors exit 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from medmix.cli.common import err_console, fail, out_console
from medmix.core.errors import MedmixError
from medmix.core.layout import DEFAULT_SPLIT


class _Rate(ProgressColumn):
    def render(self, task) -> Text:  # noqa: ANN001 - rich's Task
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f} rows/s" if speed else "? rows/s", style="progress.data.speed")


def export_command(
    mixture: Annotated[Path, typer.Argument(help="a mixture folder written by `medmix build`")],
    out: Annotated[Path, typer.Argument(help="new (or empty) folder to write the export into")],
    fmt: Annotated[str, typer.Option("--format", "-f", help="webdataset, llava, sharegpt or mds")] = "webdataset",
    workers: Annotated[int, typer.Option("--workers", "-w", min=1, help="processes that encode rows (output "
                                         "bytes do not depend on it)")] = 1,
    shard_size: Annotated[str | None, typer.Option("--shard-size", help="rows (1000) or bytes (512MB, 64MiB) per "
                                                   "output file; 0: one file (default: webdataset 512MB, mds "
                                                   "64MiB, llava/sharegpt one file)")] = None,
    split: Annotated[str, typer.Option("--split", help="which split of the mixture")] = DEFAULT_SPLIT,
    template: Annotated[Path | None, typer.Option("--template", help="YAML of per-task conversation templates "
                                                  "(default: the bundled trainer's)")] = None,
    allow_nonredistributable: Annotated[bool, typer.Option(
        "--allow-nonredistributable", help="export rows whose terms forbid redistribution (you hold the rights; "
        "the README says so)")] = False,
) -> None:
    """Export a mixture as WebDataset tar shards, LLaVA / ShareGPT JSON + images, or MDS, with per-row licenses."""
    from medmix.export import export

    def log(message: str) -> None:
        err_console.print(message, style="bold red" if message.startswith("WARNING") else None, highlight=False,
                          soft_wrap=True)

    progress = Progress(SpinnerColumn(), TextColumn(f"export {fmt}"), BarColumn(), MofNCompleteColumn(), _Rate(),
                        TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=err_console)
    task = None

    def advance(done: int, total: int) -> None:
        nonlocal task
        if task is None:
            task = progress.add_task("rows", total=total)
        progress.update(task, completed=done)

    try:
        with progress:
            result = export(mixture, out, fmt, split=split, shard_size=shard_size, workers=workers,
                            template=template, allow_nonredistributable=allow_nonredistributable, log=log,
                            progress=advance)
    except MedmixError as exc:
        fail(exc)
    index = result.index
    extra = f", {index['image_files']:,} image file(s)" if index["image_files"] is not None else ""
    out_console.print(f"exported {index['rows']:,} rows to {result.out} ({fmt}, {len(index['shards'])} shard(s)"
                      f"{extra})", highlight=False, soft_wrap=True)
