"""VQA-Med 2019 adapter: pipe-delimited QA files in the organisers' zips, categories, held-out test."""

from __future__ import annotations

import io
import json

from adapter_harness import run_adapter
from fixtures import assert_matches_remotes, local_files, read_split, serve, write_tree
from fixtures import vqa_med_2019 as fx
from PIL import Image

from medmix.sources import get_source
from medmix.sources.vqa_med_2019 import VQAMed2019


def test_registered_with_test_as_evaluation_split():
    assert get_source("vqa_med_2019") is VQAMed2019
    assert VQAMed2019.eval_splits == {"test"} and not VQAMed2019.benchmark
    assert VQAMed2019.splits == {"train": 12_792, "validation": 2_000, "test": 500}
    assert_matches_remotes(VQAMed2019, fx.build())
    assert [f.name for f in VQAMed2019().files_for(("train",))] == [fx.TRAIN_ZIP]


def test_end_to_end_train_and_validation_rows(http_server, tmp_path):
    serve(http_server, fx.build())
    rows, bad = run_adapter(VQAMed2019(), ("train", "validation"), server=http_server, cache_dir=tmp_path)
    assert len(rows) == 4 * len(fx.TRAIN_IMAGES) + 4 * len(fx.VAL_IMAGES)
    first = rows[0]
    assert first["id"] == "vqa_med_2019/train/synpic41148/0"
    assert (first["question"], first["answer"]) == fx.TEMPLATE[0][1:]
    assert first["task"] == "vqa" and first["domain"] == "radiology" and first["license"] == "CC-BY-4.0"
    assert Image.open(io.BytesIO(first["image"]["bytes"])).size[0] > 0
    cats = [json.loads(r["meta"])["category"] for r in rows[:4]]
    assert cats == ["modality", "plane", "organ", "abnormality"]
    assert {r["split"] for r in rows} == {"train", "validation"}
    assert len({r["id"] for r in rows}) == len(rows)
    reasons = sorted(b["reason"] for b in bad)
    assert len(bad) == 3
    assert reasons[0] == "image file missing: synpic99999.jpg"
    assert reasons[1].startswith("malformed line: 2 '|'-separated fields")
    assert reasons[2] == "malformed line: not valid UTF-8"
    assert all(":" in b["file"] or b["file"].endswith(".jpg") for b in bad)


def test_test_split_reads_categories_and_images_from_the_inner_zip(tmp_path):
    files = local_files(tmp_path, VQAMed2019(), fx.build(), ("test",))
    records, bads = read_split(VQAMed2019(), "test", files)
    assert bads == [] and len(records) == len(fx.TEST_ROWS)
    first = records[0]
    assert first.native_id == "test/synpic54143/0" and first.meta["category"] == "abnormality"
    assert first.answer == "anaplastic oligodendroglioma#multi-cystic complex mass"
    assert first.meta["answer_alternatives"] == ["anaplastic oligodendroglioma", "multi-cystic complex mass"]
    assert isinstance(first.image, bytes) and Image.open(io.BytesIO(first.image)).size[0] > 0


def test_zips_placed_by_hand_work_without_network(tmp_path):
    """The Manual fallback: Zenodo down, the user puts the three zips in DIR (`--from vqa_med_2019=DIR`)."""
    folder = write_tree(tmp_path / "by_hand", fx.build(bad=False))
    rows, bad = run_adapter(VQAMed2019(), ("validation",), cache_dir=tmp_path / "cache", from_dir=folder)
    assert bad == [] and len(rows) == 4 and rows[0]["id"] == "vqa_med_2019/validation/synpic29263/0"
