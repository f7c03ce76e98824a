"""What `medmix view` knows about a mixture, read through `medmix.core.layout`, never loaded whole.

A row is addressed by (shard, row); a *position* is its place in the manifest's shard order.
Reading rows touches only the row groups that hold them (`layout.read_rows`); Parquet footers give
the row-group offsets.

Filters and the overview rest on one background pass started when the server starts: it reads the
six category columns, image sizes and text lengths (projection, shard by shard) and keeps the
categories as small integer codes (6 bytes a row: 6 MB at 1M rows, 20 MB at 3.35M). Once it is
done, a filter on source / domain / task / license / modality / split is a numpy mask; before
that, and for text search, shards are scanned in record batches with only the needed columns,
stopping as soon as a page (and one more row, to know a next page exists) is found. Matches are
kept per query in a bounded LRU, so paging on continues the scan where it stopped.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from medmix.core.errors import MedmixError
from medmix.core.layout import (
    QUARANTINE,
    REMOVED,
    REMOVED_SCHEMA,
    manifest_shards,
    mixture_file,
    read_manifest,
    read_rows,
    removed_format,
)
from medmix.view.query import CATEGORIES, FILTERS, BrowseQuery

TEXT_COLUMNS = ("question", "answer", "context")
CARD_COLUMNS = ["id", *CATEGORIES, "question", "options", "answer", "context", "width", "height", "image_hash"]
FILTER_COLUMN = {"image": "width"}   # the column a filter reads when scanning (width is null without an image)
SCAN_BATCH = 16_384
MAX_QUERIES = 64               # cached match lists
MAX_MATCHES = 2_000_000        # positions kept per query (16 MB); beyond, paging re-scans
REMOVED_LIST_COLUMNS = [c for c in REMOVED_SCHEMA.names if c not in ("thumb", "other_thumb", "question", "answer",
                                                                     "other_question", "other_answer")]


@dataclass
class _Matches:
    """Positions matching one query, found so far, and where the scan resumes."""

    positions: list[np.ndarray] = field(default_factory=list)
    count: int = 0
    shard: int = 0
    row: int = 0                # next row of `shard` to scan
    done: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def array(self) -> np.ndarray:
        if len(self.positions) > 1:
            self.positions = [np.concatenate(self.positions)]
        return self.positions[0] if self.positions else np.zeros(0, np.int64)


class ByteLRU:
    """A bounded LRU by total value size (thumbnails, image row groups)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes, self.bytes = max_bytes, 0
        self._d: OrderedDict[Any, tuple[Any, int]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Any) -> Any:
        with self._lock:
            hit = self._d.get(key)
            if hit is None:
                return None
            self._d.move_to_end(key)
            return hit[0]

    def put(self, key: Any, value: Any, size: int) -> None:
        with self._lock:
            if key in self._d:
                self.bytes -= self._d.pop(key)[1]
            self._d[key] = (value, size)
            self.bytes += size
            while self.bytes > self.max_bytes and len(self._d) > 1:
                self.bytes -= self._d.popitem(last=False)[1][1]


