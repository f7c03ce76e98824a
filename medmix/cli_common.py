"""What every `medmix` command group shares: the two consoles, the one error exit, and `--from`.

One module so `medmix`, `medmix eval`, `medmix stats` and `medmix push` fail the same way (one red
line on stderr, exit status 2, long paths kept on one line a user can copy) and parse `--from
SOURCE=DIR` alike; the command modules import it and never each other.
"""

from __future__ import annotations

from pathlib import Path
from typing import NoReturn

import typer
from rich.console import Console

err_console = Console(stderr=True)  # progress, notes, warnings and errors
out_console = Console()             # results a user may pipe


def fail(exc: Exception) -> NoReturn:
    """A `MedmixError` a user can act on: one line on stderr, exit status 2."""
    # soft wrap: a path in the message stays one line a user can copy
    err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def parse_from(values: list[str] | None) -> dict[str, Path]:
    """`--from SOURCE=DIR` (repeatable) → {source: folder}."""
    result = {}
    for v in values or []:
        if "=" not in v:
            raise typer.BadParameter(f"--from takes SOURCE=DIR, got {v!r}")
        k, d = v.split("=", 1)
        result[k] = Path(d).expanduser()
    return result
