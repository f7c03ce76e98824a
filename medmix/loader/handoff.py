"""Batches from DataLoader workers to the trainer process through shared memory, not the pipe.

Why: a DataLoader worker's result is pickled into a pipe that holds 64 KiB, so a 330 KiB batch
(64 rows of benchmark data) crosses in five blocking writes, each a copy into the kernel and a
context switch, and the trainer copies it out again before unpickling. Measured on 2 cores with
pre-made batches and no reading at all, that transport alone caps 2 workers at 123k rows/s and
costs the trainer 5.4 us/row and the workers 4.7 us/row. Through a ring in /dev/shm the same
batches move at 247k rows/s, 2.8 us/row in the trainer and 3.3 in the workers: the worker pickles
into the ring and sends only (ring, position, length), the trainer unpickles straight from it.

How: each worker process has one `Ring`, a file in /dev/shm created at its first batch, sized
for several batches but to at most a quarter of the free space divided by the worker count (torch
shares tensors through /dev/shm too, and docker gives it 64 MiB by default), and reserved with
posix_fallocate (a full /dev/shm fails there, cleanly, not with a SIGBUS later). The header holds
how far the trainer has read (`consumed`, written by the trainer only). A batch is written at the
next free position, or sent through the pipe as before when it does not fit (larger than a
quarter of the ring, or the trainer has not read far enough): nothing ever waits on the ring, so
nothing can deadlock. One worker's results arrive in the order they were sent (one queue), so
`consumed` only moves forward.

The trainer unlinks a ring's file when it first maps it; a worker unlinks its own at exit if the
trainer never did, and a new ring removes files of earlier runs whose processes are all gone
(a SIGKILLed run). The trainer closes a ring's mapping once its worker has exited: DataLoader
workers exit only when the trainer shuts the loader down, after the last batch or when the
iterator is dropped, so nothing is read from such a ring again.

What is handed to a `collate_fn` in the worker is a `SharedBatch`, a dict: only the pickling of
it (by the DataLoader's queue) goes through the ring, and the trainer receives a plain dict.
"""

from __future__ import annotations

import errno
import mmap
import os
import pickle
import secrets
import struct
import warnings
from multiprocessing import util
from multiprocessing.reduction import ForkingPickler
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import get_worker_info

from medmix.core.errors import MedmixError
from medmix.core.writer import pid_alive

__all__ = ["SHM_DIR", "Ring", "SharedBatch", "receive"]

SHM_DIR = Path("/dev/shm")
PREFIX = "medmix-ring"
HEADER = 64  # bytes: consumed (int64, written by the trainer), then padding to a cache line
MIN_RING = 8 << 20
MAX_RING = 256 << 20
BATCHES_PER_RING = 8  # the DataLoader keeps prefetch_factor (default 2) batches per worker in flight
SHARE_OF_FREE = 4  # all rings together take at most 1/4 of the free space of SHM_DIR

_ring: Ring | None | bool = None  # this worker's ring; False once it could not be made
_maps: dict[str, tuple[mmap.mmap, int]] = {}  # trainer side: ring file name -> (mapping, worker pid)


class SharedBatch(dict):
    """A batch (a dict) that, pickled in a DataLoader worker, travels through this worker's ring."""

    def __reduce__(self) -> tuple[Any, ...]:
        batch = dict(self)
        if any(isinstance(v, torch.Tensor) or (isinstance(v, list) and v and isinstance(v[0], torch.Tensor))
               for v in batch.values()):
            # tensors (a transform's output) travel as torch shares them, through shared-memory handles:
            # ForkingPickler, as the DataLoader's queue uses (plain pickle would copy them); 0.4 us/row
            # dearer than plain pickle on benchmark batches, so only then
            blob = bytes(ForkingPickler.dumps(batch, protocol=pickle.HIGHEST_PROTOCOL))
        else:
            blob = pickle.dumps(batch, protocol=pickle.HIGHEST_PROTOCOL)
        ring = _worker_ring(len(blob))
        where = ring.put(blob) if ring else None
        if where is None:
            return (pickle.loads, (blob,))  # through the pipe, as any result
        return (receive, (ring.name, *where, ring.capacity, os.getpid()))

    def __copy__(self) -> dict[str, Any]:
        return dict(self)

    def __deepcopy__(self, memo: dict[int, Any]) -> dict[str, Any]:
        import copy

        return copy.deepcopy(dict(self), memo)


