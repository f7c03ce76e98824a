"""TEMPORARY stand-in for `medmix.loader.MixtureDataset` until that module lands; delete then.

Same constructor and state methods as the agreed interface, minimal behaviour: rows of
`<dir>/data/*.parquet` in file order, a seeded per-epoch permutation, split across
DDP ranks and loader workers by index, and a resumable count of rows yielded.
"""

from __future__ import annotations

import glob
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pyarrow.parquet as pq
import torch
from torch.utils.data import IterableDataset, get_worker_info


class MixtureDataset(IterableDataset):
    def __init__(self, path: str | Path, *, seed: int = 0, shuffle: bool = True, decode_images: bool = True,
                 transform: Any = None, **_ignored: Any) -> None:
        self.files = sorted(glob.glob(str(Path(path) / "data" / "*.parquet")))
        self.seed, self.shuffle, self.transform = seed, shuffle, transform
        self.decode_images = decode_images
        self.epoch = 0
        self.yielded = 0
        self._rows: list[dict[str, Any]] | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.yielded = 0

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "yielded": self.yielded}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.yielded = state["epoch"], state["yielded"]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        if self._rows is None:
            self._rows = [r for f in self.files for r in pq.read_table(f).to_pylist()]
        order = np.arange(len(self._rows))
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(order)
        rank, world = 0, 1
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        mine = order[rank::world][wid::nw]
        for i in mine[self.yielded:]:
            self.yielded += 1
            row = self._rows[i]
            yield self.transform(row) if self.transform else row
