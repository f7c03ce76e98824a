"""`MixtureDataset`: one built mixture as a sharded, shuffled, resumable torch `IterableDataset`."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medmix.loader.order import EpochOrder, mixture_key
from medmix.loader.partition import World, own_chunks, rank_span
from medmix.loader.reader import Rows, WindowReader
from medmix.loader.shards import ShardIndex
from medmix.loader.stream import Stream, check_columns, check_positive
from medmix.storage import is_remote

if TYPE_CHECKING:
    from medmix.loader.weighted import WeightedMixture

__all__ = ["MixtureDataset"]


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
        drop_remainder / pad_remainder: equal per-rank counts for DDP (`medmix.loader.partition`).
        split: which split's shards to read.
        batch_size: the DataLoader's batch size; sets the worker block size so a DataLoader with
            workers yields the same sequence as without, and `skip()` stays exact.
        batched: yield whole batches of `batch_size` rows as {column: list} (images decoded in
            the worker); use with `DataLoader(ds, batch_size=None)`. Same stream, same state.
        shuffle_window: rows per shuffle window (memory: about two windows per reader, the one being
            handed out and the next, read ahead outside DataLoader workers).
        rank / world_size: override torch.distributed / RANK, WORLD_SIZE (tests, custom launchers).
    """

    kind = "mixture"

    def __init__(self, path: str | os.PathLike[str], *, seed: int = 0, shuffle: bool = True,
                 decode_images: bool = True, transform: Callable[[Any], Any] | None = None,
                 columns: Sequence[str] | None = None, drop_remainder: bool = False,
                 pad_remainder: bool = False, split: str = "train", batch_size: int = 1, batched: bool = False,
                 shuffle_window: int = 2048, rank: int | None = None, world_size: int | None = None,
                 storage_options: Mapping[str, Any] | None = None, cache_bytes: int | None = None) -> None:
        if drop_remainder and pad_remainder:
            raise ValueError("choose at most one of drop_remainder and pad_remainder")
        self.path = str(path) if is_remote(path) else Path(path)  # URLs stay URLs
        self.split = split
        self.shuffle = shuffle
        self.columns = check_columns(columns)
        self.shuffle_window = check_positive("shuffle_window", shuffle_window)
        self.remainder = "drop" if drop_remainder else "pad" if pad_remainder else "uneven"
        remote = {"storage_options": storage_options, **({"cache_bytes": cache_bytes} if cache_bytes else {})}
        self._index = ShardIndex(self.path, split, self.columns, remote)
        self._init_stream(seed=seed, batch_size=batch_size, rank=rank, world_size=world_size,
                          decode_images=decode_images, transform=transform, batched=batched)
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

    def skip(self, n: int) -> None:
        """Make the next pass of the current epoch start after its first `n` samples on this rank.

        `n` counts from the start of the epoch. For a plain DataLoader resume:
        `set_epoch(epoch); skip(batches_done * batch_size)`. Nothing is read to skip.
        """
        if not isinstance(n, int) or not 0 <= n <= self._length:
            raise ValueError(f"skip({n!r}): this rank has {self._length} samples per epoch")
        self.cursor.reset(n, pending=True)

    def _identity(self) -> dict[str, Any]:
        return {"seed": self.seed, "mixture": self._index.fingerprint, "rank": self.rank,
                "world_size": self.world_size, "shuffle": self.shuffle, "shuffle_window": self.shuffle_window,
                "remainder": self.remainder}

    def _chunks(self, world: World, start: int, done: int) -> Iterator[tuple[Rows, np.ndarray, Sequence[str]]]:
        order = EpochOrder(self._index.group_rows, mixture_key(self.seed, self.epoch, self.shuffle),
                           self.shuffle_window)
        reader = WindowReader(self._index, self.columns, self.io, as_rows=not self.batched,
                              dense=world.workers == 1, prefetch=not world.in_worker)
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
