"""Exact and near-duplicate detection: images by 64-bit perceptual hash, anything by exact key.

Everything here is a pure function over arrays, so the pipeline can feed it columns read from the
normalized Parquet cache (27 MB for 3.35M hashes) and apply its own policy to the result.

Near-duplicate images
---------------------
Two images are near-duplicates when the Hamming distance of their 64-bit pHashes is at most
`max_distance`. Answers are EXACT (no pair within the distance is ever missed, none beyond it is
ever returned), and they scale: an all-pairs comparison of 3.35M hashes would be 5.6e12
popcounts, so the search uses multi-index hashing, a pigeonhole argument made exhaustive:

* split the hash into 16 nibbles; a pair within distance d differs in at most d nibbles, so at
  least 16 - d nibbles agree exactly;
* pick a family of k-nibble subsets (a covering design) such that every set of 16 - d nibbles
  contains one of them. For each subset ("table"), rows whose k nibbles are equal land next to each
  other after one numpy sort; only those neighbours are compared, first on an XOR-folded copy of
  the hash carried in the sort key (a lower bound of the distance, free to test), then exactly.
  Every true pair agrees on all nibbles of some table, so none is missed; each is reported by the
  first such table only.

The plain pigeonhole ("split into d + 1 blocks, one block agrees") gives 7-bit keys for d = 8,
i.e. buckets of ~26,000 random hashes and ~10^10 comparisons at 3.35M rows. Requiring k = 5
agreeing nibbles (20-bit keys) keeps buckets at ~3 rows; a greedy covering design needs 210 such
tables for d = 8 (k is chosen by a cost model; `_design` builds and checks the design). At 3.35M
random hashes and d = 8 this takes ~35 s of one core and ~0.5 GiB peak (benchmarks/dedup_scale.py),
against ~8 core-hours for all pairs. Identical hashes (blank or re-encoded images) are collapsed
first, so a thousand copies of one black frame cost one row, not half a million pairs.

Default distance
----------------
`DEFAULT_IMAGE_DISTANCE = 8`, measured with medmix's stored pHash (`medmix.imaging.phash.phash64`, within
4 bits of `imagehash.phash`, 0.56 on average) on 57 distinct real images (pydicom's DICOM test
images, tiles of larger ones, scikit-learn's sample photos; see `tests/mix/test_dedup.py` and
`python benchmarks/dedup_scale.py --part thresholds`; re-measured for schema 2.1's pHash, same
margins as before):

* planted copies (half size, JPEG q70, 2 % crop, +3 % brightness) lie at distance <= 6 for every
  single edit (margin 2 below the default) and <= 8 with all four edits at once (on the default);
* distinct images lie at >= 16 (margin 8 above the default), most at 24-40;
* at 3.35M uniformly random hashes d = 8 yields ~1.5k chance pairs, d = 10 ~56k (and 6x the
  search work); chance merges chain through `image_clusters`, so the default stays at 8.

Known limit: near-blank images and synthetic test patterns (colour bars, symmetric checkerboards)
have DCT coefficients tied at the median, so their pHash flips under tiny edits (distances 12-20
in the same measurement). Exact duplicates of them are still caught by `image_hash`.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from medmix.core.errors import MedmixError

DEFAULT_IMAGE_DISTANCE = 8

_NIBBLES = 16
_U64 = np.uint64
# Work-size knobs (elements per vectorized step): they bound peak memory, not results.
_CHUNK_ELEMS = 1 << 22
# Relative costs, in units of one brute-force comparison (~5 ns here), used only to choose brute
# force or tables and the key size; measured on the 2-core dev machine: a table costs ~9 units
# per row plus ~2e5 of fixed per-lane numpy overhead.
_COST_PAIR = 1.0
_COST_ROW = 9.0
_COST_TABLE = 2e5


class DedupInputError(MedmixError, ValueError):
    """An input array cannot be a column of 64-bit hashes (wrong dtype, shape, or values)."""


# ---------------------------------------------------------------------------------------------
# input handling and small helpers


def as_hashes(values: Iterable[int] | np.ndarray, *, name: str = "hashes") -> np.ndarray:
    """Return `values` as a 1-D uint64 array, refusing anything that is not a 64-bit hash column.

    int64 input is reinterpreted bit for bit (stores without unsigned types keep pHashes as
    int64). Floats, negative narrower ints or 2-D arrays are refused with the reason, because a
    silently rounded hash would silently change which images count as duplicates.
    """
    if isinstance(values, np.ndarray):
        arr = values
    else:
        seq = list(values)
        try:
            if seq and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in seq):
                arr = np.asarray(seq, dtype=np.int64 if min(seq) < 0 else np.uint64)
            else:
                arr = np.asarray(seq)
        except OverflowError:
            raise DedupInputError(f"{name} holds integers outside the 64-bit range") from None
    if arr.ndim != 1:
        raise DedupInputError(f"{name} must be a 1-D array of 64-bit hashes, got shape {arr.shape}")
    if arr.dtype == np.uint64:
        return arr
    if arr.dtype == np.int64:
        return arr.view(np.uint64)
    if arr.size == 0:
        return np.zeros(0, dtype=np.uint64)
    if arr.dtype.kind == "u":
        return arr.astype(np.uint64)
    if arr.dtype.kind == "i":
        if (arr < 0).any():
            raise DedupInputError(f"{name} holds negative values in a {arr.dtype} array; pass uint64 or int64")
        return arr.astype(np.uint64)
    raise DedupInputError(f"{name} must hold 64-bit integer hashes, got dtype {arr.dtype}")


def _check_distance(max_distance: int) -> int:
    if isinstance(max_distance, bool) or not isinstance(max_distance, (int, np.integer)):
        raise DedupInputError(f"max_distance must be an integer, got {max_distance!r}")
    d = int(max_distance)
    if not 0 <= d <= 64:
        raise DedupInputError(f"max_distance must be between 0 and 64 bits, got {d}")
    return d


def hamming(a: np.ndarray | int, b: np.ndarray | int) -> np.ndarray:
    """Element-wise Hamming distance of 64-bit hashes (uint64 arrays or ints, broadcasting), as int64.

    The one definition: dedup, decontamination, the removed-rows audit and the tests all count bits here.
    """
    return np.bitwise_count(np.bitwise_xor(np.asarray(a, np.uint64), np.asarray(b, np.uint64))).astype(np.int64)


def components(n: int, pairs: np.ndarray) -> np.ndarray:
    """Connected components of `n` nodes joined by `pairs`; label = smallest node index in the component.

    Labelling by the smallest member (not by scipy's arbitrary component number) makes labels a
    function of the partition and the row order only, so equal inputs give equal labels anywhere.
    """
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if pairs.size == 0:
        return np.arange(n, dtype=np.int64)
    graph = coo_matrix((np.ones(len(pairs), dtype=np.int8), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    _, comp = connected_components(graph, directed=False)
    smallest = np.full(comp.max() + 1, n, dtype=np.int64)
    np.minimum.at(smallest, comp, np.arange(n, dtype=np.int64))
    return smallest[comp]


def exact_clusters(keys: Sequence[str | bytes | None] | pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Label rows with equal keys (e.g. `image_hash`, `text_key`) by their smallest row index.

    Null keys never match anything (a row without an image is not a duplicate of another row
    without an image). Uses Arrow's hash-based dictionary encoding: O(n), exact, no Python loop.
    """
    arr = keys if isinstance(keys, (pa.Array, pa.ChunkedArray)) else pa.array(list(keys))
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    n = len(arr)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type) or pa.types.is_binary(arr.type)
            or pa.types.is_large_binary(arr.type) or pa.types.is_null(arr.type)):
        raise DedupInputError(f"exact keys must be strings or bytes, got Arrow type {arr.type}")
    rows = np.arange(n, dtype=np.int64)
    if pa.types.is_null(arr.type):
        return rows
    encoded = pc.dictionary_encode(arr)
    valid = np.asarray(encoded.indices.is_valid())
    codes = np.asarray(encoded.indices.fill_null(0)).astype(np.int64)
    first = np.full(max(1, len(encoded.dictionary)), n, dtype=np.int64)
    np.minimum.at(first, codes[valid], rows[valid])
    return np.where(valid, first[codes], rows)


