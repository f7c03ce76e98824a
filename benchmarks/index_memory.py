"""Bytes per row of the mix stage's index at 1M rows: the typed index against the old layout.

The mix stage (`medmix.mix.index.build_index`) keeps one index row per normalized training row on the
driver. Until 2026-12-06 it held ids, licenses and image hashes as Python strings in lists, one
object per row each; it now holds fixed-width NumPy columns. This script writes a synthetic
normalized cache of `--rows` rows (ids, licenses and 32-hex image hashes shaped like the real
sources', half the rows with an image), then measures with tracemalloc, after a full collection:

- before: the old index's columns, rebuilt here exactly as the old `build_index` built them
  (`batch.to_pydict()` lists extended per batch, plus the same NumPy columns as now), so the
  comparison survives the old code's removal;
- after: `medmix.mix.index.build_index` itself.

Text near-dup bands are off in both (they add the same ~8 B per band and 64 B of sketch per row
either way).

    python benchmarks/index_memory.py --rows 1000000
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from medmix.core.layout import iter_batches
from medmix.mix.index import INDEX_BATCH, INDEX_COLUMNS, build_index, text_key64
from medmix.mix.textsim import qa_text

SOURCES = ("pmc_oa", "rocov2", "pubmedvision_alignment_vqa", "medmcqa", "pubmedqa")
LICENSES = ("CC-BY-4.0", "CC-BY-NC-4.0", "CC0-1.0", "Apache-2.0", "MIT")
UNIT_ROWS = 100_000
# native id forms of the adapters, behind `<source>/` (normalize.py); medmcqa's are UUIDs (36 chars)
ID_FORMS = {"pmc_oa": "pmc_oa/train-PMC{i:07d}_F{i:x}", "rocov2": "rocov2/train-ROCOv2_2023_train_{i:06d}",
            "pubmedvision_alignment_vqa": "pubmedvision_alignment_vqa/train/{i:06d}",
            "medmcqa": "medmcqa/train-{i:08x}-4a1f-9c2e-1b7d-5e8f{i:08x}",
            "pubmedqa": "pubmedqa/pqa_artificial-{i:08d}"}


def write_units(folder: Path, rows: int, seed: int = 0) -> list[Path]:
    """Unit files with the index's columns; ids shaped like the adapters' (`ID_FORMS`, 28-51 chars)."""
    rng = np.random.default_rng(seed)
    paths = []
    for u, start in enumerate(range(0, rows, UNIT_ROWS)):
        n = min(UNIT_ROWS, rows - start)
        src = SOURCES[u % len(SOURCES)]
        k = np.arange(start, start + n)
        has = rng.random(n) < 0.5
        hashes = [f"{h:032x}" if m else None for h, m in
                  zip(rng.integers(0, 2**63, n, dtype=np.int64).astype(np.uint64) * 2 + 1, has)]
        table = pa.table({
            "id": [ID_FORMS[src].format(i=i) for i in k],
            "source": [src] * n,
            "task": ["vqa"] * n,
            "license": [LICENSES[i] for i in rng.integers(0, len(LICENSES), n)],
            "image_hash": pa.array(hashes, pa.string()),
            "image_phash": pa.array([int(p) if m else None for p, m in
                                     zip(rng.integers(0, 2**63, n, dtype=np.int64), has)], pa.uint64()),
            "question": [f"what does image {i} show?" for i in k],
            "options": pa.array([None] * n, pa.list_(pa.string())),
            "answer": [f"finding {i % 997}" for i in k],
            "context": pa.array([None] * n, pa.string()),
        })
        path = folder / f"unit-{u:04d}.parquet"
        pq.write_table(table, path)
        paths.append(path)
    return paths


def legacy_index(unit_files: list[Path], sources: list[str]) -> tuple:
    """The columns the old `build_index` held, built the way it built them (bands off)."""
    code = {s: i for i, s in enumerate(sources)}
    unit, row, ids, src, lic, has, sha, ph, tk = [], [], [], [], [], [], [], [], []
    for u, path in enumerate(unit_files):
        r0 = 0
        for batch in iter_batches([path], INDEX_COLUMNS, INDEX_BATCH):
            d = batch.to_pydict()
            n = batch.num_rows
            unit.append(np.full(n, u, np.int32))
            row.append(np.arange(r0, r0 + n, dtype=np.int32))
            r0 += n
            ids.extend(d["id"])
            src.append(np.array([code[s] for s in d["source"]], np.int32))
            lic.extend(d["license"])
            sha.extend(d["image_hash"])
            has.append(np.array([s is not None for s in d["image_hash"]], bool))
            ph.append(np.array([p or 0 for p in d["image_phash"]], np.uint64))
            texts = [qa_text(q, o, a, c) for q, o, a, c in zip(d["question"], d["options"], d["answer"], d["context"])]
            tk.append(np.array([text_key64(t) for t in texts], np.uint64))
    return (np.concatenate(unit), np.concatenate(row), ids, np.concatenate(src), list(sources), lic,
            np.concatenate(has), sha, np.concatenate(ph), np.concatenate(tk))


def measure(fn) -> tuple[float, float, object]:
    """(bytes held by the result, seconds, result): tracemalloc's current size once `fn` returned."""
    gc.collect()
    tracemalloc.start()
    t0 = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - t0
    gc.collect()
    held, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return held, seconds, result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        units = write_units(Path(d), args.rows)
        before, t_before, old = measure(lambda: legacy_index(units, list(SOURCES)))
        assert len(old[2]) == args.rows
        del old
        after, t_after, idx = measure(lambda: build_index(units, list(SOURCES), bands=False, text_threshold=None))
        assert len(idx) == args.rows
    n = args.rows
    print(f"mix index, {n} rows, bands off (tracemalloc, held after the build)")
    print(f"{'':8} {'bytes/row':>10} {'MiB':>8} {'seconds':>8}")
    print(f"{'before':8} {before / n:10.1f} {before / 2**20:8.1f} {t_before:8.2f}")
    print(f"{'after':8} {after / n:10.1f} {after / 2**20:8.1f} {t_after:8.2f}")
    print(f"after / before: {after / before:.3f} ({before / after:.1f}x smaller)")


if __name__ == "__main__":
    main()
