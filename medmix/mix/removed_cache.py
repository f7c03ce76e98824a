"""removed.parquet kept in the build cache under a key of everything it is made from.

Why: a rebuild that changes only weights, caps or the seed removes the same rows as the build
before it, yet rewrote removed.parquet from scratch: both sides of every removal read back from
the unit files and thumbnailed again, 36.9-40.1 s of the full rehearsal's 3.35M-row builds
(36,622 removed rows, docs/scale.md). The file is a pure function of the removals (ids, kinds,
what each matched and where both sides live in the content-keyed cache), the n-gram length and
the code that writes it, so those are its key; a hit is a file copy.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from medmix import __version__
from medmix.core.layout import REMOVED_SCHEMA, REMOVED_TEXT_CHARS, REMOVED_THUMB_PX
from medmix.core.writer import sha256_file
from medmix.mix.index import EvalIndex, Index
from medmix.mix.removed import in_file_order, removal_sides, write_removed
from medmix.mix.select import Removal
from medmix.mix.unit_rows import RowPlaces

CACHE_DIR = "removed"


def removed_key(removals: Sequence[Removal], idx: Index, unit_files: Sequence[Path],
                eval_files: Sequence[tuple[str, Path]], ngram: int) -> str:
    """sha256 of what removed.parquet shows: per removal its id, reason, match and kind, and the
    cache file and row of each side (unit files are named by their content keys)."""
    h = hashlib.sha256(json.dumps([__version__, str(REMOVED_SCHEMA), REMOVED_TEXT_CHARS, REMOVED_THUMB_PX,
                                   ngram]).encode())

    def name(side: tuple[Path, int] | None) -> str:
        return "" if side is None else f"{side[0].parent.name}/{side[0].name}:{side[1]}"

    ordered = in_file_order(removals)
    places = RowPlaces(idx, unit_files, [p for _, p in eval_files])
    for rm, (me, other) in zip(ordered, removal_sides(ordered, places)):
        h.update(json.dumps([rm.id, rm.reason, rm.other, rm.kind, name(me), name(other)]).encode() + b"\n")
    return h.hexdigest()


def write_removed_cached(path: Path, cache_root: Path, removals: Sequence[Removal], idx: Index,
                         unit_files: Sequence[Path], evals: EvalIndex | None,
                         eval_files: Sequence[tuple[str, Path]], ngram: int) -> tuple[str, int]:
    """`medmix.mix.removed.write_removed`, or a copy of the file an earlier build wrote for the same key."""
    key = removed_key(removals, idx, unit_files, eval_files, ngram)
    folder = Path(cache_root) / CACHE_DIR
    kept, meta = folder / f"{key}.parquet", folder / f"{key}.json"
    try:
        record = json.loads(meta.read_text())
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        shutil.copyfile(kept, tmp)
        if sha256_file(tmp) == record["sha256"]:  # a damaged copy is written again, not trusted
            os.replace(tmp, path)
            return record["sha256"], int(record["rows"])
        tmp.unlink()
    except (OSError, ValueError, KeyError):
        pass
    digest, rows = write_removed(path, removals, idx, unit_files, evals, eval_files, ngram)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{key}.{os.getpid()}.tmp"
    shutil.copyfile(path, tmp)
    os.replace(tmp, kept)
    meta_tmp = folder / f".{key}.{os.getpid()}.json.tmp"
    meta_tmp.write_text(json.dumps({"sha256": digest, "rows": rows}))
    os.replace(meta_tmp, meta)  # written last: a kept file without it is never read
    return digest, rows
