"""Stage 2 policy: which normalized rows enter the mixture, how many per source, and in which order.

Order of filters, each counted per source in the manifest:
  license (rows whose per-row license the recipe did not accept) → exact/near duplicates →
  decontamination against the named evaluation sets → selection (all / samples / weight) →
  one global seeded permutation.

Which row of a duplicate group survives is a pure function of the recipe: rows are ranked by
(source priority, id) — `dedup.priority` first, then the recipe's source order — and the first
survives. Input order and worker count never matter.

Selection semantics (the part users of other mixers find confusing, so it is spelled out):
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
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import pyarrow as pa

from medmix.core.errors import RecipeError
from medmix.core.licenses import refused
from medmix.mix.dedup import exact_clusters, image_clusters, near_match
from medmix.mix.disk_array import release
from medmix.mix.index import EvalIndex, Index
from medmix.mix.memo import no_memo
from medmix.mix.textsim import clusters_from_bands
from medmix.recipe import Recipe

# (training Index positions, EvalIndex positions) -> do the pictures confirm each pair?
Confirm = Callable[[np.ndarray, np.ndarray], np.ndarray]
# (name, inputs, compute) -> compute() or its stored result (medmix.mix.memo)
MemoFn = Callable[[str, list, Callable[[], np.ndarray]], np.ndarray]


class Removal(NamedTuple):
    """One dropped row. `row` is its position in the Index; `other_row` the kept row's position in
    the Index (dedup) or the evaluation item's position in the EvalIndex (decontamination), -1 for
    none. `medmix.mix.removed` turns these positions into what removed.parquet shows."""

    id: str
    reason: str
    other: str
    kind: str       # layout.REMOVAL_KINDS
    row: int
    other_row: int


@dataclass
class MixtureRows:
    """The written mixture before writing: each output row as (unit, row, copy), in output order,
    with the per-source accounting the manifest reports."""

    unit: np.ndarray      # int32 per output row (sorted by output position)
    row: np.ndarray       # int32
    copy: np.ndarray      # int32 repeat number (0 = first use)
    counts: dict[str, dict] = field(default_factory=dict)
    decontamination: dict[str, dict[str, int]] = field(default_factory=dict)
    removed: list[Removal] = field(default_factory=list)
    images_unconfirmed: dict[str, int] = field(default_factory=dict)  # per source: image hash matches the
    # pictures did not confirm (kept; medmix.mix.image_confirm)


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


def _rank(recipe: Recipe, idx: Index) -> np.ndarray:
    """Lexicographic survivor rank: (source priority, id)."""
    order = list(recipe.dedup.priority or ()) + [s.name for s in recipe.sources]
    prio = {name: order.index(name) for name in dict.fromkeys(order)}
    src_prio = np.array([prio.get(s, len(prio)) for s in idx.sources], np.int64)[idx.source]
    by_id = np.argsort(idx.ids, kind="stable")
    id_rank = np.empty(len(idx), np.int64)
    id_rank[by_id] = np.arange(len(idx))
    return src_prio * (len(idx) + 1) + id_rank


def _group_dups(keys: list[np.ndarray], alive: np.ndarray, rank: np.ndarray) -> np.ndarray:
    """For rows grouped by equal `keys`, return for each row the index of its group's survivor."""
    n = len(rank)
    cand = np.flatnonzero(alive)
    order = np.lexsort([rank[cand]] + [k[cand] for k in reversed(keys)])
    c = cand[order]
    survivor = np.arange(n)
    if len(c) == 0:
        return survivor
    new = np.ones(len(c), bool)
    same = np.ones(len(c) - 1, bool)
    for k in keys:
        same &= k[c][1:] == k[c][:-1]
    new[1:] = ~same
    head = c[np.maximum.accumulate(np.where(new, np.arange(len(c)), 0))]
    survivor[c] = head
    return survivor


@dataclass(frozen=True)
class Dropped:
    """Rows one rule removed, as arrays: `rows` are Index positions (ascending), `other` what each
    matched (an Index position for dedup, an EvalIndex position for decontamination, -1 for none).
    `counter` names the manifest count it adds to (license_filtered / duplicates / contaminated)."""

    rows: np.ndarray    # int64
    other: np.ndarray   # int64, aligned with rows
    kind: str           # layout.REMOVAL_KINDS
    reason: str
    counter: str


