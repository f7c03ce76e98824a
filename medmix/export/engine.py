"""The streaming, sharding, parallel core every export format shares.

How an export runs, and why it is deterministic whatever `--workers`:

1. Plan. The mixture's shards of one split (medmix.core.layout, the manifest's order) are cut into
   units of one Parquet row group each (256 rows, `medmix.core.writer.ROW_GROUP_ROWS`), numbered by
   their global row index. One pass over the small columns (`medmix.publish.stats.scan_shards`, no image
   bytes) gives the per-(source, license) counts the redistribution check and the card need.
2. Encode. Each unit becomes one byte string per row: a tar sample, a JSON line, an MDS sample.
   A sample's bytes depend only on its row and its global index, never on where it lands in a
   file, so units can be encoded anywhere, in any order. `--workers N` encodes them in N
   processes; the parent takes results back in unit order, with at most 2N units in flight.
3. Cut and write (the parent, alone). Samples are appended to the current output shard in the
   mixture's global order; a shard closes when the next sample would pass `--shard-size` (rows,
   or bytes of the finished file: each format states its exact per-shard and per-sample
   overhead, and the written size is checked against it). Same rows, same cut points, same bytes.

Memory: the units in flight plus, for MDS only (its header lists every sample's offset before the
samples), one output shard; tar and JSON shards are streamed to disk.

Atomicity: everything is written under `.<OUT>.medmix-export-tmp-<pid>` beside OUT and renamed to
OUT in one step at the end, so OUT either does not exist or holds a complete export. A killed
export leaves only that temporary folder, which the next run removes (its process is gone) before
starting over. Files inside are not fsynced one by one (a 3.35M-row export writes ~1M images; an
fsync each would dominate the run): the rename is atomic for readers, not proof against power loss.

Provenance: every row carries its source, native id (the row id without the `<source>/` prefix,
and without the `#n` repeat suffix of sources the recipe repeats), license, adapter and the upstream
revision(s) the manifest pinned for its source.
"""

from __future__ import annotations

import hashlib
import json
import json.encoder as _json_encoder
import os
import re
import shutil
from collections import Counter, deque
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from medmix import __version__
from medmix.core.errors import MedmixError
from medmix.core.layout import DEFAULT_SPLIT, MANIFEST, Shard, manifest_sha256, manifest_shards, read_manifest
from medmix.core.schema import COLUMNS
from medmix.core.writer import atomic_write_json, pid_alive
from medmix.export.conversation import Templates

INDEX = "export.json"
CARD = "README.md"
TMP_TAG = ".medmix-export-tmp-"
IMAGES = "images"
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b)?\s*$", re.IGNORECASE)
_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
_REPEAT = re.compile(r"#\d+$")

Log = Callable[[str], None]
Progress = Callable[[int, int], None]


# -- shard size ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ShardSize:
    """At most `rows` samples, or at most `bytes` bytes per output file; neither: one file."""

    rows: int | None = None
    bytes: int | None = None

    def describe(self) -> str:
        return f"{self.rows} rows" if self.rows else f"{self.bytes} bytes" if self.bytes else "one file"


def parse_shard_size(text: str | int | None) -> ShardSize:
    """`1000` → 1000 rows; `512MB` → 512·10⁶ bytes, `64MiB` → 64·2²⁰ bytes; `0` → no cut."""
    if text is None:
        return ShardSize()
    if isinstance(text, int):
        text = str(text)
    m = _SIZE.match(text)
    if not m:
        raise MedmixError(f"--shard-size {text!r}: give a row count (1000) or a size with a unit (512MB, 64MiB)")
    number, unit = m.group(1), (m.group(2) or "").lower()
    if not unit:
        if "." in number:
            raise MedmixError(f"--shard-size {text!r}: a row count is a whole number")
        return ShardSize(rows=int(number) or None)
    size = int(float(number) * _UNITS[unit])
    if size <= 0:
        raise MedmixError(f"--shard-size {text!r}: must be positive")
    return ShardSize(bytes=size)


