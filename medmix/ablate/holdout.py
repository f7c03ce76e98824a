"""Held-out rows no variant trains on, and each variant's token-budgeted training subset.

Held-out rows come from the built base mixture: per source, the rows whose id hashes (XXH64 of
seed and id) below `fraction`, the K smallest hashes at most. A hash, not a sample, so the choice
is the same on any machine and independent of row order. Every variant mixture is built from the
same normalized rows, so ids are shared and a held-out id is skipped in each of them (repeats of
an up-sampled row carry `id#k` and are skipped too).

A variant's proxy trains on a subset: its mixture in the mixture's own global (seeded) order,
held-out ids skipped, rows taken until `budget` tokens are covered, written as a one-shard mixture
folder through medmix's writer so the trainer reads it unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import xxhash

from medmix.core.errors import MedmixError
from medmix.core.layout import manifest_shards, read_manifest, shard_path, write_manifest
from medmix.core.schema import ARROW_SCHEMA
from medmix.core.writer import write_parquet_atomic

HELDOUT = "heldout.parquet"


def base_id(row_id: str) -> str:
    """`abc#2` (the 2nd repeat of an up-sampled row) → `abc`."""
    return row_id.split("#", 1)[0]


def _hash01(seed: int, row_id: str) -> float:
    return xxhash.xxh64_intdigest(f"{seed}\x00{row_id}".encode()) / 2**64


def select_heldout(mixture: Path, out: Path, *, seed: int, fraction: float, cap: int) -> pa.Table:
    """Write `out` (a Parquet file of mixture rows) and return it. Bounded by one shard plus K rows/source."""
    if not 0 < fraction < 1:
        raise MedmixError(f"held-out fraction {fraction} must be in (0, 1)")
    manifest = read_manifest(mixture)
    best: dict[str, list[tuple[float, str]]] = {}
    for shard in manifest_shards(mixture, manifest):
        t = pq.read_table(shard.path, columns=["id", "source"])
        for row_id, source in zip(t.column("id").to_pylist(), t.column("source").to_pylist()):
            if "#" in row_id:
                continue  # a repeat; its first use is in the mixture too
            h = _hash01(seed, row_id)
            if h < fraction:
                best.setdefault(source, []).append((h, row_id))
    keep = {rid for rows in best.values() for _, rid in sorted(rows)[:cap]}
    if not keep:
        raise MedmixError(f"{mixture}: no held-out rows at fraction {fraction}; raise --heldout-fraction")
    parts = []
    for shard in manifest_shards(mixture, manifest):
        t = pq.read_table(shard.path)
        mask = pc.is_in(t.column("id"), value_set=pa.array(sorted(keep), pa.string()))
        parts.append(t.filter(mask))
    table = pa.concat_tables(parts).cast(ARROW_SCHEMA)
    table = table.take(pc.sort_indices(table, [("source", "ascending"), ("id", "ascending")]))
    write_parquet_atomic(out, table.replace_schema_metadata(ARROW_SCHEMA.metadata))
    return table


def training_subset(mixture: Path, out: Path, heldout_ids: set[str], count_tokens: Callable[[dict], int],
                    budget: int, *, info: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write the subset mixture folder `out`; return its summary (rows, tokens, per-source rows)."""
    manifest = read_manifest(mixture)
    taken: list[pa.Table] = []
    tokens = rows = 0
    per_source: dict[str, int] = {}
    skipped = 0
    for shard in manifest_shards(mixture, manifest):
        if tokens >= budget:
            break
        t = pq.read_table(shard.path)
        ids = [base_id(i) for i in t.column("id").to_pylist()]
        keep_idx = []
        text_cols = t.select(["question", "options", "answer", "context", "image_hash", "source"]).to_pylist()
        for i, (rid, row) in enumerate(zip(ids, text_cols)):
            if tokens >= budget:
                break
            if rid in heldout_ids:
                skipped += 1
                continue
            keep_idx.append(i)
            tokens += count_tokens(row)
            per_source[row["source"]] = per_source.get(row["source"], 0) + 1
        rows += len(keep_idx)
        taken.append(t.take(pa.array(keep_idx, pa.int64())))
    if rows == 0:
        raise MedmixError(f"{mixture}: no training rows left after removing held-out rows")
    table = pa.concat_tables(taken).cast(ARROW_SCHEMA).replace_schema_metadata(ARROW_SCHEMA.metadata)
    rel = shard_path(0, 1)
    digest, n = write_parquet_atomic(out / rel, table)
    summary = {"rows": rows, "tokens": tokens, "budget": budget, "covered": tokens >= budget,
               "heldout_skipped": skipped, "rows_per_source": dict(sorted(per_source.items()))}
    write_manifest(out, {"recipe": manifest.get("recipe"), "recipe_sha256": manifest.get("recipe_sha256"),
                         "sources": {k: {"counts": {"selected": v}} for k, v in summary["rows_per_source"].items()},
                         "shards": [{"path": rel, "rows": n, "sha256": digest}], "total_rows": n,
                         "quarantine": None, "ablation_subset": {**summary, **(info or {})}})
    return summary
