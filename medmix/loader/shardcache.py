"""Stream a mixture from object storage: each rank fetches the row groups of its slice, ahead of
need, into a bounded local cache, and drops them behind.

Why row groups, not whole shards: with shuffling on, a rank's contiguous slice of the epoch is
made of row groups drawn from every shard (the loader shuffles row groups, then rows inside a
window), so fetching whole shards would move every byte to every rank. A row group is the unit
the loader reads anyway; its byte range is in the shard's footer, so a rank fetches exactly its
~1/W of the bytes, with one ranged GET per row group.

How it fits the loader (`medmix.loader`): the index reads each shard's footer remotely (one
ranged read per shard, in parallel); `open(shard)` returns a `ParquetFile` over a view that
serves the row groups' byte ranges from this cache; `follow(plan)` tells the cache the order in
which this reader will need row groups (the rank's slice of the epoch, from the resume point
on: nothing before it is fetched, so resume stays O(1)). A background thread keeps fetching
ahead in that order until the cache holds `cache_bytes`; the entries behind the reader are
evicted first. Exactly-once over ranks × workers is untouched: the cache changes where bytes
come from, never which rows a reader takes.

Entries live on local disk, in a folder of the reading process (`cache_dir`, default
`$MEDMIX_SCRATCH/stream/<mixture>/p<pid>`, removed at exit; folders of dead processes are
removed by the next reader), named by the shard's sha256 from the manifest, so a rebuilt mixture
never serves a stale byte. `cache_bytes` bounds each folder. The DataLoader workers of a rank
each read every window of the rank (see `medmix.loader`), so with n workers a rank fetches its
slice n times: prefer few workers per rank over many when streaming, or stage the slice once
with `num_workers=0` and decode in the training step.
"""

from __future__ import annotations

import atexit
import io
import mmap
import os
import shutil
import threading
from bisect import bisect_right
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from medmix.core.errors import MedmixError
from medmix.core.layout import remote_mixture_files
from medmix.core.storage import Store, scratch_dir, url_key
from medmix.core.writer import pid_alive

DEFAULT_CACHE_BYTES = 2 << 30  # 2 GiB per rank: ~80 windows of 2048 rows at ~12 KiB per image row
FETCH_THREADS = 4


def _rg_ranges(meta: pq.FileMetaData) -> list[tuple[int, int]]:
    """[start, end) byte range of each row group's column chunks."""
    ranges = []
    for g in range(meta.num_row_groups):
        rg = meta.row_group(g)
        start, end = None, 0
        for c in range(rg.num_columns):
            col = rg.column(c)
            first = col.dictionary_page_offset if col.has_dictionary_page and col.dictionary_page_offset else \
                col.data_page_offset
            start = first if start is None else min(start, first)
            end = max(end, first + col.total_compressed_size)
        ranges.append((start or 0, end))
    return ranges


class RemoteMixture:
    """The shards of one split of a mixture at a URL, with their footers and a row-group cache."""

    def __init__(self, url: str, split: str, storage_options: Mapping[str, Any] | None = None,
                 cache_bytes: int = DEFAULT_CACHE_BYTES, cache_dir: str | os.PathLike[str] | None = None) -> None:
        if cache_bytes <= 0:
            raise ValueError(f"cache_bytes must be positive, got {cache_bytes}")
        self.store = Store(url, storage_options)
        entries = remote_mixture_files(self.store, split)
        self.rels = [rel for rel, _, _ in entries]
        self.expected = [rows for _, rows, _ in entries]
        self.paths = [self.store.child_url(rel) for rel in self.rels]
        tags = [(sha or url_key(self.store.child_url(rel)))[:16] for rel, _, sha in entries]
        with ThreadPoolExecutor(8) as pool:
            self.metas = list(pool.map(self._footer, self.rels))
        self.ranges = [_rg_ranges(m) for m in self.metas]
        folder = Path(cache_dir) if cache_dir else scratch_dir() / "stream" / url_key(self.store.url)
        self.cache = RowGroupCache(self.store, self.rels, tags, self.ranges, cache_bytes, folder)

    def _footer(self, rel: str) -> pq.FileMetaData:
        def read() -> pq.FileMetaData:
            with self.store.fs.open(self.store.key(rel), "rb", block_size=1 << 16) as f:
                return pq.read_metadata(f)
        from medmix.core.storage import retrying
        try:
            return retrying(f"{self.store.child_url(rel)}: read footer", read)
        except FileNotFoundError:
            raise MedmixError(f"{self.store.child_url(rel)}: shard listed in the manifest is missing") from None
        except pa.ArrowException as exc:
            raise MedmixError(f"{self.store.child_url(rel)}: not a readable Parquet file: {exc}") from None

    def open(self, shard: int) -> pq.ParquetFile:
        return pq.ParquetFile(_ShardView(self.cache, shard), metadata=self.metas[shard])

    def follow(self, plan: Sequence[tuple[int, int]]) -> None:
        self.cache.follow(plan)

    def follow_order(self, order: Any, rg_shard: np.ndarray, rg_local: np.ndarray, begin: int, length: int,
                     total: int) -> None:
        """Plan the row groups of epoch positions [begin, begin + length) (mod total) of `order`."""
        if length <= 0:
            return
        begin %= total
        spans = [(begin, min(begin + length, total))]
        if begin + length > total:  # a padded rank wraps to the epoch's start
            spans.append((0, min(begin + length - total, total)))
        plan = []
        for lo, hi in spans:
            first, last = order.window_of(np.array([lo, hi - 1]))
            for w in range(int(first), int(last) + 1):
                plan.extend((int(rg_shard[g]), int(rg_local[g])) for g in order.windows[w])
        self.cache.follow(plan)


