"""removed.parquet: every row dedup or decontamination dropped, beside what it matched.

`medmix.mix.select.mixture_rows` decides *which* rows go and records index positions. This module
turns them into the audit file `medmix view` shows (layout.REMOVED_SCHEMA): the measure that matched
(Hamming distance of the perceptual hashes, exact image / text identity, estimated text Jaccard, a
shared n-gram), and both sides' text and a JPEG thumbnail. Both sides must travel here: a dropped
row is not in the shards, and an evaluation item is not in the mixture at all.

Only the rows needed are read, each row group once, from the per-unit cache files; each side is
spilled to a local temp file and read back as rows are written, `BATCH_ROWS` at a time. Memory
holds one image row group while reading, then one output batch (~8 KB per row), plus per removal
its Removal record and spill offsets (Python objects, a few hundred bytes; not yet measured at
scale). It used to hold ~8 KB per removed row until the file was written (issue 24).
"""

from __future__ import annotations

import os
import pickle
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa

from medmix.core.layout import REMOVED_SCHEMA, REMOVED_TEXT_CHARS, REMOVED_THUMB_PX
from medmix.core.storage import scratch_dir
from medmix.core.writer import ROW_GROUP_ROWS, ParquetAtomicWriter
from medmix.imaging.thumbnail import thumbnail
from medmix.mix.decontam import text_words
from medmix.mix.dedup import hamming
from medmix.mix.index import EvalIndex, Index
from medmix.mix.select import Removal
from medmix.mix.textsim import qa_text, sketch_similarity
from medmix.mix.unit_rows import RowPlaces, Side, group_by_file, read_rows

_COLUMNS = ["question", "options", "answer", "context", "image", "image_hash", "image_phash"]
_DEDUP = ("duplicate", "same_image")
_EVAL = ("eval_image", "eval_text")
# output rows materialized at once: 4 of the writer's 256-row groups (~8 KB each: ~8 MB)
BATCH_ROWS = 4 * ROW_GROUP_ROWS


def _shown(row: dict) -> tuple[str | None, str | None]:
    """(question with its options and context, answer), truncated: what a person reads on the Removed page."""
    parts = [row["question"] or ""]
    parts += [f"({chr(65 + i)}) {o}" for i, o in enumerate(row["options"] or [])]
    if row["context"]:
        parts.append(f"context: {row['context']}")
    q = "\n".join(p for p in parts if p).strip() or None
    def cut(s):
        return s if s is None or len(s) <= REMOVED_TEXT_CHARS else s[:REMOVED_TEXT_CHARS] + "…"
    return cut(q), cut(row["answer"])


class _Spill:
    """Both sides' rows, read once in file order and kept on local disk until written.

    Why a spill and not a dict: each side holds a JPEG thumbnail and texts (~8 KB per removed row),
    and a few hundred thousand removals would hold GBs until the file is written. Reading the
    sides in id order instead would re-read one image row group (MBs) per side. So pass 1 reads
    every needed row group once, writes each side as one pickled record to an anonymous temp file
    and keeps only (offset, length) per side; pass 2 reads records back per output batch."""

    def __init__(self, need: dict[Path, set[int]]) -> None:
        self.file = tempfile.TemporaryFile(dir=scratch_dir())
        self.where: dict[Side, tuple[int, int]] = {}
        pos = 0
        for side, row in read_rows(need, _COLUMNS):
            image = row.pop("image")
            data = image.get("bytes") if image else None
            row["thumb"] = thumbnail(data, REMOVED_THUMB_PX) if data else None
            blob = pickle.dumps(row, protocol=pickle.HIGHEST_PROTOCOL)
            self.file.write(blob)
            self.where[side] = (pos, len(blob))
            pos += len(blob)
        self.file.flush()

    def get(self, side: Side | None) -> dict | None:
        if side is None or side not in self.where:
            return None
        offset, size = self.where[side]
        return pickle.loads(os.pread(self.file.fileno(), size, offset))

    def close(self) -> None:
        self.file.close()


def shared_ngram(train_text: str, eval_text: str, n: int) -> str | None:
    """The first run of `n` words (or the whole evaluation text, when shorter) that both texts contain."""
    a, b = text_words(train_text), text_words(eval_text)
    k = min(n, len(b))
    if k == 0:
        return None
    grams = {tuple(b[i:i + k]) for i in range(len(b) - k + 1)}
    return next((" ".join(a[i:i + k]) for i in range(len(a) - k + 1) if tuple(a[i:i + k]) in grams), None)