class Figures:
    """The background pass: category codes per row, counts, image sizes and text lengths."""

    def __init__(self) -> None:
        self.codes: dict[str, list[np.ndarray]] = {c: [] for c in FILTERS}
        self.values: dict[str, dict[Any, int]] = {c: {} for c in FILTERS}
        self.sizes: list[np.ndarray] = []
        self.text_len: dict[str, list[np.ndarray]] = {c: [] for c in TEXT_COLUMNS}
        self.rows_done = 0
        self.seconds = 0.0
        self.ready = threading.Event()
        self.error: str | None = None
        self.columns: dict[str, np.ndarray] = {}

    def add(self, batch: pa.RecordBatch) -> None:
        for c in CATEGORIES:
            enc = pc.dictionary_encode(batch.column(c))
            table = self.values[c]
            mapping = [table.setdefault(v, len(table)) for v in enc.dictionary.to_pylist()]
            if enc.indices.null_count:
                mapping.append(table.setdefault(None, len(table)))
            idx = pc.fill_null(enc.indices, len(enc.dictionary)).to_numpy(zero_copy_only=False)
            self.codes[c].append(np.asarray(mapping, np.int32)[idx] if mapping else np.zeros(len(idx), np.int32))
        has_image = pc.is_valid(batch.column("width")).to_numpy(zero_copy_only=False)
        yes, no = (self.values["image"].setdefault(v, len(self.values["image"])) for v in ("yes", "no"))
        self.codes["image"].append(np.where(has_image, yes, no).astype(np.int32))
        w = batch.column("width").to_numpy(zero_copy_only=False)
        h = batch.column("height").to_numpy(zero_copy_only=False)
        has = ~np.isnan(w.astype(float)) if w.dtype.kind == "f" else np.ones(len(w), bool)
        if has.any():
            self.sizes.append(np.stack([w[has], h[has]], 1).astype(np.int64))
        for c in TEXT_COLUMNS:
            self.text_len[c].append(pc.fill_null(pc.utf8_length(batch.column(c)), 0).to_numpy().astype(np.int32))
        self.rows_done += batch.num_rows

    def finish(self) -> None:
        for c in FILTERS:
            arr = np.concatenate(self.codes[c]) if self.codes[c] else np.zeros(0, np.int32)
            small = np.uint8 if len(self.values[c]) < 256 else np.uint16 if len(self.values[c]) < 65536 else np.int32
            self.columns[c] = arr.astype(small)
            self.codes[c] = []

    def counts(self, column: str) -> dict[str, int]:
        if column not in self.columns:
            return {}
        hist = np.bincount(self.columns[column], minlength=len(self.values[column]))
        names = list(self.values[column])
        return dict(sorted(((str(n) if n is not None else "(none)", int(k)) for n, k in zip(names, hist) if k),
                           key=lambda kv: (-kv[1], kv[0])))

    def mask(self, column: str, value: str) -> np.ndarray:
        code = self.values[column].get(value, None if value != "(none)" else self.values[column].get(None))
        if code is None:
            return np.zeros(len(self.columns[column]), bool)
        return self.columns[column] == code


