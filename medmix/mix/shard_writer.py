"""Write the mixture's shards in its global shuffled order with memory bounded by one shard.

A global shuffle means each output shard draws rows from every unit file; reading those rows by
random access would re-read row groups once per shard. Instead, two sequential passes:
  scatter: read each unit file once, in order, and append each selected row to the spill file
           of the shard it belongs to (Arrow IPC streams, one per missing shard);
  gather:  per shard, read its spill file (one shard of rows), sort by output position, write
           the Parquet shard atomically. Shards are independent, so this pass runs in parallel.
Shards already present under their final name are complete (atomic rename, or temporary key +
copy on object storage) and are skipped, so a killed build resumes with only the missing shards.
The gather runs on the build's executor (`medmix.executors`): local processes or Ray tasks.
"""

from __future__ import annotations

import itertools
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from medmix.core.layout import DATA_DIR, shard_path
from medmix.core.schema import ARROW_SCHEMA, COLUMNS
from medmix.core.storage import Store, scratch_dir
from medmix.core.writer import sha256_file, write_parquet_atomic
from medmix.executors import Executor, LocalExecutor


def write_shards(out: Path | Store, unit_files: Sequence[Path], unit: np.ndarray, row: np.ndarray, copy: np.ndarray,
                 shard_rows: int, workers: int = 1, progress: Callable[[str, int, int], None] | None = None,
                 executor: Executor | None = None, spill: Path | None = None) -> list[dict]:
    """Rows (unit, row, copy) in output order → shards under `out/data/`; returns shard records.

    `out` is a local folder or a `Store` (any fsspec URL). The gather runs on `executor` (default:
    a local pool of `workers`); an executor whose tasks may run on other machines gets each
    shard's spilled rows as bytes (through its object store), and the task writes the shard to
    `out` itself, atomically (temporary key, then copy into place on object storage).
    `spill`: local scratch folder for the scatter (default `out/.spill`; required for a remote `out`).
    """
    store = out if isinstance(out, Store) else Store(out)
    executor = executor or LocalExecutor(workers)
    total = len(unit)
    n_shards = max(1, -(-total // shard_rows))
    names = [shard_path(i, n_shards) for i in range(n_shards)]
    present = set(store.list(DATA_DIR))
    missing = [i for i, name in enumerate(names) if name.rsplit("/", 1)[-1] not in present]
    spill = spill or (store.local / ".spill" if store.local else None)
    if spill is None:
        raise ValueError("write_shards: a remote output needs a local spill folder")
    written: dict[int, tuple[int, str]] = {}
    if missing:
        if spill.exists():
            shutil.rmtree(spill)  # a killed scatter leaves partial spills; they are rebuilt from the cache
        spill.mkdir(parents=True)
        _scatter_parts(spill, unit_files, unit, row, copy, shard_rows, set(missing), progress, executor)
        pieces: dict[int, list[Path]] = {}
        for f in sorted(spill.iterdir()):
            pieces.setdefault(int(f.name.split(".", 1)[0]), []).append(f)
        ship = executor.remote
        calls = ((_spill_payload(pieces.get(i, []), ship), store, names[i]) for i in missing)
        if progress:
            progress("gather", 0, len(missing))
        results = executor.map(_gather, calls, on_done=lambda i, r: progress and progress("gather", 1, len(missing)))
        written = dict(zip(missing, results))
        shutil.rmtree(spill, ignore_errors=True)
    if store.local:
        (store.local / DATA_DIR).mkdir(parents=True, exist_ok=True)
    records = []
    for i, name in enumerate(names):
        if i in written:
            rows, digest = written[i]
        elif store.local:  # written by an earlier (killed) run
            rows, digest = pq.ParquetFile(store.local / name).metadata.num_rows, sha256_file(store.local / name)
        else:
            with store.fs.open(store.key(name), "rb") as f:
                rows = pq.ParquetFile(f).metadata.num_rows
            digest = store.sha256(name)
        records.append({"path": name, "rows": rows, "sha256": digest})
    return records


def _spill_payload(paths: list[Path], ship: bool) -> list[Path] | list[bytes]:
    """A shard's spill pieces (none for an empty mixture's one shard), as bytes for a remote task."""
    return [p.read_bytes() for p in paths] if ship else paths


SPILL_SCHEMA = ARROW_SCHEMA.append(pa.field("_pos", pa.int64())).append(pa.field("_copy", pa.int32()))


# rows gathered from the unit files before they are split by shard and appended to the spills
SCATTER_CHUNK_BYTES = 64 << 20


def _open_file_budget() -> int:
    """Spill streams one scatter process keeps open at once: half its open-file limit, raised to
    the hard limit first where allowed. Why: one stream per shard is 1,675 files at 3.35M rows,
    over the 1,024 many Linux desktops allow by default."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY or hard > soft:
            want = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
            if want > soft:
                resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
                soft = want
    except (ImportError, ValueError, OSError):  # no resource module (Windows) or not allowed
        soft = 1024
    return max(16, soft // 2)


def _scatter_parts(spill: Path, unit_files: Sequence[Path], unit: np.ndarray, row: np.ndarray, copy: np.ndarray,
                   shard_rows: int, wanted: set[int], progress, executor: Executor) -> None:
    """The scatter, over contiguous ranges of units, each its own task on the executor's local
    workers (one range per worker, twice over so progress moves): each writes its own spill
    pieces, and the gather reads a shard's pieces together.

    Why: the scatter is a single pass over every selected row (93 s of the 3.35M one-weight
    rebuild, docs/scale.md) that ran on the driver alone. A remote executor's tasks could not
    write this machine's spill folder, so there it stays one pass on the driver."""
    if progress:  # the stage starts now, not when the first range is done
        progress("scatter", 0, len(unit_files))
    pos = np.arange(len(unit), dtype=np.int64)
    keep = np.isin(pos // shard_rows, np.fromiter(wanted, np.int64))
    order = np.lexsort((row[keep], unit[keep]))
    u_sel, r_sel, p_sel, c_sel = unit[keep][order], row[keep][order], pos[keep][order], copy[keep][order]
    bounds = np.searchsorted(u_sel, np.arange(len(unit_files) + 1))
    workers = getattr(executor, "workers", 1)
    n_parts = 1 if executor.remote or workers <= 1 else min(len(unit_files), 2 * workers)
    # ranges of about equal selected rows
    cuts = np.searchsorted(bounds, np.linspace(0, bounds[-1], n_parts + 1)[1:-1])
    edges = [0, *sorted(set(int(c) for c in cuts) - {0, len(unit_files)}), len(unit_files)]
    calls = []
    for k, (a, b) in enumerate(itertools.pairwise(edges)):
        lo, hi = bounds[a], bounds[b]
        calls.append((spill, [Path(f) for f in unit_files[a:b]], bounds[a:b + 1] - lo, r_sel[lo:hi], p_sel[lo:hi],
                      c_sel[lo:hi], shard_rows, f"p{k:03d}"))
    if len(calls) == 1:
        _scatter(*calls[0], progress=progress)
        return

    def done(i: int, _result: None) -> None:
        if progress:
            progress("scatter", edges[i + 1] - edges[i], len(unit_files))

    executor.map(_scatter, calls, on_done=done)


def _scatter(spill: Path, unit_files: Sequence[Path], bounds: np.ndarray, r_sel: np.ndarray, p_sel: np.ndarray,
             c_sel: np.ndarray, shard_rows: int, tag: str, progress=None, chunk_bytes: int | None = None) -> None:
    """Selected rows of some units (sorted by unit, then row; `bounds[u]:bounds[u + 1]` are unit
    u's) into spill pieces per shard, named `{shard}.{tag}{segment}.arrow`.

    Why in chunks: the global shuffle sends the rows of one 1,024-row batch to hundreds of shards.
    Appending per batch and shard wrote ~1 row per IPC message, and filtering the batch once per
    shard made the pass quadratic in the batch: at the full 3.35M rehearsal the scatter took
    469-501 s of a build. Rows now collect up to `chunk_bytes` (64 MiB: memory is bounded by it,
    not by the dataset), are sorted by shard once and appended as one slice per shard. When the
    open streams reach the process's budget (`_open_file_budget`) they are closed and later rows
    go to a next segment. The gather sorts each shard by output position, so the shards' bytes
    depend neither on the chunking, nor on the segments, nor on how units were split into tasks."""
    chunk_bytes = SCATTER_CHUNK_BYTES if chunk_bytes is None else chunk_bytes
    budget = _open_file_budget()
    writers: dict[int, ipc.RecordBatchStreamWriter] = {}
    segment = 0
    pending: list[pa.Table] = []
    held = 0

    def close_all() -> None:
        for w in writers.values():
            w.close()
        writers.clear()

    def flush() -> None:
        nonlocal held, segment
        if not pending:
            return
        table = pa.concat_tables(pending)
        pending.clear()
        held = 0
        shards = table.column("_pos").to_numpy() // shard_rows
        by_shard = np.argsort(shards, kind="stable")
        table, shards = table.take(pa.array(by_shard)), shards[by_shard]
        cuts = np.flatnonzero(np.diff(shards)) + 1
        for a, b in zip(np.concatenate([[0], cuts]), np.concatenate([cuts, [len(shards)]])):
            s = int(shards[a])
            if s not in writers:
                if len(writers) >= budget:
                    close_all()
                    segment += 1
                writers[s] = ipc.new_stream(str(spill / f"{s}.{tag}{segment:04d}.arrow"), SPILL_SCHEMA)
            writers[s].write_table(table.slice(a, b - a))

    try:
        for u, path in enumerate(unit_files):
            lo, hi = bounds[u], bounds[u + 1]
            if lo == hi:
                if progress:
                    progress("scatter", 1, len(unit_files))  # every unit counts, so the ETA holds
                continue
            # stream the unit file batch by batch: memory holds one row group, not the unit
            off = 0
            for batch in pq.ParquetFile(path).iter_batches(batch_size=1024, columns=list(COLUMNS)):
                a, b = np.searchsorted(r_sel[lo:hi], [off, off + batch.num_rows]) + lo
                if a < b:
                    part = pa.Table.from_batches([batch]).take(pa.array(r_sel[a:b] - off)).cast(ARROW_SCHEMA)
                    part = (part.append_column("_pos", pa.array(p_sel[a:b]))
                            .append_column("_copy", pa.array(c_sel[a:b])))
                    pending.append(part)
                    held += part.nbytes
                    if held >= chunk_bytes:
                        flush()
                off += batch.num_rows
            if progress:
                progress("scatter", 1, len(unit_files))
        flush()
    finally:
        close_all()


def _gather(spill: list[Path] | list[bytes], store: Store, name: str) -> tuple[int, str]:
    """One shard: its spilled rows (all its pieces), sorted by output position, written atomically; (rows, sha256)."""
    tables = [SPILL_SCHEMA.empty_table()]
    for piece in spill:
        if isinstance(piece, bytes):
            tables.append(ipc.open_stream(pa.BufferReader(piece)).read_all())
        else:
            with pa.memory_map(str(piece)) as src:
                tables.append(ipc.open_stream(src).read_all())
    table = pa.concat_tables(tables)
    table = table.take(pc.sort_indices(table, [("_pos", "ascending")]))
    copies = table.column("_copy").to_numpy()
    if copies.any():
        ids = table.column("id").to_pylist()
        ids = [i if c == 0 else f"{i}#{c}" for i, c in zip(ids, copies)]
        table = table.set_column(table.schema.get_field_index("id"), "id", pa.array(ids, pa.string()))
    table = table.drop_columns(["_pos", "_copy"]).cast(ARROW_SCHEMA)
    # replace_schema_metadata keeps the `datasets` feature description on every shard
    table = table.replace_schema_metadata(ARROW_SCHEMA.metadata)
    if store.local:
        digest, rows = write_parquet_atomic(store.local / name, table)
        return rows, digest
    with tempfile.TemporaryDirectory(dir=scratch_dir()) as tmp:
        local = Path(tmp) / Path(name).name
        digest, rows = write_parquet_atomic(local, table)
        store.put_file(local, name)
    return rows, digest
