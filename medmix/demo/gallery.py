"""Held-out examples for the demo: rows of a mixture's evaluation splits, never its training rows.

Where they come from: the manifest's `evaluation_only` sources (`vqa_rad@eval` ...), which are the
splits the build decontaminated the training rows against (`decontaminate.against`). Their rows
are read by the source's own adapter, through `medmix.evaluation.eval_data.iter_records`, the reader
`medmix eval vqa` scores, so a gallery row is exactly an eval question with its reference answer.
Files come from the recipe's local folder (`from:`, `package:` for the demo), a `--from` folder,
or the download cache; nothing is downloaded when a local folder is known.

Each example keeps the raw upstream image bytes (the demo then normalizes them as eval does), except
a DICOM, which is kept as its normalized PNG so no header ever reaches the browser.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from medmix.core.errors import MedmixError, RowError
from medmix.core.layout import read_manifest

GALLERY_SIZE = 12
RASTER_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp", ".gif")


@dataclass(frozen=True)
class Example:
    source: str
    split: str
    id: str
    task: str
    question: str
    answer: str
    options: tuple[str, ...]
    image: bytes  # upstream bytes (a normalized PNG for DICOM)
    suffix: str  # ".png", ".jpg", ... for the file handed to the page

    def row(self) -> dict[str, Any]:
        return {"task": self.task, "question": self.question, "options": list(self.options) or None, "context": None}


def _from_dir(manifest: Mapping[str, Any], adapter: str, from_dirs: Mapping[str, Path]) -> Path | None:
    if adapter in from_dirs:
        return Path(from_dirs[adapter])
    for src in (manifest.get("recipe") or {}).get("sources", []):
        value = src.get("from_dir")
        if src.get("adapter") == adapter and value:
            if value.startswith("package:"):
                return Path(str(resources.files("medmix") / value[len("package:"):]))
            return Path(value).expanduser()
    return None


def held_out(mixture: str | Path, *, cache: Path = Path(".medmix-cache"), from_dirs: Mapping[str, Path] | None = None,
             limit: int = GALLERY_SIZE, log: Any = print) -> list[Example]:
    """Up to `limit` image questions from the mixture's evaluation splits, in adapter order."""
    from medmix.evaluation.eval_data import fetch_split_files, iter_records
    from medmix.imaging.canonical import normalize_image
    from medmix.sources import get_source
    from medmix.sources.base import Bad

    manifest = read_manifest(mixture)
    evals = [(name, e) for name, e in manifest.get("sources", {}).items() if e.get("evaluation_only")]
    if not evals:
        raise MedmixError(f"{mixture}/manifest.json names no evaluation split (decontaminate.against in the recipe); "
                          f"the gallery shows only held-out rows, so there is nothing to show")
    out: list[Example] = []
    per_source = max(1, -(-limit // len(evals)))
    for name, entry in evals:
        adapter = entry.get("adapter") or name.split("@")[0]
        try:
            source = get_source(adapter)()
        except MedmixError as exc:
            log(f"gallery: skipping {name}: {exc}")
            continue
        from_dir = _from_dir(manifest, adapter, from_dirs or {})
        taken = 0
        for split in entry.get("splits", []):
            if split not in source.eval_splits:
                continue  # only splits the adapter itself declares held out
            try:
                files = fetch_split_files(source, (split,), cache_dir=cache, from_dir=from_dir)
                records = iter_records(source, split, files)
                for rec in records:
                    if taken >= per_source or len(out) >= limit:
                        break
                    if isinstance(rec, Bad) or rec.image is None or not rec.question or rec.answer is None:
                        continue
                    data = rec.image.read_bytes() if isinstance(rec.image, Path) else bytes(rec.image)
                    image_name = rec.image_name or rec.native_id
                    try:
                        normalized = normalize_image(data, name=image_name)
                    except RowError:
                        continue
                    suffix = Path(image_name).suffix.lower()
                    if data[128:132] == b"DICM" or suffix not in RASTER_SUFFIXES:
                        data, suffix = _png(normalized.data), ".png"
                    out.append(Example(name.split("@")[0], split, rec.native_id, rec.task or "vqa", rec.question,
                                       rec.answer, tuple(rec.options or ()), data, suffix))
                    taken += 1
            except MedmixError as exc:
                log(f"gallery: skipping {name} {split}: {exc}")
    return out


def _png(data: bytes) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.open(io.BytesIO(data)).save(buf, format="PNG")
    return buf.getvalue()
