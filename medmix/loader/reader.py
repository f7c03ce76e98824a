"""The window reader: rows at epoch positions, as Python columns, one decoded window at a time.

Why columns: Arrow converts a whole column to Python objects several times faster than row by
row (`Table.to_pylist()`), and a batch handed between processes as a dict of lists pickles with
no per-row dicts. Per-row datasets zip the columns into dicts at the very end.
"""

from __future__ import annotations

from collections.abc import Sequence
from operator import itemgetter
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from medmix.errors import MedmixError
from medmix.loader.order import EpochOrder
from medmix.loader.shards import ShardIndex

__all__ = ["Columns", "IOStats", "WindowReader", "pick", "reorder"]

Columns = dict[str, list[Any]]
OPEN_FILES = 32  # shard files a reader keeps open


class IOStats:
    """What a reader actually read: lets tests and users check that resume skips consumed data."""

    def __init__(self) -> None:
        self.row_groups = 0
        self.rows = 0

    def __repr__(self) -> str:
        return f"IOStats(row_groups={self.row_groups}, rows={self.rows})"


def pick(values: list[Any], idx: list[int]) -> list[Any]:
    """`[values[i] for i in idx]`, at C speed."""
    if len(idx) == 1:
        return [values[idx[0]]]
    return list(itemgetter(*idx)(values)) if idx else []


def reorder(columns: Columns, idx: list[int]) -> Columns:
    return {name: pick(values, idx) for name, values in columns.items()}


class WindowReader:
    """Fetches rows at epoch positions, holding one decoded window in memory at a time.

    `dense`: this reader will use every row of the windows it loads (no other DataLoader worker
    shares them), so each window is converted to Python columns once, in file order, and rows
    are picked from them in epoch order. Otherwise only the rows asked for are taken in Arrow
    and converted, since the other rows of the window belong to other workers.
    """

    def __init__(self, index: ShardIndex, columns: Sequence[str], stats: IOStats, dense: bool) -> None:
        self.index = index
        self.columns = list(columns)
        self.stats = stats
        self.dense = dense
        self._files: dict[int, pq.ParquetFile] = {}
        self._cached: tuple[EpochOrder, int] | None = None  # holds the order itself: ids get reused
        self._table: pa.Table | None = None  # sparse: the window in Arrow
        self._python: Columns | None = None  # dense: the window's columns, file order
        self._perm: np.ndarray | None = None
        self._shard: np.ndarray | None = None

    def _file(self, shard: int) -> pq.ParquetFile:
        """An open shard; at most `OPEN_FILES` stay open, so thousands of shards need no ulimit."""
        handle = self._files.pop(shard, None)
        if handle is None:
            if len(self._files) >= OPEN_FILES:
                self._files.pop(next(iter(self._files))).close()  # least recently used
            handle = self.index.open(shard)
        self._files[shard] = handle  # (re)inserted last: dicts keep order, so first = oldest
        return handle

    def _load(self, order: EpochOrder, window: int) -> None:
        if self._cached is not None and self._cached[0] is order and self._cached[1] == window:
            return
        self._table = self._python = None  # free the previous window before reading the next
        parts, shard_ids = [], []
        for g in order.windows[window]:
            shard, local = int(self.index.group_shard[g]), int(self.index.group_local[g])
            try:
                part = self._file(shard).read_row_group(local, columns=self.columns, use_threads=False)
            except (OSError, pa.ArrowException) as exc:
                raise MedmixError(f"{self.index.paths[shard]}: cannot read row group {local}: {exc}") from None
            parts.append(part)
            shard_ids.append(np.full(part.num_rows, shard, dtype=np.int32))
        table = pa.concat_tables(parts) if len(parts) > 1 else parts[0]
        if self.dense:
            self._python = {name: table.column(name).to_pylist() for name in self.columns}
        else:
            # one chunk per column: `take` on a multi-chunk column concatenates (copies) the whole
            # window on every call
            self._table = table.combine_chunks()
        self._shard = np.concatenate(shard_ids)
        self._perm = order.rows_of(window)
        self._cached = (order, window)
        self.stats.row_groups += len(parts)
        self.stats.rows += table.num_rows

    def _take_window(self, order: EpochOrder, window: int, positions: np.ndarray) -> tuple[Columns, np.ndarray]:
        self._load(order, window)
        picked = self._perm[positions - order.offsets[window]]
        if self._python is not None:
            return reorder(self._python, picked.tolist()), self._shard[picked]
        taken = self._table.take(pa.array(picked))
        return {name: taken.column(name).to_pylist() for name in self.columns}, self._shard[picked]

    def take(self, order: EpochOrder, positions: np.ndarray) -> tuple[Columns, np.ndarray]:
        """Columns of the rows at `positions` (any order), and the shard each row came from."""
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
        return concat_in_order(parts, slots, shards)


def concat_in_order(parts: list[Columns], slots: list[np.ndarray],
                    shards: list[np.ndarray]) -> tuple[Columns, np.ndarray]:
    """Rows of `parts` (part i holds the rows of output slots `slots[i]`), put in slot order."""
    back = np.empty(sum(len(s) for s in slots), dtype=np.int64)
    back[np.concatenate(slots)] = np.arange(len(back))
    idx = back.tolist()
    names = list(parts[0])
    merged = {name: [v for part in parts for v in part[name]] for name in names}
    return reorder(merged, idx), np.concatenate(shards)[back]
