"""Weights → exact per-source counts, and seeded, worker-independent row selection.

Semantics (the part users of other mixers find confusing, so it is spelled out):
- `all`: every available row once.
- `samples: N`: exactly N rows. N <= available: a seeded sample without replacement.
  N > available: whole epochs of every row (N // available times), then a seeded sample without
  replacement of the remainder — so no row appears more than once more than any other.
- `weight: w`: the source gets a share w / sum(weights) of what `target_samples` leaves after the
  `samples` and `all` sources; shares are rounded by largest remainder so the total is exact.
  A weighted source is then drawn like `samples: N` (it may be up-sampled).
Each source draws from its own generator seeded by (recipe seed, source name), so adding or
removing one source never changes another source's selection.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from medmix.errors import RecipeError
from medmix.recipe import Recipe


@dataclass(frozen=True)
class Selection:
    indices: np.ndarray   # int64 positions into the source's available rows, in selection order
    copy: np.ndarray      # int32: 0 for the first use of a row, k for its k-th repeat
    epochs: float         # selected / available


def source_rng(seed: int, name: str, purpose: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(name.encode()), zlib.crc32(purpose.encode())])


def allocate_counts(recipe: Recipe, available: dict[str, int]) -> dict[str, int]:
    """Rows each source contributes, given the rows it has: the arithmetic alone, shared by the build
    and `medmix build --plan` (which passes the declared split sizes) so the two never disagree."""
    counts: dict[str, int] = {}
    weighted = [s for s in recipe.sources if s.mode == "weight"]
    for s in recipe.sources:
        if s.mode == "all":
            counts[s.name] = available[s.name]
        elif s.mode == "samples":
            counts[s.name] = int(s.value)
    if weighted:
        remaining = recipe.target_samples - sum(counts.values())
        if remaining < 0:
            raise RecipeError(f"{recipe.path}: target_samples: {recipe.target_samples} is smaller than the "
                              f"{sum(counts.values())} rows taken by `all`/`samples` sources; raise it")
        total_w = sum(float(s.value) for s in weighted)
        exact = [remaining * float(s.value) / total_w for s in weighted]
        floors = [int(np.floor(x)) for x in exact]
        short = remaining - sum(floors)
        # largest remainder; ties broken by source name so the result is a pure function of the recipe
        order = sorted(range(len(weighted)), key=lambda i: (-(exact[i] - floors[i]), weighted[i].name))
        for i in order[:short]:
            floors[i] += 1
        for s, n in zip(weighted, floors):
            counts[s.name] = n
    return counts


def resolve_counts(recipe: Recipe, available: dict[str, int]) -> dict[str, int]:
    """`allocate_counts`, refusing a source asked for rows when none of its rows are left."""
    counts = allocate_counts(recipe, available)
    for s in recipe.sources:
        if counts[s.name] > 0 and available[s.name] == 0:
            raise RecipeError(f"{recipe.path}:{s.line}: sources.{s.name}: asks for {counts[s.name]} rows but none "
                              f"are left after quarantine, dedup and decontamination")
    return counts


def select(available: int, count: int, rng: np.random.Generator) -> Selection:
    if count == 0 or available == 0:
        return Selection(np.zeros(0, np.int64), np.zeros(0, np.int32), 0.0)
    epochs, rest = divmod(count, available)
    parts = [np.arange(available, dtype=np.int64) for _ in range(epochs)]
    copies = [np.full(available, e, np.int32) for e in range(epochs)]
    if rest:
        parts.append(np.sort(rng.choice(available, size=rest, replace=False)).astype(np.int64))
        copies.append(np.full(rest, epochs, np.int32))
    return Selection(np.concatenate(parts), np.concatenate(copies), count / available)


def global_order(n: int, seed: int) -> np.ndarray:
    """Position of each selected row in the written mixture: one seeded permutation across sources."""
    return source_rng(seed, "*", "shuffle").permutation(n).astype(np.int64)
