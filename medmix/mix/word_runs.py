"""Compiled inner loops of the wide-key near-duplicate tables (`dedup._mask_self_pairs`).

Per table, every hash is permuted so the table's key bits are on top of the word, the words are
sorted, and pairs sharing a key are the runs of equal top bits; the popcount of two words' XOR is
their exact Hamming distance. numpy did this with four `take`s and three ORs for the permutation,
and with one gather-and-compare pass per step along the runs. At 30M hashes and 22-bit keys that
scan was ~1.1e8 comparisons per table through fancy indexing, 1.5 s of the 2.3 s each table cost
on one core (2026-12-07), and 342 tables took ~10 minutes. Here the permutation is one loop (4
lookups per word, 0.15 s per table instead of 0.71) and the scan one pass that walks each run in
place (2.6 ns per comparison, 0.28 s per table): 342 tables in 141 s on two threads
(`benchmarks/dedup_scale.py --part images --scale 9 --pairs-only`, against 671 s in numpy). Both loops
release the GIL, so tables still run on a thread pool, and are compiled once and cached on disk.
"""

from __future__ import annotations

import numba
import numpy as np


def _compiled(**options):
    """numba.njit, cached on disk where numba finds a writable place for it (beside this file or
    in the user's cache directory). In a read-only install with a read-only home numba raises at
    decoration ("no locator available"), which would make this module unimportable; then the
    loops compile once per process (~1-2 s) instead."""
    def wrap(fn):
        try:
            return numba.njit(nogil=True, cache=True, **options)(fn)
        except RuntimeError:
            return numba.njit(nogil=True, **options)(fn)
    return wrap


_M1 = np.uint64(0x5555555555555555)
_M2 = np.uint64(0x3333333333333333)
_M4 = np.uint64(0x0F0F0F0F0F0F0F0F)
_H01 = np.uint64(0x0101010101010101)


@_compiled()
def permute_words(c0, c1, c2, c3, fwd, out):
    """out[i] = the word whose 16-bit chunks are c0..c3[i], with each chunk's bits moved by `fwd[c]`."""
    for i in range(c0.shape[0]):
        out[i] = fwd[0, c0[i]] | fwd[1, c1[i]] | fwd[2, c2[i]] | fwd[3, c3[i]]


@_compiled(inline="always")
def _popcount(x):
    x = x - ((x >> np.uint64(1)) & _M1)
    x = (x & _M2) + ((x >> np.uint64(2)) & _M2)
    x = (x + (x >> np.uint64(4))) & _M4
    return (x * _H01) >> np.uint64(56)


@_compiled()
def near_in_runs(words, limit, d, out_a, out_b):
    """Pairs of sorted `words` that share a key (XOR below `limit`) and lie within distance `d`.

    Writes at most len(out_a) pairs and returns how many there are: a caller whose buffers were too
    small sees a count above their size and calls again with larger ones.
    """
    m = words.shape[0]
    cap = out_a.shape[0]
    found = 0
    for i in range(m - 1):
        wi = words[i]
        j = i + 1
        while j < m:
            x = wi ^ words[j]
            if x >= limit:
                break
            if _popcount(x) <= d:
                if found < cap:
                    out_a[found] = wi
                    out_b[found] = words[j]
                found += 1
            j += 1
    return found
