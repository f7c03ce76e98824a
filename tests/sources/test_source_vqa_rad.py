"""VQA-RAD adapter against fixture files in the real `flaviagiammarino/vqa-rad` layout."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from adapter_harness import run_adapter
from fixtures import assert_matches_remotes, decodes, local_files, read_split, run_twice
from fixtures import vqa_rad as fx
from PIL import Image

from medmix.core.errors import MedmixError
from medmix.sources import get_source
from medmix.sources.vqa_rad import VqaRad

DEMO = Path(__file__).resolve().parents[2] / "medmix" / "data" / "demo"


def _read(tmp_path, upstream, split):
    src = VqaRad()
    return read_split(src, split, local_files(tmp_path, src, upstream, (split,)))


def test_registered_and_declares_eval_split():
    assert get_source("vqa_rad") is VqaRad
    assert VqaRad.eval_splits == {"test"}
    assert set(VqaRad.splits) == {"train", "test"}
    assert VqaRad.license == "CC0-1.0" and VqaRad.domain == "radiology"


def test_remotes_match_upstream_layout():
    assert_matches_remotes(VqaRad, fx.build())
    # a train-only recipe never downloads the test file
    assert [f.name for f in VqaRad().files_for(("train",))] == [fx.TRAIN]


def test_train_rows_questions_answers_images(tmp_path):
    upstream = fx.build(n_train=6, bad=False)
    records, bads = _read(tmp_path, upstream, "train")
    assert bads == []
    assert len(records) == 6 + 2  # + the in-train repeat and the train/test leak, kept as upstream has them
    first = records[0]
    assert (first.question, first.answer) == fx.QA[0]
    assert first.task == "vqa"
    assert Image.open(io.BytesIO(first.image)).size[0] > 0
    assert first.meta["answer_type"] == "closed"
    open_row = next(r for r in records if r.answer == "ct")
    assert open_row.meta["answer_type"] == "open"


def test_ids_unique_and_stable_across_runs(tmp_path):
    upstream = fx.build()
    a, _ = _read(tmp_path / "a", upstream, "train")
    b, _ = _read(tmp_path / "b", upstream, "train")
    ids = [r.native_id for r in a]
    assert len(ids) == len(set(ids))
    assert ids == [r.native_id for r in b]
    assert ids[0] == "train-00000"


def test_broken_rows_become_bad_with_reason_and_good_rows_survive(tmp_path):
    upstream = fx.build(n_train=5, bad=True)
    records, bads = _read(tmp_path, upstream, "train")
    reasons = sorted(b.reason for b in bads)
    assert len(bads) == 2
    assert any(r.startswith("image missing") for r in reasons)
    assert any("missing field 'answer'" in r for r in reasons)
    assert all(b.file == fx.TRAIN for b in bads)
    # the truncated JPEG is passed on as bytes: rejecting undecodable images is shared code's job
    assert len(records) == 5 + 2 + 1


def test_test_split_reads_its_own_file(tmp_path):
    records, bads = _read(tmp_path, fx.build(n_test=3), "test")
    assert bads == [] and len(records) == 3
    assert all(r.native_id.startswith("test-") for r in records)


def test_changed_upstream_columns_stop_the_unit_with_the_file_name(tmp_path):
    from datasets import Image as HFImage
    from datasets import Value
    from fixtures import Served, hf_parquet

    data = hf_parquet([{"img": None, "question": "q", "answer": "a"}],
                      {"img": HFImage(), "question": Value("string"), "answer": Value("string")})
    upstream = fx.build()
    upstream[fx.TRAIN] = Served(fx.TRAIN, data, hf_repo=fx.REPO, hf_path=fx.TRAIN)
    with pytest.raises(MedmixError, match=r"train-00000-of-00001.*\['image'\]"):
        _read(tmp_path, upstream, "train")


def test_end_to_end_through_fetch_and_normalize(http_server, tmp_path):
    rows, bad = run_twice(VqaRad, ("train", "test"), fx.build(n_train=6, n_test=3), http_server, tmp_path)
    assert len(rows) == (6 + 2) + 3
    assert {r["split"] for r in rows} == {"train", "test"}
    assert all(r["license"] == "CC0-1.0" and r["domain"] == "radiology" and r["task"] == "vqa" for r in rows)
    assert all(decodes(r) == (r["width"], r["height"]) for r in rows)
    reasons = sorted(b["reason"] for b in bad)
    assert len(reasons) == 3
    assert any(r.startswith("truncated JPEG") for r in reasons)  # rejected by shared image decoding
    assert {b["id"] for b in bad} == {"vqa_rad/train-00008", "vqa_rad/train-00009", "vqa_rad/train-00010"}
    # the train/test leak is a pixel-identical image with the same question and answer
    leak = next(r for r in rows if r["id"] == "vqa_rad/train-00007")
    first_test = next(r for r in rows if r["id"] == "vqa_rad/test-00000")
    assert (leak["image_hash"], leak["question"]) == (first_test["image_hash"], first_test["question"])


def test_demo_folder_builds_offline(tmp_path):
    rows, bad = run_adapter(VqaRad(), ("train", "test"), cache_dir=tmp_path, from_dir=DEMO / "vqa_rad")
    assert bad == []
    assert sum(r["split"] == "train" for r in rows) == 40 and sum(r["split"] == "test" for r in rows) == 10
    assert max(max(r["width"], r["height"]) for r in rows) <= 96


def test_blank_question_is_a_bad_row_not_a_questionless_vqa_row(tmp_path):
    from fixtures import Served, encode, hf_parquet, radiology_image

    data = hf_parquet([{"image": {"bytes": encode(radiology_image(0)), "path": None}, "question": "  ",
                        "answer": "yes"}], fx.FEATURES)
    upstream = fx.build()
    upstream[fx.TEST] = Served(fx.TEST, data, hf_repo=fx.REPO, hf_path=fx.TEST)
    records, bads = _read(tmp_path, upstream, "test")
    assert records == [] and bads[0].reason == "missing field 'question' in row 0"