# ---------------------------------------------------------------------------------------------
# the covering design


def _masks(m: int, r: int) -> np.ndarray:
    combos = np.array(list(itertools.combinations(range(m), r)), dtype=np.int64).reshape(-1, r)
    return (np.int64(1) << combos).sum(axis=1) if r else np.zeros(1, dtype=np.int64)


@functools.lru_cache(maxsize=64)
def _design(max_distance: int, k: int) -> tuple[tuple[int, ...], ...]:
    """k-nibble subsets such that every set of 16 - d nibbles contains at least one.

    Greedy set cover (always take the subset covering most uncovered (16-d)-sets; ties go to the
    first in lexicographic order, so the design is deterministic). Greedy is not optimal (the
    counting bound for d=8, k=5 is 78 tables; greedy finds 210) but it is exhaustively checked,
    which is what exactness rests on.
    """
    d = max_distance
    if not 1 <= k <= _NIBBLES - d:
        raise ValueError(f"no {k}-nibble design for distance {d}")
    agree_sets = _masks(_NIBBLES, _NIBBLES - d)
    subsets = _masks(_NIBBLES, k)
    chosen: list[int] = []
    alive = np.ones(len(agree_sets), dtype=bool)
    # covers[i, j]: subset j lies inside agree-set i. At most 12870 x 4368 booleans (d=8, k=5),
    # built in row blocks so the int temporaries stay small.
    agree16, sub16 = agree_sets.astype(np.uint16), subsets.astype(np.uint16)
    covers = np.empty((len(agree16), len(sub16)), dtype=bool)
    for r0 in range(0, len(agree16), 512):
        block = agree16[r0:r0 + 512, None] & sub16[None, :]
        np.equal(block, sub16[None, :], out=covers[r0:r0 + 512])
    gains = covers.sum(axis=0).astype(np.int64)
    while alive.any():
        j = int(np.argmax(gains))
        chosen.append(j)
        newly = alive & covers[:, j]
        gains -= covers[newly].sum(axis=0)
        alive &= ~newly
    if not covers[:, chosen].any(axis=1).all():  # pragma: no cover - the loop above guarantees it
        raise AssertionError("covering design is incomplete")
    return tuple(tuple(b for b in range(_NIBBLES) if subsets[j] >> b & 1) for j in chosen)


