"""The `medmix` command line (typer). Each command is a thin shell over a library function."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from medmix.cli.common import FromOpt, MirrorOpt, err_console, fail, needs_extra, out_console, parse_from
from medmix.core.errors import MedmixError
from medmix.core.extras import require

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Reproducible, license-aware medical vision-language pretraining mixtures.")


@app.command()
@needs_extra("build")
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
    timings: Annotated[Path | None, typer.Option("--timings", help="append one JSON line per stage start and end "
                                                 "(and kill) to this file")] = None,
) -> None:
    """Fetch, license-check, normalize, dedup, decontaminate, mix and write Parquet shards + manifest."""
    from medmix.api import build as run_build
    from medmix.core.storage import parse_storage_options
    from medmix.recipe import load_recipe

    try:
        if executor == "ray":
            require("build --executor ray")
        r = load_recipe(recipe)
        options = dict(cache=cache, workers=workers, executor=executor, address=address, from_dirs=parse_from(from_),
                       accept=tuple(accept_license or ()), allow_eval=tuple(allow_eval or ()), mirror=mirror,
                       verify=verify, storage_options=parse_storage_options(storage_option))
        if plan:
            from medmix.planning import BuildOptions
            from medmix.preview import expected_rows

            _print_plan(r.name, expected_rows(r, BuildOptions(out=out, **{**options, "workers": workers or 1})))
            return
        from medmix.core.progress import BuildProgress, StageLog

        stages = StageLog(lambda m: err_console.print(m, markup=False, highlight=False), timings,
                          last_words=_raw_stderr)
        with _named_on_kill(stages), BuildProgress(err_console) as bars:
            def progress(*event) -> None:
                stages(*event)
                bars.update(*event)
            result = run_build(r, out, progress=progress,
                               log=lambda m: err_console.print(m, style="yellow", markup=False), **options)
        stages.close()
    except MedmixError as exc:
        fail(exc)
    from medmix.cli.build_summary import print_build_summary
    print_build_summary(result.manifest, result.out, out_console)


def _raw_stderr(line: str) -> None:
    """The kill message goes straight to fd 2, not through rich: a signal that lands inside a
    console print nests the handler's print into rich's buffer, which the kill that follows never
    flushes (CI lost both lines so, 2026-12-07)."""
    os.write(2, (line + "\n").encode("utf-8", "replace"))


@contextlib.contextmanager
def _named_on_kill(stages):
    """SIGTERM/SIGINT: say which stage the build was in, then die of the signal as before (workers
    and exit status unchanged), so a log of a killed multi-hour build ends with where it stopped."""
    def handler(signum, frame):
        stages.killed(signal.Signals(signum).name)
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _print_plan(recipe_name: str, rows: list[dict]) -> None:
    table = Table(title=f"plan for recipe {recipe_name} (nothing downloaded)")
    for c in ("source", "splits", "license", "terms", "rows available", "rows selected", "upstream"):
        table.add_column(c, overflow="fold")
    for r in rows:
        label = r["name"] + (" (decontamination reference)" if r["evaluation"] else "")
        table.add_row(*map(escape, (label, ",".join(r["splits"]), r["license"], r["terms"], f"{r['available']:,}",
                                    f"{r['selected']:,}", "\n".join(r["upstream"]))))
    out_console.print(table)
    total = sum(r["selected"] for r in rows if not r["evaluation"])
    out_console.print(f"expected total before dedup/decontamination: [bold]{total:,}[/] rows")
    for r in rows:
        if r["manual"]:
            out_console.print(escape(f"{r['name']} needs manual files ({', '.join(r['manual'])}): pass "
                                     f"`--from {r['name']}=DIR` (see DATASETS.md)"), style="yellow")


@app.command()
@needs_extra("lock")
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
    from medmix.core.writer import atomic_write_json
    from medmix.fetch.lock import default_lock_path
    from medmix.planning import BuildOptions, lock_recipe
    from medmix.recipe import load_recipe

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
                      + (" (run without --offline on a machine with network to fill them)" if unpinned else ""),
                      markup=False)


@app.command()
@needs_extra("sources")
def sources(as_json: Annotated[bool, typer.Option("--json", help="print the registry as JSON (full upstream URLs "
                                                  "and real-bytes provenance)")] = False) -> None:
    """List every source adapter: license, domain, tasks, evaluation status, format check, upstream.

    `format` says whether the adapter's reader was checked on real upstream bytes (the provenance is
    listed under the table) or follows the documentation only. The table shows each upstream as
    host/…/file so it stays readable at 80 columns; `--json` has the full URLs.
    """
    from medmix.sources import registry
    from medmix.sources.base import short_upstream

    described = [cls.describe() for cls in registry().values()]
    if as_json:
        sys.stdout.write(json.dumps(described, indent=2) + "\n")
        return
    table = Table(title=f"medmix sources ({len(described)})")
    wide = out_console.width >= 110  # domain and tasks only where they fit beside the rest
    table.add_column("name", no_wrap=True)
    if wide:
        table.add_column("domain · tasks", overflow="fold")
    table.add_column("license", overflow="fold", max_width=None if wide else 15)
    table.add_column("evaluation", overflow="fold", max_width=None if wide else 11)
    table.add_column("format", no_wrap=True)
    table.add_column("upstream", overflow="fold")
    for d in described:
        ev = "benchmark" if d["benchmark"] else ", ".join(d["eval_splits"])
        fmt = {"real bytes": "real bytes", "documentation only": "docs only"}.get(d["format"], "n/a")
        if d["manual"]:
            up = "manual (--from)"
        elif d["upstream"]:
            more = len(d["upstream"]) - 1
            up = short_upstream(d["upstream"][0]) + (f" +{more}" if more else "")
        else:
            up = ""
        what = (f"{d['domain']} · {', '.join(d['tasks'])}",) if wide else ()
        table.add_row(*map(escape, (d["name"], *what, d["license"], ev, fmt, up)))
    out_console.print(table)
    verified = [d for d in described if d["real_bytes"]]
    if verified:
        out_console.print("format checked on real upstream bytes (tests/fixtures/real/<name>/PROVENANCE):",
                          highlight=False)
        for d in verified:
            for r in d["real_bytes"]:
                out_console.print(f"  {d['name']}: {r['repo']}@{r['commit'][:12]}", highlight=False, soft_wrap=True)
    out_console.print("docs only: checked against documentation, no public copy of the files was found.",
                      highlight=False)


@app.command()
@needs_extra("view")
def view(
    mixture: Annotated[str, typer.Argument(help="a mixture folder written by `medmix build`")],
    port: Annotated[int, typer.Option("--port", "-p", min=0, max=65535, help="TCP port")] = 8765,
    host: Annotated[str, typer.Option("--host", help="address to bind; anything but loopback is reachable by "
                                      "others")] = "127.0.0.1",
    model: Annotated[str | None, typer.Option("--model", help="a run or checkpoint folder: row pages get an "
                                              "'ask a checkpoint' link to `medmix demo` at /demo/")] = None,
) -> None:
    """Browse a mixture in the browser: overview, samples, removed rows beside what they matched, quarantine."""
    from medmix.ablate.view import create_app as ablation_app
    from medmix.ablate.view import is_ablation
    from medmix.view.webapp import serve  # needs_extra checked starlette, uvicorn and jinja2

    try:
        if model is not None:
            require("view --model")
        report = ablation_app(mixture) if is_ablation(mixture) else None  # a `medmix ablate` folder
        serve(mixture, host=host, port=port, warn=lambda m: err_console.print(m, style="yellow", highlight=False,
                                                                              markup=False),
              model=model, report_app=report)
    except MedmixError as exc:
        fail(exc)


def _register_extensions() -> None:
    """Commands whose code lives in its own module (and, for train/eval, its own extras).

    Each is wrapped in `needs_extra` under its name in `medmix.core.extras.COMMANDS`."""
    from medmix.cli.ablate_commands import ablate_command
    from medmix.cli.demo_commands import demo_command, push_model_command
    from medmix.cli.doctor_command import doctor_command
    from medmix.cli.eval_commands import eval_classify, eval_vqa
    from medmix.cli.export_command import export_command
    from medmix.cli.push_command import push_command
    from medmix.cli.stats_command import stats_command
    from trainer.cli import train_command

    app.command("stats")(needs_extra("stats")(stats_command))
    app.command("push")(needs_extra("push")(push_command))
    app.command("export")(needs_extra("export")(export_command))
    app.command("doctor")(needs_extra("doctor")(doctor_command))
    app.command("train")(needs_extra("train")(train_command))
    app.command("demo")(needs_extra("demo")(demo_command))
    app.command("push-model")(needs_extra("push-model")(push_model_command))
    app.command("ablate")(needs_extra("ablate")(ablate_command))
    eval_app = typer.Typer(no_args_is_help=True, help="Evaluate: VQA BLEU-1 and the classification transfer suite.")
    eval_app.command("vqa")(needs_extra("eval vqa")(eval_vqa))
    eval_app.command("classify")(needs_extra("eval classify")(eval_classify))
    app.add_typer(eval_app, name="eval")


_register_extensions()


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    app()