class RowGroupCache:
    """Row-group byte ranges on local disk, bounded by `cache_bytes`, fetched ahead along a plan."""

    def __init__(self, store: Store, rels: list[str], tags: list[str], ranges: list[list[tuple[int, int]]],
                 cache_bytes: int, folder: Path) -> None:
        self.store, self.rels, self.tags, self.ranges = store, rels, tags, ranges
        self.starts = [[a for a, _ in r] for r in ranges]
        self.cache_bytes = cache_bytes
        self.base = folder
        _remove_dead(folder)
        self._reset()
        self.fetched_bytes = 0
        self.fetches = 0

    def _reset(self) -> None:
        """Fresh state for this process (at start, and in a forked DataLoader worker)."""
        self._pid = os.getpid()
        self.folder = self.base / f"p{self._pid}"
        self.folder.mkdir(parents=True, exist_ok=True)
        atexit.register(shutil.rmtree, self.folder, True)
        self._cond = threading.Condition()
        self._plan: list[tuple[int, int]] = []
        self._pos = 0                                   # index in the plan of the entry being read
        self._have: dict[tuple[int, int], int] = {}     # entries on disk (this process's view) → bytes
        self._busy: set[tuple[int, int]] = set()
        self._hot: tuple[tuple[int, int], memoryview] | None = None  # the entry being read, zero-copy
        self._pool: ThreadPoolExecutor | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def __getstate__(self) -> dict:  # a spawned DataLoader worker gets its own threads and folder
        state = dict(self.__dict__)
        for k in ("_cond", "_pool", "_thread", "_hot"):
            state[k] = None
        state["_pid"] = -1
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._reset()

    def _mine(self) -> None:
        if self._pid != os.getpid():  # forked: the parent's threads, lock and files are not ours
            self._reset()

    def _file(self, key: tuple[int, int]) -> Path:
        s, g = key
        return self.folder / f"{self.tags[s]}-{g}.bin"

    def _size(self, key: tuple[int, int]) -> int:
        a, b = self.ranges[key[0]][key[1]]
        return b - a

    def follow(self, plan: Sequence[tuple[int, int]]) -> None:
        self._mine()
        with self._cond:
            self._plan, self._pos = list(plan), 0
            if self._thread is None or not self._thread.is_alive():
                self._pool = ThreadPoolExecutor(FETCH_THREADS)
                self._thread = threading.Thread(target=self._ahead, name="medmix-prefetch", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def _fetch(self, key: tuple[int, int]) -> bytes:
        s, g = key
        a, b = self.ranges[s][g]
        data = self.store.read_range(self.rels[s], a, b)
        target = self._file(key)
        tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}-{threading.get_ident()}")
        tmp.write_bytes(data)
        os.replace(tmp, target)
        self.fetched_bytes += len(data)
        self.fetches += 1
        return data

    def _ahead(self) -> None:
        """Keep the next row groups of the plan on disk, within the byte budget."""
        while True:
            with self._cond:
                todo = []
                seen: set[tuple[int, int]] = set()
                for key in self._plan[self._pos:]:
                    if key in seen:
                        continue
                    seen.add(key)
                    if key in self._have or key in self._busy:
                        continue
                    if not self._make_room(self._size(key)):
                        break
                    self._busy.add(key)  # reserves its bytes
                    todo.append(key)
                    if len(todo) >= FETCH_THREADS:
                        break
                if not todo:
                    self._cond.wait(timeout=1.0)
                    continue
            for key, result in zip(todo, self._pool.map(self._try_fetch, todo), strict=True):
                with self._cond:
                    self._busy.discard(key)
                    if isinstance(result, BaseException):
                        self._error = result
                    else:
                        self._have[key] = self._size(key)
                    self._cond.notify_all()

    def _try_fetch(self, key: tuple[int, int]) -> bytes | BaseException:
        try:
            return self._fetch(key)
        except BaseException as exc:  # reported to the reader, which fetches it again itself
            return exc

    def _make_room(self, need: int, keep: tuple[int, int] | None = None, force: bool = False) -> bool:
        """Evict until `need` more bytes fit (lock held): first what the reader is past, oldest
        first; with `force` (the reader's own fetch) also entries still ahead. Entries stay while
        they fit, so a slice that fits in `cache_bytes` is read from disk on its next pass."""
        upcoming = set(self._plan[self._pos:self._pos + 4096])
        used = sum(self._have.values()) + sum(self._size(k) for k in self._busy)
        behind = [k for k in self._have if k != keep and k not in upcoming]
        ahead = [k for k in self._have if k != keep and k in upcoming] if force else []
        for key in behind + ahead[::-1]:  # ahead: the furthest first
            if used + need <= self.cache_bytes:
                break
            used -= self._have[key]
            self._drop(key)
        return used + need <= self.cache_bytes

    def _drop(self, key: tuple[int, int]) -> None:
        self._have.pop(key, None)
        self._file(key).unlink(missing_ok=True)

    def get(self, key: tuple[int, int]) -> memoryview:
        self._mine()
        if self._hot is not None and self._hot[0] == key:
            return self._hot[1]
        with self._cond:
            # move the plan cursor to this entry (readers follow the plan; look a short way ahead)
            for i in range(self._pos, min(self._pos + 4096, len(self._plan))):
                if self._plan[i] == key:
                    self._pos = i
                    break
            while key in self._busy:
                self._cond.wait(timeout=1.0)
            fetch = key not in self._have
            if fetch:  # not prefetched (no plan, or its prefetch failed): fetch it here, counted as busy
                self._make_room(self._size(key), keep=key, force=True)
                self._busy.add(key)
        try:
            data = self._fetch(key) if fetch else _map(self._file(key))
        except FileNotFoundError:  # gone from disk under us (a cleaned scratch folder): fetch again
            fetch = True
            with self._cond:
                self._have.pop(key, None)
                self._make_room(self._size(key), keep=key, force=True)
                self._busy.add(key)
            data = self._fetch(key)
        finally:
            if fetch:
                with self._cond:
                    self._busy.discard(key)
                    self._cond.notify_all()
        with self._cond:
            self._have[key] = len(data)
        data = memoryview(data)
        self._hot = (key, data)
        return data

    def read(self, shard: int, pos: int, n: int) -> memoryview:
        g = bisect_right(self.starts[shard], pos) - 1
        if g < 0:
            raise MedmixError(f"{self.store.child_url(self.rels[shard])}: read at byte {pos} outside any row group")
        a, b = self.ranges[shard][g]
        data = self.get((shard, g))
        return data[pos - a: min(pos + n, b) - a]