def _nibble_mask(subset: Sequence[int]) -> int:
    return sum(1 << b for b in subset)


@functools.lru_cache(maxsize=64)
def _first_table(design: tuple[tuple[int, ...], ...]) -> np.ndarray:
    """For every 16-bit set of agreeing nibbles, the first table whose key those nibbles contain.

    A true pair collides in every table whose nibbles it agrees on; keeping it only in the first
    such table means each pair is reported exactly once, however many tables it shows up in.
    """
    masks = np.arange(1 << _NIBBLES, dtype=np.int64)
    first = np.full(1 << _NIBBLES, len(design), dtype=np.int32)
    for t in range(len(design) - 1, -1, -1):
        s = _nibble_mask(design[t])
        first[(masks & s) == s] = t
    return first


def _agree_nibbles(x: np.ndarray) -> np.ndarray:
    """16-bit mask of the nibbles where the XOR `x` of two hashes is zero."""
    x = x | (x >> _U64(1))
    x |= x >> _U64(2)
    x &= _U64(0x1111111111111111)  # bit 4j set <=> nibble j differs
    differ = np.zeros(len(x), dtype=np.int64)
    for j in range(_NIBBLES):
        differ |= ((x >> _U64(4 * j)) & _U64(1)).astype(np.int64) << j
    return differ ^ 0xFFFF


def _nibbles(hashes: np.ndarray) -> list[np.ndarray]:
    return [((hashes >> _U64(4 * j)) & _U64(15)).astype(np.uint8) for j in range(_NIBBLES)]


def _key(nibbles: list[np.ndarray], subset: Sequence[int], shift: int, out: np.ndarray, tmp: np.ndarray) -> None:
    """out |= the subset's nibbles packed into consecutive bits starting at `shift`."""
    for p, j in enumerate(subset):
        np.left_shift(nibbles[j], _U64(shift + 4 * p), out=tmp, dtype=np.uint64)
        np.bitwise_or(out, tmp, out=out)


