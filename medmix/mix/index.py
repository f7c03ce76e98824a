"""The mix stage's working set: a compact per-row index of the normalized cache.

Only what dedup, decontamination and selection need is kept per row (ids, hashes, a 64-bit text
key, MinHash band keys), never images or full text, as fixed-width NumPy columns (`Index`):
about 100 B/row with bands off, so 3.35M rows take ~320 MiB. Columns are read from the unit
Parquet files batch by batch.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)

from medmix.core.layout import iter_batches
from medmix.mix.decontam import NgramIndex
from medmix.mix.disk_array import disk_array, release
from medmix.mix.index_cache import ROW_COLUMNS, ColumnCache
from medmix.mix.textsim import (
    bands_from_signatures,
    lsh_params,
    minhash_signatures,
    normalize_text,
    qa_text,
    sketch_from_signatures,
)

INDEX_COLUMNS = ["id", "source", "task", "license", "image_hash", "image_phash", "question", "options",
                 "answer", "context"]


def text_key64(normalized: str) -> int:
    """64 bits of sha256 of an already-normalized text: exact text identity in 8 bytes per row."""
    return int.from_bytes(hashlib.sha256(normalized.encode()).digest()[:8], "little")


def fixed_width(strings: Sequence[str] | pa.Array) -> np.ndarray:
    """UTF-8 bytes in one fixed-width NumPy column (dtype `S<longest>`).

    Why not a list of `str`: a Python string costs ~49 bytes of header plus a list slot per row
    and one allocation each; at 1M rows the old index held 238 B/row, most of it ids and hashes
    (benchmarks/index_memory.py). UTF-8 byte order is code point order, so sorting this column
    sorts the ids exactly as Python sorts the strings, and equal strings stay equal bytes.
    The width is the longest value's: one very long id widens every row.
    """
    if not isinstance(strings, pa.Array):
        strings = pa.array(list(strings), pa.string())
    if len(strings) == 0:
        return np.zeros(0, "S1")
    return strings.cast(pa.binary()).to_numpy(zero_copy_only=False).astype("S")


def hash_key(image_hash: str | None) -> bytes:
    """`image_hash` in 17 bytes instead of a 32-character string: b"\\1" + the 16 bytes of an
    XXH3-128 lowercase hex digest (the schema's form); any other string keeps its UTF-8 behind
    b"\\2", so two different hashes never share a key. b"" for no image. The leading byte is never
    NUL because NumPy's `S` columns drop trailing NULs (an all-zero digest would read as b"")."""
    if image_hash is None:
        return b""
    if len(image_hash) == 32:
        try:
            digest = bytes.fromhex(image_hash)
        except ValueError:
            digest = b""
        if digest.hex() == image_hash:  # lowercase hex only: "AB…" and "ab…" stay two keys
            return b"\1" + digest
    return b"\2" + image_hash.encode()


def _codes(values: pa.Array, vocabulary: dict[str, int]) -> np.ndarray:
    """Small-vocabulary strings (source, license) as int32 codes; `vocabulary` grows in first-seen order."""
    enc = values.dictionary_encode()
    remap = np.array([vocabulary.setdefault(v, len(vocabulary)) for v in enc.dictionary.to_pylist()] or [0], np.int32)
    idx = enc.indices.fill_null(len(enc.dictionary)).to_numpy(zero_copy_only=False)
    if enc.null_count:
        remap = np.append(remap, vocabulary.setdefault(None, len(vocabulary))).astype(np.int32)
    return remap[idx]


_NIBBLE = np.full(256, 255, np.uint8)
_NIBBLE[np.frombuffer(b"0123456789", np.uint8)] = np.arange(10)
_NIBBLE[np.frombuffer(b"abcdef", np.uint8)] = np.arange(10, 16)


def hash_keys(hashes: pa.Array) -> np.ndarray:
    """`hash_key` of a column, vectorized for the 32-hex form (a Python loop over 1M hashes took
    ~10 s of a ~55 s index build); other values go through `hash_key` one by one."""
    n = len(hashes)
    if n == 0:
        return np.zeros(0, "S17")
    raw = hashes.cast(pa.binary()).to_numpy(zero_copy_only=False)  # object: bytes or None
    size = pa.compute.binary_length(hashes).fill_null(0).to_numpy(zero_copy_only=False)
    keys = np.zeros(n, "S17")
    hexed = size == 32
    rows = np.flatnonzero(hexed)
    if len(rows):
        nib = _NIBBLE[np.frombuffer(raw[rows].astype("S32").tobytes(), np.uint8).reshape(-1, 32)]
        ok = (nib != 255).all(axis=1)
        digest = np.ones((len(nib), 17), np.uint8)  # byte 0: the b"\\1" tag
        digest[:, 1:] = (nib[:, 0::2] << 4) | nib[:, 1::2]
        keys[rows[ok]] = digest[ok].view("S17").ravel()
        hexed[rows[~ok]] = False
    other = np.flatnonzero(~hexed & (size > 0))
    if len(other):
        keys = keys.astype(f"S{max(17, 1 + int(size[other].max()))}")
        for r in other:
            keys[r] = hash_key(raw[r].decode())
    return keys


# name -> (dtype kind, ndim): what each named column must hold, checked when an Index is made, so a
# column built from the wrong source (two uint64 arrays swapped by position) fails loudly at once
_COLUMN_KINDS = {"unit": ("i", 1), "row": ("i", 1), "ids": ("S", 1), "source": ("i", 1), "license": ("i", 1),
                 "has_image": ("b", 1), "sha": ("S", 1), "phash": ("u", 1), "text": ("u", 1),
                 "bands": ("u", 2), "sketch": ("u", 2), "text_hit": ("i", 1)}


@dataclass(frozen=True, kw_only=True)
class Index:
    """One row per normalized training row, as named fixed-width columns (built by `build_index`).

    Why this shape: the mix stage holds the index for every row of the mixture on the driver, and
    the dedup / decontamination / selection steps read it column-wise. Everything per row is a
    NumPy array of one dtype, with no Python object per row: at 1M rows of ids shaped like the
    adapters' it holds 100 B/row against 238 B/row for the old lists of strings
    (benchmarks/index_memory.py, docs/benchmarks.md). Columns are keyword-only and checked for
    dtype and length, so swapping two of them fails when the index is made, not in the output.
    """

    unit: np.ndarray        # int32: position of the unit file in the canonical unit order
    row: np.ndarray         # int32: row within that unit file
    ids: np.ndarray         # S<w>: the row's id, UTF-8 (`id_at` gives the str)
    source: np.ndarray      # int32 code into `sources`
    sources: tuple[str, ...]
    license: np.ndarray     # int32 code into `licenses`
    licenses: tuple[str, ...]
    has_image: np.ndarray   # bool
    sha: np.ndarray         # S17 (wider only for non-XXH3 hashes): `hash_key(image_hash)`; b"" where no image
    phash: np.ndarray       # uint64 (0 where no image)
    text: np.ndarray        # uint64 key of the normalized text
    bands: np.ndarray | None = None  # (n, b) uint64 MinHash LSH band keys; None when text near-dup is off
    sketch: np.ndarray | None = None  # (n, 64) uint8 4-bit MinHash sketches that re-check band collisions
    text_hit: np.ndarray | None = None  # int64: position in EvalIndex.texts of a shared n-gram, or -1

    def __post_init__(self) -> None:
        n = len(self.ids)
        for name, (kind, ndim) in _COLUMN_KINDS.items():
            col = getattr(self, name)
            if col is None:
                continue
            if not isinstance(col, np.ndarray) or col.dtype.kind != kind or col.ndim != ndim or len(col) != n:
                got = f"{col.dtype}{list(col.shape)}" if isinstance(col, np.ndarray) else type(col).__name__
                raise TypeError(f"Index.{name}: expected a {ndim}-d array of kind {kind!r} with {n} rows, got {got}")

    def __len__(self) -> int:
        return len(self.ids)

    def id_at(self, pos: int) -> str:
        return self.ids[pos].decode()

    def source_at(self, pos: int) -> str:
        return self.sources[self.source[pos]]


# rows per record batch of a unit file while indexing
INDEX_BATCH = 4096


def build_index(unit_files: Sequence[Path], sources: Sequence[str], *, bands: bool,
                text_threshold: float | None, ngrams: NgramIndex | None = None,
                progress: Callable[[int], None] | None = None, cache: ColumnCache | None = None,
                unit_keys: Sequence[str] | None = None, executor: Any = None) -> Index:
    """One streaming pass over the unit files; n-gram decontamination is matched here, while the
    text is at hand, so the index never holds training text. `progress(rows)` after each batch:
    at millions of rows this pass takes minutes, and the build shows its rate and ETA.

    With `cache` and `unit_keys` (one content key per unit file), each unit's columns are read
    from the cache when there, else computed and written to it (`medmix.mix.index_cache`). With a
    local `executor` too, the missing units are computed first by its workers (`fill_cache`)."""
    shape = lsh_params(text_threshold) if bands else None
    keyed = cache is not None and unit_keys is not None
    counted = fill_cache(unit_files, unit_keys, cache, shape, ngrams, executor, progress) \
        if keyed and executor is not None else set()
    # pass 1: each unit's row count and column widths, from the cached files' headers (computing
    # and caching a unit first if needed); without a cache the computed columns are held until filled
    metas: list[dict[str, tuple[np.dtype, tuple[int, ...]]]] = []
    held: dict[int, dict[str, np.ndarray]] = {}
    for u, path in enumerate(unit_files):
        meta = cache.shapes(unit_keys[u]) if keyed else None
        if meta is None:
            got = _unit_columns(path, shape, ngrams, progress)
            counted.add(u)
            if keyed:
                cache.save(unit_keys[u], got)
            else:
                held[u] = got
            meta = {k: (v.dtype, v.shape) for k, v in got.items()}
            del got
        metas.append(meta)
    rows = [int(m["ids"][1][0]) for m in metas]
    total = sum(rows)

    def width(name: str) -> int:
        return max([m[name][0].itemsize for m, n in zip(metas, rows) if n and name in m] or [1])

    cols: dict[str, np.ndarray] = {
        "unit": np.empty(total, np.int32), "row": np.empty(total, np.int32),
        "ids": np.empty(total, f"S{width('ids')}"), "source": np.empty(total, np.int32),
        "license": np.empty(total, np.int32),
        "has_image": np.empty(total, bool), "sha": np.empty(total, f"S{width('sha')}"),
        "phash": np.empty(total, np.uint64), "text": np.empty(total, np.uint64)}
    if ngrams is not None:
        cols["text_hit"] = np.empty(total, np.int64)
    wide = next((m for m, n in zip(metas, rows) if n and "bands" in m), None) if bands else None
    if wide is not None:
        cols["bands"] = np.empty((total, wide["bands"][1][1]), np.uint64)
        # read only for band collisions (medmix.mix.textsim.clusters_from_bands): kept in a file
        cols["sketch"] = disk_array((total, wide["sketch"][1][1]), np.uint8)

    # pass 2: fill the columns in place, one unit's arrays in memory at a time (concatenating the
    # per-unit arrays instead held about twice the index at 30M rows: docs/scale.md)
    code = {s: i for i, s in enumerate(sources)}
    licenses: dict[str, int] = {}
    at = 0
    for u, path in enumerate(unit_files):
        got = held.pop(u) if u in held else cache.load(unit_keys[u])
        if got is None:  # the file went bad between the passes: computed again, same columns
            got = _unit_columns(path, shape, ngrams, None)
        n = rows[u]
        part = slice(at, at + n)
        cols["unit"][part] = u
        cols["row"][part] = np.arange(n, dtype=np.int32)
        src = np.array([code[v] for v in json.loads(str(got["source_values"]))] or [0], np.int32)
        cols["source"][part] = src[got["source_codes"]]
        lic = np.array([licenses.setdefault(v, len(licenses)) for v in json.loads(str(got["license_values"]))]
                       or [0], np.int32)
        cols["license"][part] = lic[got["license_codes"]]
        for name in ROW_COLUMNS:
            if name in got and name in cols and n:
                cols[name][part] = got[name]
        del got
        at += n
        if progress is not None and u not in counted:
            progress(n)
    if "sketch" in cols:
        release(cols["sketch"])

    return Index(
        unit=cols["unit"], row=cols["row"], ids=cols["ids"], source=cols["source"], sources=tuple(sources),
        license=cols["license"], licenses=tuple(licenses), has_image=cols["has_image"], sha=cols["sha"],
        phash=cols["phash"], text=cols["text"], bands=cols.get("bands"), sketch=cols.get("sketch"),
        text_hit=cols.get("text_hit"),
    )


def fill_cache(unit_files: Sequence[Path], unit_keys: Sequence[str], cache: ColumnCache,
               shape: tuple[int, int] | None, ngrams: NgramIndex | None, executor: Any,
               progress: Callable[[int], None] | None = None) -> set[int]:
    """Compute the column files the cache lacks on the executor's workers, each written by its worker.

    Why: computing them is MinHash and n-gram matching over every text, ~2.2 s per 17k-row unit,
    ~430 s of the first full rehearsal's 450 s mix stage, on the driver alone while the workers
    that had just normalized sat idle. Each task writes its own file (atomically) and returns only
    its row count, so the driver never holds them. A remote executor (Ray) may run a task on a
    machine without this cache folder, so there the driver computes them as before.
    Returns the units computed here (their rows are already reported to `progress`)."""
    if executor.remote:
        return set()
    missing = [u for u in range(len(unit_files)) if not cache.path(unit_keys[u]).exists()]
    done = (lambda _i, rows: progress(rows)) if progress is not None else None
    executor.map(_save_unit_columns, ((unit_files[u], unit_keys[u], cache, shape, ngrams) for u in missing),
                 on_done=done)
    return set(missing)


def _save_unit_columns(path: Path, unit_key: str, cache: ColumnCache, shape: tuple[int, int] | None,
                       ngrams: NgramIndex | None) -> int:
    got = _unit_columns(path, shape, ngrams, None)
    cache.save(unit_key, got)
    return len(got["ids"])


def _unit_columns(path: Path, shape: tuple[int, int] | None, ngrams: NgramIndex | None,
                  progress: Callable[[int], None] | None) -> dict[str, np.ndarray]:
    """One unit file's index columns, batch by batch; sources and licenses as local codes into
    their distinct values (JSON, in first-seen order), so the file does not depend on the
    recipe's source list."""
    wanted = [k for k in ROW_COLUMNS if (k not in ("bands", "sketch") or shape is not None)
              and (k != "text_hit" or ngrams is not None)]
    parts: dict[str, list[np.ndarray]] = {k: [] for k in wanted + ["source_codes", "license_codes"]}
    srcs: dict[str, int] = {}
    lics: dict[str, int] = {}
    for batch in iter_batches([path], INDEX_COLUMNS, INDEX_BATCH):
        d = batch.to_pydict()
        n = batch.num_rows
        parts["ids"].append(fixed_width(batch.column("id")))
        parts["source_codes"].append(_codes(batch.column("source"), srcs))
        parts["license_codes"].append(_codes(batch.column("license"), lics))
        parts["sha"].append(hash_keys(batch.column("image_hash")))
        parts["has_image"].append(np.array([s is not None for s in d["image_hash"]], bool))
        parts["phash"].append(np.array([p or 0 for p in d["image_phash"]], np.uint64))
        # normalized, options sorted: reordered choices of one MCQ are the same question
        texts = [qa_text(q, o, a, c) for q, o, a, c in zip(d["question"], d["options"], d["answer"], d["context"])]
        parts["text"].append(np.array([text_key64(t) for t in texts], np.uint64))
        if shape is not None and n:
            sig = minhash_signatures(texts)
            parts["bands"].append(bands_from_signatures(sig, *shape))
            parts["sketch"].append(sketch_from_signatures(sig))
        if ngrams is not None:
            parts["text_hit"].append(ngrams.match_batch(texts))
        del d, texts
        if progress is not None:
            progress(n)
    # an empty unit keeps its 1-d columns (length 0); bands and sketch, 2-d, are left out
    empty = {"ids": "S1", "sha": "S17", "has_image": "?", "phash": "u8", "text": "u8", "text_hit": "i8",
             "source_codes": "i4", "license_codes": "i4"}
    out = {k: np.concatenate(v) if v else np.zeros(0, empty[k]) for k, v in parts.items() if v or k in empty}
    out["source_values"] = np.array(json.dumps(list(srcs)))
    out["license_values"] = np.array(json.dumps(list(lics)))
    return out


@dataclass
class EvalIndex:
    """What decontamination compares against: eval images' hashes and eval texts, per eval set."""

    names: list[str]            # "source:split" per eval row
    ids: list[str]
    phash: np.ndarray           # uint64 of eval rows with images
    phash_row: np.ndarray       # eval row index of each hash
    texts: list[str]            # texts used for n-gram matching
    text_row: list[int]


def build_eval_index(unit_files: Sequence[tuple[str, Path]], ngram: int) -> EvalIndex:
    """Eval rows → hashes and texts. Texts of image rows count only when they are at least
    `ngram` tokens long: short generic VQA questions ("is this an mri?") recur across images and
    would strip every training row that asks them; those rows leak through their image instead."""
    names, ids, ph, ph_row, texts, text_row = [], [], [], [], [], []
    for name, path in unit_files:
        for batch in iter_batches([path], INDEX_COLUMNS, INDEX_BATCH):
            d = batch.to_pydict()
            for i in range(batch.num_rows):
                k = len(ids)
                names.append(name)
                ids.append(d["id"][i])
                if d["image_phash"][i] is not None:
                    ph.append(d["image_phash"][i])
                    ph_row.append(k)
                text = qa_text(d["question"][i], d["options"][i], None, d["context"][i])
                if d["image_phash"][i] is None or len(normalize_text(text).split()) >= ngram:
                    texts.append(text)
                    text_row.append(k)
    return EvalIndex(names, ids, np.array(ph, np.uint64), np.array(ph_row, np.int64), texts, text_row)
