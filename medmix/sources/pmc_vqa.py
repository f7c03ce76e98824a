"""PMC-VQA: multiple-choice VQA generated from PubMed Central figure captions, from `RadGenome/PMC-VQA`.

The Hub repository moved from `xmcmic/PMC-VQA` to `RadGenome/PMC-VQA` (same commits; the old id
only answers through a redirect), so the new id is used with the same pinned commit.

Two releases live side by side in the repository and are exposed as separate splits:
version 1 (`train.csv`, `test.csv`, `test_clean.csv` + `images.zip`, 18.9 GB; 227k QA on 149k
images) and version 2, non-compound figures (`train_2.csv`, `test_2.csv` + `images_2.zip`,
2.2 GB) → splits `train_2`, `test_2`. The README calls the v2 files `train2.csv`/`images2.zip`;
the repository names them with an underscore.

v1 CSV columns: `Figure_path, Question, Answer, Choice A..D, Answer_label`. The README spells the
answer columns `Anwser` / `Anwser_label`; both spellings are accepted. v2 CSVs have
`index, Figure_path, Caption, Question, Choice A..D, Answer, split`: `Answer` is the letter, there
is no `Answer_label`, the figure's caption is kept in `meta.caption`, and `images_2.zip` unpacks
to `figures/`. Choices carry their
letter ("A:Diffuse uptake pattern", sometimes with stray spaces), which is stripped. Rows whose
label and answer text disagree (a few dozen upstream) are quarantined rather than guessed.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator, Mapping
from pathlib import Path

from medmix.core.errors import MedmixError
from medmix.sources._common import image_root, resolve_image
from medmix.sources.base import Bad, Record, Remote, Source, Unit

_REPO = "RadGenome/PMC-VQA"
# A commit whose tree lists every file below (huggingface.co/datasets/RadGenome/PMC-VQA/tree/ff2098c...;
# the repository was moved from xmcmic/PMC-VQA with its history, so the commit is the same).
_REVISION = "ff2098cad195b86eed2b3e2f9f42eeae1dbc410a"
_CSV = {"train": "train.csv", "test": "test.csv", "test_clean": "test_clean.csv",
        "train_2": "train_2.csv", "test_2": "test_2.csv"}
_V1, _V2 = ("train", "test", "test_clean"), ("train_2", "test_2")
_IMAGES = {"images.zip": _V1, "images_2.zip": _V2}
_LETTERS = ("A", "B", "C", "D")  # a tuple: `"" in "ABCD"` would be True
_ALIASES = {"answer": ("Answer", "Anwser"), "label": ("Answer_label", "Anwser_label")}
_REQUIRED = ("Figure_path", "Question", "Choice A", "Choice B", "Choice C", "Choice D")
_PREFIX = re.compile(r"^\s*([A-D])\s*[:：.]\s*")
_PMCID = re.compile(r"^(PMC\d+)")


def _images_for(split: str) -> str:
    return next(name for name, splits in _IMAGES.items() if split in splits)


def _clean_choice(text: str | None, letter: str) -> str | None:
    """ "B:Focal uptake pattern " → "Focal uptake pattern"; a prefix naming another letter is kept as text."""
    if text is None:
        return None
    match = _PREFIX.match(text)
    if match and match.group(1) == letter:
        text = text[match.end():]
    return text.strip() or None


def _same(a: str, b: str) -> bool:
    return " ".join(a.split()).casefold() == " ".join(b.split()).casefold()


class PmcVqa(Source):
    name = "pmc_vqa"
    title = "PMC-VQA"
    homepage = "https://xiaoman-zhang.github.io/PMC-VQA/"
    citation = """
