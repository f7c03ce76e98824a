"""PubMedQA: yes/no/maybe questions answered from PubMed abstracts, from `qiaojin/PubMedQA`.

The Hub copy has three configs, each a single `train` split; medmix exposes each config as a
split of its own name: `pqa_labeled` (1,000 expert-labelled, the usual test set),
`pqa_artificial` (211,269, labels from a heuristic) and `pqa_unlabeled` (61,249, no decision).
Labelled rows become 3-way multiple choice with the abstract as context and the conclusion
(`long_answer`) in `meta`; unlabelled rows become free-text QA whose answer is the conclusion.

The answer is `final_decision`. In `pqa_labeled` the two annotators' own decisions
(`reasoning_required_pred`, `reasoning_free_pred`) are not columns: the Hub's loading script
(huggingface/datasets, datasets/pubmed_qa/pubmed_qa.py) puts them inside the `context` struct,
and since it hands a plain string to a sequence feature they are stored as lists of characters
(`['y', 'e', 's']`); they are joined back into `meta`. An earlier version asked for them as
top-level columns, so the missing-column check stopped every `pqa_labeled` unit.
Checked on the real bytes (`ori_pqal.json` of pubmedqa/pubmedqa, through the loading script's
mapping and this adapter, `tests/fixtures/real/count_real.py`): 1,000 items, answers
yes/no/maybe = 552/338/110, none quarantined.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from medmix.sources._common import iter_parquet_slice, slice_units
from medmix.sources.base import Bad, RealBytes, Record, Remote, Source, Unit

_REPO = "qiaojin/PubMedQA"
_CONFIGS = ("pqa_labeled", "pqa_artificial", "pqa_unlabeled")
_OPTIONS = ["yes", "no", "maybe"]
_BATCH = 1000


def _path(config: str) -> str:
    return f"{config}/train-00000-of-00001.parquet"


def _joined(value: Any) -> str | None:
    """An annotator decision as the Hub stores it (a list of characters) back as a string."""
    if value is None or isinstance(value, str):
        return value
    return "".join(str(c) for c in value) or None


def _context(ctx: Any) -> tuple[str | None, list[str]]:
    """The abstract without its conclusion, one "LABEL: text" paragraph per section; and its MeSH terms."""
    if not isinstance(ctx, dict) or not ctx.get("contexts"):
        return None, []
    texts = [t for t in ctx["contexts"] if t]
    labels = ctx.get("labels") or []
    if len(labels) == len(texts):
        texts = [f"{label}: {text}" if label else text for label, text in zip(labels, texts)]
    return "\n".join(texts), list(ctx.get("meshes") or [])


class PubMedQA(Source):
    name = "pubmedqa"
    title = "PubMedQA"
    homepage = "https://pubmedqa.github.io/"
    citation = """
@inproceedings{jin2019pubmedqa,
  title     = {PubMedQA: A Dataset for Biomedical Research Question Answering},
  author    = {Jin, Qiao and Dhingra, Bhuwan and Liu, Zhengping and Cohen, William and Lu, Xinghua},
  booktitle = {Proceedings of the 2019 Conference on Empirical Methods in Natural Language Processing and the
               9th International Joint Conference on Natural Language Processing (EMNLP-IJCNLP)},
  pages     = {2567--2577},
  year      = {2019},
  doi       = {10.18653/v1/D19-1259}
}
"""
    license = "MIT"
    domain = "clinical-text"
    tasks = ("mcqa", "qa")
    splits = {"pqa_labeled": 1000, "pqa_artificial": 211269, "pqa_unlabeled": 61249}
    # PQA-L is the benchmark (reasoning-required accuracy); it must not be trained on by accident.
    eval_splits = frozenset({"pqa_labeled"})
    # The revision stays unpinned: no tree listing of the current main was seen (see docs/datasets/pubmedqa.md).
    files = tuple(Remote(name=_path(c), hf_repo=_REPO, hf_path=_path(c), splits=(c,)) for c in _CONFIGS)
    notes = "Splits are the Hub configs; PQA-A labels are heuristic; PQA-U has no yes/no/maybe decision."
    real_bytes = (
        RealBytes(repo="pubmedqa/pubmedqa", commit="1cbae8e92f72f20c8d3747cbb3bf5bc53554d997",
                  paths=("data/ori_pqal.json",), note="the 1,000 PQA-L items the Hub's pqa_labeled is built from"),
        RealBytes(repo="huggingface/datasets", commit="4ea780ad65e5fd0310f27fa1e23a7613a3451b24",
                  paths=("datasets/pubmed_qa/pubmed_qa.py",),
                  note="the loading script: features and the item-to-row mapping of all three configs"),
    )
    version = "2"
    # PQA-A has 211k rows: cut into units of at most this many rows.
    unit_rows = 50_000

    def units(self, split: str, files: Mapping[str, Path]) -> list[Unit]:
        return slice_units(self.name, split, Path(files[_path(split)]), self.unit_rows)

    def read(self, unit: Unit, files: Mapping[str, Path]) -> Iterator[Record | Bad]:
        name = _path(unit.split)
        labeled = unit.split != "pqa_unlabeled"
        columns = ["pubid", "question", "context", "long_answer"] + (["final_decision"] if labeled else [])
        start, stop = unit.args.get("start", 0), unit.args.get("stop", float("inf"))
        for index, row in iter_parquet_slice(Path(files[name]), start, stop, columns, batch_size=_BATCH):
            pubid = row.get("pubid")
            native_id = f"{unit.split}-{pubid}" if pubid is not None else f"{unit.split}-row{index}"
            context, meshes = _context(row.get("context"))
            if pubid is None or not row.get("question") or context is None:
                field = "pubid" if pubid is None else "question" if not row.get("question") else "context"
                yield Bad(native_id, f"missing field {field!r} in row {index}", file=name)
                continue
            meta: dict[str, Any] = {"pubid": pubid, "meshes": meshes}
            if not labeled:
                if not row.get("long_answer"):
                    yield Bad(native_id, f"missing field 'long_answer' in row {index}", file=name)
                    continue
                yield Record(native_id, answer=row.get("long_answer"), question=row["question"], context=context,
                             task="qa", meta=meta)
                continue
            decision = (row.get("final_decision") or "").strip().lower()
            if decision not in _OPTIONS:
                yield Bad(native_id, f"final_decision {row.get('final_decision')!r} is not yes/no/maybe", file=name)
                continue
            meta["long_answer"] = row.get("long_answer")
            ctx = row.get("context") or {}
            for key in ("reasoning_required_pred", "reasoning_free_pred"):  # pqa_labeled only
                if _joined(ctx.get(key)) is not None:
                    meta[key] = _joined(ctx.get(key))
            yield Record(native_id, answer=decision, question=row["question"], options=list(_OPTIONS),
                         context=context, task="mcqa", meta=meta)
