"""Recipes fail before any work, naming the file, the line, the key and the fix."""

from __future__ import annotations

import pytest

from medmix.core.errors import LicenseRefused, MedmixError, RecipeError
from medmix.mix.select import resolve_counts, select, source_rng
from medmix.planning import BuildOptions, plan_sources
from medmix.recipe import load_recipe, parse_recipe

BASE = """name: t
seed: 3
sources:
  mine:
    adapter: local
    from: /nonexistent
    options: {domain: radiology, license: CC-BY-4.0}
"""


def _err(text: str) -> str:
    with pytest.raises(RecipeError) as exc:
        parse_recipe(text, "r.yaml")
    return str(exc.value)


def test_valid_recipe_resolves_defaults():
    r = parse_recipe(BASE, "r.yaml")
    assert r.seed == 3 and r.sources[0].adapter == "local" and r.sources[0].mode == "all"
    assert r.dedup.image_distance == 8 and r.decontaminate.ngram == 13
    assert len(r.sha256()) == 64 and r.sha256() == parse_recipe(BASE, "other.yaml").sha256()


@pytest.mark.parametrize("patch, needle", [
    ("seed: 3", "seed: -1"),
    ("sources:", "surces: {}\nsources:"),
])
def test_top_level_errors_name_line(patch, needle):
    msg = _err(BASE.replace(patch, needle))
    assert msg.startswith("r.yaml:") and ("seed" in msg or "surces" in msg)


def test_two_weighting_keys_named_with_line():
    msg = _err("name: t\nsources:\n  a:\n    samples: 5\n    weight: 0.5\n")
    assert "r.yaml:5" in msg and "samples" in msg and "weight" in msg and "keep exactly one" in msg


def test_weights_need_target_samples():
    assert "target_samples" in _err("name: t\nsources:\n  a: {weight: 0.5}\n")


def test_bad_thresholds_and_decontam_entries():
    assert "dedup.image_distance" in _err(BASE + "dedup: {image_distance: 40}\n")
    assert "dedup.text_threshold" in _err(BASE + "dedup: {text_threshold: 1.5}\n")
    assert "decontaminate.against" in _err(BASE + "decontaminate: {against: [pathvqa]}\n")
    assert "given twice" in _err(BASE + "seed: 4\n")


def test_unknown_source_suggests_close_name(tmp_path):
    r = parse_recipe("name: t\nsources:\n  vqa_radd: {splits: [train]}\n", str(tmp_path / "r.yaml"))
    with pytest.raises(MedmixError, match="did you mean vqa_rad"):
        plan_sources(r, BuildOptions(out=tmp_path / "o", cache=tmp_path / "c"))


def test_unknown_eval_split_fails_before_download(tmp_path):
    r = parse_recipe(BASE + "decontaminate: {against: ['vqa_rad:nope']}\n", str(tmp_path / "r.yaml"))
    with pytest.raises(RecipeError, match="vqa_rad has no split 'nope'"):
        plan_sources(r, BuildOptions(out=tmp_path / "o", cache=tmp_path / "c"))


def test_non_commercial_license_refused_until_accepted(tmp_path):
    text = BASE.replace("CC-BY-4.0", "CC-BY-NC-SA-4.0")
    r = parse_recipe(text, str(tmp_path / "r.yaml"))
    opts = BuildOptions(out=tmp_path / "o", cache=tmp_path / "c")
    with pytest.raises(LicenseRefused) as exc:
        plan_sources(r, opts)
    msg = str(exc.value)
    assert "'mine'" in msg and "CC-BY-NC-SA-4.0" in msg and "--accept-license CC-BY-NC-SA-4.0" in msg
    assert "commercial use NOT allowed" in msg
    plan_sources(r, BuildOptions(out=tmp_path / "o", cache=tmp_path / "c", accept=("CC-BY-NC-SA-4.0",)))
    accepted = parse_recipe(text + "licenses: {accept: [CC-BY-NC-SA-4.0]}\n", str(tmp_path / "r.yaml"))
    assert plan_sources(accepted, opts)[0].name == "mine"


def test_benchmark_split_refused_in_pretraining(tmp_path):
    r = parse_recipe("name: t\nsources:\n  vqa_rad: {splits: [train, test]}\n", str(tmp_path / "r.yaml"))
    with pytest.raises(LicenseRefused) as exc:
        plan_sources(r, BuildOptions(out=tmp_path / "o", cache=tmp_path / "c"))
    assert "vqa_rad" in str(exc.value) and "'test'" in str(exc.value) and "--allow-eval vqa_rad:test" in str(exc.value)
    plan_sources(r, BuildOptions(out=tmp_path / "o", cache=tmp_path / "c", allow_eval=("vqa_rad:test",)))


def test_builtin_recipes_parse():
    for name in ("demo",):
        assert load_recipe(name).name == name


def test_weight_rounding_is_exact_and_samples_exact():
    r = parse_recipe("name: t\ntarget_samples: 1001\nsources:\n  a: {weight: 1}\n  b: {weight: 1}\n  c: {weight: 1}\n"
                     "  d: {samples: 7}\n", "r.yaml")
    counts = resolve_counts(r, {"a": 10, "b": 10, "c": 10, "d": 3})
    assert sum(counts.values()) == 1001 and counts["d"] == 7
    assert sorted(counts[k] for k in "abc") == [331, 331, 332]


def test_upsampling_takes_whole_epochs_then_a_seeded_remainder():
    sel = select(10, 25, source_rng(0, "a", "select"))
    assert len(sel.indices) == 25 and sel.epochs == 2.5
    counts = {i: int((sel.indices == i).sum()) for i in range(10)}
    assert set(counts.values()) == {2, 3} and sum(v == 3 for v in counts.values()) == 5
    again = select(10, 25, source_rng(0, "a", "select"))
    other = select(10, 25, source_rng(1, "a", "select"))
    assert (again.indices == sel.indices).all() and not (other.indices == sel.indices).all()
    down = select(100, 10, source_rng(0, "a", "select"))
    assert len(set(down.indices.tolist())) == 10


def test_every_manual_file_is_named_before_any_download(tmp_path):
    from medmix.core.errors import ManualFilesMissing
    from medmix.pipeline import build

    r = parse_recipe("name: t\nlicenses: {accept: [LicenseRef-Quilt-1M]}\nsources:\n  vqa_rad: {splits: [train]}\n"
                     "  quilt1m: {splits: [train]}\n"
                     "decontaminate: {against: ['lc25000_lung:test']}\n", str(tmp_path / "r.yaml"))
    with pytest.raises(ManualFilesMissing) as exc:
        build(r, BuildOptions(out=tmp_path / "o", cache=tmp_path / "c"), log=lambda m: None)
    msg = str(exc.value)
    assert "--from quilt1m=DIR" in msg and "quilt_1M_lookup.csv" in msg and "--from lc25000_lung=DIR" in msg
    assert not (tmp_path / "c" / "downloads").exists()  # vqa_rad, listed first, was not fetched