# -- what a worker needs ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Unit:
    """One row group of one mixture shard; `start` is the global index of its first row."""

    file: int
    group: int
    start: int
    rows: int


@dataclass(frozen=True)
class Context:
    """Everything encoding needs, handed to each worker process once."""

    format: str
    files: tuple[str, ...]
    provenance: Mapping[str, Mapping[str, Any]]  # source → {"adapter", "upstream_revision", "repeats"}
    templates: Templates
    staging: str  # the temporary export folder (the JSON formats write images into it)


@dataclass
class Sample:
    """One row, ready for a format: its key, its image (as stored), provenance and conversation."""

    index: int
    key: str
    row: dict[str, Any]          # the mixture row (image bytes in `image`)
    native_id: str
    adapter: str | None
    upstream_revision: str | None
    image: bytes | None
    image_ext: str | None
    image_sha256: str | None
    human: str
    gpt: str

    def record(self) -> dict[str, Any]:
        """Provenance + every row field but the image bytes: what WebDataset's `.json` and MDS's `record` hold."""
        r = self.row
        return {
            "id": r["id"], "source": r["source"], "native_id": self.native_id, "license": r["license"],
            "upstream_revision": self.upstream_revision, "adapter": self.adapter, "split": r["split"],
            "domain": r["domain"], "modality": r["modality"], "task": r["task"], "question": r["question"],
            "options": r["options"], "answer": r["answer"], "context": r["context"], "meta": r["meta"],
            "image_sha256": self.image_sha256, "image_hash": r["image_hash"], "image_phash": r["image_phash"],
            "width": r["width"], "height": r["height"],
        }

    def conversation(self) -> list[dict[str, str]]:
        return [{"from": "human", "value": self.human}, {"from": "gpt", "value": self.gpt}]


def image_ext(data: bytes) -> str:
    """The file extension of an encoded image, from its magic bytes (nothing is decoded)."""
    if data[:3] == b"\xff\xd8\xff":
        return "jpg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:4] in (b"GIF8",):
        return "gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    if data[:2] == b"BM":
        return "bmp"
    return "bin"


def native_id(row_id: str, source: str, repeats: bool) -> str:
    nid = row_id[len(source) + 1:] if row_id.startswith(source + "/") else row_id
    return _REPEAT.sub("", nid) if repeats else nid


def image_bytes(row: dict[str, Any]) -> bytes | None:
    image = row.get("image")
    return (image.get("bytes") or None) if image else None


def make_sample(row: dict[str, Any], index: int, ctx: Context, sha: str | None = None) -> Sample:
    """`sha`: the image's sha256 when the caller already has it (encode_unit hashes a unit's images first)."""
    data = image_bytes(row)
    source = row["source"]
    prov = ctx.provenance.get(source) or {}
    human, gpt = ctx.templates.turns(row, has_image=data is not None)
    return Sample(index, f"{index:09d}", row, native_id(row["id"], source, bool(prov.get("repeats"))),
                  prov.get("adapter"), prov.get("upstream_revision"), data,
                  image_ext(data) if data else None, sha or (hashlib.sha256(data).hexdigest() if data else None),
                  human, gpt)


# one encoder: json.dumps with options builds a new JSONEncoder per call (~5 µs a row)
_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
# ... and JSONEncoder.encode still builds a new C encoder (c_make_encoder) on every call. Built once
# here, with the very arguments JSONEncoder.encode passes it (no circular-reference markers: records
# are trees made by the formats). Same bytes; tests/export compare it with json.dumps.
_C_ENCODE = (None if _json_encoder.c_make_encoder is None else
             _json_encoder.c_make_encoder(None, _JSON.default, _json_encoder.encode_basestring, None, ":", ",",
                                          False, False, True))


def dumps(obj: Any) -> bytes:
    """The one JSON spelling of every export (compact, UTF-8, key order as built): same rows, same bytes."""
    if _C_ENCODE is not None and isinstance(obj, dict):
        return "".join(_C_ENCODE(obj, 0)).encode("utf-8")
    return _JSON.encode(obj).encode("utf-8")