def _map(path: Path) -> mmap.mmap | bytes:
    """A cached entry, memory-mapped: the page cache's bytes, not a copy (an unlinked file stays mapped)."""
    with open(path, "rb") as f:
        try:
            return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except ValueError:  # an empty file cannot be mapped
            return b""


def _remove_dead(base: Path) -> None:
    """Folders of reader processes that are gone (killed before their atexit ran)."""
    for sub in base.glob("p*") if base.exists() else ():
        pid = sub.name[1:]
        if pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(sub, ignore_errors=True)


class _ShardView(io.RawIOBase):
    """A read-only file over one shard whose bytes come from the row-group cache."""

    def __init__(self, cache: RowGroupCache, shard: int) -> None:
        super().__init__()
        self.cache, self.shard, self.pos = cache, shard, 0
        self.end = cache.ranges[shard][-1][1] if cache.ranges[shard] else 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = 0) -> int:
        self.pos = offset if whence == 0 else self.pos + offset if whence == 1 else self.end + offset
        return self.pos

    def readinto(self, buf: Any) -> int:
        data = self.cache.read(self.shard, self.pos, len(buf))
        buf[:len(data)] = data
        self.pos += len(data)
        return len(data)

    def read(self, n: int = -1) -> memoryview | bytes:
        if n is None or n < 0:
            n = self.end - self.pos
        data = self.cache.read(self.shard, self.pos, n)
        if len(data) == n or not data:  # the usual case: inside one row group, no copy
            self.pos += len(data)
            return data
        out = [data]
        got = len(data)
        while got < n and data:  # a read spanning two row groups (pyarrow coalesces nearby ranges)
            data = self.cache.read(self.shard, self.pos + got, n - got)
            out.append(data)
            got += len(data)
        self.pos += got
        return b"".join(out)
