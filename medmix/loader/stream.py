"""What the two torch datasets share: arguments, epochs, resume state, and handing out rows or batches.

Per-row mode yields one dict per sample (the DataLoader batches them with the same
`batch_size`). Batched mode (`batched=True`) yields one dict of column lists per block of
`batch_size` samples, built and decoded in the worker, for a DataLoader with `batch_size=None`:
what crosses the process boundary is a few lists per batch, not a dict per row, so workers add
throughput instead of pickling costs (numbers in benchmarks/loader_throughput.py). Both modes
follow the same rank stream and the same state, so either resumes the other's `state_dict()`.
Batched mode with worker_split="windows" (`MixtureDataset`) splits workers by window instead:
the same hand-out loop, over each worker's own stream (`partition`).
"""

from __future__ import annotations

import json
import operator
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from itertools import pairwise
from typing import Any, Literal, get_args

import numpy as np
from torch.utils.data import IterableDataset

from medmix.core.errors import MedmixError, RowError
from medmix.core.schema import COLUMNS, FEATURES
from medmix.loader.cursor import Cursor
from medmix.loader.handoff import SharedBatch
from medmix.loader.partition import World, block_starts
from medmix.loader.reader import IOStats, Rows

__all__ = ["STATE_FORMAT", "WORKER_SPLITS", "Stream", "WorkerSplit", "check_columns", "check_positive",
           "check_worker_split", "pass_batch"]

STATE_FORMAT = "medmix.loader/1"


def pass_batch(batch: Any) -> Any:
    """`collate_fn` for batched mode when the batch needs no collating: returns it unchanged.

    Without a `collate_fn`, `DataLoader(batch_size=None)` runs `default_convert` over every value
    of the batch: 15 us per row measured on benchmark data, more than reading the row.
    """
    return batch