@dataclass(frozen=True)
class Step:
    """What one filtering step decided: `keep` (bool per Index row: still in after this step) and
    the removals, in the order they were decided (removed.parquet sorts them later)."""

    keep: np.ndarray
    dropped: tuple[Dropped, ...]
    unconfirmed: np.ndarray | None = None  # Index rows whose image hash match the pictures did not confirm


def _dropped(mask: np.ndarray, alive: np.ndarray, kind: str, reason: str, counter: str,
             other: np.ndarray | None = None) -> Dropped:
    """The rows of `mask` still alive; `other` is aligned with those rows (or None: no match shown)."""
    rows = np.flatnonzero(mask & alive).astype(np.int64)
    o = np.full(len(rows), -1, np.int64) if other is None else np.asarray(other, np.int64)
    return Dropped(rows, o, kind, reason, counter)


def _without(alive: np.ndarray, dropped: Dropped) -> np.ndarray:
    keep = alive.copy()
    keep[dropped.rows] = False
    return keep


def license_step(recipe: Recipe, idx: Index, alive: np.ndarray) -> Step:
    """Drop rows whose per-row license the recipe did not accept.

    Why first and per row: PMC-OA rows carry their own article's license, so one source can hold
    both accepted and refused rows; a refused row must never survive as some duplicate's
    representative, so it leaves before dedup ranks survivors."""
    bad = set(refused(set(idx.licenses), recipe.accept))
    if not bad:
        return Step(alive, ())
    mask = np.isin(idx.license, [c for c, lic in enumerate(idx.licenses) if lic in bad])
    d = _dropped(mask, alive, "license", "license not accepted", "license_filtered")
    return Step(_without(alive, d), (d,))


def _image_keys(recipe: Recipe, idx: Index, alive: np.ndarray, memo: MemoFn = no_memo) -> np.ndarray:
    """Per row, the Index position of its image cluster's first member, -1 without an image."""
    n = len(idx)
    img_key = np.full(n, -1, np.int64)
    rows = np.flatnonzero(idx.has_image & alive)
    if len(rows):
        if recipe.dedup.image_distance is None:
            img_key[rows] = rows[exact_clusters(pa.array(idx.sha[rows], pa.binary()))]
        else:
            d = recipe.dedup.image_distance
            hashes = idx.phash[rows]
            img_key[rows] = rows[memo("image_clusters", [hashes, d], lambda: image_clusters(hashes, d))]
    return img_key


def dedup_step(recipe: Recipe, idx: Index, alive: np.ndarray, memo: MemoFn = no_memo) -> Step:
    """Keep one row per group of duplicates: same image cluster (or no image) and same or
    near-same text; with `images: unique`, also one row per image cluster.

    Why the survivor is chosen by rank, not by order: the survivor of each group is the row with
    the lowest (source priority, id) (`_rank`), a pure function of the recipe, so input order and
    worker count never change which row stays."""
    n = len(idx)
    d = recipe.dedup
    img_key = _image_keys(recipe, idx, alive, memo)
    if d.text_threshold is not None and idx.bands is not None:
        txt_key = memo("text_clusters", [idx.bands, idx.sketch],
                       lambda: clusters_from_bands(idx.bands, idx.sketch)).astype(np.int64)
        release(idx.sketch)  # hashing it for the key touched every page
    else:
        txt_key = idx.text.view(np.int64)
    # ranked after the searches: at 30M rows its arrays (~0.7 GB) would otherwise sit beside the
    # pHash search's temporaries, at the mix stage's peak
    rank = _rank(recipe, idx)
    dropped: list[Dropped] = []
    if d.exact or d.image_distance is not None or d.text_threshold is not None:
        surv = _group_dups([img_key, txt_key], alive, rank)
        dup = surv != np.arange(n)
        dropped.append(_dropped(dup, alive, "duplicate", "duplicate", "duplicates", surv[dup & alive]))
        alive = _without(alive, dropped[-1])
    if d.images == "unique":
        img_rows = (img_key >= 0) & alive
        surv = _group_dups([img_key], img_rows, rank)
        dup = (surv != np.arange(n)) & img_rows
        dropped.append(_dropped(dup, alive, "same_image", "same image (images: unique)", "duplicates",
                                surv[dup & alive]))
        alive = _without(alive, dropped[-1])
    return Step(alive, tuple(dropped))


