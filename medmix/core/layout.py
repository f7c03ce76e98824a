"""The mixture folder format: the one place that knows what a built mixture looks like on disk.

Why one module: build, shards, the loader, stats, push, the viewer and the executors all read or
write mixture folders. When each of them spelled the shard name, parsed the manifest and listed
the funnel columns on its own, the copies drifted (three funnel label sets, a shard regex in the
loader, shard names built by hand in push). Every reader and writer now goes through here.

A mixture folder (format version 2):

    manifest.json                      the commit point: written last, atomically
    data/<split>-XXXXX-of-YYYYY.parquet shards, in the manifest's order (the order seeds are defined on)
    quarantine.parquet                 rows that could not be normalized, with their reasons
    removed.parquet                    rows dropped by dedup / decontamination, with what they matched
                                       (v2: the measure, both texts and both thumbnails; see REMOVED_SCHEMA)
    .medmix-build.json                 which resolved recipe owns the folder (resume guard)

`format_version` in the manifest versions this layout, not the row schema (`schema_version`):
a reader refuses a version it does not know, with the fix, instead of misreading it. Manifests
written before the field existed are version 1: the layout did not change when it was added.
Version 2 widened removed.parquet (REMOVED_SCHEMA) so `medmix view` can show each dropped row
beside what it matched; version-1 folders are still read (their removed.parquet has ids only).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from medmix.core.errors import MedmixError
from medmix.core.storage import Store
from medmix.core.writer import atomic_write_json

FORMAT_VERSION = 2
KNOWN_FORMAT_VERSIONS = (1, 2)

MANIFEST = "manifest.json"
DATA_DIR = "data"
QUARANTINE = "quarantine.parquet"
REMOVED = "removed.parquet"
BUILD_MARKER = ".medmix-build.json"
DEFAULT_SPLIT = "train"

# keys every manifest written by `medmix build` has; a reader that needs them asks for them
MANIFEST_KEYS = ("recipe", "recipe_sha256", "sources", "shards", "total_rows", "quarantine")

_SHARD_NAME = re.compile(r"^(?P<split>.+?)-(?P<index>\d+)-of-(?P<count>\d+)\.parquet$")

# The per-source funnel: (manifest count key, short header, long label), in the order rows drop out
# of it. `epochs` is not a funnel step (it says how often selected rows repeat) but is reported beside it.
FUNNEL_STEPS: tuple[tuple[str, str, str], ...] = (
    ("read", "read", "read from upstream"),
    ("quarantined", "quar.", "quarantined"),
    ("license_filtered", "lic.", "license filtered"),
    ("duplicates", "dup.", "duplicates"),
    ("contaminated", "contam.", "contaminated"),
    ("available", "avail.", "available"),
    ("selected", "selected", "selected"),
)
FUNNEL = tuple(key for key, _, _ in FUNNEL_STEPS)
FUNNEL_COLUMNS = (*FUNNEL_STEPS, ("epochs", "epochs", "epochs"))


# removed.parquet. Version 1 held (id, reason, other). Version 2 keeps what an audit needs without the
# cache the build read from: a removed row is not in the shards, and an evaluation item is not in the
# mixture at all, so both sides' text and a small thumbnail travel here. Thumbnails are JPEG, at most
# REMOVED_THUMB_PX on the long side (about 5-10 KB each), and only for dedup/decontamination rows
# (license-filtered rows keep ids only), so the file stays a small fraction of the shards.
REMOVED_SCHEMA_V1 = pa.schema([("id", pa.string()), ("reason", pa.string()), ("other", pa.string())])
REMOVED_SCHEMA = pa.schema([
    ("id", pa.string()),             # the dropped training row
    ("reason", pa.string()),         # human-readable reason (as in version 1)
    ("other", pa.string()),          # id of the training row kept instead, or of the evaluation item matched
    ("kind", pa.string()),           # one of REMOVAL_KINDS
    ("source", pa.string()),         # source of the dropped row
    ("other_source", pa.string()),   # source of the kept row, or "<benchmark>:<split>" for an evaluation item
    ("hamming", pa.int32()),         # perceptual-hash Hamming distance between the two images (null: no image pair)
    ("exact_image", pa.bool_()),     # same decoded pixels (schema image_hash)
    ("exact_text", pa.bool_()),      # same normalized question/options/answer/context
    ("jaccard", pa.float32()),       # estimated text Jaccard similarity (MinHash sketch), text near-duplicates
    ("ngram", pa.string()),          # an n-gram the dropped row shares with the evaluation question
    ("question", pa.string()), ("answer", pa.string()),               # the dropped row (truncated)
    ("other_question", pa.string()), ("other_answer", pa.string()),   # the matched row or item (truncated)
    ("thumb", pa.binary()), ("other_thumb", pa.binary()),             # JPEG thumbnails, or null
])
REMOVAL_KINDS = ("license", "duplicate", "same_image", "eval_image", "eval_text")
REMOVED_THUMB_PX = 256
REMOVED_TEXT_CHARS = 2000


def removed_format(root: str | os.PathLike[str]) -> int:
    """1 when `<root>/removed.parquet` holds ids only (older builds), 2 when it holds the audit columns."""
    names = set(pq.read_schema(Path(root) / REMOVED).names)
    return 2 if set(REMOVED_SCHEMA.names) <= names else 1


def mixture_file(root: str | os.PathLike[str], name: str) -> Path | None:
    """`<root>/<name>` when it is a regular file that resolves inside the mixture folder, else None.

    A symlink (or `..`) leading out of the folder reads as absent: a viewer or uploader given a
    mixture must never read a file elsewhere on the disk because the folder points at it.
    """
    base = Path(root).resolve()
    target = (base / name).resolve()
    if Path(name).is_absolute() or not target.is_relative_to(base) or target == base or not target.is_file():
        return None
    return target


def read_rows(path: str | os.PathLike[str], rows: Sequence[int], columns: Sequence[str] | None = None,
              pf: pq.ParquetFile | None = None) -> pa.Table:
    """Rows of one Parquet file by position, reading only the row groups that hold them.

    The footer gives each row group's row count, so row -> group is a search over a prefix sum, and
    a viewer showing 48 rows of a 1M-row mixture reads 48 row groups' worth of the columns it
    shows, never the file. The result keeps the order of `rows`.
    """
    pf = pf or pq.ParquetFile(path)
    meta = pf.metadata
    starts = np.cumsum([0] + [meta.row_group(g).num_rows for g in range(meta.num_row_groups)])
    want = np.asarray(rows, np.int64)
    if len(want) and (want.min() < 0 or want.max() >= starts[-1]):
        raise IndexError(f"{path}: row out of range (0..{starts[-1] - 1})")
    groups = np.searchsorted(starts, want, side="right") - 1
    uniq = sorted(set(groups.tolist()))
    table = pf.read_row_groups(uniq, columns=list(columns) if columns is not None else None, use_threads=False)
    sizes = [int(starts[g + 1] - starts[g]) for g in uniq]
    offset = dict(zip(uniq, np.cumsum([0] + sizes[:-1]).tolist()))
    take = [offset[g] + int(r - starts[g]) for g, r in zip(groups.tolist(), want.tolist())]
    return table.take(pa.array(take, pa.int64()))


# -- shard names ---------------------------------------------------------------------------------
def shard_name(index: int, count: int, split: str = DEFAULT_SPLIT) -> str:
    """`train-00003-of-00010.parquet`: the Hugging Face convention, so the Hub and `datasets`
    pick the split up from file names alone."""
    return f"{split}-{index:05d}-of-{count:05d}.parquet"


def shard_path(index: int, count: int, split: str = DEFAULT_SPLIT) -> str:
    """A shard's path relative to the mixture folder, as the manifest lists it."""
    return f"{DATA_DIR}/{shard_name(index, count, split)}"


