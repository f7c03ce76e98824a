"""Arrays backed by an unlinked scratch file, whose pages the process hands back when asked.

Why: the index's MinHash sketch (64 bytes a row, 1.9 GB at 30M rows) is read only for the few
rows whose band keys collide, yet held in memory it is a third of the mix stage's index. Backed
by a file instead, it counts against the driver's memory only while pages of it are touched:
`release` drops them from this process (the data stays in the file and the page cache), so the
column is written once and then read back row by row as collisions need it.

The file is unlinked as soon as it is mapped, so a killed build leaves nothing behind.
"""

from __future__ import annotations

import mmap
import os
import tempfile

import numpy as np

from medmix.core.storage import scratch_dir


class DiskArray(np.ndarray):
    """A NumPy array over a shared file mapping; `.mapping` is the `mmap` it views."""

    mapping: mmap.mmap | None = None


def disk_array(shape: tuple[int, ...], dtype: np.dtype | str) -> np.ndarray:
    """A zero-filled writable array of `shape` backed by a fresh unlinked file in the scratch folder."""
    dtype = np.dtype(dtype)
    size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if size == 0:
        return np.zeros(shape, dtype)
    fd, path = tempfile.mkstemp(dir=scratch_dir(), prefix="column-", suffix=".bin")
    try:
        os.unlink(path)
        os.ftruncate(fd, size)
        mapping = mmap.mmap(fd, size)
    finally:
        os.close(fd)  # the mapping keeps the file alive
    arr = np.frombuffer(mapping, dtype=dtype).reshape(shape).view(DiskArray)
    arr.mapping = mapping
    return arr


def release(arr: np.ndarray) -> None:
    """Drop the pages of a `disk_array` from this process (written pages are kept in the file);
    a no-op for any other array."""
    mapping = getattr(arr, "mapping", None)
    if mapping is None:
        base = getattr(arr, "base", None)
        mapping = getattr(base, "mapping", None) if base is not None else None
    if mapping is not None and hasattr(mmap, "MADV_DONTNEED"):
        mapping.flush()
        mapping.madvise(mmap.MADV_DONTNEED)
