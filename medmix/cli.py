"""The `medmix` command line (typer). Each command is a thin shell over a library function."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

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
    recipe: Optional[str] = typer.Option(None, "--recipe", "-r", help="built-in recipe name or a YAML path (default: demo)"),
    out: str = typer.Option("mixture", "--out", "-o",
                            help="output folder or URL (s3://bucket/mix, gs://..., any fsspec URL) for shards + manifest"),
    workers: Optional[int] = typer.Option(None, "--workers", "-w", min=1,
                                          help="local: processes for normalize and shard writing (default 1); "
                                               "ray: most tasks in flight (default: as many as the cluster takes)"),
    cache: str = typer.Option(".medmix-cache", "--cache", help="download + normalized-source cache (folder or URL)"),
    executor: str = typer.Option("local", "--executor", help="where units and shards run: local (process pool) or ray"),
    address: Optional[str] = typer.Option(None, "--address",
                                          help="Ray cluster to join (auto, ray://host:10001); default: start one here"),
    storage_option: Optional[List[str]] = typer.Option(None, "--storage-option",
                                                       help="KEY=VALUE passed to fsspec for URL --out/--cache "
                                                            "(e.g. endpoint_url=http://minio:9000)"),
    from_: Optional[List[str]] = typer.Option(None, "--from", help="SOURCE=DIR: local files for a gated/manual source"),
    accept_license: Optional[List[str]] = typer.Option(None, "--accept-license", help="accept a non-commercial/gated license id"),
    allow_eval: Optional[List[str]] = typer.Option(None, "--allow-eval", help="SOURCE:SPLIT benchmark split to allow in training"),
    mirror: Optional[str] = typer.Option(None, "--mirror", help="fetch https://host/path from MIRROR/host/path instead"),
    plan: bool = typer.Option(False, "--plan", help="print sources, upstreams, licenses and expected rows; download nothing"),
) -> None:
    """Fetch, license-check, normalize, dedup, decontaminate, mix and write Parquet shards + manifest."""
    from medmix.build import BuildOptions, build as run_build
    from medmix.recipe import load_recipe

    try:
        from medmix.storage import is_remote, local_path, parse_storage_options

        r = load_recipe(recipe)
        opts = BuildOptions(out=out if is_remote(out) else local_path(out),
                            cache=cache if is_remote(cache) else local_path(cache),
                            workers=workers if workers is not None else (1 if executor == "local" else 0),
                            from_dirs=_parse_from(from_), accept=tuple(accept_license or ()),
                            allow_eval=tuple(allow_eval or ()), mirror=mirror, executor=executor, address=address,
                            storage_options=parse_storage_options(storage_option))
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
    print_build_summary(manifest, opts.out, out_console)


@app.command()
def lock(
    recipe: str = typer.Option(..., "--recipe", "-r", help="built-in recipe name or a YAML path"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="lock file to write (default: manifests/<recipe>.lock.json)"),
    cache: Path = typer.Option(Path(".medmix-cache"), "--cache", help="download cache (a following build reuses it)"),
    offline: bool = typer.Option(False, "--offline", help="write the adapters' own pins; null where unknown"),
    mirror: Optional[str] = typer.Option(None, "--mirror", help="fetch https://host/path from MIRROR/host/path instead"),
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
