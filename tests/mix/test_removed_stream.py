"""removed.parquet is streamed: memory is bounded by the batch, not by the number of removals."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

import medmix.mix.removed as removed_mod
from medmix.mix.index import build_index
from medmix.mix.select import Removal

N = 1100  # removals: more than four 256-row batches


def _png(i: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((32, 32, 3), i % 251, np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def _unit(path, n):
    pq.write_table(pa.table({
        "id": [f"a/{i:05d}" for i in range(n)], "source": ["a"] * n, "task": ["vqa"] * n, "license": ["MIT"] * n,
        "image": pa.array([{"bytes": _png(i), "path": None} for i in range(n)],
                          pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
        "image_hash": [f"{i:032x}" for i in range(n)], "image_phash": pa.array(range(n), pa.uint64()),
        "question": [f"question {i}" for i in range(n)], "options": pa.array([None] * n, pa.list_(pa.string())),
        "answer": ["x"] * n, "context": pa.array([None] * n, pa.string()),
    }), path, row_group_size=256)
    return path


def test_removed_parquet_streams_in_batches_and_bytes_do_not_depend_on_the_batch(tmp_path, monkeypatch):
    unit = _unit(tmp_path / "u.parquet", N + 1)
    idx = build_index([unit], ["a"], bands=False, text_threshold=None)
    # every row but the last is a duplicate of row N (the survivor), listed out of id order
    removals = [Removal(f"a/{r:05d}", "duplicate", f"a/{N:05d}", "duplicate", r, N) for r in reversed(range(N))]
    sizes = []
    real = removed_mod._batch_table
    monkeypatch.setattr(removed_mod, "_batch_table", lambda recs: (sizes.append(len(recs)), real(recs))[1])

    small = removed_mod.write_removed(tmp_path / "small.parquet", removals, idx, [unit], None, [], 13, batch_rows=256)
    assert max(sizes) == 256 and sum(sizes) == N and len(sizes) == 5  # never more than one batch at once
    sizes.clear()
    whole = removed_mod.write_removed(tmp_path / "whole.parquet", removals, idx, [unit], None, [], 13,
                                      batch_rows=4096)
    assert sizes == [N]
    assert small == whole  # same sha256 and row count: batches change memory, never bytes
    t = pq.read_table(tmp_path / "small.parquet")
    assert t.column("id").to_pylist() == sorted(r.id for r in removals)
    assert t.column("thumb").null_count == 0 and t.column("other_thumb").null_count == 0
    assert t.column("hamming").to_pylist()[:2] == [bin(0 ^ N).count("1"), bin(1 ^ N).count("1")]


def test_removed_parquet_is_copied_from_the_cache_when_its_key_matches(tmp_path, monkeypatch):
    """A rebuild with the same removals copies the file an earlier build wrote (byte-identical);
    other removals, another n-gram length or a damaged kept copy write it anew."""
    import medmix.mix.removed_cache as cache_mod

    (tmp_path / "src").mkdir()
    unit = _unit(tmp_path / "src" / "k1.parquet", 40)
    idx = build_index([unit], ["a"], bands=False, text_threshold=None)
    removals = [Removal(f"a/{r:05d}", "duplicate", "a/00039", "duplicate", r, 39) for r in range(5)]
    first = cache_mod.write_removed_cached(tmp_path / "r1.parquet", tmp_path / "cache", removals, idx, [unit],
                                           None, [], 13)
    writes = []
    real = cache_mod.write_removed
    monkeypatch.setattr(cache_mod, "write_removed", lambda *a, **k: (writes.append(1), real(*a, **k))[1])
    again = cache_mod.write_removed_cached(tmp_path / "r2.parquet", tmp_path / "cache", removals, idx, [unit],
                                           None, [], 13)
    assert again == first and not writes
    assert (tmp_path / "r1.parquet").read_bytes() == (tmp_path / "r2.parquet").read_bytes()
    fewer = cache_mod.write_removed_cached(tmp_path / "r3.parquet", tmp_path / "cache", removals[:4], idx, [unit],
                                           None, [], 13)
    assert writes == [1] and fewer[1] == 4
    cache_mod.write_removed_cached(tmp_path / "r4.parquet", tmp_path / "cache", removals, idx, [unit], None, [], 8)
    assert writes == [1, 1]  # the n-gram length is part of the key
    key = cache_mod.removed_key(removals, idx, [unit], [], 13)
    kept = tmp_path / "cache" / cache_mod.CACHE_DIR / f"{key}.parquet"
    kept.write_bytes(kept.read_bytes()[:-10])  # cut short: not trusted
    assert cache_mod.write_removed_cached(tmp_path / "r5.parquet", tmp_path / "cache", removals, idx, [unit],
                                          None, [], 13) == first and writes == [1, 1, 1]
    assert not list((tmp_path / "cache" / cache_mod.CACHE_DIR).glob(".*"))  # no temporary files left
