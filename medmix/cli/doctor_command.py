"""`medmix doctor`: the command over `medmix.doctor.check_recipe`, and its rich table.

The checks live in `medmix.doctor` so a scheduler can run them before a build without typer; this
module only turns a recipe name and flags into options and the result into a table and an exit code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from medmix.cli.common import FromOpt, MirrorOpt, parse_from
from medmix.core.errors import MedmixError
from medmix.doctor import Check, check_recipe, report


def print_table(checks: list[Check], console: Any, title: str) -> None:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=escape(title))
    for col in ("source", "file", "status", "size", "detail"):
        table.add_column(col, overflow="fold")
    style = {"ok": "green", "unpinned": "yellow"}
    for c in checks:
        # an upstream's answer (detail) and file names are data: escaped, never read as markup
        table.add_row(escape(c.source), escape(c.file), f"[{style.get(c.status, 'bold red')}]{c.status}[/]",
                      "" if c.size is None else f"{c.size:,}", escape(c.detail))
    console.print(table)


def _run_doctor(recipe_name: str, as_json: bool, mirror: str | None, from_dirs: dict[str, Path], lock: Path | None,
            hf_endpoint: str | None = None) -> int:
    from rich.console import Console
    from rich.markup import escape

    from medmix.planning import BuildOptions
    from medmix.recipe import load_recipe

    err = Console(stderr=True)
    try:
        r = load_recipe(recipe_name)
        opts = BuildOptions(out=Path("."), cache=Path(".medmix-cache"), from_dirs=from_dirs, mirror=mirror,
                            hf_endpoint=hf_endpoint, lock=lock)
        checks = check_recipe(r, opts)
    except MedmixError as exc:
        err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        return 2
    result = report(checks)
    verdict = "all upstreams answer as pinned" if result["ok"] else "some upstreams are gone, moved or changed"
    print_table(checks, err if as_json else Console(), f"medmix doctor: {r.name}: {verdict}")
    if as_json:
        print(json.dumps({"recipe": r.name, **result}, indent=2))
    return 0 if result["ok"] else 1


def doctor_command(
    recipe: Annotated[str, typer.Option("--recipe", "-r", help="built-in recipe name or a YAML path")] = "demo",
    as_json: Annotated[bool, typer.Option("--json", help="print the result as JSON on stdout (table on "
                                          "stderr)")] = False,
    mirror: MirrorOpt = None,
    from_: FromOpt = None,
    lock: Annotated[Path | None, typer.Option("--lock", help="lock file (default: the recipe's, when there is "
                                              "one)")] = None,
) -> None:
    """Check every upstream of a recipe (answers? moved? changed? manual files there?) without downloading."""
    raise typer.Exit(_run_doctor(recipe, as_json, mirror, parse_from(from_), lock))
