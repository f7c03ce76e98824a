"""The `medmix` command line (typer). Each command is a thin shell over a library function."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from medmix.cli_common import err_console, fail, out_console, parse_from
from medmix.errors import MedmixError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Reproducible, license-aware medical vision-language pretraining mixtures.")
FromOpt = Annotated[list[str] | None, typer.Option("--from", help="SOURCE=DIR: local files for a gated/manual source")]
MirrorOpt = Annotated[str | None, typer.Option("--mirror",
                                                help="fetch https://host/path from MIRROR/host/path instead")]


@app.command()
def build(
    recipe: Annotated[str | None, typer.Option("--recipe", "-r", help="built-in recipe name or a YAML path "
                                               "(default: demo)")] = None,
    out: Annotated[str, typer.Option("--out", "-o", help="output folder or URL (s3://bucket/mix, gs://..., any "
                                     "fsspec URL) for shards + manifest")] = "mixture",
    workers: Annotated[int | None, typer.Option("--workers", "-w", min=1,
                                                help="local: processes for normalize and shard writing (default 1); "
                                                     "ray: most tasks in flight (default: as many as the cluster "
                                                     "takes)")] = None,
    cache: Annotated[str, typer.Option("--cache", help="download + normalized-source cache (folder or "
                                       "URL)")] = ".medmix-cache",
    executor: Annotated[str, typer.Option("--executor", help="where units and shards run: local (process pool) "
                                          "or ray")] = "local",
    address: Annotated[str | None, typer.Option("--address", help="Ray cluster to join (auto, ray://host:10001); "
                                                "default: start one here")] = None,
    storage_option: Annotated[list[str] | None, typer.Option("--storage-option", help="KEY=VALUE passed to fsspec "
                                                             "for URL --out/--cache (e.g. "
                                                             "endpoint_url=http://minio:9000)")] = None,
    from_: FromOpt = None,
    accept_license: Annotated[list[str] | None, typer.Option("--accept-license",
                                                             help="accept a non-commercial/gated license id")] = None,
    allow_eval: Annotated[list[str] | None, typer.Option("--allow-eval", help="SOURCE:SPLIT benchmark split to "
                                                         "allow in training")] = None,
    mirror: MirrorOpt = None,
    plan: Annotated[bool, typer.Option("--plan", help="print sources, upstreams, licenses and expected rows; "
                                       "download nothing")] = False,
    verify: Annotated[bool, typer.Option("--verify", help="hash every file of --from/local folders, not only "
                                         "metadata, so same-size same-mtime replacements are seen")] = False,
) -> None:
    """Fetch, license-check, normalize, dedup, decontaminate, mix and write Parquet shards + manifest."""
    from medmix.build import build as run_build
    from medmix.planning import BuildOptions
    from medmix.recipe import load_recipe

    try:
        from medmix.storage import is_remote, local_path, parse_storage_options

        r = load_recipe(recipe)
        opts = BuildOptions(out=out if is_remote(out) else local_path(out),
                            cache=cache if is_remote(cache) else local_path(cache),
                            workers=workers if workers is not None else (1 if executor == "local" else 0),
                            from_dirs=parse_from(from_), accept=tuple(accept_license or ()),
                            allow_eval=tuple(allow_eval or ()), mirror=mirror, executor=executor, address=address,
                            storage_options=parse_storage_options(storage_option), verify=verify)
        if plan:
            from medmix.preview import expected_rows
            _print_plan(r.name, expected_rows(r, opts))
            return
        from medmix.progress import BuildProgress
        with BuildProgress(err_console) as progress:
            manifest = run_build(r, opts, progress=progress.update, log=lambda m: err_console.print(m, style="yellow"))
    except MedmixError as exc:
        fail(exc)
    from medmix.report import print_build_summary
    print_build_summary(manifest, opts.out, out_console)


def _print_plan(recipe_name: str, rows: list[dict]) -> None:
    table = Table(title=f"plan for recipe {recipe_name} (nothing downloaded)")
    for c in ("source", "splits", "license", "terms", "rows available", "rows selected", "upstream"):
        table.add_column(c, overflow="fold")
    for r in rows:
        label = r["name"] + (" (decontamination reference)" if r["evaluation"] else "")
        table.add_row(label, ",".join(r["splits"]), r["license"], r["terms"], f"{r['available']:,}",
                      f"{r['selected']:,}", "\n".join(r["upstream"]))
    out_console.print(table)
    total = sum(r["selected"] for r in rows if not r["evaluation"])
    out_console.print(f"expected total before dedup/decontamination: [bold]{total:,}[/] rows")
    for r in rows:
        if r["manual"]:
            out_console.print(f"[yellow]{r['name']} needs manual files[/] ({', '.join(r['manual'])}): pass "
                              f"`--from {r['name']}=DIR` (see DATASETS.md)")


@app.command()
def lock(
    recipe: Annotated[str, typer.Option("--recipe", "-r", help="built-in recipe name or a YAML path")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="lock file to write (default: "
                                             "manifests/<recipe>.lock.json)")] = None,
    cache: Annotated[Path, typer.Option("--cache", help="download cache (a following build reuses "
                                        "it)")] = Path(".medmix-cache"),
    offline: Annotated[bool, typer.Option("--offline", help="write the adapters' own pins; null where "
                                          "unknown")] = False,
    mirror: MirrorOpt = None,
) -> None:
    """Pin every upstream file of a recipe (Hub commit, sha256, size) into its lock file."""
    from medmix.lock import default_lock_path, lock_recipe
    from medmix.planning import BuildOptions
    from medmix.recipe import load_recipe
    from medmix.writer import atomic_write_json

    try:
        r = load_recipe(recipe)
        result = lock_recipe(r, BuildOptions(out=Path("."), cache=cache, mirror=mirror), offline=offline)
    except MedmixError as exc:
        fail(exc)
    target = out or default_lock_path(r.name)
    atomic_write_json(target, result)
    files = [e for s in result["sources"].values() for e in s.values()]
    unpinned = sum(1 for e in files if not e["sha256"])
    err_console.print(f"wrote {target}: {len(files)} upstream file(s), {unpinned} without sha256"
                  + (" (run without --offline on a machine with network to fill them)" if unpinned else ""))


@app.command()
def sources(as_json: Annotated[bool, typer.Option("--json", help="print the registry as JSON")] = False) -> None:
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
    mixture: Annotated[str, typer.Argument(help="a mixture folder written by `medmix build`")],
    port: Annotated[int, typer.Option("--port", "-p", min=0, max=65535, help="TCP port")] = 8765,
    host: Annotated[str, typer.Option("--host", help="address to bind; anything but loopback is reachable by "
                                      "others")] = "127.0.0.1",
) -> None:
    """Browse a mixture in the browser: overview, samples, removed rows beside what they matched, quarantine."""
    try:
        from medmix.view.app import serve
    except ImportError as exc:
        fail(MedmixError(f"medmix view needs its extra: pip install 'medmix[view]' ({exc})"))
    try:
        serve(mixture, host=host, port=port, warn=lambda m: err_console.print(m, style="yellow", highlight=False))
    except MedmixError as exc:
        fail(exc)


def _register_extensions() -> None:
    """Commands whose code lives in its own module (and, for train/eval, its own extras)."""
    from medmix.ablate.cli import ablate_command
    from medmix.evaluation.cli import eval_classify, eval_vqa
    from medmix.hub_cli import push_command
    from medmix.stats_cli import stats_command
    from trainer.cli import train_command

    app.command("stats")(stats_command)
    app.command("push")(push_command)
    from medmix.doctor import make_command as doctor_command
    app.command("doctor")(doctor_command())
    app.command("train")(train_command)
    app.command("ablate")(ablate_command)
    eval_app = typer.Typer(no_args_is_help=True, help="Evaluate: VQA BLEU-1 and the classification transfer suite.")
    eval_app.command("vqa")(eval_vqa)
    eval_app.command("classify")(eval_classify)
    app.add_typer(eval_app, name="eval")


_register_extensions()


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    app()