def shard_glob(split: str = DEFAULT_SPLIT) -> str:
    """The glob matching every shard of a split (Hub `data_files` patterns use it)."""
    return f"{split}-*"


@dataclass(frozen=True)
class ShardName:
    split: str
    index: int
    count: int


def parse_shard_name(name: str) -> ShardName | None:
    """The split, index and count of a shard file name, or None for any other file name."""
    m = _SHARD_NAME.match(Path(name).name)
    return ShardName(m.group("split"), int(m.group("index")), int(m.group("count"))) if m else None


# -- the manifest --------------------------------------------------------------------------------
def read_manifest(root: str | os.PathLike[str], required: Sequence[str] = MANIFEST_KEYS) -> dict[str, Any]:
    """Read and check `<root>/manifest.json`; every problem names the file and the fix."""
    root = Path(root)
    path = root / MANIFEST
    if not root.is_dir():
        raise MedmixError(f"{root}: not a folder; give the folder `medmix build --out` wrote")
    if not path.is_file():
        raise MedmixError(f"{path}: missing; {root} is not a built mixture (run `medmix build --out {root}`)")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise MedmixError(f"{path}: cannot read the manifest ({exc})") from None
    return parse_manifest(data, path, required)


def parse_manifest(data: bytes, where: str | os.PathLike[str],
                   required: Sequence[str] = MANIFEST_KEYS) -> dict[str, Any]:
    """The one manifest parser (local or remote bytes): JSON object, known format_version, required keys."""
    try:
        manifest = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MedmixError(f"{where}: not valid JSON ({exc})") from None
    if not isinstance(manifest, dict):
        raise MedmixError(f"{where}: expected a JSON object at the top level")
    check_format_version(manifest, where)
    missing = [k for k in required if k not in manifest]
    if missing:
        raise MedmixError(f"{where}: missing key(s) {missing}; was it written by `medmix build`?")
    return manifest


