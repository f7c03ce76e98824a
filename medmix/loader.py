"""Load a built mixture: as a `datasets.Dataset`, or as a sharded, resumable torch stream.

Why two ways: `load()` is the no-surprise path (memory-mapped Arrow, random access, the HF
ecosystem), while `MixtureDataset` is what a multi-GPU trainer needs: every sample exactly once
per epoch across ranks and DataLoader workers, deterministic shuffles, bounded memory and O(1)
mid-epoch resume. `MixtureDataset.from_sources` adds load-time weights over several mixtures.

Everything below is defined by this module alone (our own SplitMix64 hash, no NumPy RNG streams),
so an order depends only on the data and the arguments, never on library versions.

Epoch order (the determinism contract)
    Row groups of all shards, in manifest order, get global ids g = 0..m-1. The order key is
    `k = key(seed, 1, epoch)` for a `MixtureDataset`, and `key(seed, 3, epoch, s, lap)` for
    source s of a `WeightedMixture` on its lap-th pass. Then:
    1. Row groups are sorted by `h(key(k, 0), g)` (identity when `shuffle=False`).
    2. Consecutive row groups in that order form windows, each closed as soon as it holds at
       least `shuffle_window` rows.
    3. Rows inside window w are sorted by `h(key(k, 1, w), j)` for their index j in the
       window's concatenated rows. The epoch's sequence is the windows one after another.
    `h(k, i)` is SplitMix64 of `k + i * 0x9E3779B97F4A7C15`; `key()` folds integers with it.
    Reading stays sequential at row-group granularity and memory holds one window per reader.

Ranks (remainder policy), for N rows and W ranks, on the epoch's sequence of positions:
    * default ("uneven"): rank r takes positions [floor(rN/W), floor((r+1)N/W)). Every row once;
      ranks differ by at most one sample.
    * `drop_remainder=True`: rank r takes [r*F, (r+1)*F) with F = N // W; the last N - W*F
      positions of the epoch (different rows each epoch) are skipped.
    * `pad_remainder=True`: rank r takes [r*C, (r+1)*C) with C = ceil(N/W), position p read as
      p mod N: the first W*C - N rows of the epoch appear twice, like `DistributedSampler`.
    DDP needs equal step counts on every rank: use drop or pad there.
    Contiguous ranges mean each rank reads only its own ~1/W of the files.

DataLoader workers: a rank's stream is cut into blocks of `batch_size` samples and worker i of n
takes blocks i, i+n, i+2n, ... A DataLoader with the same `batch_size` returns batches round-robin
from its workers, so it yields exactly the rank's stream in order, whatever `num_workers` is.
That is what makes a plain DataLoader resumable from one number. The price: every worker reads
each window of its rank (the OS page cache shares the bytes; Parquet decoding is repeated, while
only the worker's own rows are turned into Python objects and images).

Resume: `state_dict()` holds (seed, epoch, samples consumed by this rank), plus for weighted
mixtures each source's position. `load_state_dict()` jumps straight to the window holding the
next sample; no earlier window is read. With a plain DataLoader, after `steps` batches of this
epoch: `ds.set_epoch(epoch); ds.skip(steps * batch_size)` (any `num_workers`). With
`torchdata.stateful_dataloader.StatefulDataLoader` the per-worker states are saved and restored
for you (same `num_workers` and `batch_size` on resume). Workers get a copy of the dataset at each
`iter(loader)`, so call `set_epoch` before it and do not use `persistent_workers=True`.
"""

from __future__ import annotations

import hashlib
import json
import math
import operator
import os
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from itertools import repeat
from operator import itemgetter
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from torch.utils.data import IterableDataset, get_worker_info

from medmix.distributed import rank_and_world
from medmix.errors import MedmixError, RowError
from medmix.hashing import fold as _key
from medmix.hashing import permutation as _permutation
from medmix.hashing import uniforms as _uniforms
from medmix.layout import mixture_files
from medmix.schema import ARROW_SCHEMA, COLUMNS, FEATURES
from medmix.storage import is_remote

__all__ = ["MixtureDataset", "WeightedMixture", "load", "mixture_files"]

STATE_FORMAT = "medmix.loader/1"
_CHUNK = 512  # samples a worker plans at a time: bounds Python-side buffers, not I/O
_OPEN_FILES = 32  # shard files a reader keeps open


