"""SLAKE: bilingual (English/Chinese) radiology VQA with semantic labels, from `BoKelvin/SLAKE`.

Upstream is three JSON arrays (`train.json`, `validation.json`, `test.json`; the validation
file was called `validate.json` before commit b2eb8c5, and older tooling still expects that
name) plus `imgs.zip`, which unpacks to `imgs/xmlab<N>/source.jpg` (with masks and detection
files beside each image). Many questions share one image.

Only English questions are kept by default (`languages: [en]`), because the OpenMedQ decoder is
an English LLaMA; `languages: [en, zh]` keeps the Chinese half too.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from medmix.core.errors import MedmixError
from medmix.sources._common import image_root, resolve_image
from medmix.sources.base import Bad, RealBytes, Record, Remote, Source, Unit

_REPO = "BoKelvin/SLAKE"
# main at the time of writing (tree listing huggingface.co/datasets/BoKelvin/SLAKE/tree/a9083ce...).
_REVISION = "a9083ce6c34ac3ffb17671a605962924d8a8f9e9"
_SPLIT_FILES = {"train": "train.json", "validation": "validation.json", "test": "test.json"}
_IMAGES = "imgs.zip"
_LANGUAGES = frozenset({"en", "zh"})
_META_KEYS = ("img_id", "img_name", "q_lang", "answer_type", "content_type", "location", "base_type", "triple")


class Slake(Source):
    name = "slake"
    title = "SLAKE"
    homepage = "https://www.med-vqa.com/slake/"
    citation = """
@inproceedings{liu2021slake,
  title     = {SLAKE: A Semantically-Labeled Knowledge-Enhanced Dataset for Medical Visual Question Answering},
  author    = {Liu, Bo and Zhan, Li-Ming and Xu, Li and Ma, Lin and Yang, Yan and Wu, Xiao-Ming},
  booktitle = {2021 IEEE 18th International Symposium on Biomedical Imaging (ISBI)},
  pages     = {1650--1654},
  year      = {2021},
  doi       = {10.1109/ISBI48211.2021.9434010}
}
"""
    license = "CC-BY-4.0"
    domain = "radiology"
    modality = None  # per row: CT, MRI or X-Ray
    tasks = ("vqa",)
    # English questions per split (the default filter); with Chinese kept the counts roughly double.
    splits = {"train": 4919, "validation": 1053, "test": 1061}
    # SLAKE's test split is a standard Med-VQA benchmark (PMC-VQA, LLaVA-Med and others report it).
    eval_splits = frozenset({"test"})
    files = (
        *(Remote(name=f, hf_repo=_REPO, hf_path=f, revision=_REVISION, splits=(s,)) for s, f in _SPLIT_FILES.items()),
        Remote(name=_IMAGES, hf_repo=_REPO, hf_path=_IMAGES, revision=_REVISION, extract=True),
    )
    notes = "English-only by default (option `languages`); images come from public segmentation/classification sets."
    # The JSON files as released (before the Hub copy renamed validate.json), committed by the PMC-VQA authors.
    real_bytes = (RealBytes("xiaoman-zhang/PMC-VQA", "97358cdbc05fdd6bf3483083511b7d0985c52360",
                            ("Slake1.0/train.json", "Slake1.0/validate.json", "Slake1.0/test.json"),
                            note="full files: 9,835 / 2,099 / 2,094 questions, English 4,919 / 1,053 / 1,061"),)

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        langs = self.options.get("languages", ["en"])
        if isinstance(langs, str):
            langs = [langs]
        unknown = set(langs) - _LANGUAGES
        if not langs or unknown:
            raise MedmixError(f"source 'slake': option languages={list(langs)!r} is not valid; "
                              f"use a non-empty list drawn from {sorted(_LANGUAGES)}")
        self.languages = frozenset(langs)

    @classmethod
    def option_names(cls) -> tuple[str, ...]:
        return ("languages",)

    def read(self, unit: Unit, files: Mapping[str, Path]) -> Iterator[Record | Bad]:
        name = _SPLIT_FILES[unit.split]
        path = Path(files[name])
        try:
            rows = json.loads(path.read_bytes().decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise MedmixError(f"{name}: not a readable JSON file ({exc})") from None
        if not isinstance(rows, list):
            raise MedmixError(f"{name}: expected a JSON array of questions, found {type(rows).__name__}")
        root = image_root(Path(files[_IMAGES]))
        for index, row in enumerate(rows):
            yield from self._record(unit.split, name, index, row, root)

    def _record(self, split: str, name: str, index: int, row: Any, root: Path) -> Iterator[Record | Bad]:
        if not isinstance(row, dict):
            yield Bad(f"{split}-row{index}", f"entry {index} is not a JSON object", file=name)
            return
        qid = row.get("qid")
        native_id = f"{split}-{qid}" if qid is not None else f"{split}-row{index}"
        missing = [k for k in ("qid", "img_name", "question", "answer", "q_lang")
                   if row.get(k) is None or (k != "answer" and not str(row[k]).strip())]
        if missing:
            yield Bad(native_id, f"missing field(s) {missing} in entry {index}", file=name)
            return
        if row["q_lang"] not in self.languages:
            return  # a filter, not a fault: the other language was not asked for
        image = resolve_image(root, str(row["img_name"]))
        if image is None:
            yield Bad(native_id, f"image file missing: {row['img_name']}", file=f"{_IMAGES}:{row['img_name']}")
            return
        yield Record(
            native_id=native_id,
            question=row["question"],
            answer=str(row["answer"]),
            image=image,
            image_name=str(row["img_name"]),
            task="vqa",
            modality=row.get("modality") or None,
            meta={k: row[k] for k in _META_KEYS if row.get(k) is not None} | {"qid": qid},
        )
