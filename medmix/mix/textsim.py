"""Text identity for dedup and decontamination: normalization, exact keys, MinHash-LSH clusters.

One normalization (`normalize_text`) feeds exact keys, near-duplicate signatures and the n-gram
decontamination index, so "the same question" means the same thing in all three.

Near-duplicates: MinHash over character shingles, in numpy
------------------------------------------------------------
Shingles are 5-byte windows of the normalized UTF-8 text. Why characters, not words: medical QA
rows are short (a VQA question is 5-10 words, an MCQ 30-60), and one changed word removes k of
~n word k-grams. Measured on the MCQs of tests/test_dedup.py (27-41 words with options), one
changed word leaves Jaccard 0.64-0.76 with 5-word shingles, 0.79-0.85 with 3-word shingles, and
0.92-0.93 with 5-byte shingles.
Reordered options are best neutralized before hashing (`qa_text` sorts them).

`datasketch` is the reference implementation, but it hashes every shingle with SHA-1 in Python:
0.6-0.9 ms per 400-character text here, 2-3 minutes for 200k texts. The same algorithm in numpy
(polynomial shingle hash, affine permutations of 32-bit words, min per text) takes 0.07 ms per
text, in batches with memory bounded by the batch, not the corpus; `benchmarks/dedup_scale.py`
measures both. Signatures depend only on the text and the seed, so results do not depend on how the
caller batches rows. Per row the pipeline keeps only the band keys (80 bytes at the defaults) and,
to re-check band collisions, a 64-byte sketch (`sketch_from_signatures`); `clusters_from_bands`
works from those.
"""

from __future__ import annotations

import hashlib
import itertools
import unicodedata
from collections.abc import Iterable, Sequence
from functools import lru_cache

import numpy as np

from medmix.core.errors import MedmixError
from medmix.core.hashing import mix64
from medmix.mix.dedup import components
from medmix.mix.disk_array import release

DEFAULT_THRESHOLD = 0.8
DEFAULT_NUM_PERM = 128
DEFAULT_SHINGLE = 5
DEFAULT_SEED = 1
DEFAULT_MIN_SIMILARITY = 0.5  # sketch re-check of band collisions, see clusters_from_bands

_U64 = np.uint64
_PRIME = _U64(0x100000001B3)  # FNV-1a 64-bit prime: odd, good bit spread for the polynomial
_PAD = 0xFF  # never a byte of valid UTF-8, so padding cannot equal real text
_CHUNK_SHINGLES = 8192  # shingles x num_perm words per step: 8 MB at 128 permutations


class TextInputError(MedmixError, ValueError):
    """A text input or parameter is not usable (wrong type, impossible threshold)."""


# ---------------------------------------------------------------------------------------------
# normalization and exact keys


class _PunctToSpace(dict):
    """str.translate table: punctuation (Unicode categories P*) to a space, other characters to
    themselves. Filled lazily, so only characters actually seen are ever classified."""

    def __missing__(self, cp: int) -> str:
        ch = chr(cp)
        value = " " if unicodedata.category(ch).startswith("P") else ch
        self[cp] = value
        return value


_PUNCT = _PunctToSpace()


def normalize_text(text: str | None) -> str:
    """Canonical form used for every text comparison in medmix.

    Steps, in order: Unicode NFKC (full-width letters, ligatures, superscripts fold to plain
    forms); `str.casefold` (lower-casing that also folds e.g. German sharp s); every Unicode
    punctuation character (categories Pc Pd Ps Pe Pi Pf Po) becomes a space, so "end.Start"
    gives two words rather than one; whitespace runs collapse to one space, stripped at both
    ends. Symbols (+, <, degree signs) and digits are kept: "ER+" and "5 mg" carry meaning.
    None gives "".
    """
    if text is None:
        return ""
    if not isinstance(text, str):
        raise TextInputError(f"expected text, got {type(text).__name__}")
    folded = unicodedata.normalize("NFKC", text).casefold().translate(_PUNCT)
    return " ".join(folded.split())


def _options(options: Sequence[str] | None) -> list[str]:
    if options is None:
        return []
    if isinstance(options, str) or not all(isinstance(o, str) for o in options):
        raise TextInputError("options must be a list of strings")
    return sorted(normalize_text(o) for o in options)