class _Index:
    """Shards and row groups of one mixture split, read from Parquet footers only (cheap).

    Checks here catch a damaged or mismatched mixture before training starts, naming the file.
    """

    def __init__(self, root: Path, split: str, columns: Sequence[str],
                 remote: Mapping[str, Any] | None = None) -> None:
        self.root = root
        self.paths: list[str] = []
        shard_of: list[int] = []
        local: list[int] = []
        rows: list[int] = []
        # [i13 hook] a mixture at a URL: shards listed by its manifest, footers read remotely, row
        # groups served by medmix.shardcache (see there); `remote` holds its options
        self.remote = None
        if is_remote(root):
            from medmix.shardcache import RemoteMixture
            self.remote = RemoteMixture(str(root), split, **(remote or {}))
        remote_listing = zip(self.remote.paths, self.remote.expected, strict=True) if self.remote else None
        listing = remote_listing or mixture_files(root, split)
        for shard_id, (path, expected) in enumerate(listing):
            if self.remote is None and not path.is_file():
                raise MedmixError(f"{path}: shard listed in the manifest is missing")
            try:
                meta = self.remote.metas[shard_id] if self.remote else pq.read_metadata(path)
                schema = meta.schema.to_arrow_schema()
            except (OSError, pa.ArrowException) as exc:
                raise MedmixError(f"{path}: not a readable Parquet file: {exc}") from None
            if expected is not None and meta.num_rows != expected:
                raise MedmixError(f"{path}: manifest says {expected} rows, the file has {meta.num_rows}")
            _check_schema(path, schema, columns)
            self.paths.append(str(path))
            for g in range(meta.num_row_groups):
                n = meta.row_group(g).num_rows
                if n:
                    shard_of.append(shard_id)
                    local.append(g)
                    rows.append(n)
        self.rg_shard = np.asarray(shard_of, dtype=np.int64)
        self.rg_local = np.asarray(local, dtype=np.int64)
        self.rg_rows = np.asarray(rows, dtype=np.int64)
        self.total = int(self.rg_rows.sum())
        if self.total == 0:
            raise MedmixError(f"{root}: split {split!r} has no rows")
        blob = json.dumps([[os.path.relpath(p, root) for p in self.paths], rows, local, shard_of])
        self.fingerprint = hashlib.sha256(blob.encode()).hexdigest()[:16]


def _check_schema(path: Path, schema: pa.Schema, columns: Sequence[str]) -> None:
    for name in columns:
        idx = schema.get_field_index(name)
        if idx < 0:
            raise MedmixError(f"{path}: column {name!r} is missing")
        want = ARROW_SCHEMA.field(name).type
        if not schema.field(idx).type.equals(want):
            raise MedmixError(f"{path}: column {name!r} is {schema.field(idx).type}, expected {want}")


# -- one epoch's order and the reader that follows it ---------------------------------------------
class _Order:
    """The epoch sequence of one mixture (see the module docstring for the exact definition)."""

    def __init__(self, index: _Index, key: int | None, window_rows: int) -> None:
        self.key = key
        self.lap = 0  # which pass over a source this order is (weighted mixtures)
        m = len(index.rg_rows)
        rg_order = np.arange(m) if key is None else _permutation(_key(key, 0), m)
        self.windows: list[np.ndarray] = []
        offsets = [0]
        begin, acc = 0, 0
        sizes = index.rg_rows[rg_order]
        for i in range(m):
            acc += int(sizes[i])
            if acc >= window_rows or i == m - 1:
                self.windows.append(rg_order[begin : i + 1])
                offsets.append(offsets[-1] + acc)
                begin, acc = i + 1, 0
        self.offsets = np.asarray(offsets, dtype=np.int64)

    def window_of(self, positions: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.offsets, positions, side="right") - 1

    def rows_of(self, window: int) -> np.ndarray:
        """Row indices (into the window's concatenated row groups) in epoch order."""
        n = int(self.offsets[window + 1] - self.offsets[window])
        return np.arange(n) if self.key is None else _permutation(_key(self.key, 1, window), n)


class _IOStats:
    """What a reader actually read: lets tests and users check that resume skips consumed data."""

    def __init__(self) -> None:
        self.row_groups = 0
        self.rows = 0

    def __repr__(self) -> str:
        return f"IOStats(row_groups={self.row_groups}, rows={self.rows})"