def _plan(d: int, rows: int, pairs: float, method: str) -> tuple[str, int]:
    """Pick brute force or multi-index tables, and the key size k (in nibbles) for the tables.

    Cost = tables x (row work + expected in-bucket comparisons of random hashes) against one
    comparison per pair for brute force. Small inputs (a few thousand hashes) go brute force
    without building any design.
    """
    if method not in ("auto", "tables", "brute"):
        raise DedupInputError(f"method must be 'auto', 'tables' or 'brute', got {method!r}")
    if method == "brute" or (method == "auto" and (d >= _NIBBLES or pairs <= 2_000_000)):
        return "brute", 0
    if d >= _NIBBLES:
        raise DedupInputError(f"max_distance {d} leaves no nibble guaranteed to agree; use method='brute'")
    best_k, best_cost = 1, float("inf")
    for k in range(1, min(5, _NIBBLES - d) + 1):
        cost = len(_design(d, k)) * (_COST_TABLE + _COST_ROW * rows + _COST_PAIR * pairs / float(1 << (4 * k)))
        if cost < best_cost:
            best_k, best_cost = k, cost
    if method == "auto" and pairs * _COST_PAIR <= best_cost:
        return "brute", 0
    return "tables", best_k


# ---------------------------------------------------------------------------------------------
# near pairs among distinct hashes


