"""`MixtureDataset`: one built mixture as a sharded, shuffled, resumable torch `IterableDataset`."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

import numpy as np

from medmix.core.errors import MedmixError
from medmix.core.storage import is_remote
from medmix.loader.order import EpochOrder, mixture_key
from medmix.loader.partition import (
    World,
    next_worker,
    own_chunks,
    own_piece_chunks,
    own_pieces,
    rank_pieces,
    rank_span,
    served,
    window_counts,
)
from medmix.loader.reader import Rows, WindowReader
from medmix.loader.shards import ShardIndex
from medmix.loader.stream import Stream, WorkerSplit, check_columns, check_positive, check_worker_split

if TYPE_CHECKING:
    from medmix.loader.weighted import WeightedMixture

__all__ = ["REMAINDERS", "MixtureDataset", "Remainder"]

# What a rank does with the rows that do not split evenly (`medmix.loader.partition.rank_span`);
# None (the default) lets ranks differ by one sample.
Remainder = Literal["drop", "pad"]
REMAINDERS: tuple[str, ...] = get_args(Remainder)


def resolve_remainder(remainder: Remainder | None, drop_remainder: bool | None,
                      pad_remainder: bool | None) -> str:
    """The rank policy ("drop", "pad" or "uneven") from `remainder=`, or from the two deprecated booleans.

    The booleans could say "both" (an error only at run time); `remainder=` cannot. They keep
    working for one release, with a DeprecationWarning naming the new spelling.
    """
    legacy = {name: value for name, value in (("drop_remainder", drop_remainder), ("pad_remainder", pad_remainder))
              if value is not None}
    if legacy:
        if remainder is not None:
            raise ValueError(f"pass remainder={remainder!r} alone; {' and '.join(legacy)} are its deprecated "
                             "spelling")
        if drop_remainder and pad_remainder:
            raise ValueError("choose at most one of drop_remainder and pad_remainder (better: remainder='drop' "
                             "or remainder='pad')")
        remainder = "drop" if drop_remainder else "pad" if pad_remainder else None
        spelled = ", ".join(f"{k}={v!r}" for k, v in legacy.items())
        warnings.warn(f"MixtureDataset({spelled}) is deprecated and will be removed in the next release; pass "
                      f"remainder={remainder!r}", DeprecationWarning, stacklevel=3)
    if remainder is not None and remainder not in REMAINDERS:
        raise ValueError(f"remainder must be one of {REMAINDERS} or None, got {remainder!r}")
    return remainder or "uneven"


class MixtureDataset(Stream):
    """One built mixture as a torch `IterableDataset`: sharded, shuffled, resumable, lazy.

    Args:
        path: mixture folder (manifest.json + data/*.parquet) or a folder of Parquet shards.
        seed: non-negative int; with the epoch it fixes the order (`medmix.loader.order`).
        shuffle: False reads shards and row groups in manifest order.
        decode_images: decode `image` to a PIL image at yield time (False: {'bytes','path'}).
        transform: called on each row dict (batched: on each batch dict), after decoding; its
            result is yielded.
        columns: subset of schema columns to read and yield (default: all).
        remainder: how ranks share the rows that do not split evenly (`medmix.loader.partition`).
            None (default): ranks differ by at most one sample. "drop": every rank gets the
            smallest share (a few rows unused this epoch); "pad": every rank gets the largest,
            repeating a few rows, like `DistributedSampler`. DDP needs "drop" or "pad" so every
            rank takes the same number of steps. With worker_split="windows" only "drop".
        drop_remainder / pad_remainder: deprecated spellings of remainder="drop" / "pad"; a
            DeprecationWarning, and a ValueError when given with `remainder`.
        split: which split's shards to read.
        batch_size: the DataLoader's batch size; sets the worker block size so a DataLoader with
            workers yields the same sequence as without, and `skip()` stays exact.
        batched: yield whole batches of `batch_size` rows as {column: list} (images decoded in
            the worker); use with `DataLoader(ds, batch_size=None)`. Same stream, same state.
        worker_split: how DataLoader workers share the rank (`medmix.loader.partition`). "blocks"
            (default): worker i takes batches i, i+n, ...; the sequence is the same for any
            num_workers, but every worker reads every window. "windows" (batched mode only):
            worker i reads windows i, i+n, ... alone and batches its own rows; each window is read
            once, so workers scale, but the sequence depends on `num_workers`.
        num_workers: with worker_split="windows", the DataLoader's num_workers (needed for `len()`
            and checked in the workers); it is part of the order and of the resume state.
        shuffle_window: rows per shuffle window (memory: about two windows per reader, the one being
            handed out and the next, read ahead outside DataLoader workers).
        rank / world_size: override torch.distributed / RANK, WORLD_SIZE (tests, custom launchers).
        storage_options: for a URL `path` (s3://, gs://, ...): keyword arguments for the fsspec
            filesystem (`medmix.core.storage`), e.g. {"endpoint_url": "http://minio:9000"}.
        cache_bytes: for a URL `path`: the most bytes of row groups each reading process keeps on
            local disk, fetched ahead of the reader (default 2 GiB: `medmix.loader.shardcache`).
        shared_memory: batched mode in DataLoader workers: batches reach the trainer through a
            ring in /dev/shm instead of the DataLoader's pipe (`medmix.loader.handoff`); False: the pipe.
    """

    kind = "mixture"

    def __init__(self, path: str | os.PathLike[str], *, seed: int = 0, shuffle: bool = True,
                 decode_images: bool = True, transform: Callable[[Any], Any] | None = None,
                 columns: Sequence[str] | None = None, remainder: Remainder | None = None,
                 split: str = "train", batch_size: int = 1, batched: bool = False,
                 shuffle_window: int = 2048, rank: int | None = None, world_size: int | None = None,
                 worker_split: WorkerSplit = "blocks", num_workers: int = 0,
                 storage_options: Mapping[str, Any] | None = None, cache_bytes: int | None = None,
                 shared_memory: bool = True, drop_remainder: bool | None = None,
                 pad_remainder: bool | None = None) -> None:
        policy = resolve_remainder(remainder, drop_remainder, pad_remainder)
        check_worker_split(worker_split, num_workers, batched)
        if worker_split == "windows" and policy == "pad":
            raise ValueError("worker_split='windows' does not support remainder='pad': use remainder='drop' for "
                             "equal steps on every rank, or worker_split='blocks'")
        self.worker_split = worker_split
        self.num_workers = num_workers
        self.path = str(path) if is_remote(path) else Path(path)  # URLs stay URLs
        self.split = split
        self.shuffle = shuffle
        self.columns = check_columns(columns)
        self.shuffle_window = check_positive("shuffle_window", shuffle_window)
        self.remainder = policy  # "drop", "pad" or "uneven" (None): the rank policy, part of the resume state
        remote = {"storage_options": storage_options, **({"cache_bytes": cache_bytes} if cache_bytes else {})}
        self._index = ShardIndex(self.path, split, self.columns, remote)
        self._init_stream(seed=seed, batch_size=batch_size, rank=rank, world_size=world_size,
                          decode_images=decode_images, transform=transform, batched=batched,
                          shared_memory=shared_memory)
        self._start, self._length = rank_span(self._index.total, self.rank, self.world_size, self.remainder)

    @classmethod
    def from_sources(cls, sources: Mapping[str | os.PathLike[str], float], **kwargs: Any) -> WeightedMixture:
        """Sample several mixtures at relative weights on the fly; see `WeightedMixture`."""
        from medmix.loader.weighted import WeightedMixture

        return WeightedMixture(sources, **kwargs)

    @property
    def total_rows(self) -> int:
        return self._index.total

    def _samples(self) -> int:
        return self._length

    def __len__(self) -> int:
        if self.worker_split == "blocks":
            return super().__len__()
        return sum(self._window_plan(self._order())[1])

    def _order(self) -> EpochOrder:
        key = mixture_key(self.seed, self.epoch, self.shuffle)
        return EpochOrder(self._index.group_rows, key, self.shuffle_window)

    def _window_plan(self, order: EpochOrder) -> tuple[np.ndarray, list[int]]:
        """worker_split="windows": the rank's piece boundaries, and how many batches each worker yields."""
        workers, total = max(self.num_workers, 1), self._index.total
        bounds = rank_pieces(order.offsets, total, self._start, self._length)
        counts = window_counts(bounds, workers, self.batch_size)
        if self.remainder == "drop":  # every rank stops at the fewest batches any rank has: equal DDP steps
            fewest = min(sum(window_counts(rank_pieces(order.offsets, total, *rank_span(total, r, self.world_size,
                                                                                       "drop")),
                                           workers, self.batch_size)) for r in range(self.world_size))
            counts = served(counts, fewest)
        return bounds, counts

    def skip(self, n: int) -> None:
        """Make the next pass of the current epoch start after its first `n` samples on this rank.

        `n` counts from the start of the epoch. For a plain DataLoader resume:
        `set_epoch(epoch); skip(batches_done * batch_size)`. Nothing is read to skip. With
        worker_split="windows" and workers, `n` must be whole loader steps (each worker works out
        how many of its own batches those steps took: `partition.served`).
        """
        if self.worker_split == "windows" and self.num_workers > 1:  # counts loader steps: workers' short batches
            if not isinstance(n, int) or n % self.batch_size or not 0 <= n // self.batch_size <= len(self):
                raise ValueError(f"skip({n!r}): with worker_split='windows' skip whole batches (steps * batch_size, "
                                 f"batch_size={self.batch_size}, at most {len(self)} steps)")
        elif not isinstance(n, int) or not 0 <= n <= self._length:
            raise ValueError(f"skip({n!r}): this rank has {self._length} samples per epoch")
        self.cursor.reset(n, pending=True)

    def _identity(self) -> dict[str, Any]:
        return {"seed": self.seed, "mixture": self._index.fingerprint, "rank": self.rank,
                "world_size": self.world_size, "shuffle": self.shuffle, "shuffle_window": self.shuffle_window,
                "remainder": self.remainder,
                **({"worker_split": "windows", "num_workers": self.num_workers} if self.worker_split == "windows"
                   else {})}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if self.worker_split == "blocks" and state.get("worker_split") == "windows":
            raise MedmixError("cannot resume: state was saved with worker_split='windows', this dataset uses 'blocks'")
        super().load_state_dict(state)

    def _chunks(self, world: World, start: int, done: int) -> Iterator[tuple[Rows, np.ndarray, Sequence[str]]]:
        order = self._order()
        if self.worker_split == "windows":
            yield from self._window_chunks(order, world, start, done)
            return
        reader = WindowReader(self._index, self.columns, self.io, as_rows=not self.batched,
                              prefetch=not world.in_worker)
        total, paths = self._index.total, self._index.paths
        if self._index.remote is not None:  # prefetch this rank's row groups from the resume point on
            self._index.remote.follow_order(order, self._index.group_shard, self._index.group_local,
                                            self._start + start, self._length - start, total)
        if self._length:
            reader.last_window = int(order.window_of(np.asarray([(self._start + self._length - 1) % total]))[0])
        try:
            for own in own_chunks(start, self._length, self.batch_size, world.worker, world.workers, done):
                rows, shards = reader.take(order, (self._start + own) % total)
                self.cursor.at_chunk(own)
                yield rows, shards, paths
        finally:
            reader.close()

    def _window_chunks(self, order: EpochOrder, world: World, start: int,
                       done: int) -> Iterator[tuple[Rows, np.ndarray, Sequence[str]]]:
        """worker_split="windows": this worker's own windows, read by it alone (`partition`)."""
        workers = self._split_workers(world)
        bounds, counts = self._window_plan(order)
        steps = start // self.batch_size  # loader steps before this pass (a skip or a resume)
        role = (world.worker + next_worker(counts, steps)) % workers  # the epoch's worker this one continues
        pieces = own_pieces(bounds, role, workers)
        own_rows = sum(hi - lo for lo, hi in pieces)
        stop = min(counts[role] * self.batch_size, own_rows)
        if workers == 1:  # one reader: its own stream is the rank's, so a rank position is an own position
            begin = start
        else:  # this worker's share of those steps
            begin = min(served(counts, steps)[role] * self.batch_size, own_rows)
        if begin + done >= stop:
            return
        total, paths = self._index.total, self._index.paths
        reader = WindowReader(self._index, self.columns, self.io, prefetch=True,
                              threads=not world.in_worker, step=workers)
        reader.last_window = int(order.window_of(np.asarray([(self._start + pieces[-1][1] - 1) % total]))[0])
        try:
            for own in own_piece_chunks(pieces, self.batch_size, begin, done, stop):
                rows, shards = reader.take(order, (self._start + own) % total)
                self.cursor.at_chunk(own)
                yield rows, shards, paths
        finally:
            reader.close()