class Ring:
    """One worker's ring file in /dev/shm (module docstring), written by that worker only."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.name = f"{PREFIX}-{os.getppid()}-{os.getpid()}-{secrets.token_hex(4)}"
        self.path = SHM_DIR / self.name
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.posix_fallocate(fd, 0, HEADER + capacity)
            self.map = mmap.mmap(fd, HEADER + capacity)
        except BaseException:
            os.unlink(self.path)
            raise
        finally:
            os.close(fd)
        self.written = 0  # absolute position: offset in the ring is position % capacity
        util.Finalize(self, self.path.unlink, kwargs={"missing_ok": True}, exitpriority=10)  # at worker exit

    def put(self, blob: bytes) -> tuple[int, int] | None:
        """Write `blob` at the next free position: (position, length), or None if it does not fit now."""
        n, cap = len(blob), self.capacity
        if n > cap // 4:
            return None
        pos = self.written
        if pos % cap + n > cap:  # never split a batch: skip the ring's tail
            pos += cap - pos % cap
        consumed = struct.unpack_from("<q", self.map, 0)[0]
        if pos + n - consumed > cap:  # the trainer has not read far enough yet
            return None
        offset = HEADER + pos % cap
        self.map[offset : offset + n] = blob
        self.written = pos + n
        return pos, n


def receive(name: str, pos: int, n: int, capacity: int, worker_pid: int) -> dict[str, Any]:
    """Trainer side of `SharedBatch`: the batch at `pos` of ring `name`, read straight from it."""
    entry = _maps.get(name)
    if entry is None:
        _close_finished()
        path = SHM_DIR / name
        try:
            fd = os.open(path, os.O_RDWR)
        except OSError as exc:
            raise MedmixError(f"{path}: a DataLoader worker's batch ring is gone ({exc.strerror}); was "
                              f"{SHM_DIR} cleaned while training ran?") from None
        try:
            entry = (mmap.mmap(fd, HEADER + capacity), worker_pid)
        finally:
            os.close(fd)
        path.unlink(missing_ok=True)  # both sides hold it mapped: nothing is left behind whatever exits first
        _maps[name] = entry
    ring = entry[0]
    offset = HEADER + pos % capacity
    view = memoryview(ring)[offset : offset + n]
    try:
        batch = pickle.loads(view)
    finally:
        view.release()
    struct.pack_into("<q", ring, 0, pos + n)
    return batch


def _worker_ring(blob_size: int) -> Ring | None:
    """This worker process's ring, made at its first batch; None where shared memory is unavailable
    (no /dev/shm: quietly; too little of it: with a warning, once per worker)."""
    global _ring
    if _ring is None:
        _ring = False
        if not SHM_DIR.is_dir():
            return None
        _remove_stale()
        info = get_worker_info()
        workers = info.num_workers if info is not None else 1
        st = os.statvfs(SHM_DIR)
        capacity = min(MAX_RING, max(MIN_RING, BATCHES_PER_RING * blob_size),
                       st.f_bavail * st.f_frsize // (SHARE_OF_FREE * workers))
        capacity = capacity // mmap.PAGESIZE * mmap.PAGESIZE
        try:
            if capacity < 4 * blob_size:
                raise OSError(errno.ENOSPC, f"{capacity >> 20} MiB free for this worker's ring")
            _ring = Ring(capacity)
        except OSError as exc:
            warnings.warn(f"medmix: no batch ring in {SHM_DIR} ({exc.strerror}); batches go through the "
                          "DataLoader's pipe (slower; for docker, raise --shm-size)", stacklevel=2)
    return _ring or None


def _close_finished() -> None:
    """Close the mappings of rings whose worker has exited (module docstring)."""
    for name, (ring, pid) in list(_maps.items()):
        if not pid_alive(pid):
            ring.close()
            del _maps[name]


def _remove_stale() -> None:
    """Remove ring files left by runs whose trainer and worker are both gone (a SIGKILLed run)."""
    try:
        names = [p.name for p in SHM_DIR.glob(f"{PREFIX}-*")]
    except OSError:
        return
    for name in names:
        parts = name.split("-")
        if len(parts) == 5 and parts[2].isdigit() and parts[3].isdigit():
            if not pid_alive(int(parts[2])) and not pid_alive(int(parts[3])):
                (SHM_DIR / name).unlink(missing_ok=True)