# -- formats -------------------------------------------------------------------------------------
class ShardWriter:
    """Streams samples into one output file: header, samples joined by `sep`, footer.

    File size = per_shard + Σ (len(sample) + per_sample), the figure byte-size shards are cut on.
    """

    header = b""
    sep = b""
    footer = b""

    @classmethod
    def per_sample(cls) -> int:
        return len(cls.sep)

    @classmethod
    def per_shard(cls) -> int:
        return len(cls.header) + len(cls.footer) - len(cls.sep)

    def __init__(self, path: Path) -> None:
        self.path = path
        self.file = open(path, "wb")  # noqa: SIM115 - closed in finish()/abort()
        self.hash = hashlib.sha256()
        self.rows = 0
        self._put(self.header)

    def _put(self, data: bytes) -> None:
        self.file.write(data)
        self.hash.update(data)

    def add(self, blob: bytes) -> None:
        if self.rows:
            self._put(self.sep)
        self._put(blob)
        self.rows += 1

    def add_many(self, blobs: list[bytes]) -> None:
        """`add` of each blob, in one write and one hash update (a unit that falls inside one shard)."""
        if type(self).add is not ShardWriter.add:  # a writer with its own layout (MDS) adds one by one
            for blob in blobs:
                self.add(blob)
        elif blobs:
            self._put((self.sep if self.rows else b"") + self.sep.join(blobs))
            self.rows += len(blobs)

    def finish(self) -> tuple[int, str]:
        """Close the file; (bytes, sha256)."""
        self._put(self.footer)
        size = self.file.tell()
        self.file.close()
        return size, self.hash.hexdigest()

    def abort(self) -> None:
        self.file.close()


class Format:
    """One export format: how a row is encoded and how a shard file is laid out."""

    name = "?"
    ext = "?"
    default_shard = ShardSize()
    writes_images = False  # True: images are files under images/, written by the encoder
    columns: tuple[str, ...] = COLUMNS  # the mixture columns its samples read
    writer: type[ShardWriter] = ShardWriter

    def writer_for(self, size: ShardSize) -> type[ShardWriter]:
        return self.writer

    def encode(self, sample: Sample, ctx: Context) -> bytes:
        raise NotImplementedError

    def shard_name(self, split: str, index: int) -> str:
        return f"{split}-{index:05d}.{self.ext}"

    def finish(self, staging: Path, shards: list[dict[str, Any]], size: ShardSize) -> None:
        """Format-level files written after the shards (MDS: index.json)."""

    def usage(self, index: Mapping[str, Any]) -> str:
        raise NotImplementedError


def image_relpath(sha: str, ext: str) -> str:
    """`images/<sha256>.<ext>`: one flat folder. ext4 indexes large folders (htree), and measured here,
    creating 4,000 files under 256 two-hex-digit subfolders took 0.37-0.89 s against 0.21-0.30 s in one
    folder: random names dirty a block of a different folder each time."""
    return f"{IMAGES}/{sha}.{ext}"


def write_image(staging: str, sha: str, ext: str, data: bytes) -> str:
    """Write an image once under its content address; a second row with the same bytes finds it there."""
    rel = image_relpath(sha, ext)
    try:
        # exclusive create: the first row (or parallel worker) with these bytes writes them, the others find
        # the file; no stat first, since most images are written once
        with open(os.path.join(staging, rel), "xb") as f:
            f.write(data)
    except FileExistsError:
        pass
    return rel


