"""`medmix doctor` against the local fixture server: one table, JSON, and a non-zero exit for each kind
of breakage (404, 301 to a new place, a changed size, a renamed Hub repository, a missing manual file)."""

from __future__ import annotations

import json
from urllib.parse import urlsplit

import pytest
from fixtures import quilt1m, serve, vqa_med_2019, vqa_rad
from typer.testing import CliRunner

from medmix.doctor import check_recipe, report
from medmix.pipeline import BuildOptions
from medmix.recipe import parse_recipe

RECIPE = """name: doctored
licenses: {accept: [LicenseRef-Quilt-1M]}
decontaminate: {against: []}
sources:
  vqa_med_2019: {splits: [train]}
  vqa_rad: {splits: [train]}
  quilt1m: {}
"""
ZIP_URL = f"{vqa_med_2019.ZENODO}/{vqa_med_2019.TRAIN_ZIP}"


@pytest.fixture
def world(http_server, tmp_path):
    serve(http_server, vqa_med_2019.build())
    serve(http_server, vqa_rad.build())
    recipe_path = tmp_path / "doctored.yaml"
    recipe_path.write_text(RECIPE)
    quilt = quilt1m.write(tmp_path / "quilt")
    return http_server, recipe_path, quilt


def _check(world, *, from_quilt=True, lock=None) -> dict:
    server, recipe_path, quilt = world
    recipe = parse_recipe(recipe_path.read_text(), str(recipe_path))
    opts = BuildOptions(out=recipe_path.parent, cache=recipe_path.parent / "c", mirror=server.url,
                        hf_endpoint=server.hf_endpoint, from_dirs={"quilt1m": quilt} if from_quilt else {},
                        lock=lock)
    result = report(check_recipe(recipe, opts))
    result["by_file"] = {c["file"]: c for c in result["checks"]}
    return result


def _mirror_path(url: str) -> str:
    parts = urlsplit(url)
    return f"/{parts.netloc}{parts.path}"


def test_a_healthy_recipe_passes(world):
    result = _check(world)
    assert result["ok"], result["counts"]
    assert result["by_file"][vqa_med_2019.TRAIN_ZIP]["status"] == "unpinned"
    rad = next(c for c in result["checks"] if c["source"] == "vqa_rad")
    assert rad["status"] == "unpinned" and rad["size"] > 0 and len(rad["etag"]) == 64
    assert {c["status"] for c in result["checks"] if c["source"] == "quilt1m"} == {"ok"}
    assert not any(m == "GET" and r is None for m, _p, r in world[0].requests)  # no body was downloaded


def test_a_404_is_gone(world):
    world[0]._entries.pop(_mirror_path(ZIP_URL))
    result = _check(world)
    assert not result["ok"] and result["by_file"][vqa_med_2019.TRAIN_ZIP]["status"] == "gone"


def test_a_301_names_the_new_place(world):
    world[0].redirect(_mirror_path(ZIP_URL), "/zenodo.org/records/99999/files/moved.zip")
    check = _check(world)["by_file"][vqa_med_2019.TRAIN_ZIP]
    assert check["status"] == "moved" and check["location"].endswith("/zenodo.org/records/99999/files/moved.zip")
    assert "redirects (301)" in check["detail"]


def test_a_changed_size_against_the_lock(world, tmp_path):
    size = len(vqa_med_2019.build()[vqa_med_2019.TRAIN_ZIP].data)
    lock = tmp_path / "doctored.lock.json"
    lock.write_text(json.dumps({"lock_version": 1, "sources": {"vqa_med_2019": {vqa_med_2019.TRAIN_ZIP: {
        "upstream": ZIP_URL, "revision": None, "sha256": "0" * 64, "size": size + 1}}}}))
    check = _check(world, lock=lock)["by_file"][vqa_med_2019.TRAIN_ZIP]
    assert check["status"] == "changed" and f"size {size} != pinned {size + 1}" in check["detail"]


def test_a_renamed_hub_repo(world):
    server = world[0]
    rad = next(c for c in _check(world)["checks"] if c["source"] == "vqa_rad")
    old = f"/datasets/flaviagiammarino/vqa-rad/resolve/{vqa_rad.REVISION}/{rad['file']}"
    server.redirect(old, old.replace("flaviagiammarino/vqa-rad", "someone-else/vqa-rad"), status=307)
    check = next(c for c in _check(world)["checks"] if c["source"] == "vqa_rad")
    assert check["status"] == "moved" and check["detail"] == "Hub repository renamed to someone-else/vqa-rad"


def test_a_missing_manual_file_and_the_cli_table(world, monkeypatch):
    result = _check(world, from_quilt=False)
    assert not result["ok"] and {c["status"] for c in result["checks"] if c["source"] == "quilt1m"} == {"missing"}
    from medmix.cli.main import app

    server, recipe_path, quilt = world
    monkeypatch.setenv("HF_ENDPOINT", server.hf_endpoint)
    (quilt / "quilt_1M_lookup.csv").unlink()
    res = CliRunner().invoke(app, ["doctor", "--recipe", str(recipe_path), "--mirror", server.url,
                                   "--from", f"quilt1m={quilt}", "--json"])
    assert res.exit_code == 1, res.output
    out = json.loads(res.stdout)
    assert out["ok"] is False and out["counts"]["missing"] == 1
    assert "medmix doctor: doctored" in res.stderr and "missing" in res.stderr
