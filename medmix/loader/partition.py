"""Who reads what: the ranks' share of an epoch and the DataLoader workers' share of a rank.

Ranks (remainder policy), for N rows and W ranks, on the epoch's sequence of positions:
    * "uneven" (default): rank r takes positions [floor(rN/W), floor((r+1)N/W)). Every row once;
      ranks differ by at most one sample.
    * "drop": rank r takes [r*F, (r+1)*F) with F = N // W; the last N - W*F positions of the
      epoch (different rows each epoch) are skipped.
    * "pad": rank r takes [r*C, (r+1)*C) with C = ceil(N/W), position p read as p mod N: the
      first W*C - N rows of the epoch appear twice, like `DistributedSampler`.
    Contiguous ranges mean each rank reads only its own ~1/W of the files.

Workers: a rank's stream is cut into blocks of `batch_size` samples and worker i of n takes
blocks i, i+n, i+2n, ... A DataLoader returns batches round-robin from its workers, so with the
same `batch_size` (per-row mode) or `batch_size=None` (batched mode: one block is one item) it
yields exactly the rank's stream in order, whatever `num_workers` is. That makes a plain
DataLoader resumable from one number. The price: every worker reads each window of its rank (the
OS page cache shares the bytes; Parquet decoding is repeated, while only the worker's own rows are
turned into Python objects and images).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from torch.utils.data import get_worker_info

from medmix.distributed import rank_and_world

__all__ = ["REMAINDERS", "World", "own_chunks", "rank_span"]

REMAINDERS = ("uneven", "drop", "pad")
CHUNK = 512  # samples a worker plans at a time (rounded up to whole blocks): bounds Python-side buffers


@dataclass(frozen=True)
class World:
    """This process's place: rank of world_size, and DataLoader worker of workers (0 of 1 outside one)."""

    rank: int
    world_size: int
    worker: int = 0
    workers: int = 1
    in_worker: bool = False

    @classmethod
    def ranks(cls, rank: int | None, world_size: int | None) -> World:
        """Rank and world size from the arguments, torch.distributed or RANK / WORLD_SIZE."""
        return cls(*rank_and_world(rank, world_size))

    def here(self) -> World:
        """The same ranks, with the DataLoader worker this code runs in (call inside `__iter__`)."""
        info = get_worker_info()
        if info is None:
            return World(self.rank, self.world_size)
        return World(self.rank, self.world_size, info.id, info.num_workers, True)


def rank_span(total: int, rank: int, world: int, remainder: str) -> tuple[int, int]:
    """(first epoch position, number of samples) of this rank; see the module docstring."""
    if remainder == "drop":
        per = total // world
        return rank * per, per
    if remainder == "pad":
        per = -(-total // world)
        return rank * per, per
    lo, hi = rank * total // world, (rank + 1) * total // world
    return lo, hi - lo


def own_chunks(start: int, stop: int | None, block: int, worker: int, workers: int,
               done: int) -> Iterator[np.ndarray]:
    """Rank-stream indices this worker serves, from its `done`-th one on, in chunks.

    Worker i takes blocks i, i+n, ... of `block` samples counted from `start`. Chunks end on block
    boundaries (of the worker's own count), so a batched stream never splits a block across two.
    """
    per_chunk = max(1, CHUNK // block)
    j = done
    while True:
        end = (j // block + per_chunk) * block
        js = np.arange(j, end, dtype=np.int64)
        idx = start + (worker + workers * (js // block)) * block + js % block
        if stop is not None:
            idx = idx[idx < stop]
        if idx.size == 0:
            return
        yield idx
        j = end


def block_starts(first: int, n: int, block: int) -> list[int]:
    """Offsets in a chunk of `n` own samples, starting at own sample `first`, where blocks begin."""
    return [0, *range(-first % block or block, n, block)]
