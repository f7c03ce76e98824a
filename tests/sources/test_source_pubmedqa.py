"""PubMedQA adapter against fixture Parquet files in the real `qiaojin/PubMedQA` layout."""

from __future__ import annotations

import io
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
from adapter_harness import run_adapter
from fixtures import assert_matches_remotes, local_files, read_split, run_twice
from fixtures import pubmedqa as fx

from medmix.sources import get_source
from medmix.sources.pubmedqa import PubMedQA

DEMO = Path(__file__).resolve().parents[2] / "medmix" / "data" / "demo"


def _read(tmp_path, upstream, split, source=None):
    src = source or PubMedQA()
    return read_split(src, split, local_files(tmp_path, src, upstream, (split,)))


def test_registered_configs_as_splits_and_labeled_is_eval():
    assert get_source("pubmedqa") is PubMedQA
    assert set(PubMedQA.splits) == {"pqa_labeled", "pqa_artificial", "pqa_unlabeled"}
    assert PubMedQA.eval_splits == {"pqa_labeled"}
    assert PubMedQA.license == "MIT" and PubMedQA.domain == "clinical-text"
    assert_matches_remotes(PubMedQA, fx.build())
    assert [f.name for f in PubMedQA().files_for(("pqa_artificial",))] == [fx.path("pqa_artificial")]


def test_labeled_rows_are_three_way_mcqa_with_abstract_context(tmp_path):
    records, bads = _read(tmp_path, fx.build(bad=False), "pqa_labeled")
    assert bads == [] and len(records) == 4
    r = records[0]
    src = fx.item(0, "pqa_labeled")
    assert r.task == "mcqa" and r.options == ["yes", "no", "maybe"]
    assert r.answer == src["final_decision"] and r.answer in r.options
    assert r.question == src["question"]
    assert r.context.splitlines()[0] == "BACKGROUND: " + src["context"]["contexts"][0]
    assert r.meta["long_answer"] == src["long_answer"]
    assert r.meta["reasoning_required_pred"] == r.meta["reasoning_free_pred"] == src["final_decision"]
    assert r.native_id == f"pqa_labeled-{src['pubid']}"
    assert r.image is None


def test_unlabeled_rows_are_free_text_qa_answered_by_the_conclusion(tmp_path):
    records, bads = _read(tmp_path, fx.build(bad=False), "pqa_unlabeled")
    assert bads == [] and len(records) == 3
    assert all(r.task == "qa" and r.options is None for r in records)
    assert records[1].answer == fx.item(1, "pqa_unlabeled")["long_answer"]


def test_bad_rows_are_named_and_good_rows_survive(tmp_path):
    for split, expect in [("pqa_labeled", "final_decision 'unclear' is not yes/no/maybe"),
                          ("pqa_artificial", "missing field 'context'"),
                          ("pqa_unlabeled", "missing field 'long_answer'")]:
        records, bads = _read(tmp_path / split, fx.build(bad=True), split)
        assert [b.reason.split(" in row")[0] for b in bads] == [expect], split
        assert bads[0].file == fx.path(split)
        assert len(records) == {"pqa_labeled": 4, "pqa_artificial": 5, "pqa_unlabeled": 3}[split]


def test_big_configs_split_into_units_without_changing_ids(tmp_path):
    upstream = fx.build(counts={"pqa_artificial": 11}, bad=False, row_group_size=2)
    whole, _ = _read(tmp_path / "a", upstream, "pqa_artificial")
    small = PubMedQA()
    small.unit_rows = 4  # 11 rows in units of 4, over row groups of 2: slices cut across groups
    files = local_files(tmp_path / "b", small, upstream, ("pqa_artificial",))
    units = small.units("pqa_artificial", files)
    assert [(u.args["start"], u.args["stop"]) for u in units] == [(0, 4), (4, 8), (8, 11)]
    assert len({u.key({}) for u in units}) == 3
    pieces, _ = read_split(small, "pqa_artificial", files)
    assert [r.native_id for r in pieces] == [r.native_id for r in whole]
    assert len(whole) == 11 and len({r.native_id for r in whole}) == 11


