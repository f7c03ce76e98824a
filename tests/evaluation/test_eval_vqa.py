"""`medmix eval vqa`: the scoring plumbing on fixture test splits (VQA-RAD, SLAKE layouts) with stand-in
answerers. The same path with a real trained checkpoint is in test_eval_checkpoint.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from fixtures import encode, radiology_image, truncated_jpeg, write_tree
from fixtures import slake as slake_fx
from fixtures import vqa_rad as fx
from PIL import Image
from typer.testing import CliRunner

from medmix.cli.eval_commands import eval_vqa
from medmix.core.errors import MedmixError
from medmix.evaluation.eval_data import fetch_split_files, iter_records
from medmix.evaluation.metrics import answer_tokens, bleu1, exact_match, token_recall
from medmix.evaluation.vqa import evaluate_dataset, run_vqa
from medmix.sources.base import Record
from medmix.sources.slake import Slake
from medmix.sources.vqa_rad import VqaRad

ANSWER_OF = dict(fx.QA)


def _test_files(tmp_path: Path, upstream) -> dict[str, Path]:
    raw = write_tree(tmp_path / "raw", upstream)
    return fetch_split_files(VqaRad(), ("test",), cache_dir=tmp_path / "cache", from_dir=raw)


def _answering(fn):
    """A stand-in for a model's `generate`: answers from the prompt row alone, and checks its inputs."""
    def generate(images, prompts, max_new_tokens):
        assert all(isinstance(im, Image.Image) and im.mode == "RGB" for im in images)
        assert all(p["task"] == "vqa" and p["question"] for p in prompts) and max_new_tokens == 32
        return [fn(p["question"]) for p in prompts]
    return generate


def test_oracle_answers_in_free_form_score_perfectly(tmp_path):
    files = _test_files(tmp_path, fx.build(n_test=8, bad=False))
    free_form = _answering(lambda q: f"The {ANSWER_OF[q].upper()}.")  # case, article, punctuation differ
    result = evaluate_dataset(free_form, VqaRad(), files=files, out_dir=tmp_path / "out")
    assert (result.n, result.n_closed + result.n_open) == (8, 8) and result.n_closed > 0 and result.n_open > 0
    assert (result.bleu1, result.closed_accuracy, result.open_recall, result.exact_match) == (1.0, 1.0, 1.0, 1.0)
    saved = json.loads((tmp_path / "out" / "vqa_rad-test.vqa.json").read_text())
    assert saved["bleu1"] == 1.0 and saved["config"]["decoding"] == "greedy"


def test_summary_is_the_mean_of_per_question_scores(tmp_path):
    files = _test_files(tmp_path, fx.build(n_test=4, bad=False))
    records = [r for r in iter_records(VqaRad(), "test", files)]
    assert [r.answer for r in records] == ["liver", "no", "axial", "yes"]  # the rows the numbers below assume
    preds = tmp_path / "p.jsonl"
    result = evaluate_dataset(_answering(lambda q: "yes"), VqaRad(), files=files)
    assert (result.n_closed, result.n_open) == (2, 2)
    assert result.closed_accuracy == 0.5 and result.open_recall == 0.0
    assert result.bleu1 == pytest.approx(0.25) and result.exact_match == pytest.approx(0.25)

    # a partly right open answer: recall counts reference words said, BLEU-1 penalizes the extra words
    answer = {"which organ is abnormal?": "liver and spleen", "what plane is this image in?": "the axial plane"}
    result = run_vqa(_answering(lambda q: answer.get(q, "no")), records, dataset="vqa_rad", split="test",
                     batch_size=3, predictions_path=preds)
    lines = [json.loads(line) for line in preds.read_text().splitlines()]
    assert [line["id"] for line in lines] == [r.native_id for r in records]
    for line in lines:
        ref, hyp = answer_tokens(line["answer"]), answer_tokens(line["prediction"])
        assert line["bleu1"] == bleu1(ref, hyp) and line["recall"] == token_recall(ref, hyp)
        assert line["exact"] == exact_match(line["prediction"], line["answer"])
    assert result.open_recall == 1.0 and result.closed_accuracy == 0.5
    assert result.bleu1 == pytest.approx((1 / 3 + 0 + 1 / 2 + 1) / 4)  # "liver and spleen", no≠yes, "axial plane"


def test_dataset_answer_type_decides_closed_over_the_yes_no_rule():
    img = encode(radiology_image(1))
    records = [
        Record("a", answer="left", question="Which side is the lesion on, left or right?", image=img,
               meta={"answer_type": "CLOSED"}),
        Record("b", answer="yes", question="Is it open?", image=img, meta={"answer_type": "open"}),
        Record("c", answer="No", question="Is there a fracture?", image=img),
    ]
    result = run_vqa(_answering(lambda q: "left" if q.startswith("Which") else "yes"), records,
                     dataset="x", split="test")
    assert (result.n_closed, result.n_open) == (2, 1)
    assert result.closed_accuracy == 0.5 and result.open_recall == 1.0


def test_slake_test_split_uses_its_closed_open_annotation(tmp_path):
    raw = write_tree(tmp_path / "raw", slake_fx.build())
    files = fetch_split_files(Slake(), ("test",), cache_dir=tmp_path / "c", from_dir=raw)
    records = [r for r in iter_records(Slake(), "test", files) if isinstance(r, Record)]
    expected_closed = sum(r.meta["answer_type"] == "CLOSED" for r in records)
    result = evaluate_dataset(_answering(lambda q: "yes"), Slake(), files=files)
    assert result.n == len(records) > 0 and result.n_closed == expected_closed


def test_broken_rows_are_skipped_by_id_and_the_rest_scored(tmp_path):
    from fixtures import Served, hf_parquet

    test_rows = fx.rows("test", 3, [radiology_image(100)]) + [
        {"image": None, "question": "is this a ct?", "answer": "yes"},
        {"image": {"bytes": truncated_jpeg(radiology_image(5)), "path": None}, "question": "q?", "answer": "no"}]
    upstream = fx.build(bad=False)
    upstream[fx.TEST] = Served(fx.TEST, hf_parquet(test_rows, fx.FEATURES), hf_repo=fx.REPO, hf_path=fx.TEST,
                               revision=fx.REVISION)
    files = _test_files(tmp_path, upstream)
    result = evaluate_dataset(_answering(lambda q: "no"), VqaRad(), files=files)
    assert result.n == 3
    assert [s["id"] for s in result.skipped] == ["test-00003", "test-00004"]
    assert result.skipped[0]["reason"].startswith("image missing")
    assert result.skipped[1]["reason"].startswith("truncated JPEG")  # the shared normalizer's verdict


def test_refusals(tmp_path):
    files = _test_files(tmp_path, fx.build(n_test=3, bad=False))
    with pytest.raises(MedmixError, match="'train' is not one of its evaluation splits"):
        evaluate_dataset(_answering(lambda q: "no"), VqaRad(), files=files, split="train")
    with pytest.raises(MedmixError, match="returned 1 answers for 3 questions"):
        evaluate_dataset(lambda images, prompts, n: ["no"], VqaRad(), files=files)
    assert evaluate_dataset(_answering(lambda q: "no"), VqaRad(), files=files, limit=2).n == 2
    runner = CliRunner()
    app = typer.Typer()
    app.command()(eval_vqa)
    res = runner.invoke(app, [str(tmp_path / "no-model"), "--dataset", "pcam"])
    assert res.exit_code == 2 and "not a VQA dataset" in res.output  # refused before any model loads