def _brute_self_pairs(u: np.ndarray, d: int) -> np.ndarray:
    n = len(u)
    out: list[np.ndarray] = []
    step = max(1, _CHUNK_ELEMS // max(n, 1))
    for i0 in range(0, n, step):
        i1 = min(n, i0 + step)
        dist = np.bitwise_count(u[i0:i1, None] ^ u[None, i0:])
        ii, jj = np.nonzero(dist <= d)
        ii = ii + i0
        jj = jj + i0
        keep = jj > ii
        out.append(np.stack([ii[keep], jj[keep]], axis=1))
    return np.concatenate(out).astype(np.int64) if out else np.zeros((0, 2), dtype=np.int64)


def _fold(u: np.ndarray, bits: int) -> np.ndarray:
    """XOR-fold 64-bit hashes to `bits` bits: hamming(fold(x), fold(y)) <= hamming(x, y) always.

    Each input bit feeds exactly one output bit, so the folded distance never exceeds the true
    one; that makes it a free, exact filter that rides along in the sort key (see below).
    """
    out = np.zeros(len(u), dtype=np.uint64)
    if bits <= 0:
        return out
    mask = _U64((1 << bits) - 1)
    for off in range(0, 64, bits):
        out ^= (u >> _U64(off)) & mask
    return out


def _anchors(design: tuple[tuple[int, ...], ...]) -> list[tuple[int, list[int]]]:
    """Group tables under a shared "anchor" nibble (greedy: the nibble in most unassigned tables)."""
    todo = set(range(len(design)))
    groups = []
    while todo:
        anchor = max(range(_NIBBLES), key=lambda j: (sum(j in design[t] for t in todo), -j))
        tables = sorted(t for t in todo if anchor in design[t])
        groups.append((anchor, tables))
        todo -= set(tables)
    return groups


def _table_self_pairs(u: np.ndarray, d: int, k: int) -> np.ndarray:
    """Exact near pairs among distinct sorted hashes via one sort per covering-design table.

    Rows are split into 16 lanes by the value of one key nibble (the table's anchor); pairs that
    share the key share the lane, and a lane (~1/16 of the rows) fits in cache, which makes the
    sorts and passes below about twice as fast as on the whole array. In a lane, each table sorts
    a packed uint64 word [other k-1 key nibbles | folded hash | row index in lane]. Rows sharing
    the key are adjacent. For two rows of one run, the XOR of their words has zero key bits and
    the folded distance in the middle bits: a lower bound of the true distance (see `_fold`)
    that rejects ~99 % of random pairs before the real hashes are gathered. Offset-1 pairs are
    checked on contiguous slices, larger offsets only inside runs of 3 or more rows.
    """
    design = _design(d, k)
    first = _first_table(design)
    nib = _nibbles(u)
    found: list[np.ndarray] = []
    for anchor, tables in _anchors(design):
        order = np.argsort(nib[anchor], kind="stable")
        bounds = np.searchsorted(nib[anchor][order], np.arange(_NIBBLES + 1))
        lane_max = int(np.diff(bounds).max())
        ib = max(1, (lane_max - 1).bit_length())
        key_shift = 64 - 4 * (k - 1)
        if ib > key_shift:
            raise DedupInputError(f"too many distinct hashes ({len(u):,}) for one call")
        ua = u[order]
        local = np.arange(len(u), dtype=np.uint64) - np.repeat(bounds[:-1], np.diff(bounds)).astype(np.uint64)
        base = (_fold(ua, key_shift - ib) << _U64(ib)) | local
        used = sorted({j for t in tables for j in design[t]} - {anchor})
        nib_a = {j: nib[j][order] for j in used}
        idx_mask, ibits = _U64((1 << ib) - 1), _U64(ib)
        fold_limit = _U64(1 << (key_shift - ib))  # words XOR below this: same key
        keyed = key_shift < 64  # k = 1: the anchor is the whole key, a lane is one run
        key32, tmp32 = np.empty(lane_max, dtype=np.uint32), np.empty(lane_max, dtype=np.uint32)
        comp = np.empty(lane_max, dtype=np.uint64)
        xor1 = np.empty(lane_max, dtype=np.uint64)
        same = np.zeros(lane_max + 1, dtype=bool)
        for t in tables:
            others = [j for j in design[t] if j != anchor]
            for lo, hi in itertools.pairwise(bounds):
                m = int(hi - lo)
                if m < 2:
                    continue
                key, tmp, c, x, sm = key32[:m], tmp32[:m], comp[:m], xor1[:m - 1], same[:m]
                key.fill(0)
                for p, j in enumerate(others):
                    np.left_shift(nib_a[j][lo:hi], np.uint32(4 * p), out=tmp, dtype=np.uint32)
                    np.bitwise_or(key, tmp, out=key)
                if keyed:
                    np.left_shift(key, _U64(key_shift), out=c, dtype=np.uint64)
                    np.bitwise_or(c, base[lo:hi], out=c)
                else:
                    c[:] = base[lo:hi]
                c.sort()
                np.bitwise_xor(c[1:], c[:-1], out=x)
                np.right_shift(x, ibits, out=x)
                np.less(x, fold_limit, out=sm[:-1])  # sm[p]: rows p and p+1 share the key
                sm[-1] = False  # a run never extends past the lane
                left = [np.flatnonzero((x < fold_limit) & (np.bitwise_count(x) <= d))]
                right = [left[0] + 1]
                # (p, p+s+1) share the key iff (p, p+s) do and sm[p+s]
                pos = np.flatnonzero(sm[:-2] & sm[1:-1])
                step = 2
                while pos.size:
                    hit = pos[np.bitwise_count((c[pos] ^ c[pos + step]) >> ibits) <= d]
                    left.append(hit)
                    right.append(hit + step)
                    pos = pos[sm[pos + step]]
                    step += 1
                pa, pb = np.concatenate(left), np.concatenate(right)
                if pa.size == 0:
                    continue
                ra = (c[pa] & idx_mask).astype(np.int64) + lo
                rb = (c[pb] & idx_mask).astype(np.int64) + lo
                xor = ua[ra] ^ ua[rb]
                close = np.bitwise_count(xor) <= d
                close[close] = first[_agree_nibbles(xor[close])] == t  # each pair in one table only
                if close.any():
                    ga, gb = order[ra[close]], order[rb[close]]
                    found.append(np.stack([np.minimum(ga, gb), np.maximum(ga, gb)], axis=1))
    return np.concatenate(found).astype(np.int64) if found else np.zeros((0, 2), dtype=np.int64)


def _unique_pairs(u: np.ndarray, d: int, method: str) -> np.ndarray:
    """Pairs (i < j) of positions in the sorted distinct hashes `u` within distance d, sorted."""
    n = len(u)
    if d == 0 or n < 2:
        return np.zeros((0, 2), dtype=np.int64)
    plan, k = _plan(d, n, n * (n - 1) / 2, method)
    pairs = _brute_self_pairs(u, d) if plan == "brute" else _table_self_pairs(u, d, k)
    return _sort_pairs(pairs, n)


def _sort_pairs(pairs: np.ndarray, n: int) -> np.ndarray:
    if len(pairs) == 0:
        return np.zeros((0, 2), dtype=np.int64)
    code = np.unique(pairs[:, 0] * np.int64(n) + pairs[:, 1])
    return np.stack([code // n, code % n], axis=1)


def _group_rows(inverse: np.ndarray, groups: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows ordered by distinct hash, with each distinct hash's start offset and row count."""
    order = np.argsort(inverse, kind="stable").astype(np.int64)
    counts = np.bincount(inverse, minlength=groups).astype(np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    return order, starts, counts


def _expand(order: np.ndarray, starts: np.ndarray, counts: np.ndarray, upairs: np.ndarray) -> np.ndarray:
    """Row pairs: all pairs inside each group of identical hashes, and group x group for near pairs."""
    parts: list[np.ndarray] = []
    multi = np.flatnonzero(counts > 1)
    if multi.size:  # within identical hashes: every pair of the group's rows
        c = counts[multi]
        for size in np.unique(c):  # few distinct group sizes; one triangle per size
            a, b = np.triu_indices(int(size), 1)
            s = starts[multi[c == size]][:, None]
            parts.append(np.stack([order[(s + a).ravel()], order[(s + b).ravel()]], axis=1))
    if len(upairs):
        ca, cb = counts[upairs[:, 0]], counts[upairs[:, 1]]
        per = ca * cb
        p = np.repeat(np.arange(len(upairs)), per)
        r = np.arange(per.sum()) - np.repeat(np.cumsum(per) - per, per)
        a = starts[upairs[p, 0]] + r // cb[p]
        b = starts[upairs[p, 1]] + r % cb[p]
        parts.append(np.stack([order[a], order[b]], axis=1))
    if not parts:
        return np.zeros((0, 2), dtype=np.int64)
    rows = np.concatenate(parts)
    rows.sort(axis=1)
    return _sort_pairs(rows, len(order))


# ---------------------------------------------------------------------------------------------
# public API


def near_pairs(hashes: np.ndarray, max_distance: int = DEFAULT_IMAGE_DISTANCE, *, method: str = "auto",
               max_pairs: int = 50_000_000) -> np.ndarray:
    """All row pairs (i < j) with hamming(hashes[i], hashes[j]) <= max_distance, exact, sorted.

    Returns an (k, 2) int64 array in lexicographic order. Identical hashes are pairs too (distance
    0). `method` is "auto" (brute force when it is cheaper, i.e. a few thousand hashes; multi-index
    tables otherwise), "tables" or "brute"; all give the same answer. A column where thousands of
    rows share one hash has millions of row pairs: past `max_pairs` this raises instead of
    exhausting memory; `image_clusters` gives the grouping without listing pairs.
    """
    h = as_hashes(hashes)
    d = _check_distance(max_distance)
    if h.size < 2:
        return np.zeros((0, 2), dtype=np.int64)
    u, inverse = np.unique(h, return_inverse=True)
    upairs = _unique_pairs(u, d, method)
    order, starts, counts = _group_rows(inverse.ravel(), len(u))
    total = int((counts * (counts - 1) // 2).sum())
    if len(upairs):
        total += int((counts[upairs[:, 0]] * counts[upairs[:, 1]]).sum())
    if total > max_pairs:
        raise DedupInputError(
            f"near_pairs would return {total:,} row pairs (more than max_pairs={max_pairs:,}); "
            f"{int((counts > 1).sum()):,} hashes are shared by several rows, the largest by {int(counts.max()):,}. "
            "Use image_clusters() for the grouping.")
    return _expand(order, starts, counts, upairs)


def image_clusters(hashes: np.ndarray, max_distance: int = DEFAULT_IMAGE_DISTANCE, *,
                   method: str = "auto") -> np.ndarray:
    """Label each row with the smallest row index of its near-duplicate cluster.

    Clusters are connected components of the "within max_distance" graph (single linkage), so
    A~B and B~C put A and C together even if they are farther apart; the pipeline keeps one row
    per label. Computed over distinct hashes, so repeated hashes cost nothing extra.
    """
    h = as_hashes(hashes)
    d = _check_distance(max_distance)
    if h.size == 0:
        return np.zeros(0, dtype=np.int64)
    u, first_row, inverse = np.unique(h, return_index=True, return_inverse=True)
    comp = components(len(u), _unique_pairs(u, d, method))  # label = smallest distinct-hash position
    smallest_row = np.full(len(u), len(h), dtype=np.int64)
    np.minimum.at(smallest_row, comp, first_row.astype(np.int64))
    return smallest_row[comp][inverse.ravel()]


def near_match(index_hashes: np.ndarray, query_hashes: np.ndarray,
               max_distance: int = DEFAULT_IMAGE_DISTANCE, *, method: str = "auto") -> np.ndarray:
    """For each query row, the smallest index row within max_distance, or -1 when there is none.

    Built for decontamination: the index is the evaluation images (thousands), the queries are
    training images, fed in batches of any size (results do not depend on batching). Exact.
    """
    ih = as_hashes(index_hashes, name="index_hashes")
    qh = as_hashes(query_hashes, name="query_hashes")
    d = _check_distance(max_distance)
    result = np.full(qh.size, -1, dtype=np.int64)
    if ih.size == 0 or qh.size == 0:
        return result
    iu, ifirst = np.unique(ih, return_index=True)
    ifirst = ifirst.astype(np.int64)
    qu, qinv = np.unique(qh, return_inverse=True)
    plan, k = _plan(d, len(iu) + len(qu), float(len(iu)) * float(len(qu)), method)
    best = _brute_match(iu, ifirst, qu, d) if plan == "brute" else _table_match(iu, ifirst, qu, d, k)
    return best[qinv.ravel()]


def near_any(index_hashes: np.ndarray, query_hashes: np.ndarray,
             max_distance: int = DEFAULT_IMAGE_DISTANCE, *, method: str = "auto") -> np.ndarray:
    """Boolean per query row: is it within max_distance of any index hash? (see `near_match`)"""
    return near_match(index_hashes, query_hashes, max_distance, method=method) >= 0


def _brute_match(iu: np.ndarray, ifirst: np.ndarray, qu: np.ndarray, d: int) -> np.ndarray:
    best = np.full(len(qu), -1, dtype=np.int64)
    # index rows sorted by first row, so the first hit along a row is the smallest index row
    by_row = np.argsort(ifirst, kind="stable")
    iu_sorted, rows_sorted = iu[by_row], ifirst[by_row]
    step = max(1, _CHUNK_ELEMS // len(iu))
    for q0 in range(0, len(qu), step):
        hit = np.bitwise_count(qu[q0:q0 + step, None] ^ iu_sorted[None, :]) <= d
        anyhit = hit.any(axis=1)
        pos = hit.argmax(axis=1)
        best[q0:q0 + step] = np.where(anyhit, rows_sorted[pos], -1)
    return best


def _table_match(iu: np.ndarray, ifirst: np.ndarray, qu: np.ndarray, d: int, k: int) -> np.ndarray:
    """Multi-index lookup: per table, a dense bucket array over the index keys (2**(4k) slots)."""
    design = _design(d, k)
    n_i, n_q = len(iu), len(qu)
    best = np.full(n_q, np.iinfo(np.int64).max, dtype=np.int64)
    inib, qnib = _nibbles(iu), _nibbles(qu)
    ikey, itmp = np.empty(n_i, dtype=np.uint64), np.empty(n_i, dtype=np.uint64)
    qkey, qtmp = np.empty(n_q, dtype=np.uint64), np.empty(n_q, dtype=np.uint64)
    slots = 1 << (4 * k)
    for subset in design:
        ikey.fill(0)
        _key(inib, subset, 0, ikey, itmp)
        qkey.fill(0)
        _key(qnib, subset, 0, qkey, qtmp)
        order = np.argsort(ikey, kind="stable")
        counts = np.bincount(ikey.astype(np.int64), minlength=slots)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        qc = counts[qkey.astype(np.int64)]
        for q0 in range(0, n_q, _CHUNK_ELEMS):  # expansion is chunked to bound memory
            sl = slice(q0, q0 + _CHUNK_ELEMS)
            c = qc[sl]
            hitq = np.flatnonzero(c) + q0
            if hitq.size == 0:
                continue
            per = qc[hitq]
            qrep = np.repeat(hitq, per)
            r = np.arange(per.sum()) - np.repeat(np.cumsum(per) - per, per)
            cand = order[starts[qkey[qrep].astype(np.int64)] + r]
            ok = np.bitwise_count(qu[qrep] ^ iu[cand]) <= d
            np.minimum.at(best, qrep[ok], ifirst[cand[ok]])
    best[best == np.iinfo(np.int64).max] = -1
    return best
