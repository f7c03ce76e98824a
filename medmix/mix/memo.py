"""Results of the mix stage's searches kept in the build cache, keyed by their inputs' bytes.

Why: a rebuild that changes only weights, caps or the seed runs the same near-duplicate searches
over the same rows as the build before it. In the full 3.35M rehearsal's rebuilds the pHash
clusters took ~65 % of an 85-89 s mix stage (py-spy), the evaluation-image match and the
MinHash band clusters most of the rest. Each is a pure function of a few arrays and parameters,
so it is stored under the sha256 of exactly those (dtype, shape and bytes, plus the function's
name and this module's format), like the cache's units; a hit costs hashing the inputs (~30 MB
at 3.7M rows, 0.1 s) and reading the result.

A result file is written to a temporary name and renamed; one that does not load is computed
again.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from medmix import __version__

FORMAT = 1
MEMO_DIR = "mix-memo"


class Memo:
    """`memo(name, inputs, compute)`: compute() or the array stored for (name, inputs)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root) / MEMO_DIR

    def key(self, name: str, inputs: Sequence[np.ndarray | int | float | str | None]) -> str:
        h = hashlib.sha256(f"{FORMAT}\0{__version__}\0{name}".encode())
        for x in inputs:
            if isinstance(x, np.ndarray):
                h.update(f"\0{x.dtype.str}{x.shape}\0".encode())
                h.update(np.ascontiguousarray(x).view(np.uint8).reshape(-1) if x.size else b"")
            else:
                h.update(f"\0{type(x).__name__}:{x!r}".encode())
        return h.hexdigest()

    def __call__(self, name: str, inputs: Sequence[np.ndarray | int | float | str | None],
                 compute: Callable[[], np.ndarray]) -> np.ndarray:
        path = self.root / f"{name}-{self.key(name, inputs)}.npy"
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError):
            pass
        out = compute()
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            np.save(f, out, allow_pickle=False)
        os.replace(tmp, path)
        return out


def no_memo(name: str, inputs: Sequence[object], compute: Callable[[], np.ndarray]) -> np.ndarray:
    """The default: compute every time (tests, previews, no cache folder)."""
    return compute()
