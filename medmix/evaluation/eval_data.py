"""Evaluation data: fetched by the shared fetch code, read by the source's own adapter, decoded once.

Why through the adapter and not a separate loader: the benchmark rows evaluation scores are then
exactly the rows decontamination held out of pretraining (same ids, same splits, same reader).

Why an on-disk image store: every encoder of a run needs the same decoded, resized pixels, and
fine-tuning needs random access for shuffling. Decoding once into a uint8 memory-mapped array
(`images.u8`, N×S×S×3) keeps RAM bounded by a batch whatever the benchmark size, and a second run
with the same inputs reuses it (the folder name is a hash of everything that shapes its bytes).
A benchmark whose images are all smaller than the encoder's input (`native_size`: PCam's 96 px,
MedMNIST's 28) is stored at its own size and enlarged per batch (`Encoder.pixels`): PCam's
training split is then 7 GB on disk instead of 40 GB at 224 px, with the same pixels.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medmix.core.errors import MedmixError, RowError
from medmix.core.writer import publish_dir
from medmix.sources.base import Bad, Record, Source

STORE_VERSION = "1"
LOG_EVERY = 10_000


def fetch_split_files(source: Source, splits: tuple[str, ...], *, cache_dir: Path, from_dir: Path | None = None,
                      mirror: str | None = None, hf_endpoint: str | None = None) -> dict[str, Path]:
    """Local paths of the upstream files `splits` need (downloaded, verified, extracted as declared)."""
    from medmix.fetch.download import fetch_files

    return dict(fetch_files(source, splits, cache_dir=Path(cache_dir) / "downloads", from_dir=from_dir,
                            mirror=mirror, hf_endpoint=hf_endpoint).paths)


def iter_records(source: Source, split: str, files: Mapping[str, Path]) -> Iterator[Record | Bad]:
    """Every unit of one split, in unit order (the adapter's order, hence deterministic)."""
    if split not in source.splits:
        raise MedmixError(f"source {source.name!r} has no split {split!r}; it has {sorted(source.splits)}")
    for unit in source.units(split, files):
        yield from source.read(unit, files)


def decode_image(record: Record, *, draft_size: int | None = None) -> Any:
    """The record's image as a loaded PIL image; a RowError naming the file when it cannot be decoded.

    `draft_size` lets a large JPEG decode at a reduced DCT scale (still at least that size), which
    makes LC25000's 768-px tiles several times cheaper when the recipe wants 224 px.
    """
    from PIL import Image

    where = record.image_name or (record.image.name if isinstance(record.image, Path) else record.native_id)
    if record.image is None:
        raise RowError("row has no image", file=where)
    try:
        # Bytes, not a path, so a decoder's message never carries this machine's cache location.
        data = record.image.read_bytes() if isinstance(record.image, Path) else record.image
        img = Image.open(io.BytesIO(data))
        if draft_size and img.format == "JPEG":
            img.draft(None, (draft_size, draft_size))
        img.load()
    except FileNotFoundError:
        raise RowError("image file missing", file=where) from None
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise RowError(f"undecodable image: {exc}", file=where) from None
    return img


def square_pixels(img: Any, size: int) -> np.ndarray:
    """The fixed recipe's only geometric step: the whole image squashed to size×size, bicubic, RGB.

    No crop, ever: PCam's label lives in the centre 32 px and tissue tiles have no "subject" to
    centre on, so a crop would change what is being classified from one encoder to the next.
    """
    from PIL import Image

    img = img.convert("RGB")
    if img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(img, dtype=np.uint8)


def _keep_fraction(source: Source, split: str, max_rows: int | None) -> float:
    expected = source.splits.get(split)
    if max_rows is None or not expected or max_rows >= expected:
        return 1.0
    return max_rows / expected


def _hash_unit(seed: int, native_id: str) -> float:
    digest = hashlib.sha256(f"{seed}:{native_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _fingerprint(files: Mapping[str, Path]) -> list[Any]:
    """What identifies the inputs: each file's path, size and mtime; a folder's file names and sizes."""
    out: list[Any] = []
    for name in sorted(files):
        path = Path(files[name])
        if path.is_dir():
            digest = hashlib.sha256()
            for sub in sorted(p for p in path.rglob("*") if p.is_file()):
                digest.update(f"{sub.relative_to(path)}\0{sub.stat().st_size}\n".encode())
            out.append([name, str(path.resolve()), digest.hexdigest()])
        else:
            st = path.stat()
            out.append([name, str(path.resolve()), st.st_size, st.st_mtime_ns])
    return out


@dataclass
class ImageStore:
    """One benchmark split decoded at one resolution: images (memmap), labels, ids, skipped rows."""

    path: Path
    source: str
    split: str
    size: int
    labels: np.ndarray
    ids: list[str]
    skipped: list[dict[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def images(self) -> np.ndarray:
        if not len(self):
            return np.zeros((0, self.size, self.size, 3), dtype=np.uint8)
        return np.memmap(self.path / "images.u8", dtype=np.uint8, mode="r", shape=(len(self), self.size, self.size, 3))

    def batches(self, batch_size: int, order: np.ndarray | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(indices, uint8 images) batches; `order` (a permutation) for shuffled training passes."""
        images = self.images
        order = np.arange(len(self)) if order is None else order
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            # Sorted reads are sequential on disk; the batch is then put back in the requested order.
            sorted_idx = np.sort(idx)
            block = images[sorted_idx]
            yield idx, block[np.searchsorted(sorted_idx, idx)]

    @classmethod
    def load(cls, path: Path) -> ImageStore:
        meta = json.loads((path / "store.json").read_text())
        return cls(path, meta["source"], meta["split"], meta["size"], np.load(path / "labels.npy"),
                   meta["ids"], meta["skipped"])


def materialize(source: Source, split: str, files: Mapping[str, Path], *, size: int, cache_dir: Path,
                max_rows: int | None = None, seed: int = 0, log: Callable[[str], None] | None = None) -> ImageStore:
    """Decode a split once into an ImageStore under `cache_dir/eval/` (reused when inputs match).

    `max_rows` keeps about that many rows, chosen by a seeded hash of each row id against the
    split's declared size: order-independent, streaming, and the same rows for every encoder.
    Rows the adapter marks Bad or whose image does not decode are skipped and listed with reasons.
    `log` hears about progress every `LOG_EVERY` rows (PCam's training split takes minutes).
    The store's size is `size`, or the benchmark's `native_size` when that is smaller.
    """
    native = getattr(source, "native_size", None)
    size = min(size, native) if native else size
    key_doc = {"v": STORE_VERSION, "source": source.name, "adapter": source.version, "options": source.options,
               "split": split, "size": size, "max_rows": max_rows, "seed": seed, "files": _fingerprint(files)}
    key = hashlib.sha256(json.dumps(key_doc, sort_keys=True, default=str).encode()).hexdigest()[:24]
    final = Path(cache_dir) / "eval" / f"{source.name}-{split}-{size}px-{key}"
    if (final / "store.json").is_file():
        return ImageStore.load(final)
    tmp = final.with_name(f"{final.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    keep = _keep_fraction(source, split, max_rows)
    labels: list[int] = []
    ids: list[str] = []
    skipped: list[dict[str, str]] = []
    try:
        with open(tmp / "images.u8", "wb") as out:
            for item in iter_records(source, split, files):
                if keep < 1.0 and _hash_unit(seed, item.native_id or "") >= keep:
                    continue
                if isinstance(item, Bad):
                    skipped.append({"id": str(item.native_id), "file": str(item.file), "reason": item.reason})
                    continue
                try:
                    pixels = square_pixels(decode_image(item, draft_size=size), size)
                except RowError as err:
                    skipped.append({"id": item.native_id, "file": str(err.file), "reason": err.reason})
                    continue
                out.write(pixels.tobytes())
                labels.append(int((item.meta or {})["label"]))
                ids.append(item.native_id)
                if log is not None and len(ids) % LOG_EVERY == 0:
                    log(f"{source.name} {split}: {len(ids)} images decoded")
        np.save(tmp / "labels.npy", np.asarray(labels, dtype=np.int64))
        (tmp / "store.json").write_text(json.dumps({"source": source.name, "split": split, "size": size, "ids": ids,
                                                    "skipped": skipped, "key": key_doc}, default=str))
        publish_dir(tmp, final)  # or another process finished first; its bytes are the same
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    store = ImageStore.load(final)
    if not len(store):
        raise MedmixError(f"benchmark {source.name!r} split {split!r} has no usable rows "
                          f"({len(store.skipped)} skipped; first: {store.skipped[:1]})")
    return store
