"""Variants: the weight vectors an ablation compares, each written as an ordinary recipe file.

Every variant is the base recipe with all sources in `weight:` mode and the same `target_samples`
(the base mixture's total rows), so variants differ in shares only, never in size. Base weights
are each source's share of the *built* base mixture (its manifest counts), which is what the base
recipe actually produced once `all`/`samples` sources and dedup are resolved.

- loo: the base plus one variant without each source (the rest renormalized).
- regmix:N: the base, stratified (equal shares), temperature tau=0.5 (share ∝ available^tau, the
  multilingual-LM baseline) and N vectors drawn from a Dirichlet around the base weights (seeded).
  Aioli (ICLR 2025) found mixing methods often fail to beat stratified sampling, so it is always run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from medmix.core.errors import MedmixError
from medmix.core.writer import atomic_write_bytes
from medmix.recipe import Recipe, load_recipe

DIRICHLET_CONCENTRATION = 8.0  # alpha = base * C * k: draws spread around the base, every source kept possible
TEMPERATURE = 0.5
MIN_WEIGHT = 1e-4  # a weight the recipe accepts (weights must be > 0); smaller draws drop the source


@dataclass(frozen=True)
class Variant:
    name: str
    kind: str                 # base | loo | stratified | temperature | dirichlet | suggested
    weights: dict[str, float]  # source -> share (sums to 1; absent sources are not in the recipe)
    dropped: str | None = None

    def vector(self, sources: list[str]) -> np.ndarray:
        return np.array([self.weights.get(s, 0.0) for s in sources])


def parse_plan(spec: str) -> tuple[str, int]:
    """`loo` → ("loo", 0); `regmix` → ("regmix", 8); `regmix:16` → ("regmix", 16)."""
    m = re.fullmatch(r"(loo|regmix)(?::(\d+))?", spec.strip())
    if not m or (m.group(1) == "loo" and m.group(2)):
        raise MedmixError(f"--plan {spec!r}: use `loo` or `regmix[:N]` (e.g. regmix:16)")
    n = int(m.group(2)) if m.group(2) else (8 if m.group(1) == "regmix" else 0)
    if m.group(1) == "regmix" and n < 1:
        raise MedmixError(f"--plan {spec!r}: regmix needs at least 1 random variant")
    return m.group(1), n


def base_weights(manifest: dict[str, Any]) -> tuple[dict[str, float], dict[str, int]]:
    """(share of the built mixture, rows available after dedup) per training source, from a manifest."""
    selected, available = {}, {}
    for name, entry in manifest["sources"].items():
        if entry.get("evaluation_only"):
            continue
        counts = entry.get("counts", {})
        selected[name] = int(counts.get("selected", 0))
        available[name] = int(counts.get("available", 0))
    total = sum(selected.values())
    if total == 0:
        raise MedmixError("the base mixture selected no rows; nothing to ablate")
    return {k: v / total for k, v in selected.items() if v > 0}, available


def _normalized(weights: dict[str, float]) -> dict[str, float]:
    kept = {k: float(v) for k, v in weights.items() if v >= MIN_WEIGHT}
    total = sum(kept.values())
    return {k: round(v / total, 6) for k, v in kept.items()}


def make_variants(plan: str, n: int, base: dict[str, float], available: dict[str, int], seed: int) -> list[Variant]:
    sources = sorted(base)
    out = [Variant("base", "base", _normalized(base))]
    if plan == "loo":
        if len(sources) < 2:
            raise MedmixError("loo needs a base mixture of at least two sources")
        for s in sources:
            out.append(Variant(f"without-{s}", "loo", _normalized({k: v for k, v in base.items() if k != s}),
                               dropped=s))
        return out
    out.append(Variant("stratified", "stratified", _normalized({s: 1.0 for s in sources})))
    out.append(Variant("temperature", "temperature",
                       _normalized({s: max(available.get(s, 0), 1) ** TEMPERATURE for s in sources})))
    rng = np.random.default_rng(seed)
    alpha = np.array([base[s] for s in sources]) * DIRICHLET_CONCENTRATION * len(sources)
    for i in range(n):
        draw = rng.dirichlet(np.maximum(alpha, 0.05))
        out.append(Variant(f"mix-{i:03d}", "dirichlet", _normalized(dict(zip(sources, draw.tolist())))))
    return out


def base_recipe_dict(recipe: Recipe) -> dict[str, Any]:
    """The recipe's YAML as a dict, with relative `from:` folders made absolute (variants live elsewhere)."""
    path = Path(recipe.path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise MedmixError(f"{path}: cannot read the base recipe ({exc})") from None
    for spec in (data.get("sources") or {}).values():
        if isinstance(spec, dict) and isinstance(spec.get("from"), str) and not spec["from"].startswith("package:"):
            p = Path(spec["from"]).expanduser()
            spec["from"] = str(p if p.is_absolute() else (recipe.base_dir() / p).resolve())
    return data


def variant_recipe(base: dict[str, Any], variant: Variant, target_samples: int) -> dict[str, Any]:
    """The base recipe dict with every kept source in `weight:` mode and the base's target_samples."""
    data = {k: v for k, v in base.items() if k != "sources"}
    data["name"] = f"{base['name']}-{variant.name}"
    data["target_samples"] = int(target_samples)
    sources = {}
    for name, spec in (base.get("sources") or {}).items():
        if name not in variant.weights:
            continue
        spec = dict(spec or {})
        for key in ("all", "samples", "weight"):
            spec.pop(key, None)
        spec["weight"] = variant.weights[name]
        sources[name] = spec
    data["sources"] = sources
    return data


def write_recipe(path: Path, data: dict[str, Any], comment: str = "") -> Recipe:
    """Write a recipe YAML (deterministic bytes) and check it loads like any user recipe."""
    head = "".join(f"# {line}\n" for line in comment.splitlines())
    atomic_write_bytes(path, (head + yaml.safe_dump(data, sort_keys=False)).encode())
    return load_recipe(str(path))
