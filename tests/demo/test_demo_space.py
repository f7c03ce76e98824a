"""A checkpoint leaving the machine: `medmix demo --export-space` writes a Space whose app.py serves the
same answers here, and `medmix push-model` uploads the checkpoint with a card naming the mixture's
recipe and manifest digest, through the recording stand-in for the Hub that the dataset push tests use."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time

import pytest
import yaml
from PIL import Image
from publish.test_push import FAKE_TOKEN, RecordingApi
from typer.testing import CliRunner

from medmix.core.layout import manifest_sha256
from medmix.demo.answering import load_answerer, load_image, pick_checkpoint, question_row
from medmix.publish import hub

CHECKPOINT_FILES = {"config.json", "projector.safetensors", "vision/config.json", "vision/model.safetensors",
                    "vision/preprocessor_config.json", "adapter/adapter_config.json",
                    "adapter/adapter_model.safetensors", "tokenizer/tokenizer.json", "tokenizer/tokenizer_config.json",
                    "llm_base/config.json", "llm_base/model.safetensors"}


def _cli(*args: str):
    from medmix.cli.main import app

    return CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})


def _front(readme: str) -> dict:
    assert readme.startswith("---\n")
    return yaml.safe_load(readme.split("---\n")[1])


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_export_space_writes_a_space_whose_app_answers_like_the_checkpoint(trained, tmp_path):
    from gradio_client import Client, handle_file

    run, mixture, _ = trained
    res = _cli("demo", str(run), "--export-space", str(tmp_path / "space"))
    assert res.exit_code == 2 and "needs --mixture" in res.output
    space = tmp_path / "space"
    res = _cli("demo", str(run), "--mixture", str(mixture), "--export-space", str(space), "--max-new-tokens", "6")
    assert res.exit_code == 0, res.output
    files = {str(p.relative_to(space)) for p in space.rglob("*") if p.is_file()}
    assert {"app.py", "requirements.txt", "README.md", "checkpoints/latest"} <= files
    assert {f"checkpoints/step-000002/{f}" for f in CHECKPOINT_FILES} <= files
    assert not [f for f in files if f.endswith(("optimizer.pt", "rank-00000.pt"))], "training state stays home"
    readme = (space / "README.md").read_text()
    meta = _front(readme)
    assert meta["sdk"] == "gradio" and meta["app_file"] == "app.py" and meta["sdk_version"]
    assert meta["license"] == "other" and meta["license_link"] == "LICENSE.md"  # MIT + CC0 + CC-BY sources
    assert "| slake | CC-BY-4.0 | commercial use allowed; redistribution allowed |" in readme
    assert manifest_sha256(mixture) in readme
    assert "medmix[train,demo]" in (space / "requirements.txt").read_text()
    res = _cli("demo", str(run), "--mixture", str(mixture), "--export-space", str(space))
    assert res.exit_code == 2 and "not empty" in res.output  # nothing is overwritten

    # the exported app runs here, as Spaces run it (python app.py), and answers as the checkpoint does
    port = _port()
    env = {**os.environ, "GRADIO_SERVER_PORT": str(port), "MEDMIX_DEVICE": "cpu", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=space, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}/"
        client = None
        deadline = time.time() + 120
        while client is None and time.time() < deadline:
            assert proc.poll() is None, proc.stdout.read()
            try:
                client = Client(url, verbose=False)
            except Exception:  # not listening yet
                time.sleep(0.5)
        assert client is not None, "app.py did not start within 120 s"
        image = tmp_path / "x.png"
        Image.new("L", (50, 50), 30).save(image)
        out = client.predict(handle_file(str(image)), "vqa", "what is it?", "", 6, api_name="/ask")
        expected = load_answerer(run, device="cpu").answer(load_image(image.read_bytes(), "x.png"),
                                                           question_row("vqa", "what is it?"), 6)
        assert out[1] == expected and out[3].startswith("**done**") and "step 2" in out[3]
    finally:
        proc.terminate()
        proc.wait(30)


def test_push_model_uploads_the_checkpoint_with_a_card_naming_the_mixture(trained, tmp_path, monkeypatch):
    run, mixture, _ = trained
    stage = tmp_path / "stage"
    stage.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(stage))  # where push_model stages the repo's files
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    api = RecordingApi()
    seen = {}
    monkeypatch.setattr(hub, "make_api", lambda token: seen.setdefault("token", token) and api)
    res = _cli("push-model", str(run), "me/tiny-vlm", "--mixture", str(mixture), "--private", "--revision", "dev")
    assert res.exit_code == 0, res.output
    assert seen["token"] == FAKE_TOKEN and FAKE_TOKEN not in res.output
    assert ("create_repo", {"repo_id": "me/tiny-vlm", "repo_type": "model", "private": True, "exist_ok": True}) \
        in api.calls
    assert len(api.commits) == 1 and api.commits[0]["revision"] == "dev" and api.commits[0]["repo_type"] == "model"
    adds = api.commits[0]["adds"]
    assert set(adds) == CHECKPOINT_FILES | {"README.md", "LICENSE.md"}
    assert list(adds)[-1] == "README.md"  # the card goes last
    ckpt = pick_checkpoint(run)
    for f in CHECKPOINT_FILES:
        assert adds[f] == (ckpt / f).read_bytes(), f
    card = adds["README.md"].decode()
    meta = _front(card)
    assert meta["library_name"] == "medmix" and meta["pipeline_tag"] == "image-text-to-text"
    manifest = json.loads((mixture / "manifest.json").read_text())
    assert f"recipe: `demo` (recipe sha256 `{manifest['recipe_sha256']}`)" in card
    assert f"manifest sha256: `{manifest_sha256(mixture)}`" in card
    assert "vqa_rad:test, pubmedqa:pqa_labeled" in card and "step 2" in card
    assert "hf download me/tiny-vlm" in card
    assert "https://hub.example/me/tiny-vlm/tree/dev" in res.output
    assert not list(stage.iterdir()), "the staging folder is removed"

    # the dry run writes the same files; the card is a pure function of checkpoint and mixture
    res = _cli("push-model", str(run), "me/tiny-vlm", "--mixture", str(mixture), "--dry-run", str(tmp_path / "dry"))
    assert res.exit_code == 0, res.output
    assert (tmp_path / "dry" / "README.md").read_bytes() == adds["README.md"]


def test_push_model_errors_name_the_problem(trained, tmp_path, monkeypatch):
    run, mixture, _ = trained
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    monkeypatch.setattr(hub, "make_api", lambda token: RecordingApi(fail_commit=f"401 bad token {token}"))
    res = _cli("push-model", str(run), "me/tiny-vlm", "--mixture", str(mixture))
    assert res.exit_code == 2 and "me/tiny-vlm" in res.output and "401" in res.output and "***" in res.output
    assert FAKE_TOKEN not in res.output
    res = _cli("push-model", str(run), "bad//id", "--mixture", str(mixture))
    assert res.exit_code == 2 and "not a Hub repository id" in res.output
    res = _cli("push-model", str(run), "me/x", "--mixture", str(tmp_path))
    assert res.exit_code == 2 and "manifest.json" in res.output
    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.setattr("huggingface_hub.get_token", lambda: None)
    res = _cli("push-model", str(run), "me/x", "--mixture", str(mixture))
    assert res.exit_code == 2 and "no Hugging Face token" in res.output


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
