"""The `medmix` command line (typer). Each command is a thin shell over a library function."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from medmix.errors import MedmixError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Reproducible, license-aware medical vision-language pretraining mixtures.")
console = Console(stderr=True)
out_console = Console()


def _parse_from(values: list[str] | None) -> dict[str, Path]:
    result = {}
    for v in values or []:
        if "=" not in v:
            raise typer.BadParameter(f"--from takes SOURCE=DIR, got {v!r}")
        k, d = v.split("=", 1)
        result[k] = Path(d).expanduser()
    return result


def _fail(exc: Exception) -> None:
    console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


@app.command()
def build(
    recipe: str | None = typer.Option(None, "--recipe", "-r", help="built-in recipe name or a YAML path (default: demo)"),
    out: Path = typer.Option(Path("mixture"), "--out", "-o", help="output folder for shards + manifest"),
    workers: int = typer.Option(1, "--workers", "-w", min=1, help="processes for normalize and shard writing"),
    cache: Path = typer.Option(Path(".medmix-cache"), "--cache", help="download + normalized-source cache"),
    from_: list[str] | None = typer.Option(None, "--from", help="SOURCE=DIR: local files for a gated/manual source"),
    accept_license: list[str] | None = typer.Option(None, "--accept-license", help="accept a non-commercial/gated license id"),
    allow_eval: list[str] | None = typer.Option(None, "--allow-eval", help="SOURCE:SPLIT benchmark split to allow in training"),
    mirror: str | None = typer.Option(None, "--mirror", help="fetch https://host/path from MIRROR/host/path instead"),
    plan: bool = typer.Option(False, "--plan", help="print sources, upstreams, licenses and expected rows; download nothing"),
) -> None:
    """Fetch, license-check, normalize, dedup, decontaminate, mix and write Parquet shards + manifest."""
    from medmix.build import BuildOptions
    from medmix.build import build as run_build
    from medmix.recipe import load_recipe

    try:
        r = load_recipe(recipe)
        opts = BuildOptions(out=out, cache=cache, workers=workers, from_dirs=_parse_from(from_),
                            accept=tuple(accept_license or ()), allow_eval=tuple(allow_eval or ()), mirror=mirror)
        if plan:
            from medmix.plan import print_plan
            print_plan(r, opts, out_console)
            return
        from medmix.progress import BuildProgress
        with BuildProgress(console) as progress:
            manifest = run_build(r, opts, progress=progress.update, log=lambda m: console.print(m, style="yellow"))
    except MedmixError as exc:
        _fail(exc)
        return
    from medmix.report import print_build_summary
    print_build_summary(manifest, out, out_console)


@app.command()
def lock(
    recipe: str = typer.Option(..., "--recipe", "-r", help="built-in recipe name or a YAML path"),
    out: Path | None = typer.Option(None, "--out", "-o", help="lock file to write (default: manifests/<recipe>.lock.json)"),
    cache: Path = typer.Option(Path(".medmix-cache"), "--cache", help="download cache (a following build reuses it)"),
    offline: bool = typer.Option(False, "--offline", help="write the adapters' own pins; null where unknown"),
    mirror: str | None = typer.Option(None, "--mirror", help="fetch https://host/path from MIRROR/host/path instead"),
) -> None:
    """Pin every upstream file of a recipe (Hub commit, sha256, size) into its lock file."""
    from medmix.build import BuildOptions
    from medmix.lock import default_lock_path, lock_recipe
    from medmix.recipe import load_recipe
    from medmix.writer import atomic_write_json

    try:
        r = load_recipe(recipe)
        result = lock_recipe(r, BuildOptions(out=Path("."), cache=cache, mirror=mirror), offline=offline)
    except MedmixError as exc:
        _fail(exc)
        return
    target = out or default_lock_path(r.name)
    atomic_write_json(target, result)
    files = [e for s in result["sources"].values() for e in s.values()]
    unpinned = sum(1 for e in files if not e["sha256"])
    console.print(f"wrote {target}: {len(files)} upstream file(s), {unpinned} without sha256"
                  + (" (run without --offline on a machine with network to fill them)" if unpinned else ""))


@app.command()
def sources(as_json: bool = typer.Option(False, "--json", help="print the registry as JSON")) -> None:
    """List every source adapter: license, domain, tasks, evaluation status, upstream."""
    from medmix.sources import registry

    described = [cls.describe() for cls in registry().values()]
    if as_json:
        sys.stdout.write(json.dumps(described, indent=2) + "\n")
        return
    table = Table(title=f"medmix sources ({len(described)})")
    for col in ("name", "domain", "tasks", "license", "evaluation", "upstream"):
        table.add_column(col, overflow="fold")
    for d in described:
        ev = "benchmark" if d["benchmark"] else ", ".join(d["eval_splits"])
        up = "manual (--from)" if d["manual"] else (d["upstream"][0] if d["upstream"] else "")
        table.add_row(d["name"], d["domain"], ", ".join(d["tasks"]), d["license"], ev, up)
    out_console.print(table)


@app.command()
def view(
    mixture: str = typer.Argument(..., help="a mixture folder written by `medmix build`"),
    port: int = typer.Option(8765, "--port", "-p", min=0, max=65535, help="TCP port"),
    host: str = typer.Option("127.0.0.1", "--host", help="address to bind; anything but loopback is reachable by others"),
) -> None:
    """Browse a mixture in the browser: overview, samples, removed rows beside what they matched, quarantine."""
    try:
        from medmix.view.app import serve
    except ImportError as exc:
        _fail(MedmixError(f"medmix view needs its extra: pip install 'medmix[view]' ({exc})"))
        return
    try:
        serve(mixture, host=host, port=port, warn=lambda m: console.print(m, style="yellow", highlight=False))
    except MedmixError as exc:
        _fail(exc)


def _register_extensions() -> None:
    """Commands whose code lives in its own module (and, for train/eval, its own extras)."""
    from medmix.evaluation.cli import eval_classify, eval_vqa
    from medmix.stats_cli import push_command, stats_command
    from trainer.cli import train_command

    app.command("stats")(stats_command)
    app.command("push")(push_command)
    app.command("train")(train_command)
    eval_app = typer.Typer(no_args_is_help=True, help="Evaluate: VQA BLEU-1 and the classification transfer suite.")
    eval_app.command("vqa")(eval_vqa)
    eval_app.command("classify")(eval_classify)
    app.add_typer(eval_app, name="eval")


_register_extensions()


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    app()
