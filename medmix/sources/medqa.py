"""MedQA (USMLE, English, 4 options): board-exam style clinical vignettes with four answer options.

Fetched from `GBaker/MedQA-USMLE-4-options`, the JSON-lines copy of the original release's
`questions/US/4_options/phrases_no_exclude_{train,test}.jsonl`. Each line has `question`,
`answer` (text), `options` {A..D}, `answer_idx` (letter), `meta_info` (step1 / step2&3) and
`metamap_phrases`. That copy has no dev file (the original's dev set, 1,272 questions, is in
`GBaker/MedQA-USMLE-4-options-hf/dev.json`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from medmix.sources.base import Bad, RealBytes, Record, Remote, Source, Unit

_REPO = "GBaker/MedQA-USMLE-4-options"
# main when checked: three commits, the last a README update (commit 0fb93dd...).
_REVISION = "0fb93dd23a7339b6dcd27e241cb9b5eca62d4d18"
_SPLIT_FILES = {"train": "phrases_no_exclude_train.jsonl", "test": "phrases_no_exclude_test.jsonl"}
_LETTERS = ("A", "B", "C", "D")


class MedQA(Source):
    name = "medqa"
    title = "MedQA (USMLE, 4 options)"
    homepage = "https://github.com/jind11/MedQA"
    citation = """
@article{jin2021disease,
  title   = {What Disease Does This Patient Have? A Large-Scale Open Domain Question Answering Dataset from
    Medical Exams},
  author  = {Jin, Di and Pan, Eileen and Oufattole, Nassim and Weng, Wei-Hung and Fang, Hanyi and Szolovits, Peter},
  journal = {Applied Sciences},
  volume  = {11},
  number  = {14},
  pages   = {6421},
  year    = {2021},
  doi     = {10.3390/app11146421}
}
"""
    # As tagged on the repository medmix fetches; another copy of the same files is tagged
    # CC-BY-SA-4.0; the original repository (jind11/MedQA) has an MIT LICENSE, which covers its code,
    # not the exam-derived questions (see docs/datasets/medqa.md).
    license = "CC-BY-4.0"
    domain = "clinical-text"
    tasks = ("mcqa",)
    splits = {"train": 10178, "test": 1273}
    # MedQA (USMLE) test accuracy is one of the most reported medical LLM benchmarks.
    eval_splits = frozenset({"test"})
    files = tuple(Remote(name=f, hf_repo=_REPO, hf_path=f, revision=_REVISION, splits=(s,))
                  for s, f in _SPLIT_FILES.items())
    notes = "US 4-option version; no dev split in this copy; license tags conflict between copies."
    real_bytes = (RealBytes("Taewhoo/BioRAG", "d001e8c26264773e55af85d5e9530364d269f99d",
                            ("phrases_no_exclude_test.jsonl",), note="the full test file: 1,273 lines"),)

    def read(self, unit: Unit, files: Mapping[str, Path]) -> Iterator[Record | Bad]:
        name = _SPLIT_FILES[unit.split]
        with open(files[name], "rb") as fh:
            for line_no, raw in enumerate(fh, start=1):
                if raw.strip():
                    yield self._record(unit.split, name, line_no, raw)

    @staticmethod
    def _record(split: str, name: str, line_no: int, raw: bytes) -> Record | Bad:
        native_id = f"{split}-{line_no:05d}"
        try:
            row: Any = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            return Bad(native_id, f"line {line_no} is not valid UTF-8", file=name)
        except ValueError as exc:
            return Bad(native_id, f"line {line_no} is not valid JSON: {exc}", file=name)
        if not isinstance(row, dict):
            return Bad(native_id, f"line {line_no} is not a JSON object", file=name)
        missing = [k for k in ("question", "options", "answer_idx") if not row.get(k)]
        if missing:
            return Bad(native_id, f"missing field(s) {missing} on line {line_no}", file=name)
        opts = row["options"]
        if not isinstance(opts, dict) or sorted(opts) != list(_LETTERS):
            found = sorted(opts) if isinstance(opts, dict) else type(opts).__name__
            return Bad(native_id, f"options on line {line_no} are not exactly A-D: {found}", file=name)
        letter = row["answer_idx"]
        if letter not in opts:
            return Bad(native_id, f"answer_idx {letter!r} on line {line_no} is not an option letter", file=name)
        options = [opts[k] for k in _LETTERS]
        answer = opts[letter]
        if row.get("answer") is not None and str(row["answer"]).strip() != str(answer).strip():
            return Bad(native_id, f"answer {row['answer']!r} on line {line_no} is not option {letter} ({answer!r})",
                       file=name)
        meta = {"answer_letter": letter, "step": row.get("meta_info"), "line": line_no}
        return Record(native_id, answer=answer, question=row["question"], options=options, task="mcqa",
                      meta={k: v for k, v in meta.items() if v is not None})