def check_positive(name: str, value: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


# How DataLoader workers share a rank (`medmix.loader.partition`); a Literal so a type checker
# catches a misspelt value, and a runtime check for everyone else.
WorkerSplit = Literal["blocks", "windows"]
WORKER_SPLITS: tuple[str, ...] = get_args(WorkerSplit)


def check_worker_split(worker_split: WorkerSplit, num_workers: int, batched: bool) -> None:
    if worker_split not in WORKER_SPLITS:
        raise ValueError(f"worker_split must be one of {WORKER_SPLITS}, got {worker_split!r}")
    if not isinstance(num_workers, int) or isinstance(num_workers, bool) or num_workers < 0:
        raise ValueError(f"num_workers must be a non-negative integer, got {num_workers!r}")
    if worker_split == "windows" and not batched:
        raise ValueError("worker_split='windows' needs batched=True (workers hand over whole batches)")


def check_columns(columns: Sequence[str] | None) -> list[str]:
    if columns is None:
        return list(COLUMNS)
    unknown = [c for c in columns if c not in COLUMNS]
    if unknown or not columns:
        raise ValueError(f"unknown column(s) {unknown}; choose from {list(COLUMNS)}")
    return list(dict.fromkeys(columns))


def decode_image(value: dict[str, Any] | None, row_id: Any, file: str) -> Any:
    if value is None:
        return None
    if value.get("bytes") is None:
        raise RowError(f"row {row_id!r}: image has no embedded bytes", file=file)
    try:
        return FEATURES["image"].decode_example(value)
    except Exception as exc:  # noqa: BLE001 -- Pillow raises many types for bad bytes; all mean "bad row"
        raise RowError(f"row {row_id!r}: image bytes do not decode: {exc}", file=file) from None


class Stream(IterableDataset):
    """Shared epoch, resume-state and hand-out logic of `MixtureDataset` and `WeightedMixture`.

    Progress lives in one `Cursor` on the instance (the copy inside each DataLoader worker),
    updated before each yield, so `state_dict()` taken after receiving sample k covers k.
    """

    kind = "stream"

    def _init_stream(self, *, seed: int, batch_size: int, rank: int | None, world_size: int | None,
                     decode_images: bool, transform: Callable[[Any], Any] | None, batched: bool,
                     shared_memory: bool = True) -> None:
        if not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        self.seed = seed
        self.batch_size = check_positive("batch_size", batch_size)
        self.world = World.ranks(rank, world_size)
        self.rank, self.world_size = self.world.rank, self.world.world_size
        self.decode_images = decode_images
        self.transform = transform
        self.batched = bool(batched)
        self.shared_memory = bool(shared_memory)
        self.epoch = 0
        self.io = IOStats()
        self.cursor = Cursor(self._zero_positions())
        self._iterated_epoch: int | None = None

    # subclasses: identity fields that must match on resume, and their zero positions
    def _identity(self) -> dict[str, Any]:
        raise NotImplementedError

    def _zero_positions(self) -> list[int] | None:
        return None

    def _samples(self) -> int:
        raise NotImplementedError

    def __len__(self) -> int:
        """Samples this rank yields per epoch (before any resume); in batched mode, batches
        (ceil(samples / batch_size)): what a DataLoader with `batch_size=None` counts."""
        n = self._samples()
        return -(-n // self.batch_size) if self.batched else n

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch's order, like `DistributedSampler.set_epoch`. Re-setting the current
        epoch keeps a pending resume, so `load_state_dict(); set_epoch(same)` still resumes."""
        epoch = operator.index(epoch)
        if epoch < 0:
            raise ValueError(f"epoch must be a non-negative integer, got {epoch!r}")
        if epoch != self.epoch:
            self.epoch = epoch
            self.cursor.reset()
            self._iterated_epoch = None

    def state_dict(self) -> dict[str, Any]:
        """JSON-serializable progress: exact resume point of this rank (or of this worker).

        `consumed` counts this rank's samples of the epoch up to the last one yielded here;
        `positions` (weighted mixtures) how many of them each source gave. Inside a DataLoader
        worker `worker` records that worker's share too, as only it knows its progress.
        """
        state = {"format": STATE_FORMAT, "kind": self.kind, **self._identity(), "epoch": self.epoch,
                 **self.cursor.state()}
        return json.loads(json.dumps(state))  # a detached copy of plain types

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume from `state_dict()`: the next iteration continues right after it, in O(1)."""
        if not isinstance(state, Mapping) or state.get("format") != STATE_FORMAT:
            raise MedmixError(f"not a medmix loader state (format {STATE_FORMAT!r} expected)")
        if state.get("kind") != self.kind:
            raise MedmixError(f"state is for a {state.get('kind')!r}, this is a {self.kind!r}")
        for name, value in self._identity().items():
            if state.get(name) != value:
                raise MedmixError(f"cannot resume: state has {name}={state.get(name)!r}, "
                                  f"this dataset has {name}={value!r}")
        self.epoch = int(state["epoch"])
        self.cursor.restore(dict(state))

    def _begin(self) -> tuple[World, int, int]:
        """Where this pass starts: (this worker's world, rank position its blocks count from, own done)."""
        world = self.world.here()
        if world.in_worker:  # only a worker's own copy remembers, so only reuse warns
            if self._iterated_epoch == self.epoch and not self.cursor.pending:
                warnings.warn(f"a DataLoader worker is repeating epoch {self.epoch}: with persistent_workers=True, "
                              "set_epoch() in the main process does not reach the workers", stacklevel=3)
            self._iterated_epoch = self.epoch
        start, done = self.cursor.begin(world.worker, world.workers, self.batch_size)
        return world, start, done

    def _split_workers(self, world: World) -> int:
        """worker_split="windows": the worker count the dataset was made for, checked against the DataLoader's."""
        workers = max(self.num_workers, 1)
        if world.workers != workers:
            raise MedmixError(f"this {type(self).__name__} was made with num_workers={self.num_workers} "
                              f"(worker_split='windows'), but runs in a DataLoader with num_workers="
                              f"{world.workers if world.in_worker else 0}: pass the same number to both")
        return workers

    def _chunks(self, world: World, start: int, done: int) -> Iterator[tuple[Rows, np.ndarray, Sequence[str]]]:
        """This worker's samples of the pass, chunk by chunk: (rows, shard code of each row, shard
        paths by code), with `cursor.at_chunk` called before each."""
        raise NotImplementedError

    def __iter__(self) -> Iterator[Any]:
        """Yield the samples (per row, or per block in batched mode), counting each before its yield,
        so a state taken after receiving it covers it.

        Images are decoded at hand-out time, one row (or one batch) at a time: an undecodable
        image fails at that row, after everything before it was yielded.
        """
        world, start, done = self._begin()
        cursor, transform, block = self.cursor, self.transform, self.batch_size
        decode = self.decode_images and "image" in self.columns
        # batched, in a DataLoader worker: batches (dicts) leave through the worker's shared-memory
        # ring when the DataLoader pickles them (`handoff`)
        shared = self.batched and self.shared_memory and world.in_worker
        for rows, shards, paths in self._chunks(world, start, done):
            if self.batched:
                n = len(shards)
                for lo, hi in pairwise([*block_starts(cursor.done, n, block), n]):
                    batch = rows if (lo, hi) == (0, n) else {k: v[lo:hi] for k, v in rows.items()}
                    if decode:
                        batch["image"] = _decode_images(batch, shards[lo:hi].tolist(), paths)
                    cursor.done += hi - lo
                    out = batch if transform is None else transform(batch)
                    yield SharedBatch(out) if shared and type(out) is dict else out
            elif decode:
                for row, code in zip(rows, shards.tolist()):
                    cursor.done += 1
                    if row["image"] is not None:
                        row["image"] = decode_image(row["image"], row.get("id"), paths[code])
                    yield row if transform is None else transform(row)
            else:
                handed = cursor.hand_out(rows)
                yield from handed if transform is None else map(transform, handed)


def _decode_images(batch: dict[str, list[Any]], codes: list[int], paths: Sequence[str]) -> list[Any]:
    images = batch["image"]
    ids = batch.get("id") or [None] * len(images)
    return [None if image is None else decode_image(image, row_id, paths[code])
            for image, row_id, code in zip(images, ids, codes)]