def test_end_to_end_through_fetch_and_normalize(http_server, tmp_path):
    splits = ("pqa_labeled", "pqa_artificial", "pqa_unlabeled")
    rows, bad = run_twice(PubMedQA, splits, fx.build(bad=True), http_server, tmp_path)
    assert [sum(r["split"] == s for r in rows) for s in splits] == [4, 5, 3]
    assert all(r["license"] == "MIT" and r["image"] is None and r["domain"] == "clinical-text" for r in rows)
    mcqa = [r for r in rows if r["task"] == "mcqa"]
    assert len(mcqa) == 9 and all(r["answer"] in r["options"] for r in mcqa)
    assert len(bad) == 3 and all(b["file"].endswith("train-00000-of-00001.parquet") for b in bad)


def test_demo_folder_builds_offline(tmp_path):
    splits = ("pqa_labeled", "pqa_artificial", "pqa_unlabeled")
    rows, bad = run_adapter(PubMedQA(), splits, cache_dir=tmp_path, from_dir=DEMO / "pubmedqa")
    assert bad == []
    assert [sum(r["split"] == s for r in rows) for s in splits] == [12, 8, 20]
    labeled = [r for r in rows if r["split"] == "pqa_labeled"]
    unlabeled = [r for r in rows if r["split"] == "pqa_unlabeled"]
    # planted by make_demo.py: an exact text duplicate inside PQA-U, and a PQA-L question leaked into PQA-U
    assert (unlabeled[18]["question"], unlabeled[18]["context"]) == (unlabeled[2]["question"], unlabeled[2]["context"])
    assert (unlabeled[19]["question"], unlabeled[19]["context"]) == (labeled[0]["question"], labeled[0]["context"])
    assert len({r["id"] for r in rows}) == len(rows)


def test_real_pqa_labeled_items_read_exactly(tmp_path):
    """Six real `ori_pqal.json` items, turned into the Hub's Parquet by the loading script's mapping."""
    upstream = fx.real_labeled()
    stored = pq.read_table(io.BytesIO(upstream[fx.path("pqa_labeled")].data)).to_pylist()
    # the real layout: no top-level annotator columns; inside `context`, lists of characters
    assert set(stored[0]) == {"pubid", "question", "context", "long_answer", "final_decision"}
    assert stored[1]["pubid"] == 2224269 and stored[1]["context"]["reasoning_required_pred"] == ["n", "o"]
    records, bads = _read(tmp_path, upstream, "pqa_labeled")
    assert bads == []
    assert [r.native_id for r in records] == ["pqa_labeled-25277731", "pqa_labeled-2224269", "pqa_labeled-21214884",
                                              "pqa_labeled-11296674", "pqa_labeled-12068831", "pqa_labeled-23848044"]
    assert Counter(r.answer for r in records) == {"yes": 2, "no": 2, "maybe": 2}
    first_names = records[1]
    assert first_names.question == "Should general practitioners call patients by their first names?"
    assert first_names.answer == "yes" and first_names.options == ["yes", "no", "maybe"]
    assert (first_names.meta["reasoning_required_pred"], first_names.meta["reasoning_free_pred"]) == ("no", "yes")
    assert first_names.context.startswith("OBJECTIVE: To assess the acceptability to patients of the use")
    assert first_names.context.count("\n") == 5  # six labelled sections
    assert first_names.meta["meshes"][:3] == ["Adolescent", "Adult", "Age Factors"]
    assert first_names.meta["long_answer"].startswith("General practitioners should consider using patients' first")
    prostate = records[3]
    assert (prostate.answer, prostate.meta["reasoning_required_pred"], prostate.meta["reasoning_free_pred"]) == (
        "maybe", "yes", "maybe")


def test_real_bytes_are_declared_with_their_provenance():
    cited = {rb.repo: rb for rb in PubMedQA.real_bytes}
    assert set(cited) == {"pubmedqa/pubmedqa", "huggingface/datasets"}
    provenance = (fx.REAL / "PROVENANCE").read_text()
    for rb in PubMedQA.real_bytes:
        assert rb.citation.split(":", 1)[0] in provenance and all(p in provenance for p in rb.paths)
