"""Where an Index or EvalIndex position lives on disk, and reading chosen rows of those files.

Why one module: removed.parquet shows both sides of every removal, and image decontamination
confirms each perceptual-hash match on the pictures themselves; both need a few rows scattered
over hundreds of per-unit cache files. Reading them one by one would decode a whole row group of
images (MBs) per row; `read_rows` reads each needed row group once, in file order, and keeps one
in memory at a time.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from medmix.mix.index import Index

Side = tuple[Path, int]  # (cache file, row number in it)


class RowPlaces:
    """Maps Index positions to (unit file, row) and EvalIndex positions to (evaluation file, row).

    EvalIndex positions run over the evaluation files in order, so the file is found by the
    cumulative row counts (read from the Parquet footers, not the data)."""

    def __init__(self, idx: Index, unit_files: Sequence[Path], eval_paths: Sequence[Path]) -> None:
        self.idx, self.unit_files, self.eval_paths = idx, unit_files, [Path(p) for p in eval_paths]
        self.eval_starts = np.cumsum([0] + [pq.ParquetFile(p).metadata.num_rows for p in self.eval_paths])

    def train(self, pos: int) -> Side:
        return Path(self.unit_files[self.idx.unit[pos]]), int(self.idx.row[pos])

    def eval(self, pos: int) -> Side:
        f = int(np.searchsorted(self.eval_starts, pos, side="right") - 1)
        return self.eval_paths[f], int(pos - self.eval_starts[f])


def group_by_file(sides: Iterable[Side | None]) -> dict[Path, set[int]]:
    """The rows wanted per file, for `read_rows`."""
    need: dict[Path, set[int]] = {}
    for side in sides:
        if side is not None:
            need.setdefault(side[0], set()).add(side[1])
    return need


def read_rows(need: dict[Path, set[int]], columns: Sequence[str]) -> Iterator[tuple[Side, dict]]:
    """Yield ((file, row), row as a dict of `columns`) for every wanted row, each row group read once."""
    for path, rows in need.items():
        pf = pq.ParquetFile(path)
        meta = pf.metadata
        starts = np.cumsum([0] + [meta.row_group(g).num_rows for g in range(meta.num_row_groups)])
        order = np.array(sorted(rows), np.int64)
        groups = np.searchsorted(starts, order, side="right") - 1
        for g in np.unique(groups).tolist():  # one row group of images in memory at a time
            mine = order[groups == g]
            table = pf.read_row_group(g, columns=list(columns), use_threads=False)
            picked = table.take(pa.array(mine - starts[g], pa.int64())).to_pylist()
            del table
            for r, row in zip(mine.tolist(), picked):
                yield (path, r), row