def decontaminate_step(recipe: Recipe, idx: Index, evals: EvalIndex | None, alive: np.ndarray,
                       confirm: Confirm | None = None, memo: MemoFn = no_memo) -> Step:
    """Drop training rows that leak an evaluation item: an image within
    `decontaminate.image_distance` of an evaluation image (confirmed on the pictures by `confirm`
    when given and `decontaminate.image_correlation` is set), then a text sharing an n-gram with
    an evaluation question (matched while the index was built, `Index.text_hit`). Hash matches
    the pictures did not confirm are kept and counted (`Step.unconfirmed`, in the manifest).

    Why after dedup: a leaked row whose duplicate was already dropped is counted once, as a
    duplicate, and the manifest's per-eval-set counts name only rows that would have entered."""
    if evals is None or not evals.ids:
        return Step(alive, ())
    dropped: list[Dropped] = []
    unconfirmed = None
    decon = recipe.decontaminate
    if decon.image_distance is not None and len(evals.phash):
        rows = np.flatnonzero(idx.has_image & alive)
        which = memo("eval_image_match", [evals.phash, idx.phash[rows], decon.image_distance],
                     lambda: near_match(evals.phash, idx.phash[rows], decon.image_distance))
        hit = which >= 0
        cand, other = rows[hit], evals.phash_row[which[hit]].astype(np.int64)
        if confirm is not None and decon.image_correlation is not None and len(cand):
            cand, other, unconfirmed = _confirmed(cand, other, idx, evals, decon.image_distance, confirm)
        mask = np.zeros(len(idx), bool)
        mask[cand] = True
        dropped.append(_dropped(mask, alive, "eval_image", "near-duplicate of an evaluation image", "contaminated",
                                other))
        alive = _without(alive, dropped[-1])
    if idx.text_hit is not None:
        rows = np.flatnonzero((idx.text_hit >= 0) & alive)
        mask = np.zeros(len(idx), bool)
        mask[rows] = True
        dropped.append(_dropped(mask, alive, "eval_text",
                                f"shares a {recipe.decontaminate.ngram}-gram with an evaluation question",
                                "contaminated", np.array([evals.text_row[t] for t in idx.text_hit[rows]], np.int64)))
        alive = _without(alive, dropped[-1])
    return Step(alive, tuple(dropped), unconfirmed)


def _per_source(idx: Index, rows: np.ndarray | None) -> dict[str, int]:
    if rows is None or not len(rows):
        return {}
    codes, n = np.unique(idx.source[rows], return_counts=True)
    return {idx.sources[c]: int(k) for c, k in zip(codes.tolist(), n.tolist())}


