"""`medmix push`: the dry-run layout loads with `datasets` (default + one config per source) offline,
the card says what the licenses allow, uploads go through a recording stand-in for the Hub client in
bounded, resumable commits, the token never leaks, and rows that may not be redistributed are refused
unless excluded or forced, judged per row.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import datasets
import numpy as np
import polars as pl
import pytest
import typer
import yaml
from PIL import Image
from typer.testing import CliRunner

from medmix.cli.push_command import push_command
from medmix.core.errors import MedmixError
from medmix.pipeline import BuildOptions, build
from medmix.publish import hub
from medmix.publish.card import hub_license
from medmix.recipe import load_recipe
from medmix.sources import get_source

FAKE_TOKEN = "hf_FAKEtoken1234567890abcdefGHIJKLmnop"
QUILT = "LicenseRef-Quilt-1M"


def _app() -> typer.Typer:
    app = typer.Typer(add_completion=False)
    app.command("push")(push_command)
    app.command("version")(lambda: None)
    return app


def _push(*args: str):
    return CliRunner().invoke(_app(), ["push", *args], catch_exceptions=False)


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> tuple[Path, dict]:
    base = tmp_path_factory.mktemp("demo")
    manifest = build(load_recipe("demo"), BuildOptions(out=base / "mixture", cache=base / "cache"), log=lambda m: None)
    return base / "mixture", manifest


@pytest.fixture(scope="module")
def gated(tmp_path_factory) -> tuple[Path, dict]:
    """A local source declared CC-BY-4.0 whose metadata gives two rows the gated Quilt-1M terms.

    The manifest alone says CC-BY-4.0: only a per-row check can find the two rows.
    """
    base = tmp_path_factory.mktemp("gated")
    folder = base / "images"
    folder.mkdir()
    rng = np.random.default_rng(3)
    lines = ["file_name,answer,license"]
    for i in range(6):
        pixels = (rng.random((48, 48)) * 255).astype(np.uint8)
        Image.fromarray(np.kron(pixels[::8, ::8], np.ones((8, 8), np.uint8))).save(folder / f"img{i}.png")
        lines.append(f"img{i}.png,slide {i} shows tissue pattern number {i},{QUILT if i < 2 else 'CC-BY-4.0'}")
    (folder / "metadata.csv").write_text("\n".join(lines) + "\n")
    recipe = base / "gated.yaml"
    recipe.write_text(yaml.safe_dump({
        "name": "gated-test", "seed": 0, "shard_rows": 4,
        "licenses": {"accept": [QUILT]},
        "sources": {"mixed_local": {"adapter": "local", "from": str(folder),
                                    "options": {"domain": "pathology", "task": "caption", "license": "CC-BY-4.0"}}},
    }))
    out = base / "mixture"
    manifest = build(load_recipe(str(recipe)), BuildOptions(out=out, cache=base / "cache"), log=lambda m: None)
    assert manifest["sources"]["mixed_local"]["license"] == "CC-BY-4.0"
    assert manifest["total_rows"] == 6, manifest["sources"]["mixed_local"]["counts"]
    return out, manifest


@pytest.fixture
def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)
    return tmp_path / "hf-cache"


def _load(folder: Path, cache: Path, config: str | None = None) -> datasets.Dataset:
    return datasets.load_dataset(str(folder), config, split="train", cache_dir=str(cache))


def _front_matter(readme: str) -> dict:
    assert readme.startswith("---\n")
    return yaml.safe_load(readme.split("---\n", 2)[1])


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_dry_run_layout_loads_default_and_every_source_config(demo, tmp_path, offline):
    out, manifest = demo
    result = _push(str(out), "me/demo", "--dry-run", str(tmp_path / "dry"))
    assert result.exit_code == 0, result.output
    dry = tmp_path / "dry"
    assert (dry / "manifest.json").read_bytes() == (out / "manifest.json").read_bytes()
    assert not list((dry / "data").glob("train-*.parquet"))  # no mixture-wide copy next to the per-source files
    files = sorted((dry / "data").glob("*/train-*.parquet"))
    assert all(set(pl.read_parquet(f, columns=["source"])["source"]) == {f.parent.name} for f in files)
    stored = pl.read_parquet([str(f) for f in files], columns=["id"])["id"].to_list()
    assert len(stored) == len(set(stored)) == manifest["total_rows"]  # every row stored exactly once

    full = _load(dry, offline)
    assert len(full) == manifest["total_rows"]
    built = pl.read_parquet([str(out / s["path"]) for s in manifest["shards"]], columns=["id", "source"])
    assert sorted(full["id"]) == sorted(built["id"].to_list())  # the whole mixture
    assert full["id"] == [i for s in sorted(set(built["source"])) for i, src in built.iter_rows() if src == s]
    assert any(isinstance(r["image"], Image.Image) for r in full.select(range(20)))

    meta = _front_matter((dry / "README.md").read_text())
    configs = [c["config_name"] for c in meta["configs"]]
    sources = {n: e["counts"]["selected"] for n, e in manifest["sources"].items()
               if e.get("counts", {}).get("selected")}
    assert configs == ["default", *sorted(sources)]
    for name, n in sources.items():
        part = _load(dry, offline, name)
        assert len(part) == n and set(part["source"]) == {name}
        assert part["id"] == [i for i, s in built.iter_rows() if s == name]  # the build's order within a source


def test_card_metadata_and_body_follow_the_rows(demo, tmp_path):
    out, manifest = demo
    layout = hub.prepare(out, tmp_path / "dry", repo_id="me/demo", log=lambda m: None)
    readme = (tmp_path / "dry" / "README.md").read_text()
    meta = _front_matter(readme)
    df = pl.read_parquet([str(out / s["path"]) for s in manifest["shards"]],
                         columns=["license", "task", "question", "answer"])
    row_licenses = set(df["license"].unique())
    assert meta["license"] == sorted({hub_license(lic) for lic in row_licenses})
    assert all(lic == lic.lower() for lic in meta["license"])
    assert "visual-question-answering" in meta["task_categories"] and "question-answering" in meta["task_categories"]
    assert meta["size_categories"] == ["n<1K"]
    has_han = df.filter(pl.col("question").str.contains(r"\p{Han}").fill_null(False)
                        | pl.col("answer").str.contains(r"\p{Han}").fill_null(False)).height > 0
    assert ("zh" in meta["language"]) == has_han and "en" in meta["language"]
    default_files = [{"split": "train", "path": "data/*/train-*"}]
    assert meta["configs"][0] == {"config_name": "default", "data_files": default_files,
                                  "default": True}
    assert meta["pretty_name"] and "medical" in meta["tags"]

    assert manifest["recipe_sha256"] in readme
    assert hashlib.sha256((out / "manifest.json").read_bytes()).hexdigest() in readme
    assert manifest["medmix_version"] in readme
    for name, entry in manifest["sources"].items():
        if not entry.get("counts", {}).get("selected"):
            continue
        assert f"`{name}`" in readme
        if entry["adapter"] != "local":
            first = get_source(entry["adapter"]).citation.strip().splitlines()[0]
            assert first in readme, name
    decontamination = {k for e in manifest["sources"].values() for k in e.get("decontamination", {})}
    assert decontamination, "the demo removes rows that overlap its evaluation sets"
    for key in decontamination:
        assert key in readme
    assert "Non-commercial" not in readme  # the demo's licenses all allow commercial use
    assert layout.files == sorted(p.relative_to(tmp_path / "dry").as_posix()
                                  for p in (tmp_path / "dry").rglob("*") if p.is_file())
    # deterministic: the same mixture gives the same card bytes
    hub.prepare(out, tmp_path / "again", repo_id="me/demo", log=lambda m: None)
    assert (tmp_path / "again" / "README.md").read_bytes() == (tmp_path / "dry" / "README.md").read_bytes()


@dataclass
class Remote:
    path: str
    size: int
    blob_id: str
    lfs: Any = None


class RecordingApi:
    """Stands in for HfApi: records every call, reads each committed file as the real client would."""

    def __init__(self, remote: list[Remote] | None = None, fail_commit: str | None = None) -> None:
        self.calls: list[tuple[str, dict]] = []
        self.commits: list[dict] = []
        self.remote = remote or []
        self.fail_commit = fail_commit
        self.endpoint = "https://hub.example"

    def create_repo(self, repo_id, **kw):
        self.calls.append(("create_repo", {"repo_id": repo_id, **kw}))

    def create_branch(self, repo_id, **kw):
        self.calls.append(("create_branch", {"repo_id": repo_id, **kw}))

    def list_repo_tree(self, repo_id, **kw):
        self.calls.append(("list_repo_tree", {"repo_id": repo_id, **kw}))
        return list(self.remote)

    def create_commit(self, repo_id, operations, **kw):
        if self.fail_commit:
            raise RuntimeError(self.fail_commit)
        adds, deletes = {}, []
        for op in operations:
            if hasattr(op, "path_or_fileobj"):
                adds[op.path_in_repo] = Path(op.path_or_fileobj).read_bytes()
            else:
                deletes.append(op.path_in_repo)
        self.commits.append({"adds": adds, "deletes": deletes, **kw})
        return SimpleNamespace(commit_url=f"{self.endpoint}/commit/{len(self.commits)}")


@pytest.fixture
def recording(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    seen: dict[str, Any] = {}
    api = RecordingApi()

    def make_api(token):
        seen["token"] = token
        return api

    monkeypatch.setattr(hub, "make_api", make_api)
    return api, seen


def test_push_commits_the_dry_run_layout_data_first_card_last(demo, tmp_path, recording):
    out, _ = demo
    api, seen = recording
    dry = hub.prepare(out, tmp_path / "dry", repo_id="me/demo", log=lambda m: None)
    result = _push(str(out), "me/demo", "--private", "--revision", "dev", "--message", "first push")
    assert result.exit_code == 0, result.output
    assert seen["token"] == FAKE_TOKEN  # the token reached the client...
    assert ("create_repo", {"repo_id": "me/demo", "repo_type": "dataset", "private": True, "exist_ok": True}) \
        in api.calls
    assert ("create_branch", {"repo_id": "me/demo", "repo_type": "dataset", "branch": "dev", "exist_ok": True}) \
        in api.calls
    assert api.commits and all(c["revision"] == "dev" and c["repo_type"] == "dataset" for c in api.commits)
    committed = {p: b for c in api.commits for p, b in c["adds"].items()}
    assert sorted(committed) == dry.files
    for path, data in committed.items():
        assert data == (tmp_path / "dry" / path).read_bytes(), path
    assert set(api.commits[-1]["adds"]) == {"README.md", "manifest.json"}
    assert api.commits[-1]["commit_message"] == "first push"
    assert all(p.startswith("data/") for c in api.commits[:-1] for p in c["adds"])
    assert "https://hub.example/datasets/me/demo/tree/dev" in result.output
    assert not list(out.glob(".medmix-push-*")), "the staging folder is removed"
    # ...and nowhere else
    assert FAKE_TOKEN not in result.output
    assert all(FAKE_TOKEN.encode() not in data for data in committed.values())


def test_commits_are_bounded_and_a_rerun_skips_what_the_hub_has(demo, tmp_path):
    out, _ = demo
    layout = hub.prepare(out, tmp_path / "dry", repo_id="me/demo", log=lambda m: None)
    data = [f for f in layout.files if f.startswith("data/")]
    api = RecordingApi()
    hub.upload(layout, "me/demo", api, log=lambda m: None, batch_files=2)
    assert all(len(c["adds"]) <= 2 for c in api.commits[:-1])
    assert len(api.commits) == -(-len(data) // 2) + 1

    # second run: the Hub has the first half (LFS sha256 / git blob id match) and a stale shard of another push
    have = data[: len(data) // 2] + ["README.md"]
    remote = []
    for f in have:
        p = tmp_path / "dry" / f
        blob = hashlib.sha1(f"blob {p.stat().st_size}\0".encode() + p.read_bytes()).hexdigest()
        lfs = SimpleNamespace(sha256=_sha(p)) if f.endswith(".parquet") else None
        remote.append(Remote(f, p.stat().st_size, blob, lfs))
    remote.append(Remote("data/train-00000-of-00099.parquet", 10, "x", SimpleNamespace(sha256="0" * 64)))
    logs: list[str] = []
    again = RecordingApi(remote=remote)
    hub.upload(layout, "me/demo", again, log=logs.append)
    sent = {p for c in again.commits for p in c["adds"]}
    assert sent == set(layout.files) - set(have)
    assert again.commits[-1]["deletes"] == ["data/train-00000-of-00099.parquet"]
    assert any(f"{len(have)} file(s) already on the Hub" in m for m in logs)


def test_a_failing_hub_names_the_repo_and_never_shows_the_token(demo, monkeypatch):
    out, _ = demo
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    monkeypatch.setattr(hub, "make_api", lambda token: RecordingApi(fail_commit=f"401 bad token {token}"))
    result = _push(str(out), "me/demo")
    assert result.exit_code == 2
    assert "me/demo" in result.output and "401" in result.output and "***" in result.output
    assert FAKE_TOKEN not in result.output


def test_push_without_a_token_says_how_to_get_one(demo, monkeypatch):
    import huggingface_hub

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    result = _push(str(demo[0]), "me/demo")
    assert result.exit_code == 2 and "no Hugging Face token" in result.output and "HF_TOKEN" in result.output


def test_non_redistributable_rows_are_refused_by_row_then_excluded_or_forced(gated, tmp_path, offline):
    out, manifest = gated
    refused = _push(str(out), "me/gated", "--dry-run", str(tmp_path / "refused"))
    assert refused.exit_code == 2
    assert "mixed_local" in refused.output and QUILT in refused.output and "2 row(s)" in refused.output
    assert "--exclude-nonredistributable" in refused.output and "--force-nonredistributable" in refused.output
    assert not (tmp_path / "refused").exists() or not any((tmp_path / "refused").iterdir())

    excluded = _push(str(out), "me/gated", "--dry-run", str(tmp_path / "ex"), "--exclude-nonredistributable")
    assert excluded.exit_code == 0, excluded.output
    assert "excluding 2" in excluded.output
    rows = _load(tmp_path / "ex", offline)
    assert len(rows) == manifest["total_rows"] - 2 and QUILT not in set(rows["license"])
    assert len(_load(tmp_path / "ex", offline, "mixed_local")) == manifest["total_rows"] - 2
    card = (tmp_path / "ex" / "README.md").read_text()
    assert "Rows left out" in card and "mixed_local (2 rows)" in card
    assert _front_matter(card)["license"] == ["cc-by-4.0"]

    forced = _push(str(out), "me/gated", "--dry-run", str(tmp_path / "forced"), "--force-nonredistributable")
    assert forced.exit_code == 0 and "WARNING" in forced.output
    rows = _load(tmp_path / "forced", offline)
    assert len(rows) == manifest["total_rows"] and list(rows["license"]).count(QUILT) == 2
    card = (tmp_path / "forced" / "README.md").read_text()
    meta = _front_matter(card)
    assert meta["license"] == ["cc-by-4.0", "other"] and meta["license_name"] == "licenseref-quilt-1m"
    assert "WARNING" in card and "Non-commercial content" in card and "2 rows" in card

    both = _push(str(out), "me/gated", "--dry-run", str(tmp_path / "both"), "--exclude-nonredistributable",
                 "--force-nonredistributable")
    assert both.exit_code == 2 and "contradict" in both.output


def test_restrictions_cover_gated_sources_unknown_adapters_and_unknown_licenses():
    from collections import Counter

    manifest = {"sources": {
        "quilt": {"adapter": "quilt1m", "license": QUILT},
        "pathvqa": {"adapter": "pathvqa", "license": "LicenseRef-PathVQA"},
        "plugin": {"adapter": "not-a-medmix-adapter", "license": "MIT"},
        "pmc": {"adapter": "pmc_oa", "license": "CC-BY-4.0"},
        "rad": {"adapter": "vqa_rad", "license": "CC0-1.0"},
    }}
    pairs = Counter({("quilt", QUILT): 3, ("pathvqa", "LicenseRef-PathVQA"): 4, ("plugin", "MIT"): 5,
                     ("pmc", "CC-BY-4.0"): 6, ("pmc", "LicenseRef-custom"): 7, ("pmc", "CC-BY-NC-4.0"): 8,
                     ("rad", "CC0-1.0"): 9, ("ghost", "MIT"): 1})
    found = {(r.source, r.license): r for r in hub.restrictions(manifest, pairs)}
    assert set(found) == {("quilt", QUILT), ("pathvqa", "LicenseRef-PathVQA"), ("plugin", "MIT"),
                          ("pmc", "LicenseRef-custom"), ("ghost", "MIT")}
    assert "forbid redistribution" in found[("quilt", QUILT)].why
    assert "unknown to this medmix" in found[("plugin", "MIT")].why
    assert "unknown terms" in found[("pmc", "LicenseRef-custom")].why
    assert found[("quilt", QUILT)].rows == 3


def test_hub_license_ids():
    assert hub_license("CC-BY-NC-SA-4.0") == "cc-by-nc-sa-4.0"
    assert hub_license("ODC-By-1.0") == "odc-by"
    assert hub_license("Apache-2.0") == "apache-2.0"
    assert hub_license(QUILT) == "other"
    assert hub_license("LicenseRef-PathVQA") == "other"


def test_bad_targets_and_tampered_shards_are_named(demo, tmp_path):
    out, manifest = demo
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x.txt").write_text("x")
    result = _push(str(out), "me/demo", "--dry-run", str(tmp_path / "full"))
    assert result.exit_code == 2 and "full" in result.output and "not an empty folder" in result.output
    result = _push(str(out), "not a/valid/repo", "--dry-run", str(tmp_path / "d1"))
    assert result.exit_code == 2 and "not a Hub repository id" in result.output

    import shutil
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    m = json.loads((copy / "manifest.json").read_text())
    m["shards"][-1]["sha256"] = "0" * 64  # as if the shard's bytes had changed after the build
    (copy / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(MedmixError, match=r"train-.*sha256 differs"):
        hub.prepare(copy, tmp_path / "d2", repo_id="me/demo", log=lambda m: None)
    m = json.loads((out / "manifest.json").read_text())
    m["sources"]["default"] = m["sources"].pop("vqa_rad")
    (copy / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(MedmixError, match="config name"):
        hub.prepare(copy, tmp_path / "d3", repo_id="me/demo", log=lambda m: None)
