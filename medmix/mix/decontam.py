"""Evaluation-set decontamination of training text: shared word n-grams.

A training row is contaminated when it contains, as consecutive normalized words, any n-gram of
an evaluation item (question, options, answer...). n = 13 follows GPT-3 (Brown et al. 2020,
appendix C) and EleutherAI's lm-evaluation-harness: 13 words are long enough that sharing them
by chance ("which of the following is the most likely diagnosis") is rare, and short enough to
catch a benchmark question pasted into a longer training text. An evaluation text shorter than
n words is indexed whole, as one n-gram of its own length, so a 6-word VQA question still
matches a training text that contains those 6 words in order. That is deliberately strict:
generic short questions ("what organ is shown") will match many rows, so index the fields that
identify an item (question plus answer, or with options) and set `min_tokens` to skip tiny
texts where that strictness is not wanted.

Images are decontaminated by perceptual hash: `medmix.mix.dedup.near_match(eval_phashes,
train_phashes)`.

Text is normalized with `medmix.mix.textsim.normalize_text` and split on spaces. Word hashes are
64-bit BLAKE2b digests (stable across processes and machines, unlike Python's `hash`), combined
per n-gram in numpy; a false match needs a 64-bit collision.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

import numpy as np

from medmix.core.hashing import mix64
from medmix.mix.textsim import TextInputError, normalize_text

DEFAULT_NGRAM = 13

_U64 = np.uint64
_MUL = _U64(0x9E3779B97F4A7C15)


class _WordHasher:
    """Stable 64-bit word hashes with a cache (vocabularies repeat far more than they grow)."""

    def __init__(self) -> None:
        self._cache: dict[str, int] = {}

    def __call__(self, words: Sequence[str]) -> np.ndarray:
        cache = self._cache
        out = np.empty(len(words), dtype=np.uint64)
        for i, w in enumerate(words):
            h = cache.get(w)
            if h is None:
                h = int.from_bytes(hashlib.blake2b(w.encode("utf-8"), digest_size=8).digest(), "little")
                if len(cache) < 2_000_000:
                    cache[w] = h
            out[i] = h
        return out


def text_words(text: str | None) -> list[str]:
    """The words n-grams are made of: normalized text split on spaces (the removed-rows audit shows them)."""
    return normalize_text(text).split()


def _gram_hashes(word_hashes: np.ndarray, offsets: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray]:
    """Hashes of every `length`-word window inside each text, and the text each window is from."""
    lens = np.diff(offsets)
    counts = np.maximum(lens - length + 1, 0)
    total = int(counts.sum())
    doc = np.repeat(np.arange(len(lens)), counts)
    starts = np.repeat(offsets[:-1], counts) + (np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts))
    h = np.full(total, _U64(length), dtype=np.uint64)  # the length is part of the hash
    for j in range(length):
        h *= _MUL
        h ^= word_hashes[starts + j]
        h = mix64(h)
    return h, doc


class NgramIndex:
    """Word n-grams of evaluation texts, for testing training texts against them.

    Args:
        texts: evaluation texts in item order; the item number reported by `matching_items`
            and `match_batch` is the position in this iterable. None or empty texts are skipped.
        n: n-gram length in normalized words (13 by default, see module docstring).
        min_tokens: evaluation texts with fewer words are not indexed (counted in `skipped`).
    """

    def __init__(self, texts: Iterable[str | None], n: int = DEFAULT_NGRAM, *, min_tokens: int = 1) -> None:
        if isinstance(texts, str):
            raise TextInputError("NgramIndex takes an iterable of texts, not one string")
        if not isinstance(n, int) or n < 1:
            raise TextInputError(f"n must be a positive integer, got {n!r}")
        self.n = n
        self.min_tokens = max(1, int(min_tokens))
        self._hasher = _WordHasher()
        self.size = 0
        self.skipped = 0
        gram_parts: list[np.ndarray] = []
        item_parts: list[np.ndarray] = []
        self._lengths: set[int] = set()
        batch: list[list[str]] = []
        batch_items: list[int] = []
        for item, text in enumerate(texts):
            self.size += 1
            words = text_words(text)
            if len(words) < self.min_tokens:
                self.skipped += 1
                continue
            batch.append(words)
            batch_items.append(item)
            if len(batch) >= 4096:
                self._index_batch(batch, batch_items, gram_parts, item_parts)
                batch, batch_items = [], []
        if batch:
            self._index_batch(batch, batch_items, gram_parts, item_parts)
        grams = np.concatenate(gram_parts) if gram_parts else np.zeros(0, dtype=np.uint64)
        items = np.concatenate(item_parts) if item_parts else np.zeros(0, dtype=np.int64)
        order = np.lexsort((items, grams))
        self._grams, self._items = grams[order], items[order]

    def _index_batch(self, batch: list[list[str]], items: list[int], gram_parts: list[np.ndarray],
                     item_parts: list[np.ndarray]) -> None:
        hashes, offsets = self._hash_words(batch)
        lens = np.diff(offsets)
        # long texts: every n-gram; short ones: the whole text as one gram of its own length
        for length in [self.n, *sorted({int(x) for x in lens[lens < self.n]})]:
            sel = (lens >= self.n) if length == self.n else (lens == length)
            if not sel.any():
                continue
            sub_hashes, sub_offsets = _select(hashes, offsets, np.flatnonzero(sel))
            grams, doc = _gram_hashes(sub_hashes, sub_offsets, length)
            gram_parts.append(grams)
            item_parts.append(np.asarray(items, dtype=np.int64)[np.flatnonzero(sel)][doc])
            self._lengths.add(length)

    def _hash_words(self, batch: Sequence[Sequence[str]]) -> tuple[np.ndarray, np.ndarray]:
        offsets = np.zeros(len(batch) + 1, dtype=np.int64)
        np.cumsum([len(w) for w in batch], out=offsets[1:])
        flat = [w for words in batch for w in words]
        return self._hasher(flat), offsets

    @property
    def num_ngrams(self) -> int:
        return len(np.unique(self._grams))

    def match_batch(self, texts: Sequence[str | None]) -> np.ndarray:
        """For each text, the smallest evaluation item it shares an n-gram with, or -1."""
        if isinstance(texts, str):
            raise TextInputError("match_batch takes a sequence of texts, not one string")
        batch = [text_words(t) for t in texts]
        best = np.full(len(batch), np.iinfo(np.int64).max, dtype=np.int64)
        if self._grams.size and batch:
            hashes, offsets = self._hash_words(batch)
            for length in sorted(self._lengths):
                grams, doc = _gram_hashes(hashes, offsets, length)
                pos = np.searchsorted(self._grams, grams)
                hit = pos < len(self._grams)
                hit[hit] = self._grams[pos[hit]] == grams[hit]
                # the first entry of a gram in (gram, item) order is its smallest item
                np.minimum.at(best, doc[hit], self._items[pos[hit]])
        best[best == np.iinfo(np.int64).max] = -1
        return best

    def matches(self, text: str | None) -> bool:
        """Does `text` share an n-gram (or a whole short evaluation text) with any evaluation item?"""
        return bool(self.match_batch([text])[0] >= 0)

    def matching_items(self, text: str | None) -> list[int]:
        """Every evaluation item `text` shares an n-gram with, ascending."""
        words = text_words(text)
        if not words or not self._grams.size:
            return []
        hashes, offsets = self._hash_words([words])
        found: set[int] = set()
        for length in sorted(self._lengths):
            grams, _ = _gram_hashes(hashes, offsets, length)
            lo = np.searchsorted(self._grams, grams, side="left")
            hi = np.searchsorted(self._grams, grams, side="right")
            for a, b in zip(lo[hi > lo], hi[hi > lo]):
                found.update(int(i) for i in self._items[a:b])
        return sorted(found)


def _select(hashes: np.ndarray, offsets: np.ndarray, docs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The word hashes and offsets of a subset of the texts of a batch."""
    lens = np.diff(offsets)[docs]
    new_offsets = np.zeros(len(docs) + 1, dtype=np.int64)
    np.cumsum(lens, out=new_offsets[1:])
    idx = np.repeat(offsets[:-1][docs], lens) + (np.arange(int(lens.sum())) - np.repeat(new_offsets[:-1], lens))
    return hashes[idx], new_offsets
