"""`medmix build --plan`: what a build would fetch and produce, computed offline from the registry."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from medmix.build import BuildOptions, plan_sources
from medmix.licenses import terms
from medmix.recipe import Recipe
from medmix.sources.base import Manual


def expected_rows(recipe: Recipe, opts: BuildOptions) -> list[dict]:
    """Per source: upstreams, license, manual files, rows available (declared split sizes) and rows the
    recipe would select (before dedup), with weights resolved as `medmix.mix` resolves them."""
    planned = plan_sources(recipe, opts)
    rows = []
    for p in planned:
        avail = sum((p.source.splits.get(s) or 0) for s in p.splits)
        manual = [f.name for f in p.source.files_for(p.splits) if isinstance(f, Manual)]
        rows.append({"name": p.name, "evaluation": p.evaluation, "license": p.source.license,
                     "terms": terms(p.source.license).summary(), "available": avail,
                     "upstream": [f.upstream if not isinstance(f, Manual) else f"manual: {f.name}"
                                  for f in p.source.files_for(p.splits)],
                     "manual": manual, "splits": list(p.splits)})
    specs = {s.name: s for s in recipe.sources}
    fixed = 0
    for r in rows:
        s = specs.get(r["name"])
        if s is None:
            r["selected"] = 0
        elif s.mode == "all":
            r["selected"] = r["available"]
        elif s.mode == "samples":
            r["selected"] = int(s.value)
        if s is not None and s.mode != "weight":
            fixed += r["selected"]
    weighted = [r for r in rows if r["name"] in specs and specs[r["name"]].mode == "weight"]
    if weighted:
        total_w = sum(specs[r["name"]].value for r in weighted)
        left = max(0, recipe.target_samples - fixed)
        for r in weighted:
            r["selected"] = round(left * specs[r["name"]].value / total_w)
    return rows


def print_plan(recipe: Recipe, opts: BuildOptions, console: Console) -> None:
    rows = expected_rows(recipe, opts)
    table = Table(title=f"plan for recipe {recipe.name} (nothing downloaded)")
    for c in ("source", "splits", "license", "terms", "rows available", "rows selected", "upstream"):
        table.add_column(c, overflow="fold")
    for r in rows:
        label = r["name"] + (" (decontamination reference)" if r["evaluation"] else "")
        table.add_row(label, ",".join(r["splits"]), r["license"], r["terms"], f"{r['available']:,}",
                      f"{r['selected']:,}", "\n".join(r["upstream"]))
    console.print(table)
    total = sum(r["selected"] for r in rows if not r["evaluation"])
    console.print(f"expected total before dedup/decontamination: [bold]{total:,}[/] rows")
    manual = [r for r in rows if r["manual"]]
    for r in manual:
        console.print(f"[yellow]{r['name']} needs manual files[/] ({', '.join(r['manual'])}): pass "
                      f"`--from {r['name']}=DIR` (see DATASETS.md)")
