"""`WeightedMixture`: several mixtures sampled at relative weights on the fly (`MixtureDataset.from_sources`)."""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from medmix.core.errors import MedmixError
from medmix.core.storage import is_remote
from medmix.loader.order import EpochOrder, choice_uniforms, source_key
from medmix.loader.partition import World, next_worker, own_chunks, rank_span, served
from medmix.loader.reader import Rows, WindowReader, gather
from medmix.loader.shards import ShardIndex
from medmix.loader.stream import Stream, WorkerSplit, check_columns, check_positive, check_worker_split

__all__ = ["WeightedMixture"]


class WeightedMixture(Stream):
    """Several mixtures (or per-source folders) sampled at relative weights, on the fly.

    Semantics (what mosaic `proportion` and HF `interleave_datasets` users keep asking):
      * Weights are relative: {a: 7, b: 3} equals {a: 0.7, b: 0.3}. Sample k of rank r in epoch
        e comes from the source whose interval of the cumulative normalized weights holds
        u = (h(key(seed, 2, e, r), k) >> 11) / 2**53: probability w_s / sum(w), and a function of
        k alone, so the choice sequence is random-access and resume needs no replay.
      * Each source is partitioned across ranks like `MixtureDataset` ("uneven" policy) and
        read in its own shuffled order; a source never repeats a row before it runs out.
      * `exhausted="stop"`: the rank's stream ends just before the first sample that would come
        from a source this rank has used up (proportions hold to the end; the rest of the other
        sources is unused this epoch). Ranks can end at different steps (each rank's `len()` is
        exact, computed from the hashes); for DDP use "cycle" with `num_samples`.
      * `exhausted="cycle"`: a used-up source starts again in a fresh order (its next pass), so
        the stream goes on; it ends after `num_samples` (global, per epoch: each rank yields
        ceil(num_samples / world_size)) or never when `num_samples` is None. `num_samples`
        also caps a "stop" stream.
      * `set_epoch(e)` re-keys the choices and restarts every source at pass 0 of epoch e.
      * The order of the `sources` mapping is part of the definition (same order, same stream).
      * Workers: blocks of `batch_size` as in `MixtureDataset`; each worker computes the
        (cheap) choices of the whole rank stream but converts and decodes only its own rows, and
        reads every window of the rank.
      * worker_split="windows" (batched mode; pass the DataLoader's `num_workers` too): worker j
        of n is rank `rank * n + j` of `world_size * n` (its own contiguous span of each source,
        its own choices), so each worker reads only its ~1/n of every source. The loader hands
        out the workers' batches in turn (`partition.merge_round_robin`), so the sequence depends
        on num_workers; `skip` takes whole loader steps (`partition.served`), and a
        StatefulDataLoader state resumes with the same num_workers.

    `shuffle`, `decode_images`, `transform`, `columns`, `split`, `batch_size`, `batched`,
    `shuffle_window`, `rank`, `world_size` and `shared_memory` mean what they mean for
    `MixtureDataset`, applied to every source.

    Args:
        sources: {mixture folder or URL: relative weight}; weights positive and finite, the
            mapping's order part of the definition.
        seed: non-negative int; with the epoch it fixes the choices and each source's order.
        exhausted: "cycle" (default) restarts a used-up source in a fresh order; "stop" ends the
            rank's stream before the first sample of a used-up source (see above).
        num_samples: samples per epoch over all ranks (each rank ceil(num_samples / world_size));
            None: "cycle" never ends, "stop" ends when a source runs out.
        worker_split: "blocks" (default) or "windows" (batched mode only), see above and
            `MixtureDataset`.
        num_workers: with worker_split="windows", the DataLoader's num_workers (part of the order
            and of the resume state).

    There is no `remainder`: each source is split "uneven" across ranks; DDP ranks take equal
    steps with exhausted="cycle" and `num_samples`.
    """

    kind = "weighted"

    def __init__(self, sources: Mapping[str | os.PathLike[str], float], *, seed: int = 0,
                 exhausted: Literal["cycle", "stop"] = "cycle", num_samples: int | None = None, shuffle: bool = True,
                 decode_images: bool = True, transform: Callable[[Any], Any] | None = None,
                 columns: Sequence[str] | None = None, split: str = "train", batch_size: int = 1,
                 batched: bool = False, shuffle_window: int = 2048, rank: int | None = None,
                 world_size: int | None = None, shared_memory: bool = True, worker_split: WorkerSplit = "blocks",
                 num_workers: int = 0) -> None:
        if exhausted not in ("cycle", "stop"):
            raise ValueError(f"exhausted must be 'cycle' or 'stop', got {exhausted!r}")
        check_worker_split(worker_split, num_workers, batched)
        self.worker_split = worker_split
        self.num_workers = num_workers
        if not sources:
            raise ValueError("from_sources needs at least one source")
        weights = []
        for path, weight in sources.items():
            if not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight <= 0:
                raise ValueError(f"weight of {str(path)!r} must be a positive finite number, got {weight!r}")
            weights.append(float(weight))
        if num_samples is not None:
            check_positive("num_samples", num_samples)
        self.paths = [str(p) if is_remote(p) else Path(p) for p in sources]  # URLs stay URLs
        self.weights = [w / sum(weights) for w in weights]
        self.exhausted = exhausted
        self.num_samples = num_samples
        self.shuffle = shuffle
        self.split = split
        self.columns = check_columns(columns)
        self.shuffle_window = check_positive("shuffle_window", shuffle_window)
        self._indexes = [ShardIndex(p, split, self.columns) for p in self.paths]
        self._init_stream(seed=seed, batch_size=batch_size, rank=rank, world_size=world_size,
                          decode_images=decode_images, transform=transform, batched=batched,
                          shared_memory=shared_memory)
        self._thresholds = np.cumsum(self.weights)[:-1]
        self._place(self.rank, self.world_size)
        if worker_split == "windows":
            for j in range(max(num_workers, 1)):  # every worker's span must hold rows of every source
                self._worker_view(j)

    def _place(self, rank: int, world_size: int) -> None:
        """This stream's rank of world_size: each source's span and the per-rank sample cap."""
        self.rank, self.world_size = rank, world_size
        spans = [rank_span(ix.total, rank, world_size, "uneven") for ix in self._indexes]
        self._starts = [s for s, _ in spans]
        self._lengths = [n for _, n in spans]
        for path, n in zip(self.paths, self._lengths):
            if n == 0:
                hint = "" if self.worker_split == "blocks" else (
                    " (with worker_split='windows' each DataLoader worker reads as a rank of world_size * "
                    "num_workers: fewer workers, or worker_split='blocks')")
                raise MedmixError(f"{path}: too few rows for world_size={world_size}: rank {rank} gets none{hint}")
        self._cap = None if self.num_samples is None else -(-self.num_samples // world_size)
        self._len_cache: dict[int, int] = {}

    def _worker_view(self, j: int) -> WeightedMixture:
        """worker_split="windows": DataLoader worker j's stream, rank `rank * n + j` of `world_size * n`
        (a copy sharing this dataset's cursor, files and counters)."""
        n = max(self.num_workers, 1)
        view = copy.copy(self)
        view._place(self.world.rank * n + j, self.world.world_size * n)
        return view

    def _view_batches(self, views: list[WeightedMixture], steps: int | None = None) -> list[int]:
        """Batches each worker's stream holds; endless streams: more than `steps` can use (without
        `steps`, an endless stream raises, as it has no length)."""
        if steps is not None and self.exhausted == "cycle" and self.num_samples is None:
            return [steps + 1] * len(views)
        return [-(-v._samples() // self.batch_size) for v in views]

    def _identity(self) -> dict[str, Any]:
        return {"seed": self.seed, "mixtures": [ix.fingerprint for ix in self._indexes],
                "weights": self.weights, "rank": self.world.rank, "world_size": self.world.world_size,
                "exhausted": self.exhausted, "num_samples": self.num_samples, "shuffle": self.shuffle,
                "shuffle_window": self.shuffle_window,
                **({"worker_split": "windows", "num_workers": self.num_workers} if self.worker_split == "windows"
                   else {})}

    def __len__(self) -> int:
        if self.worker_split == "blocks":
            return super().__len__()
        return sum(self._view_batches([self._worker_view(j) for j in range(max(self.num_workers, 1))]))

    def _zero_positions(self) -> list[int]:
        return [0] * len(self.paths)

    def _choices(self, lo: int, hi: int) -> np.ndarray:
        u = choice_uniforms(self.seed, self.epoch, self.rank, lo, hi)
        return np.searchsorted(self._thresholds, u, side="right")

    def _scan(self, lo: int, hi: int, positions: Sequence[int]) -> tuple[np.ndarray, np.ndarray, int | None]:
        """Choices for samples [lo, hi), per-source counts after each, and where "stop" ends."""
        choice = self._choices(lo, hi)
        onehot = choice[:, None] == np.arange(len(self.paths))[None, :]
        after = np.asarray(positions, dtype=np.int64)[None, :] + np.cumsum(onehot, axis=0)
        end = None
        if self.exhausted == "stop":
            over = after[np.arange(len(choice)), choice] > np.asarray(self._lengths)[choice]
            if over.any():
                end = lo + int(np.argmax(over))
        return choice, after, end

    def _samples(self) -> int:
        """Samples this rank yields per epoch; infinite ("cycle" without num_samples) raises."""
        if self.exhausted == "cycle":
            if self._cap is None:
                raise TypeError("an endless weighted mixture (exhausted='cycle', num_samples=None) has no length")
            return self._cap
        if self.epoch not in self._len_cache:
            lo, positions, step = 0, self._zero_positions(), 1 << 16
            while True:
                hi = lo + step if self._cap is None else min(lo + step, self._cap)
                _, after, end = self._scan(lo, hi, positions)
                if end is not None or hi == self._cap:
                    self._len_cache[self.epoch] = hi if end is None else end
                    break
                lo, positions = hi, after[-1].tolist()
        return self._len_cache[self.epoch]

    def skip(self, n: int) -> None:
        """Like `MixtureDataset.skip`; computes each source's position from hashes (no reads).

        With worker_split="windows", `n` counts whole loader steps (steps * batch_size): each
        worker works out how many of its own batches those steps took (`partition.served`)."""
        if self.worker_split == "windows":
            if not isinstance(n, int) or n < 0 or n % self.batch_size:
                raise ValueError(f"skip({n!r}): with worker_split='windows' skip whole batches (steps * batch_size, "
                                 f"batch_size={self.batch_size})")
            self.cursor.reset(n, pending=True)
            return
        if not isinstance(n, int) or n < 0 or (self._cap is not None and n > self._cap):
            raise ValueError(f"skip({n!r}) is out of range for this rank")
        positions, end = self._positions_after(n)
        if positions is None:
            raise ValueError(f"skip({n}): this rank's stream ends after {end} samples")
        self.cursor.reset(n, positions, pending=True)

    def _positions_after(self, n: int) -> tuple[list[int] | None, int | None]:
        """How many of the first `n` samples each source gave (from hashes, no reads), and where a
        "stop" stream ends; positions are None when it ends before `n`."""
        if not n:
            return self._zero_positions(), None
        _, after, end = self._scan(0, n, self._zero_positions())
        return (None if end is not None and end < n else after[-1].tolist()), end

    def _source_order(self, source: int, lap: int) -> EpochOrder:
        key = source_key(self.seed, self.epoch, source, lap, self.shuffle)
        return EpochOrder(self._indexes[source].group_rows, key, self.shuffle_window, lap)

    def _chunks(self, world: World, start: int, done: int) -> Iterator[tuple[Rows, np.ndarray, Sequence[str]]]:
        if self.worker_split == "windows":
            yield from self._worker_chunks(world, start, done)
        else:
            yield from self._stream_chunks(world, start, done, self.cursor.consumed, self.cursor.positions)

    def _worker_chunks(self, world: World, start: int,
                       done: int) -> Iterator[tuple[Rows, np.ndarray, Sequence[str]]]:
        """worker_split="windows": this worker's own stream, from where `start` loader steps left it."""
        n = self._split_workers(world)
        views = [self._worker_view(j) for j in range(n)]
        steps = start // self.batch_size
        counts = self._view_batches(views, steps)
        role = (world.worker + next_worker(counts, steps)) % n  # the epoch's worker this one continues
        view = views[role]
        begin = served(counts, steps)[role] * self.batch_size
        positions, _ = view._positions_after(begin)
        if positions is None:
            return
        yield from view._stream_chunks(World(view.rank, view.world_size, 0, 1, True), begin, done, begin, positions)

    def _stream_chunks(self, world: World, start: int, done: int, consumed: int,
                       positions: Sequence[int]) -> Iterator[tuple[Rows, np.ndarray, Sequence[str]]]:
        """This worker's blocks of the stream from `start` (own sample `done` on), given each
        source's count after `consumed` samples."""
        cursor = self.cursor
        cursor_k, cursor_n = consumed, list(positions)
        readers = [WindowReader(ix, self.columns, self.io, as_rows=not self.batched, prefetch=world.workers == 1,
                                threads=not world.in_worker) for ix in self._indexes]
        paths = [p for ix in self._indexes for p in ix.paths]  # shard code -> file, for error messages
        base = np.cumsum([0] + [len(ix.paths) for ix in self._indexes])
        orders: dict[int, EpochOrder] = {}
        lengths = np.asarray(self._lengths, dtype=np.int64)

        def order_of(s: int, lap: int) -> EpochOrder:
            if s not in orders or orders[s].lap != lap:
                orders[s] = self._source_order(s, lap)
                last = np.asarray([self._starts[s] + self._lengths[s] - 1])
                readers[s].last_window = int(orders[s].window_of(last)[0])  # this rank's part ends there
            return orders[s]

        try:
            for own in own_chunks(start, self._cap, self.batch_size, world.worker, world.workers, done):
                hi = int(own[-1]) + 1
                choice, after, end = self._scan(cursor_k, hi, cursor_n)
                if end is not None:
                    own = own[own < end]
                    if own.size == 0:
                        return
                sel = own - cursor_k
                src = choice[sel]
                item = after[sel, src] - 1  # this source's running count before the sample
                laps = item // lengths[src]
                parts, slots, codes = [], [], []
                for s, lap in sorted(set(zip(src.tolist(), laps.tolist()))):
                    where = np.flatnonzero((src == s) & (laps == lap))
                    part, shards = readers[s].take(order_of(s, lap), self._starts[s] + item[where] % lengths[s])
                    parts.append(part)
                    slots.append(where)
                    codes.append(shards + base[s])
                rows, shard_codes = gather(parts, slots, codes)
                cursor.at_chunk(own, after[sel])
                yield rows, shard_codes, paths
                if end is not None:
                    return
                cursor_k, cursor_n = hi, after[-1].tolist()
        finally:
            for reader in readers:
                reader.close()
