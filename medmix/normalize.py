"""Stage 1: run one work unit — adapter records → validated schema rows in a per-unit Parquet file.

A unit's outputs are named by its content key (see `Unit.key`) and committed in a fixed order:
rows file, quarantine file (only when a row was quarantined), then the summary JSON, which is the
completion marker. A unit whose summary exists is done and is never redone, so a killed build
resumes where it stopped and two machines may run disjoint units of one build into one shared cache.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from medmix.core.errors import MedmixError, RowError
from medmix.core.modality import canonical as canonical_modality
from medmix.core.schema import SCHEMA_VERSION, SchemaError, dumps_meta, validate_row
from medmix.core.writer import ParquetAtomicWriter, atomic_write_json, write_rows_atomic
from medmix.imaging.canonical import ImagePolicy, normalize_image
from medmix.sources.base import Bad, Record, Source, Unit

QUARANTINE_SCHEMA = pa.schema(
    [("source", pa.string()), ("split", pa.string()), ("id", pa.string()), ("file", pa.string()),
     ("reason", pa.string())]
)


@dataclass(frozen=True)
class UnitPaths:
    rows: Path
    quarantine: Path
    summary: Path

    @classmethod
    def at(cls, out_dir: Path, source: str, key: str) -> UnitPaths:
        base = Path(out_dir) / source
        return cls(base / f"{key}.parquet", base / f"{key}.quarantine.parquet", base / f"{key}.json")


def reason_class(reason: str) -> str:
    """The stable part of a reason ("truncated JPEG: ..." → "truncated JPEG") for counting."""
    head = reason.split(":", 1)[0].strip()
    return re.sub(r"\s+", " ", head)[:80] or "error"


def _image_bytes(rec: Record) -> tuple[bytes, str]:
    if isinstance(rec.image, Path):
        name = rec.image_name or rec.image.name
        try:
            return rec.image.read_bytes(), name
        except FileNotFoundError:
            raise RowError("image file missing", file=name) from None
        except OSError as exc:
            raise RowError(f"image file unreadable: {exc.strerror}", file=name) from None
    return bytes(rec.image), rec.image_name or f"{rec.native_id}"


def _text(value: Any, field: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            raise RowError(f"malformed text: field {field!r} is not valid UTF-8") from None
    if not isinstance(value, str):
        value = str(value)
    if "\ufffd" in value:
        raise RowError(f"malformed text: field {field!r} holds undecodable bytes (U+FFFD)")
    value = value.strip()
    return value or None


def record_to_row(source: Source, unit: Unit, rec: Record, policy: ImagePolicy) -> dict[str, Any]:
    """One adapter record → one validated schema row; raises RowError for anything bad."""
    answer = _text(rec.answer, "answer")
    if answer is None:
        raise RowError("empty answer")
    options = None
    if rec.options is not None:
        options = [_text(o, "options") for o in rec.options]
        if any(o is None for o in options):
            raise RowError("empty option")
    meta = dict(rec.meta or {})
    label = _text(rec.modality, "modality") or source.modality
    modality = canonical_modality(label)
    if rec.modality is not None and label is not None and label != modality:
        meta.setdefault("modality_upstream", label)
    texts = {"question": _text(rec.question, "question"), "answer": answer, "context": _text(rec.context, "context")}
    deid: dict[str, Any] = {}
    if policy.text_identifiers != "off":
        from medmix.phi import check_text

        texts, text_deid = check_text(texts, policy.text_identifiers)
        if text_deid:
            deid["text"] = text_deid
    row: dict[str, Any] = {
        "id": f"{source.name}/{rec.native_id}",
        "source": source.name,
        "split": unit.split,
        "domain": rec.domain or source.domain,
        "modality": modality,
        "task": rec.task or (source.tasks[0] if len(source.tasks) == 1 else None),
        "image": None, "image_hash": None, "image_phash": None, "width": None, "height": None,
        "question": texts["question"],
        "options": options,
        "answer": texts["answer"],
        "context": texts["context"],
        "license": rec.license or source.license,
        "meta": dumps_meta(meta),
    }
    if rec.image is not None:
        data, name = _image_bytes(rec)
        img = normalize_image(data, name=name, policy=policy)
        row.update(image={"bytes": img.data, "path": None}, image_hash=img.pixel_hash,
                   image_phash=img.phash, width=img.width, height=img.height)
        if img.deid:
            deid["image"] = img.deid
    if deid:  # what was redacted and how, like DICOM's De-identification Method; never the text
        row["meta"] = dumps_meta({**meta, "deid": deid})
    if row["task"] is None:
        raise MedmixError(f"adapter {source.name!r} declares several tasks {source.tasks} but record "
                          f"{rec.native_id!r} names none")
    try:
        validate_row(row)
    except SchemaError as exc:
        raise RowError(f"schema: {exc}") from None
    return row


def run_unit(source: Source, unit: Unit, files: Mapping[str, Path], policy: ImagePolicy,
             out_dir: Path, key: str) -> dict[str, Any]:
    """Normalize one unit into the cache (idempotent); returns its summary.

    Adapter exceptions other than `RowError` stop the build: an adapter that cannot parse its
    own upstream format is a bug or an upstream change, and silently writing a partial source
    would give a mixture that looks fine but is not the recipe.
    """
    paths = UnitPaths.at(out_dir, source.name, key)
    if paths.summary.exists():
        return json.loads(paths.summary.read_text())
    quarantined: list[dict[str, Any]] = []
    reasons: dict[str, int] = {}
    seen: set[str] = set()
    redacted: dict[str, int] = {}  # rows whose images / texts `medmix.phi` redacted
    read = 0

    def quarantine(native_id: str | None, reason: str, file: str | None) -> None:
        quarantined.append({"source": source.name, "split": unit.split,
                            "id": None if native_id is None else f"{source.name}/{native_id}",
                            "file": file, "reason": reason})
        cls = reason_class(reason)
        reasons[cls] = reasons.get(cls, 0) + 1

    with ParquetAtomicWriter(paths.rows) as writer:
        try:
            for item in source.read(unit, files):
                read += 1
                if isinstance(item, Bad):
                    quarantine(item.native_id, item.reason, item.file)
                    continue
                if item.native_id in seen:
                    quarantine(item.native_id, "duplicate id: the adapter yielded this id twice", None)
                    continue
                seen.add(item.native_id)
                try:
                    row = record_to_row(source, unit, item, policy)
                    writer.write_row(row)
                    if '"deid":' in row["meta"]:
                        deid = json.loads(row["meta"])["deid"]
                        for kind, part in (("images", "image"), ("texts", "text")):
                            if part in deid:
                                redacted[kind] = redacted.get(kind, 0) + 1
                except RowError as exc:
                    quarantine(item.native_id, exc.reason, exc.file or item.image_name)
        except RowError as exc:
            raise MedmixError(f"source {source.name!r}, unit {unit.split}/{unit.part}: {exc}") from exc
        except MedmixError:
            raise
        except Exception as exc:  # an adapter bug or an upstream format change: stop, say where
            raise MedmixError(
                f"source {source.name!r} failed reading unit {unit.split}/{unit.part}: "
                f"{type(exc).__name__}: {exc}") from exc
        _, written = writer.commit(digest=False)
    if quarantined:  # no file for none: two fsyncs saved per unit (~5 ms), and readers skip what is absent
        write_rows_atomic(paths.quarantine, quarantined, QUARANTINE_SCHEMA)
    summary = {"source": source.name, "split": unit.split, "part": unit.part, "key": key,
               "schema_version": SCHEMA_VERSION, "read": read, "written": written,
               "quarantined": dict(sorted(reasons.items()))}
    if redacted:
        summary["redacted"] = dict(sorted(redacted.items()))
    atomic_write_json(paths.summary, summary)
    return summary
