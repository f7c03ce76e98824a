"""The epoch order: which row sits at each position of an epoch. This is the determinism contract.

Everything here is defined by `medmix.core.hashing` alone (SplitMix64, no NumPy RNG streams), so an
order depends only on the data and the arguments, never on library versions.

Row groups of all shards, in manifest order, get global ids g = 0..m-1. The order key is
`k = key(seed, 1, epoch)` for a `MixtureDataset`, and `key(seed, 3, epoch, s, lap)` for source s
of a `WeightedMixture` on its lap-th pass. Then:

1. Row groups are sorted by `h(key(k, 0), g)` (identity when `shuffle=False`).
2. Consecutive row groups in that order form windows, each closed as soon as it holds at least
   `shuffle_window` rows.
3. Rows inside window w are sorted by `h(key(k, 1, w), j)` for their index j in the window's
   concatenated rows. The epoch's sequence is the windows one after another.

What a trainer receives is this sequence cut by `partition`: ranks take contiguous spans of it.
With worker_split="blocks" (the default) DataLoader workers take batches in turn, so the batches
are the rank's span in order whatever num_workers is. With worker_split="windows" (batched mode)
worker i of n takes the rank's windows i, i+n, ... and the loader interleaves the workers'
batches: the sequence is then a function of (seed, epoch, rank, world size, remainder,
shuffle_window, batch_size) AND num_workers; the same values give the same sequence, a different
num_workers a different one (the same rows per epoch).

`h(k, i)` is SplitMix64 of `k + i * 0x9E3779B97F4A7C15`; `key()` folds integers with it. Reading
stays sequential at row-group granularity and memory holds a window (two with read-ahead) per reader.
tests/test_loader_order.py pins orders captured before the loader became a package.
"""

from __future__ import annotations

import numpy as np

from medmix.core.hashing import fold, permutation, uniforms

__all__ = ["EpochOrder", "choice_uniforms", "mixture_key", "source_key"]


def mixture_key(seed: int, epoch: int, shuffle: bool) -> int | None:
    """Order key of a `MixtureDataset` epoch (None: manifest order)."""
    return fold(seed, 1, epoch) if shuffle else None


def source_key(seed: int, epoch: int, source: int, lap: int, shuffle: bool) -> int | None:
    """Order key of source `source` of a `WeightedMixture` on its `lap`-th pass of `epoch`."""
    return fold(seed, 3, epoch, source, lap) if shuffle else None


def choice_uniforms(seed: int, epoch: int, rank: int, lo: int, hi: int) -> np.ndarray:
    """Uniforms in [0, 1) that pick the source of samples [lo, hi) of a weighted rank stream."""
    return uniforms(fold(seed, 2, epoch, rank), lo, hi)


class EpochOrder:
    """The sequence of one epoch over one mixture, as windows of row groups (module docstring)."""

    def __init__(self, group_rows: np.ndarray, key: int | None, window_rows: int, lap: int = 0) -> None:
        self.key = key
        self.lap = lap  # which pass over a source this order is (weighted mixtures)
        m = len(group_rows)
        groups = np.arange(m) if key is None else permutation(fold(key, 0), m)
        self.windows: list[np.ndarray] = []
        offsets = [0]
        begin, acc = 0, 0
        sizes = group_rows[groups]
        for i in range(m):
            acc += int(sizes[i])
            if acc >= window_rows or i == m - 1:
                self.windows.append(groups[begin : i + 1])
                offsets.append(offsets[-1] + acc)
                begin, acc = i + 1, 0
        self.offsets = np.asarray(offsets, dtype=np.int64)

    def window_of(self, positions: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.offsets, positions, side="right") - 1

    def rows_of(self, window: int) -> np.ndarray:
        """Row indices (into the window's concatenated row groups) in epoch order."""
        n = int(self.offsets[window + 1] - self.offsets[window])
        return np.arange(n) if self.key is None else permutation(fold(self.key, 1, window), n)