def in_file_order(removals: Sequence[Removal]) -> list[Removal]:
    """The removals in removed.parquet's row order: by id, then reason and match."""
    return sorted(removals, key=lambda r: (r.id, r.reason, r.other))


def removal_sides(removals: Sequence[Removal], places: RowPlaces) -> list[tuple[Side | None, Side | None]]:
    """Per removal, the cache file and row of the side shown (the dropped row) and of what it
    matched (the kept row, or the evaluation item); None where removed.parquet shows no side
    (license removals, a removal without a match)."""
    sides: list[tuple[Side | None, Side | None]] = []
    for rm in removals:
        me = places.train(rm.row) if rm.kind in _DEDUP + _EVAL else None
        other = (places.train(rm.other_row) if rm.kind in _DEDUP else places.eval(rm.other_row)) \
            if me and rm.other_row >= 0 else None
        sides.append((me, other))
    return sides


def write_removed(path: Path, removals: Sequence[Removal], idx: Index, unit_files: Sequence[Path],
                  evals: EvalIndex | None, eval_files: Sequence[tuple[str, Path]], ngram: int,
                  batch_rows: int = BATCH_ROWS) -> tuple[str, int]:
    """Write removed.parquet (layout.REMOVED_SCHEMA, sorted by id) to `path`; returns (sha256, rows).

    Streamed: at most `batch_rows` output rows (texts + thumbnails) are in memory at once, their
    sides read back from a `_Spill`. `batch_rows` is a multiple of the writer's row group, so the
    bytes equal those of one table written whole (tested)."""
    if batch_rows % ROW_GROUP_ROWS:
        raise ValueError(f"batch_rows must be a multiple of {ROW_GROUP_ROWS} so row groups do not depend on it")
    removals = in_file_order(removals)
    sides = removal_sides(removals, RowPlaces(idx, unit_files, [p for _, p in eval_files]))
    need = group_by_file(side for pair in sides for side in pair)
    spill = _Spill(need)
    try:
        with ParquetAtomicWriter(path, REMOVED_SCHEMA) as w:
            for start in range(0, len(removals), batch_rows):
                stop = start + batch_rows
                w.write_table(_batch_table([_record(rm, spill.get(me), spill.get(other), idx, evals, ngram)
                                            for rm, (me, other) in zip(removals[start:stop], sides[start:stop])]))
            if not removals:
                w.write_table(REMOVED_SCHEMA.empty_table())
            return w.commit()
    finally:
        spill.close()


def _batch_table(records: list[dict]) -> pa.Table:
    """One output batch as Arrow: the only place rows with texts and thumbnails are materialized."""
    return pa.Table.from_pylist(records, schema=REMOVED_SCHEMA)


def _record(rm: Removal, a: dict | None, b: dict | None, idx: Index, evals: EvalIndex | None, ngram: int) -> dict:
    """One removed.parquet row: the removal, the measure that matched, both sides as shown."""
    rec = dict.fromkeys(REMOVED_SCHEMA.names)
    rec.update(id=rm.id, reason=rm.reason, other=rm.other, kind=rm.kind, source=idx.sources[idx.source[rm.row]])
    if rm.kind in _DEDUP and rm.other_row >= 0:
        rec["other_source"] = idx.sources[idx.source[rm.other_row]]
        rec["exact_text"] = bool(idx.text[rm.row] == idx.text[rm.other_row])
        if idx.sketch is not None and not rec["exact_text"]:
            rec["jaccard"] = float(sketch_similarity(idx.sketch, np.array([rm.row]), np.array([rm.other_row]))[0])
    elif rm.kind in _EVAL and evals is not None and rm.other_row >= 0:
        rec["other_source"] = evals.names[rm.other_row]
    if a is not None:
        rec["question"], rec["answer"] = _shown(a)
        rec["thumb"] = a["thumb"]
    if b is not None:
        rec["other_question"], rec["other_answer"] = _shown(b)
        rec["other_thumb"] = b["thumb"]
    if a is not None and b is not None:
        if a["image_phash"] is not None and b["image_phash"] is not None:
            rec["hamming"] = int(hamming(a["image_phash"], b["image_phash"]))
            rec["exact_image"] = a["image_hash"] == b["image_hash"]
        if rm.kind == "eval_text":
            rec["ngram"] = shared_ngram(qa_text(a["question"], a["options"], a["answer"], a["context"]),
                                        qa_text(b["question"], b["options"], None, b["context"]), ngram)
    return rec