def check_format_version(manifest: dict[str, Any], where: str | os.PathLike[str]) -> int:
    version = manifest.get("format_version", 1)
    if version not in KNOWN_FORMAT_VERSIONS:
        raise MedmixError(f"{where}: mixture format_version {version!r} is not one this medmix reads "
                          f"({', '.join(map(str, KNOWN_FORMAT_VERSIONS))}); upgrade medmix (pip install -U medmix) "
                          f"or rebuild the mixture with this version")
    return version


def write_manifest(root: str | os.PathLike[str] | Store, manifest: dict[str, Any]) -> dict[str, Any]:
    """Write the manifest atomically (the build's commit point) and return exactly what a reader sees.

    `format_version` leads the document so a person opening the file sees what they are reading.
    `root` may be a `Store` (any fsspec URL): on object storage the manifest is the last object
    written, under a temporary key and then copied into place, so its presence commits the build.
    """
    doc = {"format_version": FORMAT_VERSION, **{k: v for k, v in manifest.items() if k != "format_version"}}
    if isinstance(root, Store):
        root.write_json(MANIFEST, doc)  # the same bytes as atomic_write_json
    else:
        atomic_write_json(Path(root) / MANIFEST, doc)
    return json.loads(json.dumps(doc))


def read_remote_manifest(store: Store, required: Sequence[str] = MANIFEST_KEYS) -> dict[str, Any]:
    """`read_manifest` for a mixture at a URL: the manifest is the commit point, so no manifest
    means no (finished) mixture there."""
    where = store.child_url(MANIFEST)
    try:
        data = store.read_bytes(MANIFEST)
    except FileNotFoundError:
        raise MedmixError(f"{where}: missing; {store.url} is not a built mixture (or its build has not "
                          f"finished: the manifest is written last)") from None
    return parse_manifest(data, where, required)


def remote_mixture_files(store: Store, split: str = DEFAULT_SPLIT) -> list[tuple[str, int | None, str | None]]:
    """`mixture_files` for a mixture at a URL: (shard path relative to the mixture, manifest rows, sha256).

    A remote mixture needs its manifest (listing a bucket is slow and shows unfinished builds).
    """
    manifest = read_remote_manifest(store, required=("shards",))
    where = store.child_url(MANIFEST)
    out = []
    seen = set()
    for n, entry in enumerate(manifest["shards"] if isinstance(manifest["shards"], list) else []):
        rel = entry.get("path") if isinstance(entry, dict) else None
        if not isinstance(rel, str) or not rel:
            raise MedmixError(f"{where}: shards[{n}] has no 'path'")
        if rel.startswith("/") or ".." in rel.split("/") or "://" in rel:
            raise MedmixError(f"{where}: shards[{n}].path {rel!r} points outside the mixture folder")
        parsed = parse_shard_name(rel)
        entry_split = entry.get("split", parsed.split if parsed else None)
        seen.add(entry_split)
        if entry_split is not None and entry_split != split:
            continue
        out.append((rel, entry.get("rows"), entry.get("sha256")))
    if not out:
        raise MedmixError(f"{where}: no shards for split {split!r}; found {sorted(s for s in seen if s)}")
    return out


def manifest_sha256(root: str | os.PathLike[str]) -> str:
    return hashlib.sha256((Path(root) / MANIFEST).read_bytes()).hexdigest()


# -- shards --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Shard:
    """One shard as the manifest lists it. `rows`/`sha256` are None for folders without a manifest."""

    path: Path
    rel: str
    rows: int | None = None
    sha256: str | None = None
    split: str | None = None


