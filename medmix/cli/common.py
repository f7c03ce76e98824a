"""What every `medmix` command group shares: the two consoles, the one error exit, the extra check,
and the options more than one command takes (`--from`, `--mirror`).

One module so `medmix`, `medmix eval`, `medmix stats` and `medmix push` fail the same way (one red
line on stderr, exit status 2, long paths kept on one line a user can copy), declare `--from
SOURCE=DIR` and `--mirror` with one help text and parse them alike; the command modules import it
and never each other.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from medmix.core.errors import MedmixError
from medmix.core.extras import COMMANDS, EXTRAS, MissingExtra, extra_providing, require

err_console = Console(stderr=True)  # progress, notes, warnings and errors
out_console = Console()             # results a user may pipe


def fail(exc: Exception) -> NoReturn:
    """A `MedmixError` a user can act on: one line on stderr, exit status 2."""
    # soft wrap: a path in the message stays one line a user can copy. escape: `pip install
    # "medmix[view]"` or a file named `scan[1].dcm` is text, not Rich markup (unescaped, `[view]` vanished)
    err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


F = TypeVar("F", bound=Callable[..., Any])


def needs_extra(command: str) -> Callable[[F], F]:
    """Wrap a command function so a missing extra is one `fail` line, never a traceback.

    `command` must be a key of `medmix.core.extras.COMMANDS` (a KeyError at import otherwise, so no
    command goes undeclared). Before the body runs, the extra's modules are probed; during it, a
    `ModuleNotFoundError` for a module some extra provides (an import the probe list missed) is
    turned into the same line. Any other `ModuleNotFoundError` is a bug and keeps its traceback. A
    `MedmixError` the body lets through (trainer's `ConfigError`) fails like every other command's.
    The wrapper keeps the signature (`functools.wraps`), which is what typer reads.
    """
    own = COMMANDS[command]

    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            try:
                require(command)
                return fn(*args, **kwargs)
            except MedmixError as exc:  # MissingExtra, and any error the body did not turn into `fail` itself
                fail(exc)
            except ModuleNotFoundError as exc:
                name = exc.name or ""
                extra = own if own and name.partition(".")[0] in EXTRAS[own] else extra_providing(name)
                if extra is None:
                    raise
                fail(MissingExtra(command, extra, name))
        return run  # type: ignore[return-value]
    return wrap


# `--from` and `--mirror` mean the same for build, lock, doctor and both evals: declared once, one help text
FromOpt = Annotated[list[str] | None, typer.Option(
    "--from", help="SOURCE=DIR: local upstream files for a source (gated or manual ones); repeatable")]
MirrorOpt = Annotated[str | None, typer.Option(
    "--mirror", help="fetch https://host/path from MIRROR/host/path instead")]


def parse_from(values: list[str] | None) -> dict[str, Path]:
    """`--from SOURCE=DIR` (repeatable) → {source: folder}."""
    result = {}
    for v in values or []:
        if "=" not in v:
            raise typer.BadParameter(f"--from takes SOURCE=DIR, got {v!r}")
        k, d = v.split("=", 1)
        result[k] = Path(d).expanduser()
    return result
