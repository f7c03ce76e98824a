"""removed.parquet: every row dedup or decontamination dropped, beside what it matched.

`medmix.mix.select.plan_mixture` decides *which* rows go and records index positions. This module
turns them into the audit file `medmix view` shows (layout.REMOVED_SCHEMA): the measure that matched
(Hamming distance of the perceptual hashes, exact image / text identity, estimated text Jaccard, a
shared n-gram), and both sides' text and a JPEG thumbnail. Both sides must travel here: a dropped
row is not in the shards, and an evaluation item is not in the mixture at all.

Only the rows needed are read, by row group, from the per-unit cache files. Memory is about one
thumbnail plus truncated text per removed row (~8 KB), held until the file is written.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from medmix.core.layout import REMOVED_SCHEMA, REMOVED_TEXT_CHARS, REMOVED_THUMB_PX, read_rows
from medmix.imaging.thumbnail import thumbnail
from medmix.mix.decontam import text_words
from medmix.mix.dedup import hamming
from medmix.mix.index import EvalIndex, Index
from medmix.mix.select import Removal
from medmix.mix.textsim import qa_text, sketch_similarity

_COLUMNS = ["question", "options", "answer", "context", "image", "image_hash", "image_phash"]
_DEDUP = ("duplicate", "same_image")
_EVAL = ("eval_image", "eval_text")


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


def _read(need: dict[Path, set[int]]) -> dict[tuple[Path, int], dict]:
    out = {}
    for path, rows in need.items():
        order = sorted(rows)
        for r, row in zip(order, read_rows(path, order, _COLUMNS).to_pylist()):
            image = row.pop("image")
            row["thumb"] = thumbnail(image["bytes"], REMOVED_THUMB_PX) if image and image.get("bytes") else None
            out[(path, r)] = row
    return out


def shared_ngram(train_text: str, eval_text: str, n: int) -> str | None:
    """The first run of `n` words (or the whole evaluation text, when shorter) that both texts contain."""
    a, b = text_words(train_text), text_words(eval_text)
    k = min(n, len(b))
    if k == 0:
        return None
    grams = {tuple(b[i:i + k]) for i in range(len(b) - k + 1)}
    return next((" ".join(a[i:i + k]) for i in range(len(a) - k + 1) if tuple(a[i:i + k]) in grams), None)


def removed_table(removals: Sequence[Removal], idx: Index, unit_files: Sequence[Path],
                  evals: EvalIndex | None, eval_files: Sequence[tuple[str, Path]], ngram: int) -> pa.Table:
    """removed.parquet's rows (layout.REMOVED_SCHEMA), sorted by id; the build publishes the table."""
    removals = sorted(removals, key=lambda r: (r.id, r.reason, r.other))
    eval_paths = [p for _, p in eval_files]
    eval_starts = np.cumsum([0] + [pq.ParquetFile(p).metadata.num_rows for p in eval_paths])

    def train_at(pos: int) -> tuple[Path, int]:
        return Path(unit_files[idx.unit[pos]]), int(idx.row[pos])

    def eval_at(pos: int) -> tuple[Path, int]:
        f = int(np.searchsorted(eval_starts, pos, side="right") - 1)
        return Path(eval_paths[f]), int(pos - eval_starts[f])

    sides: list[tuple[tuple[Path, int] | None, tuple[Path, int] | None]] = []
    need: dict[Path, set[int]] = {}
    for rm in removals:
        me = train_at(rm.row) if rm.kind in _DEDUP + _EVAL else None
        other = (train_at(rm.other_row) if rm.kind in _DEDUP else eval_at(rm.other_row)) if me and rm.other_row >= 0 \
            else None
        for side in (me, other):
            if side:
                need.setdefault(side[0], set()).add(side[1])
        sides.append((me, other))
    rows = _read(need)

    records = []
    for rm, (me, other) in zip(removals, sides):
        rec = dict.fromkeys(REMOVED_SCHEMA.names)
        rec.update(id=rm.id, reason=rm.reason, other=rm.other, kind=rm.kind,
                   source=idx.sources[idx.source[rm.row]])
        a, b = rows.get(me) if me else None, rows.get(other) if other else None
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
        records.append(rec)
    return pa.Table.from_pylist(records, schema=REMOVED_SCHEMA)