def manifest_shards(root: str | os.PathLike[str], manifest: dict[str, Any], split: str | None = None,
                    must_exist: bool = True) -> list[Shard]:
    """The shards the manifest lists (of one split, or all), checked to stay inside the mixture folder.

    The containment check matters for `push` and `view`: a hand-edited manifest must not make
    medmix upload or serve a file from elsewhere on the disk.
    """
    root = Path(root)
    where = root / MANIFEST
    entries = manifest.get("shards")
    if not isinstance(entries, list) or not entries:
        raise MedmixError(f"{where}: 'shards' must be a non-empty list")
    base = root.resolve()
    out: list[Shard] = []
    seen: set[str] = set()
    for n, entry in enumerate(entries):
        rel = entry.get("path") if isinstance(entry, dict) else None
        if not isinstance(rel, str) or not rel:
            raise MedmixError(f"{where}: shards[{n}] has no 'path'")
        parsed = parse_shard_name(rel)
        entry_split = entry.get("split", parsed.split if parsed else None)
        if entry_split is not None:
            seen.add(entry_split)
        if split is not None and entry_split is not None and entry_split != split:
            continue
        target = (base / rel).resolve()
        if Path(rel).is_absolute() or not target.is_relative_to(base) or target == base:
            raise MedmixError(f"{where}: shards[{n}].path {rel!r} points outside the mixture folder")
        rows = entry.get("rows")
        if rows is not None and (isinstance(rows, bool) or not isinstance(rows, int) or rows < 0):
            raise MedmixError(f"{where}: shards[{n}].rows must be a non-negative integer")
        if must_exist and not target.is_file():
            raise MedmixError(f"{target}: shard listed in the manifest is missing; rebuild the mixture")
        out.append(Shard(root / rel, rel, rows, entry.get("sha256"), entry_split))
    if not out:
        raise MedmixError(f"{where}: no shards for split {split!r}; found {sorted(seen)}")
    return out


def shard_files(root: str | os.PathLike[str], manifest: dict[str, Any]) -> list[Path]:
    """Every shard file of a built mixture, in manifest order, each checked to exist."""
    return [s.path for s in manifest_shards(root, manifest)]


def mixture_files(path: str | os.PathLike[str], split: str = DEFAULT_SPLIT) -> list[tuple[Path, int | None]]:
    """The Parquet shards of one split of a mixture folder, with their manifest row counts.

    The manifest is authoritative when present (its order is the shard order every seed is
    defined on). Without one, a folder of `data/*.parquet` (or `*.parquet`) works, so a
    per-source cache folder can be fed to the loader too; files named like
    `<split>-00000-of-00004.parquet` are filtered by split.
    """
    root = Path(path)
    if not root.is_dir():
        raise MedmixError(f"{root}: not a mixture folder (no such directory)")
    if (root / MANIFEST).is_file():
        manifest = read_manifest(root, required=("shards",))
        return [(s.path, s.rows) for s in manifest_shards(root, manifest, split, must_exist=False)]
    files = sorted((root / DATA_DIR).glob("*.parquet")) or sorted(root.glob("*.parquet"))
    if not files:
        raise MedmixError(f"{root}: no {MANIFEST} and no {DATA_DIR}/*.parquet or *.parquet files")
    named = {f: parsed.split for f in files if (parsed := parse_shard_name(f.name))}
    if named:
        chosen = [f for f in files if named.get(f) == split]
        if not chosen:
            raise MedmixError(f"{root}: no shards for split {split!r}; found {sorted(set(named.values()))}")
        files = chosen
    return [(f, None) for f in files]


def iter_batches(files: Sequence[Path], columns: Sequence[str], batch_rows: int = 8192) -> Iterator[pa.RecordBatch]:
    """Record batches of `columns` from each shard in turn; unreadable files and missing columns are named."""
    for path in files:
        try:
            pf = pq.ParquetFile(path)
        except (pa.ArrowException, OSError) as exc:
            raise MedmixError(f"{path}: not a readable Parquet file ({exc})") from None
        have = set(pf.schema_arrow.names)
        absent = [c for c in columns if c not in have]
        if absent:
            raise MedmixError(f"{path}: no column(s) {absent}; not a medmix shard (schema mismatch)")
        try:
            yield from pf.iter_batches(batch_size=batch_rows, columns=list(columns))
        except (pa.ArrowException, OSError) as exc:
            raise MedmixError(f"{path}: corrupt Parquet data ({exc})") from None
