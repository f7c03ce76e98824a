"""`medmix build --plan`: what a build would fetch and select, computed offline from the registry.

Rows are counted with the build's own arithmetic (`allocate_counts`) over the declared split sizes,
so the preview and the build agree on every count before dedup and decontamination.
"""

from __future__ import annotations

from medmix.core.licenses import terms
from medmix.mix.select import allocate_counts
from medmix.planning import BuildOptions, plan_sources
from medmix.recipe import Recipe
from medmix.sources.base import Manual


def expected_rows(recipe: Recipe, opts: BuildOptions) -> list[dict]:
    """Per source: upstreams, license, manual files, rows available (declared split sizes) and rows the
    recipe would select (before dedup); decontamination references select nothing."""
    rows = []
    for p in plan_sources(recipe, opts):
        rows.append({"name": p.name, "evaluation": p.evaluation, "license": p.source.license,
                     "terms": terms(p.source.license).summary(),
                     "available": sum((p.source.splits.get(s) or 0) for s in p.splits),
                     "upstream": [f.upstream if not isinstance(f, Manual) else f"manual: {f.name}"
                                  for f in p.source.files_for(p.splits)],
                     "manual": [f.name for f in p.source.files_for(p.splits) if isinstance(f, Manual)],
                     "splits": list(p.splits)})
    training = {r["name"]: r["available"] for r in rows if not r["evaluation"]}
    counts = allocate_counts(recipe, training)
    for r in rows:
        r["selected"] = 0 if r["evaluation"] else counts[r["name"]]
    return rows
