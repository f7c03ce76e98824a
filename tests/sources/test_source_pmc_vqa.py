"""PMC-VQA adapter against fixture CSVs and image zips in the real `RadGenome/PMC-VQA` layout."""

from __future__ import annotations

import pytest
from fixtures import assert_matches_remotes, decodes, local_files, read_split, run_twice
from fixtures import pmc_vqa as fx

from medmix.core.errors import MedmixError
from medmix.sources import get_source
from medmix.sources.pmc_vqa import PmcVqa


def _read(tmp_path, upstream, split, source=None):
    src = source or PmcVqa()
    return read_split(src, split, local_files(tmp_path, src, upstream, (split,)))


def test_registered_versions_as_splits_and_tests_are_eval():
    assert get_source("pmc_vqa") is PmcVqa
    assert PmcVqa.eval_splits == {"test", "test_clean", "test_2"}
    assert_matches_remotes(PmcVqa, fx.build())
    # a v2 recipe never downloads the 18.9 GB v1 archive, and the reverse
    assert [f.name for f in PmcVqa().files_for(("train_2",))] == ["train_2.csv", "images_2.zip"]
    assert [f.name for f in PmcVqa().files_for(("train",))] == ["train.csv", "images.zip"]


def test_choices_lose_their_letter_prefix_and_answer_is_the_labelled_choice(tmp_path):
    records, bads = _read(tmp_path, fx.build(bad=False), "train")
    assert bads == [] and len(records) == 6
    q, choices, answer = fx.QUESTIONS[0]
    r = records[0]
    assert r.question == q and r.options == choices and r.answer == choices[answer]
    assert r.meta["answer_letter"] == "B" and r.meta["version"] == 1
    assert r.meta["pmcid"] == r.image_name.split("_")[0] and r.image.is_file()
    assert all(o == o.strip() and not o[:2].endswith(":") for rec in records for o in rec.options)
    assert records[0].image == records[1].image  # two questions per figure
    assert [rec.native_id for rec in records] == [f"train-{i:06d}" for i in range(6)]


def test_version_2_reads_its_own_csv_and_archive(tmp_path):
    records, bads = _read(tmp_path, fx.build(bad=False), "train_2")
    assert bads == [] and len(records) == 4
    assert all(r.meta["version"] == 2 and r.image.parent.name == "figures" for r in records)
    # the real v2 header: the letter in Answer, no Answer_label, a Caption column
    header = fx.build(bad=False)["train_2.csv"].data.split(b"\n", 1)[0].decode()
    assert header == "index,Figure_path,Caption,Question,Choice A,Choice B,Choice C,Choice D,Answer,split"
    for i, rec in enumerate(records):
        _q, choices, answer = fx.QUESTIONS[i % len(fx.QUESTIONS)]
        assert rec.meta["answer_letter"] == "ABCD"[answer] and rec.answer == choices[answer]
        assert rec.meta["caption"].startswith("Figure ")


def test_bad_rows_are_quarantined_with_reasons(tmp_path):
    records, bads = _read(tmp_path, fx.build(bad=True), "train")
    assert len(records) == 6
    reasons = [b.reason for b in bads]
    assert reasons[0] == "image file missing: PMC9999999_F9.jpg"
    assert reasons[1].startswith("answer label C ('No uptake pattern') disagrees with answer 'Focal uptake pattern'")
    assert reasons[2].startswith("no usable answer label ('') and answer 'Something not offered' matches 0 choices")
    assert reasons[3] == "empty choice D in row 9"
    assert reasons[4] == "row 10 is not valid UTF-8"
    assert bads[0].file == "images.zip:PMC9999999_F9.jpg"


def test_readme_spelling_of_the_answer_columns_is_accepted(tmp_path):
    up = fx.build(bad=False)
    rows, _ = fx.rows("test", 2, 50)
    header = ["Figure_path", "Question", "Anwser", "Choice A", "Choice B", "Choice C", "Choice D", "Anwser_label"]
    renamed = [{("Anwser" if k == "Answer" else "Anwser_label" if k == "Answer_label" else k): v for k, v in r.items()}
               for r in rows]
    up["test.csv"] = fx.Served("test.csv", fx.csv_bytes(renamed, header), hf_repo=fx.REPO, hf_path="test.csv")
    records, bads = _read(tmp_path, up, "test")
    assert bads == [] and [r.answer for r in records] == [fx.QUESTIONS[i][1][fx.QUESTIONS[i][2]] for i in (0, 1)]


def test_missing_columns_stop_the_unit_naming_the_file(tmp_path):
    up = fx.build(bad=False)
    up["test_clean.csv"] = fx.Served("test_clean.csv", b"Figure_path,Question\nPMC1_F1.jpg,What?\n",
                                     hf_repo=fx.REPO, hf_path="test_clean.csv")
    with pytest.raises(MedmixError, match=r"test_clean.csv: upstream columns \['Choice A'"):
        _read(tmp_path, up, "test_clean")


def test_units_slice_rows_without_changing_ids(tmp_path):
    up = fx.build(counts={"train": 7}, bad=False)
    whole, _ = _read(tmp_path / "a", up, "train")
    small = PmcVqa()
    small.unit_rows = 3
    files = local_files(tmp_path / "b", small, up, ("train",))
    assert [(u.args["start"], u.args["stop"]) for u in small.units("train", files)] == [(0, 3), (3, 6), (6, 7)]
    pieces, _ = read_split(small, "train", files)
    assert [r.native_id for r in pieces] == [r.native_id for r in whole]


def test_end_to_end_through_fetch_extract_and_normalize(http_server, tmp_path):
    splits = ("train", "test", "train_2")
    rows, bad = run_twice(PmcVqa, splits, fx.build(bad=True), http_server, tmp_path)
    assert [sum(r["split"] == s for r in rows) for s in splits] == [6, 2, 4]
    assert all(r["task"] == "mcqa" and r["answer"] in r["options"] for r in rows)
    assert {r["license"] for r in rows} == {"CC-BY-SA-4.0"} and {r["domain"] for r in rows} == {"general-biomedical"}
    assert all(decodes(r) == (r["width"], r["height"]) for r in rows)
    assert len(bad) == 5