def _confirmed(cand: np.ndarray, other: np.ndarray, idx: Index, evals: EvalIndex, distance: int,
               confirm: Confirm) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The hash matches the pictures confirm, each against its smallest confirmed evaluation image.

    `near_match` names one evaluation image per row (the smallest within the distance); when the
    pictures reject it, every other evaluation image within the distance is tried too, so a true
    copy of image B is never kept because it also lies near image A by chance."""
    ok = confirm(cand, other)
    rejected, rejected_other = cand[~ok], other[~ok]
    extra_rows, extra_other = [], []
    step = max(1, (1 << 22) // max(1, len(evals.phash)))
    for a in range(0, len(rejected), step):  # few rows: brute force over the evaluation hashes
        part = rejected[a:a + step]
        r, e = np.nonzero(np.bitwise_count(idx.phash[part][:, None] ^ evals.phash[None, :]) <= distance)
        o = evals.phash_row[e].astype(np.int64)
        new = o != rejected_other[a:a + step][r]  # the pair already rejected is not asked again
        extra_rows.append(part[r][new])
        extra_other.append(o[new])
    rows2 = np.concatenate(extra_rows) if extra_rows else np.zeros(0, np.int64)
    other2 = np.concatenate(extra_other) if extra_other else np.zeros(0, np.int64)
    ok2 = confirm(rows2, other2) if len(rows2) else np.zeros(0, bool)
    best: dict[int, int] = {}
    for r, o in zip(rows2[ok2].tolist(), other2[ok2].tolist()):
        best[r] = min(o, best.get(r, o))
    rows = np.concatenate([cand[ok], np.array(sorted(best), np.int64)])
    others = np.concatenate([other[ok], np.array([best[r] for r in sorted(best)], np.int64)])
    order = np.argsort(rows, kind="stable")
    return rows[order], others[order], np.setdiff1d(rejected, rows2[ok2])


def select_step(recipe: Recipe, idx: Index, alive: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """(unit, row, copy) of every output row in output order, and per source (available, selected,
    epochs). Each source draws from its own seeded generator (see the module docstring), then one
    global seeded permutation orders the mixture. Removes nothing: rows not selected are simply
    not written, and are not audit rows."""
    by_source = {name: np.flatnonzero((idx.source == code) & alive) for code, name in enumerate(idx.sources)}
    available = {s.name: len(by_source.get(s.name, ())) for s in recipe.sources}
    want = resolve_counts(recipe, available)
    units, rows_, copies, tally = [], [], [], {}
    for s in recipe.sources:
        rows = by_source.get(s.name, np.zeros(0, np.int64))
        sel = select(len(rows), want[s.name], source_rng(recipe.seed, s.name, "select"))
        picked = rows[sel.indices]
        units.append(idx.unit[picked])
        rows_.append(idx.row[picked])
        copies.append(sel.copy)
        tally[s.name] = {"available": len(rows), "selected": int(want[s.name]), "epochs": round(sel.epochs, 6)}
    unit = np.concatenate(units) if units else np.zeros(0, np.int32)
    row = np.concatenate(rows_) if rows_ else np.zeros(0, np.int32)
    copy = np.concatenate(copies) if copies else np.zeros(0, np.int32)
    order = np.argsort(global_order(len(unit), recipe.seed), kind="stable")
    return unit[order], row[order], copy[order], tally


def mixture_rows(recipe: Recipe, idx: Index, evals: EvalIndex | None, confirm: Confirm | None = None,
                 memo: MemoFn = no_memo) -> MixtureRows:
    """Which Index rows enter the mixture: license → dedup → decontaminate → select.

    Each filtering step takes the rows still in and returns its keep-mask and removals; the
    manifest's counts and removed.parquet's rows are read off those removals afterwards."""
    licensed = license_step(recipe, idx, np.ones(len(idx), bool))
    unique = dedup_step(recipe, idx, licensed.keep, memo)
    clean = decontaminate_step(recipe, idx, evals, unique.keep, confirm, memo)
    unit, row, copy, tally = select_step(recipe, idx, clean.keep)
    dropped = licensed.dropped + unique.dropped + clean.dropped

    counts = {s.name: {"normalized": 0, "license_filtered": 0, "duplicates": 0, "contaminated": 0,
                       "available": 0, "selected": 0, "epochs": 0.0} for s in recipe.sources}
    for code, name in enumerate(idx.sources):
        counts[name]["normalized"] = int(np.sum(idx.source == code))
    decon: dict[str, dict[str, int]] = {s.name: {} for s in recipe.sources}
    removed: list[Removal] = []
    for d in dropped:
        for r, o in zip(d.rows.tolist(), d.other.tolist()):
            source = idx.source_at(r)
            counts[source][d.counter] += 1
            if d.kind in ("eval_image", "eval_text"):
                key = f"{evals.names[o]} ({d.kind.removeprefix('eval_')})"
                decon[source][key] = decon[source].get(key, 0) + 1
                other = evals.ids[o]
            else:
                other = idx.id_at(o) if o >= 0 else ""
            removed.append(Removal(idx.id_at(r), d.reason, other, d.kind, r, o))
    for name, t in tally.items():
        counts[name].update(t)
    return MixtureRows(unit, row, copy, counts=counts,
                       decontamination={k: dict(sorted(v.items())) for k, v in decon.items() if v}, removed=removed,
                       images_unconfirmed=_per_source(idx, clean.unconfirmed))
