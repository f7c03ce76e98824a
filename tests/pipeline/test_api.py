"""The public Python API (`import medmix`): what README's notebook lines rely on."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import medmix
from medmix.core.errors import RecipeError


def test_every_public_name_resolves_and_nothing_else_does():
    for name in medmix.__all__:
        assert getattr(medmix, name) is not None, name
    assert set(medmix.__all__) <= set(dir(medmix))
    with pytest.raises(AttributeError, match="no attribute 'bulid'"):
        medmix.bulid  # noqa: B018 - a typo must fail, not return a module


def test_import_medmix_stays_cheap():
    """The command line imports medmix on every call; torch, datasets and pyarrow load only when used."""
    code = "import sys, medmix; print([m for m in ('torch', 'datasets', 'pyarrow', 'PIL') if m in sys.modules])"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"


def test_build_returns_what_the_manifest_says(tmp_path):
    logged: list[str] = []
    result = medmix.build("demo", out=tmp_path / "mix", cache=tmp_path / "cache", log=logged.append)
    manifest = json.loads((tmp_path / "mix" / "manifest.json").read_text())
    assert result.manifest == manifest
    assert result.out == str(tmp_path / "mix")
    assert result.total_rows == sum(s["rows"] for s in manifest["shards"]) > 0
    assert sum(result.rows_per_source.values()) == result.total_rows
    assert "dicom_demo" in result.rows_per_source
    assert result.removed_rows == manifest["removed"]["rows"] > 0
    assert result.quarantined_rows == manifest["quarantine"]["rows"]
    assert [str(tmp_path / "mix" / s) for s in result.shards] == sorted(
        str(p) for p in (tmp_path / "mix" / "data").glob("*.parquet"))
    assert len(result.load()) == result.total_rows


def test_a_recipe_object_and_a_path_build_the_same_bytes(tmp_path):
    recipe = medmix.load_recipe("demo")
    a = medmix.build(recipe, out=tmp_path / "a", cache=tmp_path / "cache", log=lambda m: None)
    b = medmix.build(recipe.path, out=tmp_path / "b", cache=tmp_path / "cache", log=lambda m: None)
    assert [s["sha256"] for s in a.manifest["shards"]] == [s["sha256"] for s in b.manifest["shards"]]
    assert a.recipe_sha256 == b.recipe_sha256 == recipe.sha256()


def test_a_bad_recipe_name_raises_the_recipe_error(tmp_path):
    with pytest.raises(RecipeError, match="no-such-recipe"):
        medmix.build("no-such-recipe", out=tmp_path / "mix", cache=tmp_path / "cache")
