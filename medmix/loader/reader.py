"""The window reader: rows at epoch positions, in Python, from one decoded window at a time.

Two ways to the same rows, chosen by who uses the window (instruction counts from callgrind on
benchmark data, 10k rows, raw pyarrow -> dicts = 1.00):
  * dense (no DataLoader workers: every row of the window is this reader's): the window is
    converted to Python once, column by column and row group by row group, and rows are picked
    by reference in epoch order. No Arrow copy of the data: what a full read must cost anyway.
  * sparse (a DataLoader worker: the window's other rows belong to other workers): the window is
    combined into one chunk per column, and each chunk's own rows are taken in Arrow and only
    they are converted. A whole-window Arrow gather for the dense case measured 1.5x the
    instructions of raw pyarrow (the image bytes copied twice), hence the split.
Per-row mode gets row dicts, batched mode {column: list}; both from here, in the same order.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from itertools import chain, repeat
from operator import itemgetter
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from medmix.errors import MedmixError
from medmix.loader.order import EpochOrder
from medmix.loader.shards import ShardIndex

__all__ = ["Columns", "IOStats", "Rows", "WindowReader", "gather", "to_python", "to_rows"]

Columns = dict[str, list[Any]]
Rows = Columns | list[dict[str, Any]]  # batched mode hands out columns, per-row mode row dicts

OPEN_FILES = 32  # shard files a reader keeps open


class IOStats:
    """What a reader actually read: lets tests and users check that resume skips consumed data."""

    def __init__(self) -> None:
        self.row_groups = 0
        self.rows = 0

    def __repr__(self) -> str:
        return f"IOStats(row_groups={self.row_groups}, rows={self.rows})"


class WindowReader:
    """Fetches rows at epoch positions, holding one decoded window in memory at a time.

    Inside a DataLoader worker only the worker's own rows of a window are taken; the other rows
    belong to other workers. With `prefetch`, the next window this reader needs (`window + step`:
    the next of the order, or in worker_split="windows" mode the worker's next one) is
    read by a background thread while this one is handed out: Arrow releases the GIL while it
    decodes Parquet, so reading overlaps the Python-side conversion (memory: two windows).
    """

    def __init__(self, index: ShardIndex, columns: Sequence[str], stats: IOStats, *, as_rows: bool = False,
                 dense: bool = False, prefetch: bool = False, threads: bool | None = None, step: int = 1) -> None:
        self.index = index
        self.as_rows = as_rows  # hand out a list of row dicts (per-row mode), else {column: list}
        self.dense = dense
        self.columns = list(columns)
        self.stats = stats
        # Arrow may decode columns in parallel too: only outside DataLoader workers (default: with prefetch)
        self.threads = prefetch if threads is None else threads
        self.step = step  # the next window this reader reads is window + step (a worker's windows: step = n)
        self._files: dict[int, pq.ParquetFile] = {}
        self._cached: tuple[EpochOrder, int] | None = None  # holds the order itself: ids get reused
        self._table: pa.Table | None = None  # the window, one chunk per column
        self._python: Rows | None = None  # dense: the window in Python, file order
        self._given: np.ndarray | None = None  # dense rows: which row dicts were handed out already
        self._perm: np.ndarray | None = None  # epoch position in the window -> row of the table
        self._shard: np.ndarray | None = None
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="medmix-window") if prefetch else None
        self._ahead: tuple[EpochOrder, int, Future[tuple[pa.Table, np.ndarray]]] | None = None
        self.last_window: int | None = None  # the pass ends in this window: nothing to prefetch after it

    def close(self) -> None:
        """Stop prefetching (waiting for a read in flight, so no thread still uses a file) and close files."""
        if self._ahead is not None:
            self._ahead[2].cancel() or self._ahead[2].exception()
            self._ahead = None
        if self._pool is not None:
            self._pool.shutdown(wait=False)
        for handle in self._files.values():
            handle.close()
        self._files.clear()

    def _file(self, shard: int) -> pq.ParquetFile:
        """An open shard; at most `OPEN_FILES` stay open, so thousands of shards need no ulimit."""
        handle = self._files.pop(shard, None)
        if handle is None:
            if len(self._files) >= OPEN_FILES:
                self._files.pop(next(iter(self._files))).close()  # least recently used
            handle = self.index.open(shard)
        self._files[shard] = handle  # (re)inserted last: dicts keep order, so first = oldest
        return handle

    def _read(self, order: EpochOrder, window: int) -> tuple[pa.Table, np.ndarray]:
        """The window's rows in file order, one chunk per column, and the shard of each row.

        Runs on one thread at a time (the prefetch thread, or the caller after waiting for it).
        """
        parts, shard_ids = [], []
        for g in order.windows[window]:
            shard, local = int(self.index.group_shard[g]), int(self.index.group_local[g])
            try:
                part = self._file(shard).read_row_group(local, columns=self.columns, use_threads=self.threads)
            except (OSError, pa.ArrowException) as exc:
                raise MedmixError(f"{self.index.paths[shard]}: cannot read row group {local}: {exc}") from None
            parts.append(part)
            shard_ids.append(np.full(part.num_rows, shard, dtype=np.int32))
        table = pa.concat_tables(parts) if len(parts) > 1 else parts[0]
        self.stats.row_groups += len(parts)
        self.stats.rows += table.num_rows
        if self.dense:  # converted whole, one row group (chunk) at a time: no copy in Arrow
            return table, np.concatenate(shard_ids)
        # One chunk per column: `take` on a multi-chunk struct column (the image) concatenates the
        # whole window on every call. A bulk copy once, then a take of each chunk's rows, costs
        # half of a take of the whole window in epoch order (0.25 + 0.4 vs 1.2 us/row, measured
        # on benchmark data). Rebuilt from the arrays so that windows of different files (and
        # sources) share one schema, whatever field metadata their writers left.
        table = table.combine_chunks()
        return pa.Table.from_arrays(table.columns, names=self.columns), np.concatenate(shard_ids)

    def _load(self, order: EpochOrder, window: int) -> None:
        if self._cached is not None and self._cached[0] is order and self._cached[1] == window:
            return
        self._table = self._python = None  # free the previous window before reading the next
        ahead, self._ahead = self._ahead, None
        if ahead is not None and ahead[0] is order and ahead[1] == window:
            self._table, self._shard = ahead[2].result()
        else:
            if ahead is not None:  # a guess that missed (a new lap, a skip): let it finish, unused
                ahead[2].cancel() or ahead[2].exception()
            self._table, self._shard = self._read(order, window)
        if self.dense:
            self._python = to_rows(self._table) if self.as_rows else to_python(self._table)
            self._given, self._table = np.zeros(len(self._shard), dtype=bool), None
        self._perm = order.rows_of(window)
        self._cached = (order, window)
        nxt = window + self.step
        if self._pool is not None and nxt < len(order.windows) and window != self.last_window:
            self._ahead = (order, nxt, self._pool.submit(self._read, order, nxt))

    def _take_window(self, order: EpochOrder, window: int, positions: np.ndarray) -> tuple[Rows, np.ndarray]:
        self._load(order, window)
        rows = self._perm[positions - order.offsets[window]]
        if self._python is None:  # other workers' rows are in the window too: convert only ours
            taken = self._table.take(rows)
            return (to_rows(taken) if self.as_rows else to_python(taken)), self._shard[rows]
        # dense: every row of the window is ours, converted once; rows are picked by reference
        idx = rows.tolist()
        if not self.as_rows:
            return {name: pick(values, idx) for name, values in self._python.items()}, self._shard[rows]
        picked = pick(self._python, idx)
        again = self._given[rows]
        self._given[rows] = True
        if again.any():  # a row asked for twice (a padded epoch): never hand out one dict twice
            picked = [dict(row) if dup else row for row, dup in zip(picked, again.tolist())]
        return picked, self._shard[rows]

    def take(self, order: EpochOrder, positions: np.ndarray) -> tuple[Rows, np.ndarray]:
        """The rows at `positions` (any order) in Python, and the shard each came from."""
        windows = order.window_of(positions)
        if windows[0] == windows[-1] and (windows == windows[0]).all():  # the common case
            return self._take_window(order, int(windows[0]), positions)
        _, first = np.unique(windows, return_index=True)
        slots, parts, shards = [], [], []
        for w in windows[np.sort(first)]:  # windows in stream order: sequential, cache-friendly
            where = np.flatnonzero(windows == w)
            cols, shard = self._take_window(order, int(w), positions[where])
            slots.append(where)
            parts.append(cols)
            shards.append(shard)
        return gather(parts, slots, shards)


def pick(values: list[Any], idx: list[int]) -> list[Any]:
    """`[values[i] for i in idx]` at C speed."""
    return list(itemgetter(*idx)(values)) if len(idx) > 1 else [values[i] for i in idx]


def to_rows(table: pa.Table) -> list[dict[str, Any]]:
    """A table as row dicts, converted column by column (several times faster than `to_pylist()`)."""
    names = table.column_names
    return list(map(dict, map(zip, repeat(names), zip(*(column.to_pylist() for column in table.columns)))))


def to_python(table: pa.Table) -> Columns:
    """A table as {column: list of Python values}; column by column, several times faster than rows."""
    return {name: column.to_pylist() for name, column in zip(table.column_names, table.columns)}


def gather(parts: list[Rows], slots: list[np.ndarray], shards: list[np.ndarray]) -> tuple[Rows, np.ndarray]:
    """Rows of `parts` (part i holds the rows of output slots `slots[i]`), put in slot order.

    In Python rather than Arrow: `take` would copy every value (image bytes too) once more,
    while this copies references.
    """
    if len(parts) == 1:
        return parts[0], shards[0]
    back = np.empty(sum(len(s) for s in slots), dtype=np.int64)
    back[np.concatenate(slots)] = np.arange(len(back))
    idx = back.tolist()
    if isinstance(parts[0], list):
        return pick(list(chain.from_iterable(parts)), idx), np.concatenate(shards)[back]
    merged = {}
    for name in parts[0]:
        values = list(chain.from_iterable(part[name] for part in parts))
        merged[name] = pick(values, idx)
    return merged, np.concatenate(shards)[back]
