"""The one row schema every medmix stage reads and writes.

Why one module: the normalize stage, the mixer, the loader, stats, push and the trainer must agree
byte for byte on column names and types. Each imports `FEATURES` / `ARROW_SCHEMA` from here and
nothing else defines a column.

The layout follows Hugging Face `datasets` features (`Image` is a struct of bytes + path), and the
`datasets` feature metadata is embedded in the Parquet schema, so a mixture loads with
`datasets.load_dataset("parquet", ...)` (images decode to PIL) and with polars, without medmix.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

import datasets
import pyarrow as pa

from medmix.core.modality import CODES as MODALITY_CODES

# 2.0: `image_sha256` (sha256 of the decoded pixels) became `image_hash` (XXH3-128 of the same
# pixels, see medmix.imaging.canonical.pixel_hash): 30x cheaper, and a column named for its algorithm would
# lie the next time the algorithm changes; image bytes are stored without zstd (medmix.core.writer).
# 2.1: `image_phash` is computed on the decoded pixel array (medmix.imaging.phash: exact box sums, float
# Lanczos, no 8-bit rounding between steps), and JPEGs medmix writes come from libjpeg-turbo
# directly (medmix.imaging.jpeg): same pictures, other bytes and hashes than 2.0 (issue 15).
# 2.2: `modality` holds one vocabulary, DICOM's Modality codes (medmix.core.modality); the source's own
# label stays in `meta.modality_upstream` (issue 22).
SCHEMA_VERSION = "2.2"

DOMAINS = frozenset(
    {"pathology", "radiology", "microscopy", "clinical-text", "general-biomedical", "dermatology",
     "ophthalmology"}
)
TASKS = frozenset({"caption", "vqa", "mcqa", "qa", "classification"})

FEATURES = datasets.Features(
    {
        "id": datasets.Value("string"),
        "source": datasets.Value("string"),
        "split": datasets.Value("string"),
        "domain": datasets.Value("string"),
        "modality": datasets.Value("string"),
        "task": datasets.Value("string"),
        "image": datasets.Image(),
        # identity of the decoded, normalized pixels: 32 hex digits of XXH3-128 over
        # "{mode} {width}x{height}\n" + raw pixel rows (medmix.imaging.canonical.pixel_hash); equal for the
        # same picture in any lossless format. An exact-duplicate key, not a cryptographic digest.
        "image_hash": datasets.Value("string"),
        "image_phash": datasets.Value("uint64"),
        "width": datasets.Value("int32"),
        "height": datasets.Value("int32"),
        "question": datasets.Value("string"),
        "options": datasets.Sequence(datasets.Value("string")),
        "answer": datasets.Value("string"),
        "context": datasets.Value("string"),
        "license": datasets.Value("string"),
        "meta": datasets.Value("string"),
    }
)

# `datasets` stores its feature description in the Arrow schema metadata under b"huggingface";
# keeping it there is what makes plain `load_dataset("parquet")` decode the image column.
ARROW_SCHEMA: pa.Schema = FEATURES.arrow_schema
COLUMNS: tuple[str, ...] = tuple(FEATURES.keys())

REQUIRED = ("id", "source", "split", "domain", "task", "answer", "license")
NULLABLE_TEXT = ("modality", "question", "context")


class SchemaError(ValueError):
    """A row does not fit the schema; the message says which field and why."""


def validate_row(row: Mapping[str, Any]) -> None:
    """Raise `SchemaError` naming the first problem; return None when the row is valid.

    Checks are the ones a downstream user would otherwise trip over much later: empty answers,
    unknown task or domain names, options that are not a list of strings, an image without hashes.
    """
    extra = set(row) - set(COLUMNS)
    if extra:
        raise SchemaError(f"unknown field(s) {sorted(extra)}")
    for key in REQUIRED:
        value = row.get(key)
        if not isinstance(value, str) or not value.strip():
            raise SchemaError(f"required field {key!r} is empty or not text")
    if row["task"] not in TASKS:
        raise SchemaError(f"task {row['task']!r} is not one of {sorted(TASKS)}")
    if row["domain"] not in DOMAINS:
        raise SchemaError(f"domain {row['domain']!r} is not one of {sorted(DOMAINS)}")
    for key in NULLABLE_TEXT:
        value = row.get(key)
        if value is not None and not isinstance(value, str):
            raise SchemaError(f"field {key!r} must be text or null, got {type(value).__name__}")
    if row.get("modality") is not None and row["modality"] not in MODALITY_CODES:
        raise SchemaError(f"modality {row['modality']!r} is not a code of medmix.core.modality.CODES "
                          "(map the upstream label with medmix.core.modality.canonical)")
    options = row.get("options")
    if options is not None:
        if not isinstance(options, (list, tuple)) or not all(isinstance(o, str) and o.strip() for o in options):
            raise SchemaError("field 'options' must be a list of non-empty strings")
        if row["task"] == "mcqa" and len(options) < 2:
            raise SchemaError("an mcqa row needs at least two options")
    if row["task"] == "mcqa" and not options:
        raise SchemaError("an mcqa row needs options")
    image = row.get("image")
    if image is not None:
        if not isinstance(image, Mapping) or not isinstance(image.get("bytes"), (bytes, bytearray)):
            raise SchemaError("field 'image' must be {'bytes': ..., 'path': ...} with bytes")
        for key in ("image_hash", "image_phash", "width", "height"):
            if row.get(key) is None:
                raise SchemaError(f"image row without {key!r}")
    meta = row.get("meta")
    if meta is not None:
        if not isinstance(meta, str):
            raise SchemaError("field 'meta' must be a JSON string")
        try:
            json.loads(meta)
        except ValueError as exc:
            raise SchemaError(f"field 'meta' is not valid JSON: {exc}") from None


def empty_row() -> dict[str, Any]:
    return {name: None for name in COLUMNS}


def to_table(rows: Iterable[Mapping[str, Any]]) -> pa.Table:
    """Rows (dicts with every column) → an Arrow table in exactly `ARROW_SCHEMA`."""
    rows = list(rows)
    columns = {name: [r.get(name) for r in rows] for name in COLUMNS}
    return pa.Table.from_pydict(columns, schema=ARROW_SCHEMA)


def dumps_meta(meta: Mapping[str, Any] | None) -> str:
    """Canonical JSON for `meta`: sorted keys and no spaces, so equal content gives equal bytes."""
    return json.dumps(dict(meta or {}), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