def qa_text(question: str | None, options: Sequence[str] | None, answer: str | None,
            context: str | None = None) -> str:
    """One normalized string for a QA row, with options sorted (their order carries no meaning).

    Use it as MinHash input. Leave `context` out for near-duplicate text unless it is the
    content itself: many PubMedQA questions share one abstract and are not duplicates.
    """
    parts = [normalize_text(question), " ".join(_options(options)), normalize_text(answer)]
    if context is not None:
        parts.append(normalize_text(context))
    return " ".join(p for p in parts if p)


def text_key(question: str | None, options: Sequence[str] | None, answer: str | None,
             context: str | None = None) -> str:
    """sha256 hex of a QA row's normalized fields, for exact text dedup.

    Fields are joined with control separators that normalization removes, so the key is
    unambiguous ("a b" + "c" differs from "a" + "b c"); options are sorted, so a reordered MCQ
    with the same answer text has the same key. The answer is compared as text: rows whose answer
    is a letter pointing into options should be normalized to the option text upstream.
    """
    fields = [normalize_text(question), "\x1e".join(_options(options)), normalize_text(answer),
              normalize_text(context)]
    return hashlib.sha256("\x1f".join(fields).encode("utf-8")).hexdigest()


# ---------------------------------------------------------------------------------------------
# MinHash signatures and LSH band keys


def _check_params(threshold: float, num_perm: int, shingle: int) -> None:
    if not 0.0 < float(threshold) < 1.0:
        raise TextInputError(f"threshold must be strictly between 0 and 1, got {threshold}")
    if not isinstance(num_perm, int) or num_perm < 2:
        raise TextInputError(f"num_perm must be an integer >= 2, got {num_perm!r}")
    if not isinstance(shingle, int) or shingle < 1:
        raise TextInputError(f"shingle must be a positive integer, got {shingle!r}")


@lru_cache(maxsize=32)
def lsh_params(threshold: float = DEFAULT_THRESHOLD, num_perm: int = DEFAULT_NUM_PERM) -> tuple[int, int]:
    """(bands, rows) whose S-curve crosses 50 % merge probability closest to `threshold`.

    A pair with Jaccard s shares at least one band with probability 1 - (1 - s**rows)**bands,
    which is 0.5 at s50 = (1 - 0.5**(1/bands))**(1/rows). So `threshold` reads as "the
    similarity at which a pair is as likely merged as not". (datasketch instead balances the
    false-positive and false-negative areas, which for 0.8 puts s50 at 0.83 and merges a pair
    at exactly 0.8 only a third of the time.) For 0.8 and 128 permutations: 10 bands of 12 rows;
    P(merge) = 0.13 at 0.70, 0.50 at 0.80, 0.78 at 0.85, 0.96 at 0.90, 0.9995 at 0.95.
    """
    _check_params(threshold, num_perm, 1)
    best, best_gap = (1, num_perm), float("inf")
    for bands in range(1, num_perm + 1):
        rows = num_perm // bands
        s50 = (1.0 - 0.5 ** (1.0 / bands)) ** (1.0 / rows)
        if abs(s50 - threshold) < best_gap - 1e-12:
            best, best_gap = (bands, rows), abs(s50 - threshold)
    return best


def merge_probability(similarity: float | np.ndarray, bands: int, rows: int) -> np.ndarray:
    """Probability that two texts of Jaccard `similarity` share at least one band."""
    s = np.asarray(similarity, dtype=np.float64)
    return 1.0 - (1.0 - s ** rows) ** bands


@lru_cache(maxsize=16)
def _permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 2**32, size=num_perm, dtype=np.uint32) | np.uint32(1)  # odd: a bijection mod 2**32
    b = rng.integers(0, 2**32, size=num_perm, dtype=np.uint32)
    return a, b


def _encode(texts: Iterable[str | None]) -> tuple[np.ndarray, np.ndarray]:
    """Normalized UTF-8 bytes of every text, concatenated, with per-text offsets (n + 1)."""
    blobs = [normalize_text(t).encode("utf-8") for t in texts]
    offsets = np.zeros(len(blobs) + 1, dtype=np.int64)
    np.cumsum([len(b) for b in blobs], out=offsets[1:])
    return np.frombuffer(b"".join(blobs), dtype=np.uint8), offsets