class MixtureStore:
    def __init__(self, root: str | Path, scan: bool = True) -> None:
        self.root = Path(root)
        self.manifest = read_manifest(self.root)
        self.shards = manifest_shards(self.root, self.manifest)
        self.files = [pq.ParquetFile(s.path) for s in self.shards]
        self.shard_rows = np.array([f.metadata.num_rows for f in self.files], np.int64)
        self.starts = np.concatenate([[0], np.cumsum(self.shard_rows)])
        self.total = int(self.starts[-1])
        self.figures = Figures()
        self._queries: OrderedDict[tuple, _Matches] = OrderedDict()
        self._qlock = threading.Lock()
        self._perms: OrderedDict[int, np.ndarray] = OrderedDict()
        self.images = ByteLRU(64 << 20)   # (shard, row group) → that group's image column
        self.thumbs = ByteLRU(64 << 20)   # (shard, row, px) → encoded thumbnail
        self.cards = ByteLRU(32 << 20)    # (position, columns) → row dict: a page seen once is served from memory
        self._removed: pa.Table | None = None
        self._quarantine: pa.Table | None = None
        if scan:
            threading.Thread(target=self._scan, name="medmix-view-scan", daemon=True).start()

    # -- the background pass ----------------------------------------------------------------------
    def _scan(self) -> None:
        t0 = time.perf_counter()
        try:
            for f in self.files:
                for batch in f.iter_batches(batch_size=SCAN_BATCH, columns=[*CATEGORIES, "width", "height",
                                                                           *TEXT_COLUMNS], use_threads=False):
                    self.figures.add(batch)
            self.figures.finish()
        except Exception as exc:  # noqa: BLE001 - a background thread must always finish, and say why it stopped
            self.figures.error = f"could not scan the shards: {type(exc).__name__}: {exc}"
        self.figures.seconds = time.perf_counter() - t0
        self.figures.ready.set()

    # -- positions --------------------------------------------------------------------------------
    def position(self, shard: int, row: int) -> int | None:
        if not (0 <= shard < len(self.files)) or not (0 <= row < self.shard_rows[shard]):
            return None
        return int(self.starts[shard] + row)

    def locate(self, pos: int) -> tuple[int, int]:
        s = int(np.searchsorted(self.starts, pos, side="right") - 1)
        return s, int(pos - self.starts[s])

    def rows(self, positions: Sequence[int], columns: Sequence[str]) -> list[dict[str, Any]]:
        """Rows at `positions` (in that order), `columns` only, each with its `_shard` and `_row`."""
        cols = tuple(columns)
        got: dict[int, dict] = {}
        by_shard: dict[int, list[int]] = {}
        for p in positions:
            hit = self.cards.get((int(p), cols))
            if hit is not None:
                got[int(p)] = hit
                continue
            s, r = self.locate(int(p))
            by_shard.setdefault(s, []).append(r)
        for s, rows in by_shard.items():
            for r, rec in zip(rows, read_rows(self.shards[s].path, rows, cols, pf=self.files[s]).to_pylist()):
                rec = {**rec, "_shard": s, "_row": r}
                pos = int(self.starts[s]) + r
                got[pos] = rec
                self.cards.put((pos, cols), rec, 200 + sum(len(v) for v in rec.values() if isinstance(v, str)))
        return [got[int(p)] for p in positions]

    def image_bytes(self, shard: int, row: int) -> bytes | None:
        """The stored image of one row; its row group's image column is cached (neighbours come next)."""
        meta = self.files[shard].metadata
        start, g = 0, 0
        while start + meta.row_group(g).num_rows <= row:
            start += meta.row_group(g).num_rows
            g += 1
        col = self.images.get((shard, g))
        if col is None:
            col = self.files[shard].read_row_group(g, columns=["image"], use_threads=False).column("image")
            self.images.put((shard, g), col, col.nbytes)
        value = col[row - start].as_py()
        return value.get("bytes") if value else None

    # -- browse -----------------------------------------------------------------------------------
    def _permutation(self, seed: int) -> np.ndarray:
        with self._qlock:
            perm = self._perms.get(seed)
            if perm is None:
                perm = np.random.default_rng(seed).permutation(self.total)
                self._perms[seed] = perm
                while len(self._perms) > 2:
                    self._perms.popitem(last=False)
            return perm

    def _candidates(self, q: BrowseQuery) -> np.ndarray | None:
        """Positions the category filters allow, once the background pass is done; None before."""
        if not q.filters or not self.figures.ready.is_set() or self.figures.error:
            return None
        mask = np.ones(self.total, bool)
        for column, value in q.filters:
            mask &= self.figures.mask(column, value)
        return mask

    def _scan_more(self, q: BrowseQuery, m: _Matches, want: int) -> None:
        """Advance `m`'s scan until it holds `want` positions or the mixture ends."""
        cand = self._candidates(q)
        if cand is not None and not q.text:
            m.positions, m.count, m.done = [np.flatnonzero(cand)], int(cand.sum()), True
            return
        columns = ([] if cand is not None else [FILTER_COLUMN.get(c, c) for c, _ in q.filters]) + \
            (list(TEXT_COLUMNS) if q.text else [])
        while m.count < want and m.shard < len(self.files):
            s = m.shard
            f = self.files[s]
            base = int(self.starts[s])
            meta = f.metadata
            group_starts = np.concatenate([[0], np.cumsum([meta.row_group(g).num_rows
                                                           for g in range(meta.num_row_groups)])])
            g0 = int(np.searchsorted(group_starts, m.row, side="right") - 1)
            groups = list(range(g0, meta.num_row_groups))
            if cand is not None:  # only row groups holding a candidate
                local = cand[base:base + int(self.shard_rows[s])]
                groups = [g for g in groups if local[group_starts[g]:group_starts[g + 1]].any()]
            offset = None
            for i in range(0, len(groups), 16):  # 16 row groups (4096 rows) a read: per-read overhead amortized
                chunk = groups[i:i + 16]
                local_rows = np.concatenate([np.arange(group_starts[g], group_starts[g + 1]) for g in chunk])
                batch = f.read_row_groups(chunk, columns=columns, use_threads=False)
                keep = np.ones(batch.num_rows, bool)
                if cand is not None:
                    keep &= cand[base + local_rows]
                else:
                    for column, value in q.filters:
                        col = batch.column(FILTER_COLUMN.get(column, column))
                        if column == "image":
                            hit = pc.is_valid(col) if value == "yes" else pc.is_null(col)
                        else:
                            hit = pc.is_null(col) if value == "(none)" else pc.equal(col, value)
                        keep &= pc.fill_null(hit, False).to_numpy(zero_copy_only=False)
                if q.text:
                    any_text = np.zeros(batch.num_rows, bool)
                    for c in TEXT_COLUMNS:
                        hit = pc.match_substring(batch.column(c), q.text, ignore_case=True)
                        any_text |= pc.fill_null(hit, False).to_numpy(zero_copy_only=False)
                    keep &= any_text
                found = base + local_rows[keep]
                if len(found):
                    m.positions.append(found.astype(np.int64))
                    m.count += len(found)
                offset = int(group_starts[chunk[-1] + 1])
                if m.count >= want:
                    break
            if offset is not None and offset < self.shard_rows[s] and m.count >= want:
                m.row = offset
            else:
                m.shard, m.row = s + 1, 0
        if m.shard >= len(self.files):
            m.done = True

    def browse(self, q: BrowseQuery, per_page: int) -> tuple[list[int], bool, int | None]:
        """(positions of page `q.page`, whether a next page exists, total matches when known)."""
        lo = (q.page - 1) * per_page
        if not q.filters and not q.text:
            order = self._permutation(q.seed) if q.order == "random" else None
            hi = min(self.total, lo + per_page)
            page = order[lo:hi] if order is not None else np.arange(lo, hi)
            return page.tolist(), hi < self.total, self.total
        key = (q.filters, q.text)
        with self._qlock:
            m = self._queries.get(key)
            if m is None:
                m = self._queries[key] = _Matches()
            self._queries.move_to_end(key)
            while len(self._queries) > MAX_QUERIES:
                self._queries.popitem(last=False)
        with m.lock:
            want = np.iinfo(np.int64).max if q.order == "random" else lo + per_page + 1
            if not m.done and m.count < want:
                self._scan_more(q, m, want)
            found = m.array()
            if m.count > MAX_MATCHES:  # keep the cache bounded: forget, the next request scans again
                with self._qlock:
                    self._queries.pop(key, None)
        if q.order == "random":
            found = found[np.random.default_rng(q.seed).permutation(len(found))]
        page = found[lo:lo + per_page]
        return page.tolist(), len(found) > lo + per_page, (len(found) if m.done else None)

    # -- removed and quarantine -------------------------------------------------------------------
    def _side_file(self, name: str) -> Path | None:
        return mixture_file(self.root, name)

    def removed_format(self) -> int:
        path = self._side_file(REMOVED)
        return removed_format(self.root) if path else 0

    def removed(self) -> pa.Table:
        if self._removed is None:
            path = self._side_file(REMOVED)
            if path is None:
                self._removed = pa.table({c: pa.array([], pa.string()) for c in ("id", "reason", "other")})
            else:
                names = pq.read_schema(path).names
                self._removed = pq.read_table(path, columns=[c for c in REMOVED_LIST_COLUMNS if c in names])
        return self._removed

    def removed_detail(self, n: int) -> dict[str, Any] | None:
        """Row `n` of removed.parquet with texts and thumbnails; its row group is cached (a list page
        asks for 50 neighbours' thumbnails at once)."""
        path = self._side_file(REMOVED)
        if path is None or not (0 <= n < self.removed().num_rows):
            return None
        pf = pq.ParquetFile(path)
        start = 0
        for g in range(pf.metadata.num_row_groups):
            rows = pf.metadata.row_group(g).num_rows
            if n < start + rows:
                break
            start += rows
        table = self.images.get(("removed", g))
        if table is None:
            table = pf.read_row_group(g, use_threads=False)
            self.images.put(("removed", g), table, table.nbytes)
        return table.slice(n - start, 1).to_pylist()[0]

    def quarantine(self) -> pa.Table:
        if self._quarantine is None:
            path = self._side_file(QUARANTINE)
            self._quarantine = (pq.read_table(path) if path else
                                pa.table({c: pa.array([], pa.string()) for c in ("source", "split", "id", "file",
                                                                                  "reason")}))
        return self._quarantine


def open_store(root: str | Path, scan: bool = True) -> MixtureStore:
    try:
        return MixtureStore(root, scan=scan)
    except (pa.ArrowException, OSError) as exc:
        raise MedmixError(f"{root}: cannot open the mixture ({exc})") from None
