"""MedMCQA adapter against fixture Parquet files in the real `openlifescienceai/medmcqa` layout."""

from __future__ import annotations

from fixtures import assert_matches_remotes, local_files, read_split, run_twice
from fixtures import medmcqa as fx

from medmix.sources import get_source
from medmix.sources.medmcqa import MedMCQA


def _read(tmp_path, upstream, split, source=None):
    src = source or MedMCQA()
    return read_split(src, split, local_files(tmp_path, src, upstream, (split,)))


def test_registered_layout_and_eval_splits():
    assert get_source("medmcqa") is MedMCQA
    assert MedMCQA.eval_splits == {"validation", "test"}
    assert MedMCQA.license == "Apache-2.0" and MedMCQA.domain == "clinical-text"
    assert_matches_remotes(MedMCQA, fx.build())


def test_rows_become_four_option_mcqa_with_the_cop_answer(tmp_path):
    records, bads = _read(tmp_path, fx.build(bad=False), "train")
    assert bads == [] and len(records) == 6
    for i, r in enumerate(records):
        src = fx.row(i, "train")
        assert r.options == [src["opa"], src["opb"], src["opc"], src["opd"]]
        assert r.answer == r.options[src["cop"]] and r.meta["answer_letter"] == "ABCD"[src["cop"]]
        assert r.native_id == src["id"] and r.task == "mcqa"
        assert ("explanation" in r.meta) == bool(src["exp"])
        assert r.meta["subject"] == src["subject_name"]


def test_test_split_answers_are_withheld_and_quarantined_with_that_reason(tmp_path):
    records, bads = _read(tmp_path, fx.build(), "test")
    assert records == [] and len(bads) == 3
    assert all(b.reason.startswith("answer withheld upstream: cop = -1") for b in bads)
    assert MedMCQA.splits["test"] == 0


def test_bad_cop_is_bad_and_empty_option_reaches_shared_validation(http_server, tmp_path):
    rows, bad = run_twice(MedMCQA, ("train", "validation"), fx.build(bad=True), http_server, tmp_path)
    assert [sum(r["split"] == s for r in rows) for s in ("train", "validation")] == [6, 3]
    assert all(r["answer"] in r["options"] and len(r["options"]) == 4 for r in rows)
    assert {r["license"] for r in rows} == {"Apache-2.0"}
    reasons = sorted(b["reason"] for b in bad)
    assert len(reasons) == 2
    assert reasons[0].startswith("cop 7 is not an option index")
    assert "empty" in reasons[1] and "option" in reasons[1]  # refused by shared validation


def test_train_is_cut_into_units_without_changing_ids(tmp_path):
    upstream = fx.build(counts={"train": 9}, bad=False, row_group_size=2)
    whole, _ = _read(tmp_path / "a", upstream, "train")
    small = MedMCQA()
    small.unit_rows = 4
    files = local_files(tmp_path / "b", small, upstream, ("train",))
    assert len(small.units("train", files)) == 3
    pieces, _ = read_split(small, "train", files)
    assert [r.native_id for r in pieces] == [r.native_id for r in whole] and len(whole) == 9