# -- the worker side -----------------------------------------------------------------------------
_CTX: Context | None = None
_FILES: dict[int, pq.ParquetFile] = {}
# Image files are created on a few threads of the encoding process. Creating a file is a syscall that
# releases the GIL and, on a busy ext4 disk, takes 0.1-2 ms (measured here: 6,055 opens took 12.5 s
# of a 26 s single-threaded 20k-row LLaVA export), so the rows' Python work (templates, JSON, sha256)
# overlaps it. Each unit waits for its own images before it returns: at most one unit's images are
# held, and an export never commits before every image is on disk.
IMAGE_THREADS = 4
# Writes are handed to the threads IMAGE_BATCH at a time: one future per image cost ~80 µs of the
# encoding thread's time each (submit, the queue, the lock, the result; cProfile of a 200k-row export:
# 9.5 s of 54 s for 60k images), more than the Python work of the row itself.
IMAGE_BATCH = 16
_IO: ThreadPoolExecutor | None = None
_PENDING: list[Future[None]] = []
_BATCH: list[tuple[str, str, str, bytes]] = []


def _init(ctx: Context) -> None:
    global _CTX, _IO
    _CTX = ctx
    _IO = None  # a forked worker must not use the parent's pool: its threads did not come along
    _PENDING.clear()
    _BATCH.clear()
    _FILES.clear()


def write_images(batch: list[tuple[str, str, str, bytes]]) -> None:
    for staging, sha, ext, data in batch:
        write_image(staging, sha, ext, data)


def _flush() -> None:
    global _IO
    if not _BATCH:
        return
    if _IO is None:
        _IO = ThreadPoolExecutor(IMAGE_THREADS, thread_name_prefix="medmix-export-io")
    _PENDING.append(_IO.submit(write_images, _BATCH[:]))
    _BATCH.clear()


def queue_image(staging: str, sha: str, ext: str, data: bytes) -> str:
    """`write_image` on the encoding process's I/O threads; returns the relative path at once."""
    _BATCH.append((staging, sha, ext, data))
    if len(_BATCH) >= IMAGE_BATCH:
        _flush()
    return image_relpath(sha, ext)


def _drain(raise_errors: bool = True) -> None:
    """Wait for every queued image write; the first failure is raised (after all have finished)."""
    if raise_errors:
        _flush()
    else:
        _BATCH.clear()
    pending = _PENDING[:]
    _PENDING.clear()
    errors = [f.exception() for f in pending]
    first = next((e for e in errors if e is not None), None)
    if first is not None and raise_errors:
        raise first


def _close_io() -> None:
    global _IO
    _drain(raise_errors=False)
    if _IO is not None:
        _IO.shutdown(wait=True)
        _IO = None


def encode_unit(unit: Unit) -> list[bytes]:
    """The encoded samples of one row group, in row order."""
    from medmix.export import FORMATS

    ctx = _CTX
    assert ctx is not None
    pf = _FILES.get(unit.file)
    if pf is None:
        _FILES.clear()  # units arrive file by file: keep one footer open
        path = ctx.files[unit.file]
        try:
            pf = _FILES[unit.file] = pq.ParquetFile(path)
        except Exception as exc:  # pyarrow raises ArrowInvalid / OSError for unreadable files
            raise MedmixError(f"{path}: not a readable Parquet file ({exc})") from None
    fmt = FORMATS[ctx.format]
    try:
        rows = pf.read_row_group(unit.group, columns=list(fmt.columns), use_threads=False).to_pylist()
    except Exception as exc:
        raise MedmixError(f"{ctx.files[unit.file]}: row group {unit.group} is unreadable ({exc})") from None
    # Hash the unit's images before any of its image writes is queued: hashlib lets go of the GIL on
    # large buffers, and taking it back from busy I/O threads cost up to a switch interval (5 ms) each
    # time (measured: 450 µs per 15 KB image while writes ran, against ~10 µs alone).
    shas = [hashlib.sha256(data).hexdigest() if (data := image_bytes(row)) else None for row in rows]
    try:
        blobs = [fmt.encode(make_sample(row, unit.start + i, ctx, sha), ctx)
                 for i, (row, sha) in enumerate(zip(rows, shas))]
    except BaseException:
        _drain(raise_errors=False)
        raise
    _drain()
    return blobs