def _shingle_hashes(buf: np.ndarray, offsets: np.ndarray, shingle: int) -> tuple[np.ndarray, np.ndarray]:
    """32-bit hashes of every `shingle`-byte window inside each text (one window, padded with
    0xFF, for shorter non-empty texts), and per-text start offsets into that array."""
    lens = np.diff(offsets)
    counts = np.where(lens >= shingle, lens - shingle + 1, np.minimum(lens, 1))
    starts = np.zeros(len(lens) + 1, dtype=np.int64)
    np.cumsum(counts, out=starts[1:])
    total = int(starts[-1])
    doc = np.repeat(np.arange(len(lens)), counts)
    pos = offsets[:-1][doc] + (np.arange(total) - starts[:-1][doc])
    padded = np.concatenate([buf, np.full(shingle, _PAD, dtype=np.uint8)]).astype(np.uint64) + _U64(1)
    # polynomial hash of the window at every byte, on contiguous slices; windows of texts at
    # least `shingle` long never cross into the next text
    h = np.zeros(len(buf), dtype=np.uint64)
    for j in range(shingle):
        h *= _PRIME
        h += padded[j:j + len(buf)]
    h = h[pos]
    short = np.flatnonzero(lens[doc] < shingle)  # the few texts shorter than one window
    if short.size:
        hs = np.zeros(short.size, dtype=np.uint64)
        end = offsets[1:][doc[short]]
        for j in range(shingle):
            byte = np.where(pos[short] + j < end, padded[pos[short] + j], _U64(_PAD + 1))
            hs *= _PRIME
            hs += byte
        h[short] = hs
    return (mix64(h) >> _U64(32)).astype(np.uint32), starts


def minhash_signatures(texts: Iterable[str | None], *, num_perm: int = DEFAULT_NUM_PERM,
                       shingle: int = DEFAULT_SHINGLE, seed: int = DEFAULT_SEED) -> np.ndarray:
    """(n, num_perm) uint32 MinHash signatures of the normalized texts.

    Each shingle is hashed to 32 well-mixed bits x (polynomial hash + splitmix64 finalizer);
    permutation i maps x to (a_i * x + b_i) mod 2**32 with a_i odd, a bijection of 32-bit words,
    and the signature keeps the minimum per text. 32-bit words keep the (num_perm x shingles)
    block in cache and use native SIMD multiplies: 3x faster than 64-bit multiply-shift here,
    with the same estimation error (tests/test_dedup.py checks it against exact Jaccard). A text
    that normalizes to "" has no shingles and gets all-ones; `minhash_bands` keeps such rows out
    of every cluster.
    """
    _check_params(0.5, num_perm, shingle)
    buf, offsets = _encode(texts)
    n = len(offsets) - 1
    sig = np.full((n, num_perm), np.iinfo(np.uint32).max, dtype=np.uint32)
    if n == 0 or buf.size == 0:
        return sig
    x, starts = _shingle_hashes(buf, offsets, shingle)
    a, b = _permutations(num_perm, seed)
    nonempty = np.flatnonzero(np.diff(starts) > 0)
    doc_starts = starts[nonempty]
    work = np.empty((num_perm, _CHUNK_SHINGLES), dtype=np.uint32)
    # walk the shingles in chunks (permutations x shingles, contiguous per permutation);
    # a text spanning chunks gets the min over its pieces
    for c0 in range(0, len(x), _CHUNK_SHINGLES):
        c1 = min(len(x), c0 + _CHUNK_SHINGLES)
        block = work[:, : c1 - c0]
        np.multiply(a[:, None], x[None, c0:c1], out=block)
        block += b[:, None]
        first = np.searchsorted(doc_starts, c0, side="right") - 1
        last = np.searchsorted(doc_starts, c1, side="left")
        docs = nonempty[first:last]
        seg = np.maximum(doc_starts[first:last], c0) - c0
        mins = np.minimum.reduceat(block, seg, axis=1).T
        sig[docs] = np.minimum(sig[docs], mins)
    return sig


