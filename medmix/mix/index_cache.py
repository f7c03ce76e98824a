"""Per-unit index columns kept beside the normalized cache, so a rebuild reads them back.

Why: a rebuild that changes only weights, caps or the seed re-normalizes nothing, but used to
recompute every row's index columns: text keys, MinHash bands and sketches, and the n-gram
decontamination match. At `--scale 0.03` of openmedq-3.35m (112k rows) that was most of the
37.6 s one-weight rebuild (n-gram matching 10.1 s and MinHash 7.8 s under cProfile, docs/scale.md).
Read back from here they cost a file read per unit.

Content-keyed, like the units themselves: the file name holds the unit's key (its normalized
content) and a digest of everything else the columns depend on: this module's format version,
medmix's version, the MinHash LSH shape (from `dedup.text_threshold`) and the n-gram length plus
every evaluation text (from the recipe's eval sets). Change any of them and the name changes, so a
stale file is never read; it is only left behind, like an unused unit.

Licenses and sources are kept as strings per unit and coded again on load, in the order a full
pass would meet them, so an index read from here is equal, column for column, to one computed.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from medmix import __version__

FORMAT = 1  # bump when a column's meaning or computation changes
INDEX_DIR = "index"

# the per-row columns a unit file keeps, as Index names them (unit and row are positional)
ROW_COLUMNS = ("ids", "has_image", "sha", "phash", "text", "bands", "sketch", "text_hit")


def eval_digest(texts: Iterable[str] | None, ngram: int | None) -> str | None:
    """One digest of the n-gram length and every evaluation text, in order; None when no n-gram
    matching runs."""
    if texts is None or ngram is None:
        return None
    h = hashlib.sha256(f"ngram={ngram}\0".encode())
    for t in texts:
        h.update(t.encode())
        h.update(b"\0")
    return h.hexdigest()


class ColumnCache:
    """The folder of per-unit column files and the parameters their names are keyed by."""

    def __init__(self, root: Path, *, bands: tuple[int, int] | None, evals: str | None) -> None:
        self.root = Path(root) / INDEX_DIR
        params = f"format={FORMAT}\0medmix={__version__}\0bands={bands}\0evals={evals}"
        self.params = hashlib.sha256(params.encode()).hexdigest()[:16]

    def path(self, unit_key: str) -> Path:
        """`unit_key` is "<source>/<unit key>", as the normalized cache lays units out."""
        return self.root / f"{unit_key}.{self.params}.npz"

    def load(self, unit_key: str) -> dict[str, np.ndarray] | None:
        """The unit's columns, or None when they were never written (or the file is unreadable:
        it is then computed again and rewritten)."""
        path = self.path(unit_key)
        try:
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):  # .npz is a zip
            return None

    def shapes(self, unit_key: str) -> dict[str, tuple[np.dtype, tuple[int, ...]]] | None:
        """Each column's (dtype, shape) from the file's array headers alone, without reading the
        data: what `medmix.mix.index.build_index` sizes its columns by before filling them. None
        when the file is missing or unreadable."""
        try:
            with zipfile.ZipFile(self.path(unit_key)) as z:
                out = {}
                for name in z.namelist():
                    with z.open(name) as f:
                        version = np.lib.format.read_magic(f)
                        read = np.lib.format.read_array_header_1_0 if version == (1, 0) \
                            else np.lib.format.read_array_header_2_0
                        shape, _fortran, dtype = read(f)
                    out[name.removesuffix(".npy")] = (dtype, shape)
                return out
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            return None

    def save(self, unit_key: str, columns: dict[str, np.ndarray]) -> None:
        """Written to a temporary name and renamed: a killed build leaves no half-written file."""
        path = self.path(unit_key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            np.savez(f, **columns)
        os.replace(tmp, path)


def strings_to_codes(values: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(distinct values in order of first appearance as a unicode array, int32 local codes)."""
    seen: dict[str, int] = {}
    codes = np.fromiter((seen.setdefault(v, len(seen)) for v in values), np.int32, len(values))
    return np.array(list(seen), dtype=str) if seen else np.zeros(0, "U1"), codes
