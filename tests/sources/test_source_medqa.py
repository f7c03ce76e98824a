"""MedQA adapter against fixture JSON-lines files in the real `GBaker/MedQA-USMLE-4-options` layout."""

from __future__ import annotations

from fixtures import assert_matches_remotes, local_files, read_split, run_twice
from fixtures import medqa as fx

from medmix.sources import get_source
from medmix.sources.medqa import MedQA


def _read(tmp_path, upstream, split):
    src = MedQA()
    return read_split(src, split, local_files(tmp_path, src, upstream, (split,)))


def test_registered_layout_and_eval_split():
    assert get_source("medqa") is MedQA
    assert MedQA.eval_splits == {"test"} and set(MedQA.splits) == {"train", "test"}
    assert_matches_remotes(MedQA, fx.build())


def test_lines_become_four_option_mcqa(tmp_path):
    records, bads = _read(tmp_path, fx.build(bad=False), "train")
    assert bads == [] and len(records) == 5
    for i, r in enumerate(records):
        src = fx.line(i, "train")
        assert r.options == [src["options"][k] for k in "ABCD"]
        assert r.answer == src["answer"] and r.meta["answer_letter"] == src["answer_idx"]
        assert r.meta["step"] == src["meta_info"] and r.question == src["question"]
        assert r.native_id == f"train-{i + 1:05d}"


def test_broken_lines_are_bad_with_line_numbers_and_good_lines_survive(tmp_path):
    records, bads = _read(tmp_path, fx.build(bad=True), "train")
    assert len(records) == 5
    reasons = [b.reason for b in bads]
    assert reasons[0].startswith("line 6 is not valid JSON")
    assert reasons[1] == "line 7 is not valid UTF-8"
    assert reasons[2] == "answer_idx 'E' on line 8 is not an option letter"
    assert reasons[3].startswith("answer 'Something else' on line 9 is not option")
    assert {b.file for b in bads} == {fx.FILES["train"]}


def test_end_to_end_rows_and_stable_ids(http_server, tmp_path):
    rows, bad = run_twice(MedQA, ("train", "test"), fx.build(bad=True), http_server, tmp_path)
    assert [sum(r["split"] == s for r in rows) for s in ("train", "test")] == [5, 3]
    assert all(r["task"] == "mcqa" and r["answer"] in r["options"] and r["license"] == "CC-BY-4.0" for r in rows)
    assert len(bad) == 4