class _WindowReader:
    """Fetches rows at epoch positions, holding one decoded window in memory at a time.

    `dense`: this reader will use every row of the windows it loads (no other DataLoader worker
    shares them), so each window is turned into Python rows once, in file order, and handed out
    in epoch order. Otherwise only the rows asked for are taken in Arrow and converted, since the other
    rows of the window belong to other workers.
    """

    def __init__(self, index: _Index, columns: Sequence[str], stats: _IOStats, dense: bool) -> None:
        self.index = index
        self.columns = list(columns)
        self.stats = stats
        self.dense = dense
        self._files: dict[int, pq.ParquetFile] = {}
        self._cached: tuple[_Order, int] | None = None  # holds the order itself: ids get reused
        self._table: pa.Table | None = None
        self._dicts: list[dict[str, Any]] | None = None  # dense: the window's rows, file order
        self._given: np.ndarray | None = None
        self._perm: np.ndarray | None = None
        self._shard: np.ndarray | None = None

    def _file(self, shard: int) -> pq.ParquetFile:
        """An open shard; at most `_OPEN_FILES` stay open, so thousands of shards need no ulimit."""
        handle = self._files.pop(shard, None)
        if handle is None:
            if len(self._files) >= _OPEN_FILES:
                self._files.pop(next(iter(self._files))).close()  # least recently used
            path = self.index.paths[shard]
            try:  # [i13 hook] remote shards come through the row-group cache
                handle = self.index.remote.open(shard) if self.index.remote else pq.ParquetFile(path)
            except (OSError, pa.ArrowException) as exc:
                raise MedmixError(f"{path}: cannot open: {exc}") from None
        self._files[shard] = handle  # (re)inserted last: dicts keep order, so first = oldest
        return handle

    def _load(self, order: _Order, window: int) -> None:
        if self._cached is not None and self._cached[0] is order and self._cached[1] == window:
            return
        self._table = self._dicts = None  # free the previous window before reading the next
        parts, shard_ids = [], []
        for g in order.windows[window]:
            shard, local = int(self.index.rg_shard[g]), int(self.index.rg_local[g])
            try:
                part = self._file(shard).read_row_group(local, columns=self.columns, use_threads=False)
            except (OSError, pa.ArrowException) as exc:
                raise MedmixError(f"{self.index.paths[shard]}: cannot read row group {local}: {exc}") from None
            parts.append(part)
            shard_ids.append(np.full(part.num_rows, shard, dtype=np.int32))
        table = pa.concat_tables(parts) if len(parts) > 1 else parts[0]
        if self.dense:
            self._dicts = _to_rows(table)
            self._given = np.zeros(table.num_rows, dtype=bool)
        else:
            # one chunk per column: `take` on a multi-chunk column concatenates (copies) the whole
            # window on every call
            self._table = table.combine_chunks()
        self._shard = np.concatenate(shard_ids)
        self._perm = order.rows_of(window)
        self._cached = (order, window)
        self.stats.row_groups += len(parts)
        self.stats.rows += table.num_rows

    def _take_window(self, order: _Order, window: int, positions: np.ndarray) -> tuple[list[dict[str, Any]], np.ndarray]:
        self._load(order, window)
        picked = self._perm[positions - order.offsets[window]]
        if self._dicts is None:
            return _to_rows(self._table.take(pa.array(picked))), self._shard[picked]
        wanted = picked.tolist()
        rows = [self._dicts[wanted[0]]] if len(wanted) == 1 else list(itemgetter(*wanted)(self._dicts))
        again = self._given[picked]
        self._given[picked] = True
        if again.any():  # a padded epoch can ask for a row twice: never hand out one dict twice
            rows = [dict(row) if dup else row for row, dup in zip(rows, again.tolist())]
        return rows, self._shard[picked]

    def take(self, order: _Order, positions: np.ndarray) -> tuple[list[dict[str, Any]], np.ndarray]:
        """Rows at `positions` (any order) and the shard each came from, in that order."""
        windows = order.window_of(positions)
        if windows[0] == windows[-1] and (windows == windows[0]).all():  # the common case
            return self._take_window(order, int(windows[0]), positions)
        out: list[Any] = [None] * len(positions)
        shards = np.empty(len(positions), dtype=np.int32)
        _, first = np.unique(windows, return_index=True)
        for w in windows[np.sort(first)]:  # windows in stream order: sequential, cache-friendly
            where = np.flatnonzero(windows == w)
            rows, shards[where] = self._take_window(order, int(w), positions[where])
            for slot, row in zip(where.tolist(), rows):
                out[slot] = row
        return out, shards


def _to_rows(table: pa.Table) -> list[dict[str, Any]]:
    # Column-wise conversion then zip: several times faster than Table.to_pylist().
    names = table.column_names
    columns = [col.to_pylist() for col in table.columns]
    return [dict(zip(names, values)) for values in zip(*columns)]