def _encoded(units: list[Unit], ctx: Context, workers: int) -> Iterator[list[bytes]]:
    """Each unit's samples, in unit order; in this process for one worker, else a bounded pool."""
    if workers <= 1:
        _init(ctx)
        try:
            for unit in units:
                yield encode_unit(unit)
        finally:
            _FILES.clear()
            _close_io()
        return
    with ProcessPoolExecutor(workers, initializer=_init, initargs=(ctx,)) as pool:
        todo = iter(units)
        flight: deque[Future[list[bytes]]] = deque()
        try:
            for unit in todo:
                flight.append(pool.submit(encode_unit, unit))
                if len(flight) >= 2 * workers:
                    break
            while flight:
                done = flight.popleft().result()
                nxt = next(todo, None)
                if nxt is not None:
                    flight.append(pool.submit(encode_unit, nxt))
                yield done
        finally:
            for f in flight:
                f.cancel()


# -- the parent side -----------------------------------------------------------------------------
@dataclass
class ExportResult:
    out: Path
    index: dict[str, Any]
    forced: dict[str, int] = field(default_factory=dict)


def _provenance(manifest: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    out = {}
    for name, entry in manifest["sources"].items():
        revisions = sorted({u["revision"] for u in entry.get("upstream") or []
                            if isinstance(u, dict) and isinstance(u.get("revision"), str) and u["revision"]})
        epochs = (entry.get("counts") or {}).get("epochs", 1) or 1
        out[name] = {"adapter": entry.get("adapter", name), "upstream_revision": ",".join(revisions) or None,
                     "repeats": epochs > 1}
    return out


def _units(shards: list[Shard]) -> list[Unit]:
    units, start = [], 0
    for i, shard in enumerate(shards):
        try:
            meta = pq.ParquetFile(shard.path).metadata
        except Exception as exc:
            raise MedmixError(f"{shard.path}: not a readable Parquet file ({exc})") from None
        for g in range(meta.num_row_groups):
            n = meta.row_group(g).num_rows
            if n:
                units.append(Unit(i, g, start, n))
                start += n
    return units


def _staging(out: Path) -> Path:
    """A fresh temporary folder beside OUT, after removing those of export runs that were killed."""
    parent = out.parent
    parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{out.name}{TMP_TAG}"
    for old in parent.glob(f"{prefix}*"):
        pid = old.name[len(prefix):]
        if pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    tmp = parent / f"{prefix}{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    return tmp


def _check_out(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise MedmixError(f"{out}: exists and is not an empty folder; give a new folder for the export (it is "
                          f"written beside it and renamed into place when complete)")


def run(mixture: Path, out: Path, fmt: Format, *, split: str = DEFAULT_SPLIT, size: ShardSize | None = None,
        workers: int = 1, templates: Templates | None = None, template_sha256: str | None = None,
        allow_nonredistributable: bool = False, log: Log = print, progress: Progress | None = None) -> ExportResult:
    """Export one split of `mixture` into the folder `out` (see the module docstring)."""
    from medmix.export.readme import card_text
    from medmix.publish.hub import _describe, restrictions
    from medmix.publish.stats import manifest_figures, scan_shards

    mixture, out = Path(mixture), Path(out)
    if workers < 1:
        raise MedmixError(f"--workers {workers}: must be at least 1")
    size = fmt.default_shard if size is None else size
    manifest = read_manifest(mixture)
    shards = manifest_shards(mixture, manifest, split)
    _check_out(out)

    stats = scan_shards([s.path for s in shards])
    pairs: Counter[tuple[str, str]] = Counter({(s, lic): n for s, per in stats["rows"]["by_source_license"].items()
                                              for lic, n in per.items()})
    restricted = restrictions(manifest, pairs)
    forced: dict[str, int] = {}
    if restricted:
        total_r = sum(r.rows for r in restricted)
        if not allow_nonredistributable:
            names = ", ".join(sorted({r.source for r in restricted}))
            raise MedmixError(f"refusing to export {mixture}: {total_r:,} row(s) may not be redistributed "
                              f"(sources: {names}):\n{_describe(restricted)}\nAn export is often handed on; pass "
                              f"--allow-nonredistributable if you hold the rights to share them (the README says so), "
                              f"or rebuild the mixture without those sources.")
        for r in restricted:
            forced[r.source] = forced.get(r.source, 0) + r.rows
        log(f"WARNING: exporting {total_r:,} row(s) whose terms forbid redistribution, because "
            f"--allow-nonredistributable was given:\n{_describe(restricted)}\nYou are responsible for holding the "
            f"rights to share them; the export's README says so.")

    units = _units(shards)
    total = sum(u.rows for u in units)
    staging = _staging(out)
    try:
        if fmt.writes_images:
            (staging / IMAGES).mkdir()
        ctx = Context(fmt.name, tuple(str(s.path) for s in shards), _provenance(manifest),
                      templates or Templates(), str(staging))
        written = _write_shards(fmt, ctx, units, staging, split, size, workers, total, progress)
        images = 0
        if fmt.writes_images:
            images = sum(1 for _ in os.scandir(staging / IMAGES))
            if not images:
                (staging / IMAGES).rmdir()
        fmt.finish(staging, written, size)
        index = {
            "format": fmt.name, "split": split, "rows": total,
            "image_files": images if fmt.writes_images else None,
            "image_rows": stats["images"].get("rows", 0),
            "shard_size": {"rows": size.rows, "bytes": size.bytes},
            "templates": "trainer/prompts.py" if template_sha256 is None else f"user YAML sha256 {template_sha256}",
            "mixture": {"recipe": manifest["recipe"].get("name"), "recipe_sha256": manifest.get("recipe_sha256"),
                        "manifest_sha256": manifest_sha256(mixture)},
            "medmix_version": __version__,
            "nonredistributable_rows_included": forced,
            "shards": written,
        }
        atomic_write_json(staging / INDEX, index)
        shutil.copyfile(mixture / MANIFEST, staging / MANIFEST)
        stats["manifest"] = manifest_figures(manifest)
        (staging / CARD).write_text(card_text(fmt, index, manifest, manifest_sha256(mixture), stats, forced),
                                    encoding="utf-8")
        if out.exists():
            out.rmdir()  # checked empty above
        os.rename(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return ExportResult(out, index, forced)


def _write_shards(fmt: Format, ctx: Context, units: list[Unit], staging: Path, split: str, size: ShardSize,
                  workers: int, total: int, progress: Progress | None) -> list[dict[str, Any]]:
    wcls = fmt.writer_for(size)
    per_sample, per_shard = wcls.per_sample(), wcls.per_shard()
    written: list[dict[str, Any]] = []
    writer: ShardWriter | None = None
    current = 0  # bytes the open shard will have once finished
    done = 0

    def close() -> None:
        nonlocal writer
        assert writer is not None
        nbytes, digest = writer.finish()
        if nbytes != current:
            raise AssertionError(f"{writer.path}: wrote {nbytes} bytes, the size model says {current}")
        written.append({"path": writer.path.name, "rows": writer.rows, "bytes": nbytes, "sha256": digest})
        writer = None

    try:
        for blobs in _encoded(units, ctx, workers):
            whole = sum(map(len, blobs)) + per_sample * len(blobs)
            if (writer is not None and (not size.rows or writer.rows + len(blobs) <= size.rows)
                    and (not size.bytes or current + whole <= size.bytes)):
                # no cut inside this unit: one write instead of two per row (the same bytes)
                writer.add_many(blobs)
                current += whole
                blobs = []
            for blob in blobs:
                cost = len(blob) + per_sample
                if writer is not None and ((size.rows and writer.rows >= size.rows)
                                           or (size.bytes and current + cost > size.bytes)):
                    close()
                if writer is None:
                    writer = wcls(staging / fmt.shard_name(split, len(written)))
                    current = per_shard
                writer.add(blob)
                current += cost
            done += len(blobs)
            if progress:
                progress(done, total)
        if writer is not None:
            close()
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    return written
