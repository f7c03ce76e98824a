"""Reading helpers several adapters share (not an adapter: the registry skips `_` modules).

Kept here so each adapter file stays a page of mapping code, and a fix to (say) row-group-aware
slicing of big Parquet files reaches every source that uses it.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from medmix.core.errors import MedmixError
from medmix.sources.base import Unit

# Work-unit sizing (see `cut_by_weight`). A unit is the smallest thing a worker takes, so it must
# be small enough that N workers finish together, and large enough that its fixed cost (a Parquet
# file, a summary, four fsyncs: ~5 ms here) stays a few percent of its work. JPEG decode +
# re-encode runs at ~30 MB/s of input on one core, so 64 MiB is ~2 s of work; and any folder big
# enough is cut into at least 16 units, so 2-8 workers stay busy even when the whole source is a
# second of work, and one worker slowed by a neighbour is made up by the others taking more
# units (1,500 JPEGs used to make units of 1,000 + 500; at 8 units, 2 workers' wall time still
# swung 0.71-0.99 s between identical runs here, at 16-32 units 0.73-0.79 s).
UNIT_BYTES = 64 << 20
MIN_UNITS = 16
MIN_UNIT_ITEMS = 32

# Small batches: rows may carry image bytes, and memory must follow the batch, not the file.
_BATCH = 64


def cut_by_weight(weights: Sequence[int], *, target: int = UNIT_BYTES, min_units: int = MIN_UNITS,
                  min_items: int = MIN_UNIT_ITEMS) -> list[tuple[int, int]]:
    """[start, stop) ranges cutting items (in their canonical order) into units of about equal
    weight (bytes of input: decode cost follows it far better than a count does).

    The number of units is the larger of total / `target` and `min_units`, the latter capped so
    no unit has fewer than `min_items` items. Boundaries are where the running total crosses
    k/n of the whole, so they depend only on the weights: the same inputs cut the same way on
    every machine, whatever the workers. Where units fall never changes the build's output (rows
    are concatenated in unit order), only how the work is shared and cached.
    """
    n = len(weights)
    if n == 0:
        return [(0, 0)]
    cum = list(itertools.accumulate(max(0, int(w)) + 1 for w in weights))  # +1: empty files still cost
    total = cum[-1]
    parts = max(-(-total // target), min(min_units, n // max(1, min_items)), 1)
    parts = min(parts, n)
    bounds = [0] + [bisect.bisect_left(cum, -(-total * k // parts)) + 1 for k in range(1, parts)] + [n]
    bounds = sorted({min(b, n) for b in bounds})
    return [(a, b) for a, b in itertools.pairwise(bounds) if b > a]


def _check_columns(pf: pq.ParquetFile, path: Path, columns: list[str]) -> None:
    missing = [c for c in columns if c not in pf.schema_arrow.names]
    if missing:
        raise MedmixError(f"{path.name}: upstream columns {missing} are missing (found {pf.schema_arrow.names}); "
                          "the upstream format changed")


def slice_units(source: str, split: str, path: Path, max_rows: int) -> list[Unit]:
    """One unit per row range of at most `max_rows` of a big Parquet file (ranges from its footer)."""
    return [Unit(source, split, part=str(i), args={"start": a, "stop": b})
            for i, (a, b) in enumerate(row_slices(path, max_rows))]


def iter_parquet(path: Path, columns: list[str], batch_size: int = _BATCH) -> Iterator[dict[str, Any]]:
    """Rows of one Parquet file as dicts, a batch at a time; a missing column stops the unit by name."""
    pf = pq.ParquetFile(path)
    _check_columns(pf, path, columns)
    for batch in pf.iter_batches(batch_size=batch_size, columns=columns):
        yield from batch.to_pylist()


def row_slices(path: Path, max_rows: int) -> list[tuple[int, int]]:
    """[start, stop) row ranges of at most `max_rows` covering a Parquet file (from its footer only)."""
    total = pq.ParquetFile(path).metadata.num_rows
    return [(start, min(start + max_rows, total)) for start in range(0, total, max_rows)] or [(0, 0)]


def iter_parquet_slice(path: Path, start: int, stop: int, columns: list[str],
                       batch_size: int = _BATCH) -> Iterator[tuple[int, dict[str, Any]]]:
    """(row index, row) for rows start..stop-1 of a Parquet file, reading only the row groups
    that overlap the range, so N units over one big file do not each read all of it."""
    pf = pq.ParquetFile(path)
    _check_columns(pf, path, columns)
    first = 0
    for group in range(pf.num_row_groups):
        size = pf.metadata.row_group(group).num_rows
        if first + size > start and first < stop:
            index = first
            for batch in pf.iter_batches(batch_size=batch_size, row_groups=[group], columns=columns):
                for row in batch.to_pylist():
                    if start <= index < stop:
                        yield index, row
                    index += 1
        first += size
        if first >= stop:
            break


def image_root(folder: Path) -> Path:
    """Where image names resolve inside an unpacked archive: through one wrapping folder
    (`imgs/` here) if the archive has one, so both layouts people re-zip work."""
    entries = [p for p in folder.iterdir() if not p.name.startswith((".", "__MACOSX"))]
    if len(entries) == 1 and entries[0].is_dir():
        return entries[0]
    return folder


def resolve_image(root: Path, relative: str) -> Path | None:
    """`root/relative` if it is a file inside `root`; None if missing or if the name escapes the folder."""
    path = (root / relative).resolve()
    if not path.is_relative_to(root.resolve()) or not path.is_file():
        return None
    return path


