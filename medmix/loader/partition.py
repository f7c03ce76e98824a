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
turned into Python objects and images): read amplification = num_workers.

Windows (`worker_split="windows"`, batched mode): the rank's stream is cut where its windows end
(`rank_pieces`: a window of the epoch order clipped to the rank's span is one piece), and worker i
of n takes pieces i, i+n, ... (round-robin by window, not balanced by rows: a shuffle window holds
about `shuffle_window` rows, so the deal is balanced to within a window, and a worker's next piece
is always the next window it reads, sequentially). A worker yields its pieces' rows in order, in
batches of `batch_size` counted on its own stream (a batch may span two of its windows; only its
last batch may be short). Each window is read by exactly one worker: read amplification 1.
The price: the sequence depends on num_workers. torch's DataLoader (in_order=True, the default)
takes batch k from worker k mod n while every worker has batches left; an exhausted worker's
turns are skipped and the rest continue round-robin in worker order (`_next_data` drops tasks of
workers marked unavailable), so the loader's sequence is `merge_round_robin` of the workers' own
batch sequences; `served` inverts it (how many of its batches each worker gave after k loader
steps, O(num_workers) levels), which makes `skip(steps * batch_size)` exact without reading: a
fresh DataLoader starts at worker 0, so after a skip worker j plays worker (j + s) mod n, s the
worker that was next (`next_worker`); the loader then goes on exactly where the epoch would.
Remainders in windows mode: "uneven" keeps every row of the rank once (ranks may differ by up to
num_workers batches); "drop" cuts every rank to the fewest batches any rank has (`window_counts`),
so DDP ranks take equal steps; "pad" is refused (use "drop").
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from torch.utils.data import get_worker_info

from medmix.core.distributed import rank_and_world

__all__ = ["REMAINDERS", "World", "merge_round_robin", "next_worker", "own_chunks", "own_piece_chunks", "own_pieces",
           "rank_pieces", "rank_span", "served", "window_counts"]

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


def rank_pieces(offsets: np.ndarray, total: int, start: int, length: int) -> np.ndarray:
    """Boundaries (rank-stream indices, 0 .. length) of the rank's pieces: its span cut where windows end.

    `offsets` are the epoch order's window starts (and total at the end); a "pad" span wraps
    around the epoch (position p read as p mod total), so boundaries repeat one lap later.
    """
    inner = np.concatenate([offsets[1:-1], offsets[1:-1] + total]) - start
    inner = inner[(inner > 0) & (inner < length)]
    return np.unique(np.concatenate([[0], inner, [length]])).astype(np.int64) if length else np.zeros(1, np.int64)


def own_pieces(bounds: np.ndarray, worker: int, workers: int) -> list[tuple[int, int]]:
    """Worker `worker`'s pieces as (lo, hi) rank-stream ranges, in stream order: pieces i, i+n, ..."""
    return [(int(bounds[p]), int(bounds[p + 1])) for p in range(worker, len(bounds) - 1, workers)]


def window_counts(bounds: np.ndarray, workers: int, block: int) -> list[int]:
    """Batches each worker yields from the rank's pieces (a worker's last batch may be short)."""
    return [-(-sum(hi - lo for lo, hi in own_pieces(bounds, w, workers)) // block) for w in range(workers)]


def served(batches: list[int], steps: int) -> list[int]:
    """How many of its batches each worker handed out in the first `steps` batches of the loader.

    The loader takes one batch per worker per round, in worker order, skipping workers that have
    none left (module docstring). Simulated per level of `batches`, so O(num_workers log num_workers).
    """
    counts = np.asarray(batches, dtype=np.int64)
    out = np.zeros_like(counts)
    left, r = steps, 0
    for level in np.unique(counts):
        active = np.flatnonzero(counts > r)
        if active.size == 0 or left == 0:
            break
        full = min(int(level) - r, left // active.size)
        out[active] += full
        left -= full * active.size
        r += full
        if r < level:  # a partial round: the first `left` active workers
            out[active[:left]] += 1
            left = 0
    return out.tolist()


def next_worker(batches: list[int], steps: int) -> int:
    """The worker whose batch the loader hands out after `steps` batches (0 when none is left).

    A fresh DataLoader asks worker 0 first, so a pass that starts after `steps` (a `skip`) lets
    DataLoader worker j play worker (j + next_worker) mod n: then the loader's sequence goes on
    exactly where the full epoch's would. Worker w's next batch is in round served[w]; the
    earliest round, then the lowest worker, comes next.
    """
    done = served(batches, steps)
    left = [(d, w) for w, (d, b) in enumerate(zip(done, batches)) if d < b]
    return min(left)[1] if left else 0


def merge_round_robin(streams: list[list]) -> list:
    """What the DataLoader hands out from its workers' batch sequences (module docstring)."""
    out = []
    for r in range(max((len(s) for s in streams), default=0)):
        out += [s[r] for s in streams if r < len(s)]
    return out


def own_piece_chunks(pieces: list[tuple[int, int]], block: int, begin: int, done: int,
                     stop: int) -> Iterator[np.ndarray]:
    """Rank-stream indices of this worker's own stream (its pieces one after another), from own
    sample `begin + done` up to `stop`, in chunks that end on batch boundaries counted from `begin`."""
    los = np.asarray([lo for lo, _ in pieces], dtype=np.int64)
    lengths = np.asarray([hi - lo for lo, hi in pieces], dtype=np.int64)
    ends = np.cumsum(lengths)
    size = max(1, CHUNK // block) * block
    j = begin + done
    while j < stop:
        end = min(begin + (j - begin) // block * block + size, stop)
        js = np.arange(j, end, dtype=np.int64)
        p = np.searchsorted(ends, js, side="right")
        yield los[p] + js - (ends[p] - lengths[p])
        j = end