@article{zhang2023pmcvqa,
  title   = {PMC-VQA: Visual Instruction Tuning for Medical Visual Question Answering},
  author  = {Zhang, Xiaoman and Wu, Chaoyi and Zhao, Ziheng and Lin, Weixiong and Zhang, Ya and Wang, Yanfeng and
             Xie, Weidi},
  journal = {arXiv preprint arXiv:2305.10415},
  year    = {2023}
}
"""
    # "PMC-VQA is under CC BY-SA licenses" (README; no version given), built only from the
    # commercial-use PMC OA subset (CC0 / CC BY articles).
    license = "CC-BY-SA-4.0"
    domain = "general-biomedical"
    modality = None  # PMC figures: radiology, pathology, microscopy, charts, photographs...
    tasks = ("mcqa",)
    # train: 176,948 rows (a third-party conversion log); the other counts were not seen.
    splits = {"train": 176948, "test": None, "test_clean": None, "train_2": None, "test_2": None}
    eval_splits = frozenset({"test", "test_clean", "test_2"})
    files = (
        *(Remote(name=f, hf_repo=_REPO, hf_path=f, revision=_REVISION, splits=(s,)) for s, f in _CSV.items()),
        *(Remote(name=z, hf_repo=_REPO, hf_path=z, revision=_REVISION, extract=True, splits=s)
          for z, s in _IMAGES.items()),
    )
    notes = "v1 and v2 are separate splits; figures overlap PMC-OA, ROCO and PubMedVision (all PMC OA)."
    unit_rows = 50_000

    def units(self, split: str, files: Mapping[str, Path]) -> list[Unit]:
        with open(files[_CSV[split]], newline="", encoding="utf-8", errors="surrogateescape") as fh:
            total = sum(1 for _ in csv.reader(fh)) - 1
        bounds = [(a, min(a + self.unit_rows, total)) for a in range(0, max(total, 0), self.unit_rows)] or [(0, 0)]
        return [Unit(self.name, split, part=str(i), args={"start": a, "stop": b}) for i, (a, b) in enumerate(bounds)]

    def read(self, unit: Unit, files: Mapping[str, Path]) -> Iterator[Record | Bad]:
        name = _CSV[unit.split]
        root = image_root(Path(files[_images_for(unit.split)]))
        start, stop = unit.args.get("start", 0), unit.args.get("stop", float("inf"))
        with open(files[name], newline="", encoding="utf-8", errors="surrogateescape") as fh:
            reader = csv.DictReader(fh)
            header = reader.fieldnames or []
            columns = {key: next((c for c in names if c in header), None) for key, names in _ALIASES.items()}
            missing = [c for c in _REQUIRED if c not in header]
            if missing or not (columns["answer"] or columns["label"]):
                raise MedmixError(f"{name}: upstream columns {missing or ['Answer/Answer_label']} are missing "
                                  f"(found {header}); the upstream format changed")
            for index, row in enumerate(reader):
                if index < start:
                    continue
                if index >= stop:
                    break
                yield self._record(unit.split, name, index, row, columns, root)

    def _record(self, split: str, name: str, index: int, row: dict[str, str | None],
                columns: dict[str, str | None], root: Path) -> Record | Bad:
        native_id = f"{split}-{index:06d}"
        if any("\udc80" <= ch <= "\udcff" for value in row.values() if isinstance(value, str) for ch in value):
            return Bad(native_id, f"row {index} is not valid UTF-8", file=name)
        figure = (row.get("Figure_path") or "").strip()
        question = (row.get("Question") or "").strip()
        if not figure or not question:
            return Bad(native_id, f"missing field {'Figure_path' if not figure else 'Question'!r} in row {index}",
                       file=name)
        choices = [_clean_choice(row.get(f"Choice {x}"), x) for x in _LETTERS]
        if any(c is None for c in choices):
            return Bad(native_id, f"empty choice {_LETTERS[choices.index(None)]} in row {index}", file=name)
        answer_text = (row.get(columns["answer"]) or "").strip() if columns["answer"] else ""
        label = (row.get(columns["label"]) or "").strip().rstrip(":").upper() if columns["label"] else ""
        if label not in _LETTERS and answer_text.upper() in _LETTERS:
            label, answer_text = answer_text.upper(), ""  # some copies put the letter in the answer column
        if label in _LETTERS:
            chosen = choices[_LETTERS.index(label)]
            if answer_text and not _same(answer_text, chosen) and not _same(answer_text, label):
                return Bad(native_id, f"answer label {label} ({chosen!r}) disagrees with answer {answer_text!r} "
                                      f"in row {index}", file=name)
        else:
            matches = [x for x, c in zip(_LETTERS, choices) if answer_text and _same(answer_text, c)]
            if len(matches) != 1:
                return Bad(native_id, f"no usable answer label ({label!r}) and answer {answer_text!r} matches "
                                      f"{len(matches)} choices in row {index}", file=name)
            label, chosen = matches[0], choices[_LETTERS.index(matches[0])]
        image = resolve_image(root, figure)
        if image is None:
            return Bad(native_id, f"image file missing: {figure}", file=f"{_images_for(split)}:{figure}")
        pmcid = _PMCID.match(figure)
        meta = {"figure": figure, "answer_letter": label, "version": 2 if split in _V2 else 1}
        if (row.get("Caption") or "").strip():
            meta["caption"] = row["Caption"].strip()  # type: ignore[union-attr]
        if pmcid:
            meta["pmcid"] = pmcid.group(1)
        return Record(native_id, answer=chosen, question=question, options=choices, image=image, image_name=figure,
                      task="mcqa", meta=meta)
