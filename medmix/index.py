"""The mix stage's working set: a compact per-row index of the normalized cache.

Only what dedup, decontamination and selection need is kept per row (ids, hashes, a 64-bit text
key, MinHash band keys), never images or full text, so 3.35M rows fit in a few hundred MB.
Columns are read from the unit Parquet files batch by batch.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from medmix.decontam import NgramIndex
from medmix.textsim import (
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


@dataclass
class Index:
    unit: np.ndarray        # int32: position of the unit file in the canonical unit order
    row: np.ndarray         # int32: row within that unit file
    ids: list[str]
    source: np.ndarray      # int32 code into `sources`
    sources: list[str]
    license: list[str]
    has_image: np.ndarray   # bool
    sha: list[str | None]
    phash: np.ndarray       # uint64 (0 where no image)
    text: np.ndarray        # uint64 key of the normalized text
    bands: np.ndarray | None  # (n, b) uint64 MinHash LSH band keys, or None when text near-dup is off
    sketch: np.ndarray | None  # (n, 64) uint8 4-bit MinHash sketches that re-check band collisions
    text_hit: np.ndarray | None  # int64 per row: position in EvalIndex.texts of a shared n-gram, or -1

    def __len__(self) -> int:
        return len(self.ids)


def iter_batches(path: Path, columns: list[str], batch_size: int = 4096) -> Iterator:
    pf = pq.ParquetFile(path)
    yield from pf.iter_batches(batch_size=batch_size, columns=columns)


def build_index(unit_files: Sequence[Path], sources: Sequence[str], *, bands: bool,
                text_threshold: float | None, ngrams: NgramIndex | None = None,
                progress: Callable[[int], None] | None = None) -> Index:
    """One streaming pass over the unit files; n-gram decontamination is matched here, while the
    text is at hand, so the index never holds training text. `progress(rows)` after each batch:
    at millions of rows this pass takes minutes, and the build shows its rate and ETA."""
    code = {s: i for i, s in enumerate(sources)}
    unit, row, ids, src, lic, has, sha, ph, tk, bk, sk, hits = [], [], [], [], [], [], [], [], [], [], [], []
    shape = lsh_params(text_threshold) if bands else None
    for u, path in enumerate(unit_files):
        r0 = 0
        for batch in iter_batches(path, INDEX_COLUMNS):
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
            # normalized, options sorted: reordered choices of one MCQ are the same question
            texts = [qa_text(q, o, a, c) for q, o, a, c in zip(d["question"], d["options"], d["answer"], d["context"])]
            tk.append(np.array([text_key64(t) for t in texts], np.uint64))
            if bands and n:
                sig = minhash_signatures(texts)
                bk.append(bands_from_signatures(sig, *shape))
                sk.append(sketch_from_signatures(sig))
            if ngrams is not None:
                hits.append(ngrams.match_batch(texts))
            if progress is not None:
                progress(n)
    cat = lambda xs, dt: np.concatenate(xs) if xs else np.zeros(0, dt)  # noqa: E731
    return Index(cat(unit, np.int32), cat(row, np.int32), ids, cat(src, np.int32), list(sources), lic,
                 cat(has, bool), sha, cat(ph, np.uint64), cat(tk, np.uint64),
                 (np.concatenate(bk) if bk else None) if bands else None,
                 (np.concatenate(sk) if sk else None) if bands else None,
                 (cat(hits, np.int64) if ngrams is not None else None))


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
        for batch in iter_batches(path, INDEX_COLUMNS):
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
