"""MedMCQA: four-option questions from Indian medical entrance exams (AIIMS, NEET PG), 21 subjects.

Fetched from `openlifescienceai/medmcqa` (Parquet since its "Convert dataset to Parquet" PR):
`data/{train,validation,test}-00000-of-00001.parquet`, columns `id, question, opa, opb, opc,
opd, cop, choice_type, exp, subject_name, topic_name`; `cop` is the correct option's index
(a ClassLabel a-d stored as 0-3).

The test split's answers are withheld by the authors: every test row has `cop = -1`, so no
test row can become a training row; they are quarantined with that reason.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from medmix.sources._common import iter_parquet_slice, slice_units
from medmix.sources.base import Bad, RealBytes, Record, Remote, Source, Unit

_REPO = "openlifescienceai/medmcqa"
_SPLITS = ("train", "validation", "test")
_COLUMNS = ["id", "question", "opa", "opb", "opc", "opd", "cop", "choice_type", "exp", "subject_name", "topic_name"]
_OPTION_COLUMNS = ("opa", "opb", "opc", "opd")
_LETTERS = "ABCD"


def _path(split: str) -> str:
    return f"data/{split}-00000-of-00001.parquet"


class MedMCQA(Source):
    name = "medmcqa"
    title = "MedMCQA"
    homepage = "https://medmcqa.github.io/"
    citation = """
@inproceedings{pal2022medmcqa,
  title     = {MedMCQA: A Large-scale Multi-Subject Multi-Choice Dataset for Medical domain Question Answering},
  author    = {Pal, Ankit and Umapathi, Logesh Kumar and Sankarasubbu, Malaikannan},
  booktitle = {Proceedings of the Conference on Health, Inference, and Learning},
  series    = {Proceedings of Machine Learning Research},
  volume    = {174},
  pages     = {248--260},
  year      = {2022},
  publisher = {PMLR}
}
"""
    license = "Apache-2.0"
    domain = "clinical-text"
    tasks = ("mcqa",)
    # test: 6,150 questions upstream, none usable (answers withheld, cop = -1).
    splits = {"train": 182822, "validation": 4183, "test": 0}
    # Papers report MedMCQA accuracy on the validation ("dev") set because test labels are hidden.
    eval_splits = frozenset({"validation", "test"})
    files = tuple(Remote(name=_path(s), hf_repo=_REPO, hf_path=_path(s), splits=(s,)) for s in _SPLITS)
    notes = "Test answers are withheld upstream (cop = -1); validation is the de-facto benchmark."
    # One real line per split of the original JSON release, and the loading script that turned those
    # files into the Hub's columns (cop 1-4 -> ClassLabel 0-3, test -> -1): the Parquet follows from it.
    real_bytes = (RealBytes("huggingface/datasets", "87a849c0c19d623063813065d43030b57851fd40",
                            ("datasets/medmcqa/dummy/1.1.0/dummy_data.zip", "datasets/medmcqa/medmcqa.py",
                             "datasets/medmcqa/dataset_infos.json"),
                            note="rows of the original JSON release + the script that made the Hub's columns"),)
    unit_rows = 50_000

    def units(self, split: str, files: Mapping[str, Path]) -> list[Unit]:
        return slice_units(self.name, split, Path(files[_path(split)]), self.unit_rows)

    def read(self, unit: Unit, files: Mapping[str, Path]) -> Iterator[Record | Bad]:
        name = _path(unit.split)
        start, stop = unit.args.get("start", 0), unit.args.get("stop", float("inf"))
        for index, row in iter_parquet_slice(Path(files[name]), start, stop, _COLUMNS, batch_size=1000):
            yield self._record(row, index, name)

    @staticmethod
    def _record(row: dict[str, Any], index: int, name: str) -> Record | Bad:
        native_id = row.get("id") or f"row{index}"
        cop = row.get("cop")
        if cop == -1:
            return Bad(native_id, "answer withheld upstream: cop = -1 (MedMCQA hides test answers)", file=name)
        if not isinstance(cop, int) or not 0 <= cop < 4:
            return Bad(native_id, f"cop {cop!r} is not an option index 0-3 (row {index})", file=name)
        if not row.get("question"):
            return Bad(native_id, f"missing field 'question' in row {index}", file=name)
        options = [row.get(c) for c in _OPTION_COLUMNS]
        meta = {"subject": row.get("subject_name"), "topic": row.get("topic_name"),
                "choice_type": row.get("choice_type"), "answer_letter": _LETTERS[cop]}
        if row.get("exp"):
            meta["explanation"] = row["exp"]
        return Record(native_id, answer=options[cop], question=row["question"], options=options, task="mcqa",
                      meta={k: v for k, v in meta.items() if v is not None})
