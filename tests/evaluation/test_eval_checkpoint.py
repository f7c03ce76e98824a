"""Evaluating a real medmix checkpoint: the tiny preset trained here for a few steps by the bundled trainer
on the VQA-RAD fixture's train split, then `medmix eval vqa` on its test split and its vision tower as a
`medmix eval classify` encoder (next to a scratch copy of the same architecture)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
import typer
from adapter_harness import run_adapter
from fixtures import pcam, write_tree
from fixtures import vqa_rad as fx
from PIL import Image
from typer.testing import CliRunner

from medmix.cli.eval_commands import eval_vqa
from medmix.core.schema import to_table
from medmix.evaluation import classify as cl
from medmix.evaluation.encoders import load_encoder
from medmix.evaluation.eval_data import fetch_split_files, iter_records
from medmix.sources.vqa_rad import VqaRad


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """(run folder, raw VQA-RAD fixture folder): 2 optimizer steps of the tiny preset, as `medmix train` runs."""
    from trainer.cli import train_command

    tmp = tmp_path_factory.mktemp("ckpt")
    raw = write_tree(tmp / "raw", fx.build(n_train=10, n_test=5, bad=False))
    rows, _ = run_adapter(VqaRad(), ("train",), cache_dir=tmp / "norm", from_dir=raw)
    mixture = tmp / "mix"
    (mixture / "data").mkdir(parents=True)
    pq.write_table(to_table(rows), mixture / "data" / "train-00000-of-00001.parquet")
    (mixture / "manifest.json").write_text(json.dumps(
        {"name": "vqa-rad-train", "shards": [{"path": "data/train-00000-of-00001.parquet", "rows": len(rows),
                                              "split": "train"}]}))
    train_command(config="tiny", data=mixture, out=tmp / "run", steps=2,
                  overrides=["train.progress=false", "train.save_every=2"], resume=False)
    return tmp / "run", raw


def test_eval_vqa_cli_scores_the_models_own_greedy_answers(trained, tmp_path):
    from trainer.model import load_vlm

    run, raw = trained
    app = typer.Typer()
    app.command()(eval_vqa)
    res = CliRunner().invoke(app, [str(run), "--dataset", "vqa_rad", "--from", f"vqa_rad={raw}",
                                   "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "out"),
                                   "--batch-size", "2", "--max-new-tokens", "6", "--device", "cpu"],
                             env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "Medical VQA" in res.output and "vqa_rad" in res.output
    summary = json.loads((tmp_path / "out" / "vqa_rad-test.vqa.json").read_text())
    lines = [json.loads(x) for x in (tmp_path / "out" / "vqa_rad-test.predictions.jsonl").read_text().splitlines()]
    assert summary["n"] == len(lines) == 5 and summary["config"]["max_new_tokens"] == 6
    assert summary["bleu1"] == pytest.approx(sum(x["bleu1"] for x in lines) / 5)

    # batching, padding and image/question pairing in the eval path change nothing: the predictions are
    # exactly what the model answers when asked directly, all at once
    files = fetch_split_files(VqaRad(), ("test",), cache_dir=tmp_path / "cache", from_dir=raw)
    records = list(iter_records(VqaRad(), "test", files))
    images = [Image.open(io.BytesIO(r.image)).convert("RGB") for r in records]
    prompts = [{"task": "vqa", "question": r.question, "options": None, "context": None} for r in records]
    direct = load_vlm(run).generate(images, prompts, max_new_tokens=6)
    assert [x["prediction"] for x in lines] == direct


def test_checkpoint_vision_tower_is_a_classification_encoder(trained, tmp_path):
    from trainer.checkpoint import load_vision_encoder

    run, _ = trained
    for name in (f"medmix:{run}", str(run)):  # explicit prefix, or found by its layout
        enc = load_encoder(name)
        assert (enc.image_size, enc.mean, enc.std) == (32, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    tower, _ = load_vision_encoder(run)
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(enc.module(pixels), tower(pixel_values=pixels).last_hidden_state[:, 0])  # trained weights

    raw = write_tree(tmp_path / "pcam", pcam.build(counts={"train": 8, "validation": 2, "test": 6}))
    report = cl.run_classification(
        [f"medmix:{run}", "scratch"], ["pcam"], cl.ProbeRecipe(epochs=1, batch_size=8), cache_dir=tmp_path,
        files_for=lambda source, splits: fetch_split_files(source, splits, cache_dir=tmp_path, from_dir=raw))
    assert set(report.scores) == {f"medmix:{run}", "scratch"}
    assert report.scores["scratch"]["pcam"].n_test == 6
    scratch = cl.build_encoders([f"medmix:{run}", "scratch"], seed=0)[1]
    assert scratch.architecture.to_dict() == tower.config.to_dict()  # same architecture, fresh weights
    assert not torch.equal(scratch.module.model.embeddings.patch_embeddings.projection.weight,
                           tower.embeddings.patch_embeddings.projection.weight)
