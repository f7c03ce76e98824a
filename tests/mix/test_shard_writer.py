"""The shard writer's scatter (medmix.mix.shard_writer): chunked spills, same shards."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from medmix.core.schema import ARROW_SCHEMA
from medmix.mix import shard_writer
from medmix.mix.shard_writer import write_shards


def _unit(path, name, n):
    rows = [{"id": f"{name}/{i}", "source": name, "split": "train", "domain": "radiology", "modality": "xray",
             "task": "caption", "image": {"bytes": bytes([i % 256]) * (50 + i), "path": None},
             "image_hash": f"{i:032x}", "image_phash": i, "width": 8, "height": 8, "question": None,
             "options": None, "answer": f"caption {name} {i}", "context": None, "license": "CC0-1.0", "meta": None}
            for i in range(n)]
    pq.write_table(pa.Table.from_pylist(rows, schema=ARROW_SCHEMA), path, row_group_size=300)
    return path


def test_chunked_scatter_writes_the_same_shards_and_bounds_what_it_holds(tmp_path, monkeypatch):
    """Rows of one batch go to many shards (a global shuffle, copies of one row included); the
    scatter collects them in chunks. Whatever the chunk size (one part per flush, or all rows in
    one), the shards' bytes are the same, and no flush holds much more than the chunk."""
    units = [_unit(tmp_path / f"u{k}.parquet", f"s{k}", 1500 + 700 * k) for k in range(3)]
    rng = np.random.default_rng(0)
    unit = np.concatenate([np.full(1500 + 700 * k, k, np.int32) for k in range(3)])
    row = np.concatenate([np.arange(1500 + 700 * k, dtype=np.int32) for k in range(3)])
    pick = rng.permutation(len(unit))[:4000]
    extra = pick[:300]  # the same rows again as second copies ("id#1")
    unit, row = np.concatenate([unit[pick], unit[extra]]), np.concatenate([row[pick], row[extra]])
    copy = np.concatenate([np.zeros(4000, np.int32), np.ones(300, np.int32)])
    order = rng.permutation(len(unit))
    unit, row, copy = unit[order], row[order], copy[order]

    held: list[int] = []
    real_concat = pa.concat_tables

    def watch(tables, *a, **k):
        held.append(sum(t.nbytes for t in tables))
        return real_concat(tables, *a, **k)

    monkeypatch.setattr(shard_writer.pa, "concat_tables", watch)
    out = {}
    for chunk in (1, 200_000, 1 << 40):
        monkeypatch.setattr(shard_writer, "SCATTER_CHUNK_BYTES", chunk)
        records = write_shards(tmp_path / f"out{chunk}", units, unit, row, copy, shard_rows=250, workers=1)
        out[chunk] = [(r["path"], r["rows"], r["sha256"]) for r in records]
        if chunk == 200_000:  # several flushes, each at most a chunk plus one batch's part
            largest_part = 1024 * (50 + 2899 + 200)  # 1,024 rows of the largest image and its text
            assert len(held) > 5 and max(held) < chunk + largest_part
        held.clear()
    assert out[1] == out[200_000] == out[1 << 40]
    assert sum(r[1] for r in out[1]) == 4300 and len(out[1]) == 18
    first = pq.read_table(tmp_path / "out1" / out[1][0][0])
    want = [f"s{u}/{r}" + (f"#{c}" if c else "") for u, r, c in zip(unit[:250], row[:250], copy[:250])]
    assert first.column("id").to_pylist() == want  # output order is the selection's order


def test_scatter_in_parallel_parts_and_few_open_files_writes_the_same_shards(tmp_path, monkeypatch):
    """The scatter split over two worker processes (four ranges of units), and a scatter allowed
    only 16 open spill streams (many segments per shard), write the shards one pass writes."""
    from medmix.executors import LocalExecutor

    units = [_unit(tmp_path / f"u{k}.parquet", f"s{k}", 400 + 100 * k) for k in range(6)]
    unit = np.concatenate([np.full(400 + 100 * k, k, np.int32) for k in range(6)])
    row = np.concatenate([np.arange(400 + 100 * k, dtype=np.int32) for k in range(6)])
    order = np.random.default_rng(1).permutation(len(unit))
    unit, row, copy = unit[order], row[order], np.zeros(len(unit), np.int32)

    def shards(name, **kw):
        records = write_shards(tmp_path / name, units, unit, row, copy, shard_rows=40, **kw)
        return [(r["path"], r["rows"], r["sha256"]) for r in records]

    one = shards("one", workers=1)
    with LocalExecutor(2) as ex:
        parallel = shards("two", executor=ex)
    monkeypatch.setattr(shard_writer, "_open_file_budget", lambda: 16)
    few = shards("few", workers=1)
    assert one == parallel == few and len(one) == 98 and sum(r[1] for r in one) == len(unit)
    assert not (tmp_path / "two" / ".spill").exists()


def test_the_write_stages_start_before_their_first_task_ends(tmp_path):
    """The build log names the stage by its first progress event: the scatter and the gather must
    report at once, not when their first task (a range of units, a shard) is done."""
    from medmix.executors import LocalExecutor

    units = [_unit(tmp_path / f"u{k}.parquet", f"s{k}", 300) for k in range(4)]
    unit = np.repeat(np.arange(4, dtype=np.int32), 300)
    row = np.tile(np.arange(300, dtype=np.int32), 4)
    events = []
    with LocalExecutor(2) as ex:
        write_shards(tmp_path / "out", units, unit, row, np.zeros(1200, np.int32), shard_rows=100, executor=ex,
                     progress=lambda stage, n, total: events.append((stage, n, total)))
    assert events[0] == ("scatter", 0, 4) and ("gather", 0, 12) in events
    assert events.index(("gather", 0, 12)) == 1 + sum(1 for e in events if e[0] == "scatter" and e[1])
    assert sum(n for s, n, _ in events if s == "scatter") == 4 and sum(n for s, n, _ in events if s == "gather") == 12