# -- ranks and workers --------------------------------------------------------------------------
def _rank_span(total: int, rank: int, world: int, remainder: str) -> tuple[int, int]:
    """(first epoch position, number of samples) of this rank; see the module docstring."""
    if remainder == "drop":
        per = total // world
        return rank * per, per
    if remainder == "pad":
        per = -(-total // world)
        return rank * per, per
    lo, hi = rank * total // world, (rank + 1) * total // world
    return lo, hi - lo


def _worker() -> tuple[int, int]:
    info = get_worker_info()
    return (0, 1) if info is None else (info.id, info.num_workers)


def _own_chunks(start: int, stop: int | None, block: int, worker: int, workers: int,
                done: int) -> Iterator[np.ndarray]:
    """Rank-stream indices this worker serves, from its `done`-th one on, in chunks.

    Worker i takes blocks i, i+n, ... of `block` samples counted from `start`.
    """
    j = done
    while True:
        js = np.arange(j, j + _CHUNK, dtype=np.int64)
        idx = start + (worker + workers * (js // block)) * block + js % block
        if stop is not None:
            idx = idx[idx < stop]
        if idx.size == 0:
            return
        yield idx
        j += _CHUNK


def _check_positive(name: str, value: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def _check_columns(columns: Sequence[str] | None) -> list[str]:
    if columns is None:
        return list(COLUMNS)
    unknown = [c for c in columns if c not in COLUMNS]
    if unknown or not columns:
        raise ValueError(f"unknown column(s) {unknown}; choose from {list(COLUMNS)}")
    return list(dict.fromkeys(columns))


def _decode(row: dict[str, Any], file: str) -> None:
    value = row.get("image")
    if value is None:
        return
    if value.get("bytes") is None:
        raise RowError(f"row {row.get('id')!r}: image has no embedded bytes", file=file)
    try:
        row["image"] = FEATURES["image"].decode_example(value)
    except Exception as exc:  # noqa: BLE001 -- Pillow raises many types for bad bytes; all mean "bad row"
        raise RowError(f"row {row.get('id')!r}: image bytes do not decode: {exc}", file=file) from None


class _Stream(IterableDataset):
    """Shared epoch, resume-state and worker bookkeeping of the two public datasets.

    Progress is kept as plain ints on the instance (the copy inside each DataLoader worker), and
    updated before each yield, so `state_dict()` taken after receiving sample k covers k.
    """

    kind = "stream"

    def _init_stream(self, *, seed: int, batch_size: int, rank: int | None, world_size: int | None,
                     decode_images: bool, transform: Callable[[dict[str, Any]], Any] | None) -> None:
        if not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        self.seed = seed
        self.batch_size = _check_positive("batch_size", batch_size)
        self.rank, self.world_size = rank_and_world(rank, world_size)
        self.decode_images = decode_images
        self.transform = transform
        self.epoch = 0
        self.io = _IOStats()
        self._fresh()

    # subclasses: identity fields that must match on resume, and their zero positions
    def _identity(self) -> dict[str, Any]:
        raise NotImplementedError

    def _zero_positions(self) -> list[int] | None:
        return None

    def _fresh(self) -> None:
        self._consumed, self._positions = 0, self._zero_positions()
        self._layout: dict[str, Any] | None = None  # this worker's share, when workers > 1
        self._done = 0  # samples this worker has yielded of that share
        self._pending = False
        self._iterated_epoch: int | None = None
        # the chunk being yielded: its rank-stream indices (and source positions after each), and
        # `_done` before it. The hot loop only counts `_done`; the state is derived when asked.
        self._chunk: tuple[np.ndarray, np.ndarray | None] | None = None
        self._chunk_done = 0

    def _progress(self) -> tuple[int, list[int] | None]:
        """(samples of this rank consumed, per-source positions) after the last yielded sample."""
        if self._chunk is not None and self._done > self._chunk_done:
            own, after = self._chunk
            n = self._done - self._chunk_done - 1
            return int(own[n]) + 1, None if after is None else after[n].tolist()
        return self._consumed, self._positions

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch's order, like `DistributedSampler.set_epoch`. Re-setting the current
        epoch keeps a pending resume, so `load_state_dict(); set_epoch(same)` still resumes."""
        epoch = operator.index(epoch)
        if epoch < 0:
            raise ValueError(f"epoch must be a non-negative integer, got {epoch!r}")
        if epoch != self.epoch:
            self.epoch = epoch
            self._fresh()

    def state_dict(self) -> dict[str, Any]:
        """JSON-serializable progress: exact resume point of this rank (or of this worker).

        `consumed` counts this rank's samples of the epoch up to the last one yielded here;
        `positions` (weighted mixtures) how many of them each source gave. Inside a DataLoader
        worker `worker` records that worker's share too, as only it knows its progress.
        """
        worker = None if self._layout is None or self._done == 0 else {**self._layout, "done": self._done}
        consumed, positions = self._progress()
        state = {"format": STATE_FORMAT, "kind": self.kind, **self._identity(), "epoch": self.epoch,
                 "consumed": consumed, "positions": positions, "worker": worker}
        return json.loads(json.dumps(state))  # a detached copy of plain types

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume from `state_dict()`: the next iteration continues right after it, in O(1)."""
        if not isinstance(state, Mapping) or state.get("format") != STATE_FORMAT:
            raise MedmixError(f"not a medmix loader state (format {STATE_FORMAT!r} expected)")
        if state.get("kind") != self.kind:
            raise MedmixError(f"state is for a {state.get('kind')!r}, this is a {self.kind!r}")
        for name, value in self._identity().items():
            if state.get(name) != value:
                raise MedmixError(f"cannot resume: state has {name}={state.get(name)!r}, "
                                  f"this dataset has {name}={value!r}")
        self.epoch = int(state["epoch"])
        self._consumed = int(state["consumed"])
        self._positions = None if state.get("positions") is None else [int(p) for p in state["positions"]]
        worker = state.get("worker")
        self._layout = None if worker is None else {k: v for k, v in worker.items() if k != "done"}
        self._done = 0 if worker is None else int(worker["done"])
        self._pending, self._chunk = True, None

    def _begin(self) -> tuple[int, int, int, int]:
        """Where this pass starts: (worker, workers, start, done); the cursor is `_consumed`.

        A rank-level state can be split over any number of workers; a worker-level state (saved
        inside a StatefulDataLoader worker) only by the same worker of the same layout.
        """
        worker, workers = _worker()
        if get_worker_info() is not None:  # only a worker's own copy remembers, so only reuse warns
            if self._iterated_epoch == self.epoch and not self._pending:
                warnings.warn(f"a DataLoader worker is repeating epoch {self.epoch}: with persistent_workers=True, "
                              "set_epoch() in the main process does not reach the workers", stacklevel=3)
            self._iterated_epoch = self.epoch
        if not self._pending:
            self._consumed, self._positions, self._layout, self._done = 0, self._zero_positions(), None, 0
        self._pending, self._chunk = False, None
        lay = self._layout
        if lay is None:
            if workers > 1:
                self._layout = {"id": worker, "num_workers": workers, "batch_size": self.batch_size,
                                "start": self._consumed}
            return worker, workers, self._consumed, 0
        if (lay["id"], lay["num_workers"], lay["batch_size"]) != (worker, workers, self.batch_size):
            raise MedmixError(f"this state was saved by DataLoader worker {lay['id']} of {lay['num_workers']} "
                              f"with batch_size={lay['batch_size']}; resume with the same num_workers and "
                              f"batch_size (now worker {worker} of {workers}, batch_size={self.batch_size})")
        return worker, workers, int(lay["start"]), self._done


# -- the public datasets ------------------------------------------------------------------------
class MixtureDataset(_Stream):
    """One built mixture as a torch `IterableDataset`: sharded, shuffled, resumable, lazy.

    Args:
        path: mixture folder (manifest.json + data/*.parquet) or a folder of Parquet shards.
        seed: non-negative int; with the epoch it fixes the order (module docstring).
        shuffle: False reads shards and row groups in manifest order.
        decode_images: decode `image` to a PIL image at yield time (False: {'bytes','path'}).
        transform: called on each row dict (after decoding); its result is yielded.
        columns: subset of schema columns to read and yield (default: all).
        drop_remainder / pad_remainder: equal per-rank counts for DDP (module docstring).
        split: which split's shards to read.
        batch_size: the DataLoader's batch size; sets the worker block size so a DataLoader with
            workers yields the same sequence as without, and `skip()` stays exact.
        shuffle_window: rows per shuffle window (memory: about one window per reader).
        rank / world_size: override torch.distributed / RANK, WORLD_SIZE (tests, custom launchers).
    """

    kind = "mixture"

    def __init__(self, path: str | os.PathLike[str], *, seed: int = 0, shuffle: bool = True,
                 decode_images: bool = True, transform: Callable[[dict[str, Any]], Any] | None = None,
                 columns: Sequence[str] | None = None, drop_remainder: bool = False,
                 pad_remainder: bool = False, split: str = "train", batch_size: int = 1,
                 shuffle_window: int = 2048, rank: int | None = None, world_size: int | None = None,
                 storage_options: Mapping[str, Any] | None = None, cache_bytes: int | None = None) -> None:
        if drop_remainder and pad_remainder:
            raise ValueError("choose at most one of drop_remainder and pad_remainder")
        self.path = str(path) if is_remote(path) else Path(path)  # [i13] URLs stay URLs
        self.split = split
        self.shuffle = shuffle
        self.columns = _check_columns(columns)
        self.shuffle_window = _check_positive("shuffle_window", shuffle_window)
        self.remainder = "drop" if drop_remainder else "pad" if pad_remainder else "uneven"
        remote = {"storage_options": storage_options, **({"cache_bytes": cache_bytes} if cache_bytes else {})}
        self._index = _Index(self.path, split, self.columns, remote)
        self._init_stream(seed=seed, batch_size=batch_size, rank=rank, world_size=world_size,
                          decode_images=decode_images, transform=transform)
        self._start, self._length = _rank_span(self._index.total, self.rank, self.world_size, self.remainder)

    @classmethod
    def from_sources(cls, sources: Mapping[str | os.PathLike[str], float], **kwargs: Any) -> WeightedMixture:
        """Sample several mixtures at relative weights on the fly; see `WeightedMixture`."""
        return WeightedMixture(sources, **kwargs)

    @property
    def total_rows(self) -> int:
        return self._index.total

    def __len__(self) -> int:
        """Samples this rank yields per epoch (before any resume)."""
        return self._length

    def skip(self, n: int) -> None:
        """Make the next pass of the current epoch start after its first `n` samples on this rank.

        `n` counts from the start of the epoch. For a plain DataLoader resume:
        `set_epoch(epoch); skip(batches_done * batch_size)`. Nothing is read to skip.
        """
        if not isinstance(n, int) or not 0 <= n <= self._length:
            raise ValueError(f"skip({n!r}): this rank has {self._length} samples per epoch")
        self._consumed, self._positions, self._layout, self._done, self._pending = n, None, None, 0, True
        self._chunk = None

    def _identity(self) -> dict[str, Any]:
        return {"seed": self.seed, "mixture": self._index.fingerprint, "rank": self.rank,
                "world_size": self.world_size, "shuffle": self.shuffle, "shuffle_window": self.shuffle_window,
                "remainder": self.remainder}

    def _order(self) -> _Order:
        key = _key(self.seed, 1, self.epoch) if self.shuffle else None
        return _Order(self._index, key, self.shuffle_window)

    def __iter__(self) -> Iterator[Any]:
        worker, workers, start, done = self._begin()
        order = self._order()
        reader = _WindowReader(self._index, self.columns, self.io, dense=workers == 1)
        total, paths, decode, transform = self._index.total, self._index.paths, self.decode_images, self.transform
        if self._index.remote:  # [i13 hook] prefetch this rank's row groups from the resume point on
            self._index.remote.follow_order(order, self._index.rg_shard, self._index.rg_local, self._start + start,
                                            self._length - start, total)
        for own in _own_chunks(start, self._length, self.batch_size, worker, workers, done):
            rows, shards = reader.take(order, (self._start + own) % total)
            self._chunk, self._chunk_done = (own, None), self._done
            for row, shard in zip(rows, shards.tolist() if decode else repeat(0)):
                self._done += 1  # before the yield, so a state taken after this sample covers it
                if decode:
                    _decode(row, paths[shard])
                yield row if transform is None else transform(row)


class WeightedMixture(_Stream):
    """Several mixtures (or per-source folders) sampled at relative weights, on the fly.

    Semantics (what mosaic `proportion` and HF `interleave_datasets` users keep asking):
      * Weights are relative: {a: 7, b: 3} equals {a: 0.7, b: 0.3}. Sample k of rank r in epoch
        e comes from the source whose interval of the cumulative normalized weights holds
        u = (h(key(seed, 2, e, r), k) >> 11) / 2**53: probability w_s / sum(w), and a function of
        k alone, so the choice sequence is random-access and resume needs no replay.
      * Each source is partitioned across ranks like `MixtureDataset` ("uneven" policy) and
        read in its own shuffled order; a source never repeats a row before it runs out.
      * `exhausted="stop"`: the rank's stream ends just before the first sample that would come
        from a source this rank has used up (proportions hold to the end; the rest of the other
        sources is unused this epoch). Ranks can end at different steps (each rank's `len()` is
        exact, computed from the hashes); for DDP use "cycle" with `num_samples`.
      * `exhausted="cycle"`: a used-up source starts again in a fresh order (its next pass), so
        the stream goes on; it ends after `num_samples` (global, per epoch: each rank yields
        ceil(num_samples / world_size)) or never when `num_samples` is None. `num_samples`
        also caps a "stop" stream.
      * `set_epoch(e)` re-keys the choices and restarts every source at pass 0 of epoch e.
      * The order of the `sources` mapping is part of the definition (same order, same stream).
      * Workers: blocks of `batch_size` as in `MixtureDataset`; each worker computes the
        (cheap) choices of the whole rank stream but converts and decodes only its own rows.

    Other keyword arguments are those of `MixtureDataset` (without the remainder options).
    """

    kind = "weighted"

    def __init__(self, sources: Mapping[str | os.PathLike[str], float], *, seed: int = 0,
                 exhausted: str = "cycle", num_samples: int | None = None, shuffle: bool = True,
                 decode_images: bool = True, transform: Callable[[dict[str, Any]], Any] | None = None,
                 columns: Sequence[str] | None = None, split: str = "train", batch_size: int = 1,
                 shuffle_window: int = 2048, rank: int | None = None, world_size: int | None = None) -> None:
        if exhausted not in ("cycle", "stop"):
            raise ValueError(f"exhausted must be 'cycle' or 'stop', got {exhausted!r}")
        if not sources:
            raise ValueError("from_sources needs at least one source")
        weights = []
        for path, weight in sources.items():
            if not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight <= 0:
                raise ValueError(f"weight of {str(path)!r} must be a positive finite number, got {weight!r}")
            weights.append(float(weight))
        if num_samples is not None:
            _check_positive("num_samples", num_samples)
        self.paths = [str(p) if is_remote(p) else Path(p) for p in sources]  # [i13] URLs stay URLs
        self.weights = [w / sum(weights) for w in weights]
        self.exhausted = exhausted
        self.num_samples = num_samples
        self.shuffle = shuffle
        self.split = split
        self.columns = _check_columns(columns)
        self.shuffle_window = _check_positive("shuffle_window", shuffle_window)
        self._indexes = [_Index(p, split, self.columns) for p in self.paths]
        self._init_stream(seed=seed, batch_size=batch_size, rank=rank, world_size=world_size,
                          decode_images=decode_images, transform=transform)
        spans = [_rank_span(ix.total, self.rank, self.world_size, "uneven") for ix in self._indexes]
        self._starts = [s for s, _ in spans]
        self._lengths = [n for _, n in spans]
        for path, n in zip(self.paths, self._lengths):
            if n == 0:
                raise MedmixError(f"{path}: too few rows for world_size={self.world_size}: rank {self.rank} gets none")
        self._cap = None if num_samples is None else -(-num_samples // self.world_size)
        self._thresholds = np.cumsum(self.weights)[:-1]
        self._len_cache: dict[int, int] = {}

    def _identity(self) -> dict[str, Any]:
        return {"seed": self.seed, "mixtures": [ix.fingerprint for ix in self._indexes],
                "weights": self.weights, "rank": self.rank, "world_size": self.world_size,
                "exhausted": self.exhausted, "num_samples": self.num_samples, "shuffle": self.shuffle,
                "shuffle_window": self.shuffle_window}

    def _zero_positions(self) -> list[int]:
        return [0] * len(self.paths)

    def _choices(self, lo: int, hi: int) -> np.ndarray:
        key = _key(self.seed, 2, self.epoch, self.rank)
        return np.searchsorted(self._thresholds, _uniforms(key, lo, hi), side="right")

    def _scan(self, lo: int, hi: int, positions: Sequence[int]) -> tuple[np.ndarray, np.ndarray, int | None]:
        """Choices for samples [lo, hi), per-source counts after each, and where "stop" ends."""
        choice = self._choices(lo, hi)
        onehot = choice[:, None] == np.arange(len(self.paths))[None, :]
        after = np.asarray(positions, dtype=np.int64)[None, :] + np.cumsum(onehot, axis=0)
        end = None
        if self.exhausted == "stop":
            over = after[np.arange(len(choice)), choice] > np.asarray(self._lengths)[choice]
            if over.any():
                end = lo + int(np.argmax(over))
        return choice, after, end

    def __len__(self) -> int:
        """Samples this rank yields per epoch; infinite ("cycle" without num_samples) raises."""
        if self.exhausted == "cycle":
            if self._cap is None:
                raise TypeError("an endless weighted mixture (exhausted='cycle', num_samples=None) has no length")
            return self._cap
        if self.epoch not in self._len_cache:
            lo, positions, step = 0, self._zero_positions(), 1 << 16
            while True:
                hi = lo + step if self._cap is None else min(lo + step, self._cap)
                _, after, end = self._scan(lo, hi, positions)
                if end is not None or hi == self._cap:
                    self._len_cache[self.epoch] = hi if end is None else end
                    break
                lo, positions = hi, after[-1].tolist()
        return self._len_cache[self.epoch]

    def skip(self, n: int) -> None:
        """Like `MixtureDataset.skip`; computes each source's position from hashes (no reads)."""
        if not isinstance(n, int) or n < 0 or (self._cap is not None and n > self._cap):
            raise ValueError(f"skip({n!r}) is out of range for this rank")
        positions = self._zero_positions()
        if n:
            _, after, end = self._scan(0, n, positions)
            if end is not None and end < n:
                raise ValueError(f"skip({n}): this rank's stream ends after {end} samples")
            positions = after[-1].tolist()
        self._consumed, self._positions, self._layout, self._done, self._pending = n, positions, None, 0, True
        self._chunk = None

    def _source_order(self, source: int, lap: int) -> _Order:
        key = _key(self.seed, 3, self.epoch, source, lap) if self.shuffle else None
        order = _Order(self._indexes[source], key, self.shuffle_window)
        order.lap = lap
        return order


    def __iter__(self) -> Iterator[Any]:
        worker, workers, start, done = self._begin()
        cursor_k, cursor_n = self._consumed, list(self._positions)
        readers = [_WindowReader(ix, self.columns, self.io, dense=workers == 1) for ix in self._indexes]
        paths = [p for ix in self._indexes for p in ix.paths]  # shard code -> file, for error messages
        base = np.cumsum([0] + [len(ix.paths) for ix in self._indexes])
        orders: dict[int, _Order] = {}
        lengths = np.asarray(self._lengths, dtype=np.int64)
        decode, transform = self.decode_images, self.transform
        for own in _own_chunks(start, self._cap, self.batch_size, worker, workers, done):
            hi = int(own[-1]) + 1
            choice, after, end = self._scan(cursor_k, hi, cursor_n)
            if end is not None:
                own = own[own < end]
                if own.size == 0:
                    return
            sel = own - cursor_k
            src = choice[sel]
            item = after[sel, src] - 1  # this source's running count before the sample
            laps = item // lengths[src]
            got: list[dict[str, Any]] = []
            slots, codes = [], []
            for s, lap in sorted(set(zip(src.tolist(), laps.tolist()))):
                where = np.flatnonzero((src == s) & (laps == lap))
                if s not in orders or orders[s].lap != lap:
                    orders[s] = self._source_order(s, lap)
                rows, shards = readers[s].take(orders[s], self._starts[s] + item[where] % lengths[s])
                got += rows
                slots.append(where)
                codes.append(shards + base[s])
            back = np.empty(len(own), dtype=np.int64)
            back[np.concatenate(slots)] = np.arange(len(own))
            back_list = back.tolist()
            rows = [got[back_list[0]]] if len(own) == 1 else list(itemgetter(*back_list)(got))
            shard_codes = np.concatenate(codes)[back].tolist() if decode else repeat(0)
            self._chunk, self._chunk_done = (own, after[sel]), self._done
            for row, code in zip(rows, shard_codes):
                self._done += 1  # before the yield, so a state taken after this sample covers it
                if decode:
                    _decode(row, paths[code])
                yield row if transform is None else transform(row)
            if end is not None:
                return
            cursor_k, cursor_n = hi, after[-1].tolist()


# -- the HF datasets view -----------------------------------------------------------------------
def load(path_or_repo_id: str | os.PathLike[str], split: str = "train",
         **kwargs: Any) -> datasets.Dataset | datasets.IterableDataset:
    """A mixture as a `datasets.Dataset` (images decode to PIL), from a folder or the Hub.

    Local folders go through `datasets`' Parquet builder, which converts the shards once into
    memory-mapped Arrow files in its cache (`cache_dir=` to choose where; `streaming=True`
    avoids the copy and returns an IterableDataset). Anything else is taken as a Hub dataset
    id and handed to `datasets.load_dataset` unchanged. Extra keyword arguments pass through.
    """
    local = Path(path_or_repo_id)
    if is_remote(path_or_repo_id):  # [i13 hook] a mixture at a URL: datasets reads it through fsspec
        from medmix.layout import remote_mixture_files
        from medmix.storage import Store
        store = Store(str(path_or_repo_id), kwargs.get("storage_options"))
        files = [store.child_url(rel) for rel, _, _ in remote_mixture_files(store, split)]
        ds = datasets.load_dataset("parquet", data_files={split: files}, split=split, **kwargs)
    elif local.exists():
        files = [str(f) for f, _ in mixture_files(local, split)]
        ds = datasets.load_dataset("parquet", data_files={split: files}, split=split, **kwargs)
    else:
        ds = datasets.load_dataset(str(path_or_repo_id), split=split, **kwargs)
    if ds.features is not None and "image" in ds.features and not isinstance(ds.features["image"], datasets.Image):
        ds = ds.cast_column("image", datasets.Image())
    return ds
