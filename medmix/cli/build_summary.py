"""What a person sees after a build: per-source counts and the decontamination table."""

from __future__ import annotations

from pathlib import Path

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from medmix.core.layout import FUNNEL_COLUMNS, QUARANTINE


def _cell(value: object) -> str:
    """Counts as they are; ratios (epochs) to two decimals, which is what a person compares."""
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def print_build_summary(manifest: dict, out: Path, console: Console) -> None:
    # escape: names, paths and matches are data, not Rich markup (a `[x]` in them would vanish)
    table = Table(title=escape(f"{manifest['recipe']['name']}: {manifest['total_rows']} rows in "
                               f"{len(manifest['shards'])} shard(s) → {out}"), box=box.SIMPLE_HEAD, pad_edge=False)
    names = [name for name, s in manifest["sources"].items() if "counts" in s]
    # a source name is never cut ("pubmed…" named nothing); the numbers give way first
    table.add_column("source", no_wrap=True, min_width=max(map(len, names), default=6))
    for _, header, _ in FUNNEL_COLUMNS:
        table.add_column(header, justify="right")
    for name in names:
        counts = manifest["sources"][name]["counts"]
        table.add_row(escape(name), *[_cell(counts.get(c, "")) for c, _, _ in FUNNEL_COLUMNS])
    console.print(table)
    decon = [(name, ev, n) for name, s in manifest["sources"].items()
             for ev, n in s.get("decontamination", {}).items()]
    if decon:
        t = Table(title="decontamination: training rows removed per evaluation set")
        for c in ("source", "evaluation set (match)", "rows"):
            t.add_column(c)
        for name, ev, n in decon:
            t.add_row(escape(name), escape(ev), str(n))
        console.print(t)
    if manifest["quarantine"]["rows"]:
        console.print(f"{manifest['quarantine']['rows']} row(s) quarantined with reasons: "
                      f"{str(out).rstrip('/')}/{QUARANTINE}", markup=False)
    norm = manifest.get("build_info", {}).get("normalize")
    if norm:
        console.print(f"normalize: {norm['units']} unit(s), {norm['reused']} reused from the cache, "
                      f"{norm['units'] - norm['reused']} normalized")
    if manifest["unpinned_upstreams"]:
        console.print(f"[yellow]{len(manifest['unpinned_upstreams'])} upstream file(s) are not pinned by sha256 "
                      f"(recorded in the manifest; `medmix lock` pins them)[/]")
