"""Readers for the native layouts of the classification benchmarks: npz, (gzipped) HDF5, class folders.

Why streaming readers instead of `np.load(...)[key]` / `h5[...][:]`: the 224-px MedMNIST files
and PCam's 262,144-patch training file are gigabytes, and memory must be bounded by the chunk
being read, not by the dataset. (PCam's `.h5.gz` files arrive inflated: `Remote(extract=True)`
and the shared extractor, which unpacks a lone `.gz` into a folder.)
"""

from __future__ import annotations

import contextlib
import io
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from medmix.core.errors import MedmixError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")


def encode_png(pixels: np.ndarray) -> bytes:
    """A uint8 HxW or HxWxC array → lossless PNG bytes (the form `Record.image` carries)."""
    from PIL import Image

    if pixels.dtype != np.uint8:
        raise MedmixError(f"expected uint8 pixels, got {pixels.dtype}")
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


# -- npz ------------------------------------------------------------------------------------------
def _npy_header(fh, where: str) -> tuple[tuple[int, ...], np.dtype]:
    try:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
    except ValueError as exc:
        raise MedmixError(f"{where}: not a valid .npy array ({exc})") from None
    if fortran or dtype.hasobject:
        raise MedmixError(f"{where}: Fortran-ordered or object arrays are not supported")
    return tuple(shape), dtype


@contextlib.contextmanager
def _npz_member(path: Path, key: str) -> Iterator[tuple[Any, tuple[int, ...], np.dtype]]:
    """(stream positioned at the data, shape, dtype) of one array of an .npz, without loading it."""
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise MedmixError(f"{path}: not a readable .npz file ({exc})") from None
    with zf:
        keys = sorted(n[:-4] for n in zf.namelist() if n.endswith(".npy"))
        if key not in keys:
            raise MedmixError(f"{path}: has no array {key!r}; arrays present: {keys}")
        with zf.open(f"{key}.npy") as fh:
            shape, dtype = _npy_header(fh, f"{path}:{key}")
            yield fh, shape, dtype


def npz_shape(path: Path, key: str) -> tuple[int, ...]:
    with _npz_member(path, key) as (_, shape, _dtype):
        return shape


def iter_npz_rows(path: Path, key: str, chunk: int = 1024) -> Iterator[np.ndarray]:
    """Yield `key`'s rows in chunks of at most `chunk`, reading the zip member as a stream."""
    with _npz_member(path, key) as (fh, shape, dtype):
        if not shape:
            raise MedmixError(f"{path}:{key}: is a scalar, expected an array of rows")
        row_shape = shape[1:]
        row_bytes = int(np.prod(row_shape, dtype=np.int64)) * dtype.itemsize
        remaining = shape[0]
        while remaining:
            n = min(chunk, remaining)
            blob = fh.read(n * row_bytes)
            if len(blob) != n * row_bytes:
                raise MedmixError(f"{path}:{key}: truncated; the header promises {shape[0]} rows")
            yield np.frombuffer(blob, dtype=dtype).reshape((n, *row_shape))
            remaining -= n


def npz_array(path: Path, key: str) -> np.ndarray:
    """A whole (small) array, e.g. labels."""
    return np.concatenate(list(iter_npz_rows(path, key, chunk=1 << 20)) or [np.zeros((0,))])


# -- HDF5, possibly gzipped ----------------------------------------------------------------------
@contextlib.contextmanager
def open_h5(path: Path) -> Iterator[object]:
    """Open an HDF5 file, or the single `.h5` inside a folder (how fetch hands over an extracted `.h5.gz`)."""
    import h5py

    path = Path(path)
    if path.is_dir():
        found = sorted(path.rglob("*.h5"))
        if len(found) != 1:
            raise MedmixError(f"{path}: expected exactly one .h5 file in the folder, found {len(found)}")
        path = found[0]
    try:
        handle = h5py.File(path, "r")
    except OSError as exc:
        raise MedmixError(f"{path}: not a readable HDF5 file ({exc})") from None
    with handle:
        yield handle


def h5_dataset(handle, key: str, where: str | Path):
    if key not in handle:
        raise MedmixError(f"{where}: has no dataset {key!r}; present: {sorted(handle.keys())}")
    return handle[key]


# -- class folders (plain or zipped) --------------------------------------------------------------
def find_class_root(root: Path, class_dirs: tuple[str, ...]) -> Path:
    """The folder whose children are the class folders: `root` itself or one level below it.

    Extracted archives differ in whether they keep their top folder; accepting both means the
    adapter works on the archive as shipped and on a copy the user unpacked by hand.
    """
    candidates = [root, *sorted(p for p in root.iterdir() if p.is_dir())] if root.is_dir() else []
    for cand in candidates:
        if any((cand / name).is_dir() for name in class_dirs):
            return cand
    raise MedmixError(f"{root}: none of the class folders {list(class_dirs)} found there or one level below")


def list_images(folder: Path) -> list[Path]:
    """Image files of one class folder, sorted by name so every run enumerates them identically."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
