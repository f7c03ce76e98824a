"""Reading helpers several adapters share (not an adapter: the registry skips `_` modules).

Kept here so each adapter file stays a page of mapping code, and a fix to (say) row-group-aware
slicing of big Parquet files reaches every source that uses it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from medmix.errors import MedmixError
from medmix.sources.base import Unit

# Small batches: rows may carry image bytes, and memory must follow the batch, not the file.
_BATCH = 64


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


