"""`medmix stats`: a typer-compatible command function and its rich tables.

cli.py registers it (`app.command("stats")(stats_command)`); it stays here so the
command, its printing and its tests live next to each other. Errors a user can act on
(`MedmixError`) print one line on stderr and exit with status 2, as every medmix command does.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from medmix.cli.common import err_console, fail, out_console
from medmix.core.errors import MedmixError
from medmix.core.extras import require
from medmix.core.layout import FUNNEL_COLUMNS

CATEGORIES = (("by_source", "source"), ("by_domain", "domain"), ("by_task", "task"), ("by_license", "license"))
FUNNEL_HEADERS = tuple((key, header) for key, header, _ in FUNNEL_COLUMNS)


def _pct(n: int, total: int) -> str:
    return f"{100 * n / total:.1f}%" if total else "-"


def _count_table(title: str, counts: dict[str, int], total: int, label: str) -> Table:
    t = Table(title=title, title_justify="left")
    t.add_column(label, overflow="fold")
    t.add_column("rows", justify="right")
    t.add_column("share", justify="right")
    for k, v in counts.items():
        t.add_row(escape(str(k)), f"{v:,}", _pct(v, total))
    return t


def _quantile_cells(s: dict[str, Any]) -> list[str]:
    if not s.get("n"):
        return ["0"] + ["-"] * 5
    return [f"{s['n']:,}"] + [f"{s[q]:,}" for q in ("min", "p5", "p50", "p95", "max")]


def print_stats(stats: dict[str, Any], console: Console) -> None:
    """Every table of `medmix stats`, in reading order: composition, sizes, lengths, build accounting."""
    rows, m = stats["rows"], stats["manifest"]
    total = rows["total"]
    console.print(f"[bold]{escape(str(stats['mixture']['path']))}[/]: recipe {escape(repr(m['recipe']))}, "
                  f"{total:,} rows in {m['shards']} "
                  f"shard(s); recipe sha256 {m['recipe_sha256'][:12]}, manifest sha256 "
                  f"{stats['mixture']['manifest_sha256'][:12]}", highlight=False)
    for key, label in CATEGORIES:
        console.print(_count_table(f"rows per {label}", rows[key], total, label))

    img = stats["images"]
    t = Table(title=f"image size in pixels ({img['rows']:,} rows with an image)", title_justify="left")
    for c in ("", "n", "min", "p5", "p50", "p95", "max"):
        t.add_column(c, justify="right" if c else "left")
    for axis in ("width", "height"):
        t.add_row(axis, *_quantile_cells(img[axis]))
    console.print(t)

    for unit in ("chars", "tokens"):
        per_task = stats["text"].get(unit)
        if per_task is None:
            continue
        what = "characters" if unit == "chars" else "tokens"
        t = Table(title=f"text length ({what}) per task", title_justify="left")
        for c in ("task", "field", "n", "min", "p5", "p50", "p95", "max"):
            t.add_column(c, justify="left" if c in ("task", "field") else "right")
        for task, fields in per_task.items():
            for field, s in fields.items():
                t.add_row(task, field, *_quantile_cells(s))
        console.print(t)

    cells = {escape(name): [f"{s['counts'].get(c, 0):,}" if c != "epochs" else f"{s['counts'].get(c, 0):g}"
                    for c, _ in FUNNEL_HEADERS] for name, s in m["sources"].items()}
    cells["[bold]total[/]"] = [f"{m['totals'][c]:,}" if c in m["totals"] else "" for c, _ in FUNNEL_HEADERS]
    # nine columns must fit 80 characters: no vertical rules, one space between columns, numbers never cut
    t = Table(title="build funnel per source (from the manifest)", title_justify="left", box=box.SIMPLE_HEAD,
              padding=(0, 0, 0, 1), pad_edge=False,
              caption="quar. = quarantined, lic. = license not accepted, dup. = duplicates, contam. = overlaps an "
                      "evaluation set, avail. = left after all filters", caption_justify="left")
    t.add_column("source", overflow="fold")
    for i, (_, header) in enumerate(FUNNEL_HEADERS):
        width = max([len(header)] + [len(v[i]) for v in cells.values()])
        t.add_column(header, justify="right", no_wrap=True, min_width=width)
    for name, values in cells.items():
        t.add_row(name, *values)
    console.print(t)

    if m["decontamination"]:
        t = Table(title="decontamination (training rows removed)", title_justify="left")
        t.add_column("evaluation set (match)")
        t.add_column("rows", justify="right")
        for k, v in m["decontamination"].items():
            t.add_row(escape(k), f"{v:,}")
        console.print(t)
    else:
        console.print("decontamination: no training row matched an evaluation set")
    q = m["quarantine"]
    if q["rows"]:
        t = Table(title=f"quarantine: {q['rows']:,} rows; top reasons (of {q['reasons']})", title_justify="left")
        t.add_column("reason", overflow="fold")
        t.add_column("rows", justify="right")
        for reason, n in q["top_reasons"]:
            t.add_row(escape(reason), f"{n:,}")
        console.print(t)
    else:
        console.print("quarantine: no rows")
    console.print(f"duplicates removed: {m['totals']['duplicates']:,}; contaminated removed: "
                  f"{m['totals']['contaminated']:,}; rows listed in removed.parquet: {m['removed_rows']:,}")
    for problem in stats["problems"]:
        console.print(f"[bold red]inconsistent mixture:[/] {escape(problem)}", highlight=False, soft_wrap=True)


def _signed(n: int) -> str:
    return f"[green]+{n:,}[/]" if n > 0 else f"[red]{n:,}[/]" if n < 0 else "0"


def print_compare(cmp: dict[str, Any], console: Console) -> None:
    a, b = cmp["a"], cmp["b"]
    for tag, side in (("A", a), ("B", b)):
        console.print(f"[bold]{tag}[/] " + escape(f"{side['path']} (recipe {side['recipe']!r}, "
                                                  f"{side['recipe_sha256'][:12]})"), highlight=False)
    for key, label in CATEGORIES:
        t = Table(title=f"rows per {label}", title_justify="left")
        for c in (label, "A", "B", "B − A"):
            t.add_column(c, justify="left" if c == label else "right", overflow="fold")
        for k, (va, vb, d) in cmp["rows"][key].items():
            t.add_row(escape(k), f"{va:,}", f"{vb:,}", _signed(d))
        va, vb, d = cmp["rows"]["total"]
        t.add_row("[bold]total[/]", f"{va:,}", f"{vb:,}", _signed(d))
        console.print(t)
    t = Table(title="funnel differences (B − A, only what changed)", title_justify="left")
    for c in ("source", "stage", "A", "B", "B − A"):
        t.add_column(c, justify="left" if c in ("source", "stage") else "right")
    for name, stages in cmp["funnel"].items():
        for stage, (va, vb, d) in stages.items():
            if d:
                t.add_row(escape(name), stage, f"{va:,}", f"{vb:,}", _signed(d))
    if t.row_count:
        console.print(t)
    t = Table(title="quantiles (A → B, only what changed)", title_justify="left")
    for c in ("figure", "quantile", "A", "B"):
        t.add_column(c)
    for name, qs in cmp["quantiles"].items():
        for q, (va, vb) in qs.items():
            if va != vb:
                t.add_row(*map(escape, (name, q, str(va), str(vb))))
    if t.row_count:
        console.print(t)
    console.print("identical figures" if not cmp["changed"] else f"{len(cmp['changed'])} figure(s) differ")


def stats_command(
    path: Annotated[Path, typer.Argument(help="a mixture folder written by `medmix build`")],
    as_json: Annotated[bool, typer.Option("--json", help="print every figure as JSON instead of tables")] = False,
    plot: Annotated[Path | None, typer.Option("--plot", help="write PNG charts into this folder")] = None,
    compare: Annotated[Path | None, typer.Option("--compare", help="another mixture folder to compare "
                                                 "against")] = None,
    tokenizer: Annotated[str | None, typer.Option("--tokenizer", help="also count tokens with this tokenizer (Hub "
                                                  "name or local folder)")] = None,
) -> None:
    """Composition, image sizes, text lengths, dedup/decontamination/quarantine counts of a mixture."""
    from medmix.publish.stats import compare_stats, compute_stats

    try:
        if tokenizer is not None:
            require("stats --tokenizer")
        stats = compute_stats(path, tokenizer)
        other = compute_stats(compare, tokenizer) if compare is not None else None
        written = []
        if plot is not None:
            from medmix.publish.plots import plot_all
            written = plot_all(stats, plot)
    except MedmixError as exc:
        fail(exc)
    if as_json:
        payload = stats if other is None else {"a": stats, "b": other, "diff": compare_stats(stats, other)}
        sys.stdout.write(json.dumps(payload, indent=2, ensure_ascii=False) + "\n")
    elif other is not None:
        print_compare(compare_stats(stats, other), out_console)
    else:
        print_stats(stats, out_console)
    if written:
        err_console.print(f"wrote {len(written)} chart(s) to {plot}: {', '.join(p.name for p in written)}",
                          highlight=False, markup=False)
    if stats["problems"] or (other is not None and other["problems"]):
        raise typer.Exit(1)
