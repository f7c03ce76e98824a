"""ARCH: pathology figures with captions from textbooks (books_set) and PubMed articles (pubmed_set).

Layout (Warwick TIA download links; each zip also carries macOS `__MACOSX/` junk):
    books_set/captions.json   {"0": {"figure_id": "00", "letter": "A", "caption": ..., "uuid": ...}, ...}
    books_set/images/<uuid>.png
    pubmed_set/captions.json  {"0": {"caption": ..., "uuid": ...}, ...}
    pubmed_set/images/<uuid>.jpg or .png

ARCH is "multiple instance captioning": several images (a bag) share one caption. The schema
holds one image per row, so each image is a row carrying the full caption, and
`meta.caption_id` (the same for every row of a bag: a hash of the set and the caption text)
plus `meta.bag_size` let a trainer regroup bags or sample one image per caption. 35 books_set
captions point at images that are not in the zip; those rows are quarantined as missing images.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from medmix.core.errors import MedmixError
from medmix.sources.base import Bad, RealBytes, Record, Remote, Source, Unit

BASE_URL = "https://warwick.ac.uk/fac/cross_fac/tia/data/arch"
SETS = {"books": "books_set", "pubmed": "pubmed_set"}
_UUID = re.compile(r"^[A-Za-z0-9_.-]+$")


def _set_dir(root: Path, folder: str) -> Path:
    """The set folder inside the extracted zip (`books_set/`), or the root if the zip had no top folder."""
    return root / folder if (root / folder / "captions.json").is_file() else root


def caption_id(set_name: str, caption: str) -> str:
    """Stable id of a caption within a set: rows that share it form one ARCH bag."""
    return f"{set_name}:" + hashlib.sha256(caption.encode("utf-8")).hexdigest()[:16]


class ARCH(Source):
    name = "arch"
    title = "ARCH: multiple instance captioning of histopathology figures (textbooks and PubMed)"
    homepage = "https://warwick.ac.uk/fac/cross_fac/tia/data/arch"
    citation = """
@inproceedings{gamper2021multiple,
  title={Multiple Instance Captioning: Learning Representations from Histopathology Textbooks and Articles},
  author={Gamper, Jevgenij and Rajpoot, Nasir},
  booktitle={Proceedings of the IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},
  pages={16549--16559},
  year={2021}
}"""
    license = "CC-BY-NC-SA-4.0"
    domain = "pathology"
    modality = "histopathology"
    tasks = ("caption",)
    # 4,267 books_set + 3,309 pubmed_set rows (the download, not the paper's 15,164): of the 4,270 books
    # images, 3 have an empty caption (rows '1632', '1946', '2016') and are quarantined, measured on the
    # real captions.json files (see `real_bytes`).
    splits = {"train": 7_576}
    files = (
        Remote("books_set.zip", url=f"{BASE_URL}/books_set.zip", extract=True),
        Remote("pubmed_set.zip", url=f"{BASE_URL}/pubmed_set.zip", extract=True),
    )
    notes = ("Research use only, CC BY-NC-SA 4.0. One row per image; images of one bag share meta.caption_id. "
             "books_set figures come from pathology textbooks and may overlap PathVQA (its test split is an "
             "evaluation set): decontaminate by perceptual hash.")
    version = "1"
    # The two captions.json files as downloaded, committed by a study that trained on ARCH; its
    # annotations/captions_all.json lists the 7,579 image files that exist (4,270 .png / 3,309 mixed).
    real_bytes = (RealBytes("GeorgeBatch/arch-pre-training", "9fc5d0427b4e9819c5f0d300b72dff359e07a8f1",
                            ("datasets/ARCH/books_set/captions.json", "datasets/ARCH/pubmed_set/captions.json",
                             "datasets/ARCH/annotations/captions_all.json")),)

    def units(self, split: str, files: Mapping[str, Path]) -> list[Unit]:
        return [Unit(self.name, split, part=set_name, args={"set": set_name}) for set_name in SETS]

    def read(self, unit: Unit, files: Mapping[str, Path]) -> Iterator[Record | Bad]:
        set_name = str(unit.args["set"])
        folder = SETS[set_name]
        base = _set_dir(Path(files[f"{folder}.zip"]), folder)
        captions_path = base / "captions.json"
        try:
            data = json.loads(captions_path.read_bytes())
        except FileNotFoundError:
            raise MedmixError(f"{folder}.zip has no {folder}/captions.json; is this the ARCH download?") from None
        except (UnicodeDecodeError, ValueError) as exc:
            raise MedmixError(f"{folder}/captions.json is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise MedmixError(f"{folder}/captions.json: expected an object keyed by row number")
        entries = sorted(data.items(), key=lambda kv: (len(kv[0]), kv[0]))
        good = [e for _, e in entries if isinstance(e, dict) and isinstance(e.get("caption"), str)]
        bag_sizes = Counter(e["caption"].strip() for e in good)
        images = {p.name: p for p in (base / "images").glob("*") if p.is_file()} if (base / "images").is_dir() else {}
        for key, entry in entries:
            yield self._record(set_name, folder, key, entry, images, bag_sizes)

    def _record(self, set_name: str, folder: str, key: str, entry: Any, images: dict[str, Path],
                bag_sizes: Counter) -> Record | Bad:
        where = f"{folder}/captions.json[{key!r}]"
        if not isinstance(entry, dict):
            return Bad(f"{set_name}/row{key}", "malformed entry: not an object", file=where)
        uuid, caption = entry.get("uuid"), entry.get("caption")
        if not isinstance(uuid, str) or not _UUID.match(uuid):
            return Bad(f"{set_name}/row{key}", f"missing or unsafe field: uuid ({uuid!r})", file=where)
        native = f"{set_name}/{uuid}"
        if not isinstance(caption, str) or not caption.strip():
            return Bad(native, "missing field: caption", file=where)
        caption = caption.strip()
        path = next((images[f"{uuid}{ext}"] for ext in (".png", ".jpg", ".jpeg") if f"{uuid}{ext}" in images), None)
        if path is None:
            return Bad(native, f"image file missing: {uuid}.png/.jpg", file=f"{folder}/images/{uuid}")
        meta: dict[str, Any] = {"set": folder, "caption_id": caption_id(set_name, caption),
                                "bag_size": bag_sizes[caption], "row": key}
        if "figure_id" in entry:
            meta["figure_id"] = entry.get("figure_id")
        if "letter" in entry:
            meta["letter"] = entry.get("letter")
        return Record(native_id=native, answer=caption, image=path, image_name=path.name, meta=meta)