def bands_from_signatures(sig: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """(n, bands) uint64 keys: each band's `rows` signature values hashed to one word.

    0 is reserved for "no text" (a signature of all ones), so such rows never share a band.
    """
    sig = np.asarray(sig, dtype=np.uint32)
    if sig.ndim != 2 or sig.shape[1] < bands * rows:
        raise TextInputError(f"signatures of shape {sig.shape} are too short for {bands} x {rows} bands")
    n = sig.shape[0]
    keys = np.empty((n, bands), dtype=np.uint64)
    for band in range(bands):
        k = np.full(n, _U64(0xCBF29CE484222325) ^ _U64(band), dtype=np.uint64)
        for v in sig[:, band * rows:(band + 1) * rows].T:
            k ^= v.astype(np.uint64)
            k *= _PRIME
        k ^= k >> _U64(31)  # final avalanche so the high bits depend on every value
        k *= _U64(0x9E3779B97F4A7C15)
        k ^= k >> _U64(29)
        k[k == 0] = 1
        keys[:, band] = k
    empty = (sig == np.iinfo(np.uint32).max).all(axis=1)
    keys[empty] = 0
    return keys


def minhash_bands(texts: Iterable[str | None], *, threshold: float = DEFAULT_THRESHOLD,
                  num_perm: int = DEFAULT_NUM_PERM, shingle: int = DEFAULT_SHINGLE,
                  seed: int = DEFAULT_SEED) -> np.ndarray:
    """LSH band keys (n, bands) uint64 for one batch of texts; concatenate batches in row order.

    Batches are independent: keys of a text do not depend on the other texts, so the pipeline
    can stream shards and keep only these keys.
    """
    _check_params(threshold, num_perm, shingle)
    bands, rows = lsh_params(float(threshold), num_perm)
    return bands_from_signatures(minhash_signatures(texts, num_perm=num_perm, shingle=shingle, seed=seed),
                                 bands, rows)


def sketch_from_signatures(sig: np.ndarray) -> np.ndarray:
    """4-bit "b-bit minwise" sketch of each signature, two values per byte: (n, ceil(num_perm/2)) uint8.

    Lets `clusters_from_bands` re-check band collisions for 64 bytes per row (214 MB at 3.35M
    rows, against 1.7 GB for full signatures). Each minimum is mixed (multiplicative hash) and
    its top 4 bits kept; two texts match on a value with probability J + (1 - J)/16.
    """
    sig = np.asarray(sig, dtype=np.uint32)
    nib = ((sig * np.uint32(0x9E3779B1)) >> np.uint32(28)).astype(np.uint8)
    if nib.shape[1] % 2:
        nib = np.concatenate([nib, np.zeros((nib.shape[0], 1), dtype=np.uint8)], axis=1)
    return (nib[:, 0::2] << 4) | nib[:, 1::2]


def sketch_similarity(sketch: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Estimated Jaccard of rows a[i] and b[i] from their 4-bit sketches (std ~0.04 at 128 values)."""
    values = 2 * sketch.shape[1]
    z = sketch[a] ^ sketch[b]
    matches = ((z & 0x0F) == 0).sum(axis=1) + ((z >> 4) == 0).sum(axis=1)
    return (matches / values - 1 / 16) / (1 - 1 / 16)


def _bucket_pairs(col: np.ndarray, full_upto: int = 16) -> np.ndarray:
    """Row pairs sharing a (non-zero) key in one band column: every pair in buckets of up to
    `full_upto` rows; in bigger buckets (one text repeated many times) each row with the first
    and with its neighbour, which keeps the graph connected without a quadratic blow-up."""
    order = np.argsort(col, kind="stable")
    s = col[order]
    starts = np.flatnonzero(np.concatenate([[True], s[1:] != s[:-1]]))
    sizes = np.diff(np.append(starts, len(s)))
    keep = (sizes > 1) & (s[starts] != 0)
    starts, sizes = starts[keep], sizes[keep]
    parts = []
    small = sizes <= full_upto
    for size in np.unique(sizes[small]):
        i, j = np.triu_indices(int(size), 1)
        st = starts[small][sizes[small] == size][:, None]
        parts.append(np.stack([order[(st + i).ravel()], order[(st + j).ravel()]], axis=1))
    for st, size in zip(starts[~small], sizes[~small]):
        members = order[st:st + size]
        parts.append(np.stack([np.full(size - 1, members[0]), members[1:]], axis=1))
        parts.append(np.stack([members[:-1], members[1:]], axis=1))
    return np.concatenate(parts) if parts else np.zeros((0, 2), dtype=np.int64)


def clusters_from_bands(bands: np.ndarray, sketch: np.ndarray | None = None, *,
                        min_similarity: float = DEFAULT_MIN_SIMILARITY) -> np.ndarray:
    """Label each row with the smallest row index of its cluster: rows sharing a band key are
    joined (and transitively). Keys equal to 0 ("no text") never join.

    Why the optional `sketch` (from `sketch_from_signatures`): LSH alone also joins pairs of low
    similarity by chance, and at corpus scale the number of such pairs is huge: 200k generated
    MCQs from a small vocabulary gave 117 rows merged at Jaccard 0.16-0.30
    (benchmarks/dedup_scale.py). With a sketch, each colliding pair is kept only if its estimated
    Jaccard is at least `min_similarity` (0.5 by default: far below the 0.8 threshold, so true
    near-duplicates are never dropped, and far above chance collisions).
    """
    keys = np.asarray(bands)
    if keys.ndim != 2 or keys.dtype != np.uint64:
        raise TextInputError(f"band keys must be a 2-D uint64 array, got {keys.dtype} {keys.shape}")
    n = keys.shape[0]
    if sketch is not None and (sketch.ndim != 2 or sketch.shape[0] != n or sketch.dtype != np.uint8):
        raise TextInputError(f"sketch must be a (n, k) uint8 array for {n} rows, got {sketch.dtype} {sketch.shape}")
    edges = [_bucket_pairs(col) for col in keys.T]
    pairs = np.concatenate(edges) if edges else np.zeros((0, 2), dtype=np.int64)
    if sketch is not None and len(pairs):
        pairs.sort(axis=1)
        code = np.unique(pairs[:, 0] * np.int64(n) + pairs[:, 1])  # a pair collides in several bands
        pairs = np.stack([code // n, code % n], axis=1)
        keep = np.zeros(len(pairs), dtype=bool)
        for c0 in range(0, len(pairs), 1 << 16):
            chunk = pairs[c0:c0 + (1 << 16)]
            keep[c0:c0 + len(chunk)] = sketch_similarity(sketch, chunk[:, 0], chunk[:, 1]) >= min_similarity
            release(sketch)  # a file-backed sketch (medmix.mix.disk_array): hand back the pages just read
        pairs = pairs[keep]
    return components(n, pairs)


def text_clusters(texts: Sequence[str | None] | Iterable[str | None], *, threshold: float = DEFAULT_THRESHOLD,
                  num_perm: int = DEFAULT_NUM_PERM, shingle: int = DEFAULT_SHINGLE, seed: int = DEFAULT_SEED,
                  batch_size: int = 20_000, verify: bool = True) -> np.ndarray:
    """int64 label per text: the smallest index of its near-duplicate cluster (MinHash LSH).

    Deterministic for a seed; the same labels for any `batch_size`. Texts are normalized first,
    so case, punctuation and spacing never separate two texts. `verify` re-checks band
    collisions with 4-bit sketches (see `clusters_from_bands`).
    """
    _check_params(threshold, num_perm, shingle)
    bands_n, rows_n = lsh_params(float(threshold), num_perm)
    it = iter(texts)
    parts, sketches = [], []
    while batch := list(itertools.islice(it, batch_size)):
        sig = minhash_signatures(batch, num_perm=num_perm, shingle=shingle, seed=seed)
        parts.append(bands_from_signatures(sig, bands_n, rows_n))
        if verify:
            sketches.append(sketch_from_signatures(sig))
    if not parts:
        return np.zeros(0, dtype=np.int64)
    return clusters_from_bands(np.concatenate(parts), np.concatenate(sketches) if verify else None)


def jaccard(a: str | None, b: str | None, shingle: int = DEFAULT_SHINGLE) -> float:
    """Exact Jaccard similarity of two texts' shingle sets (for tests and threshold studies)."""
    sets = []
    for text in (a, b):
        raw = normalize_text(text).encode("utf-8")
        if len(raw) < shingle:
            sets.append({raw} if raw else set())
        else:
            sets.append({raw[i:i + shingle] for i in range(len(raw) - shingle + 1)})
    union = sets[0] | sets[1]
    return len(sets[0] & sets[1]) / len(union) if union else 0.0
