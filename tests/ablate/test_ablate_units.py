"""Fast checks of the ablation's parts: plans, variant recipes, held-out rows, subsets, statistics."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from medmix.ablate import analyze
from medmix.ablate.holdout import select_heldout, training_subset
from medmix.ablate.variants import base_weights, make_variants, parse_plan, variant_recipe, write_recipe
from medmix.core.errors import MedmixError
from medmix.core.layout import read_manifest


def test_parse_plan():
    assert parse_plan("loo") == ("loo", 0)
    assert parse_plan("regmix") == ("regmix", 8)
    assert parse_plan("regmix:3") == ("regmix", 3)
    for bad in ("loo:2", "regmix:0", "doremi", "regmix:x"):
        with pytest.raises(MedmixError, match="--plan"):
            parse_plan(bad)


def test_loo_variants_drop_one_source_and_renormalize():
    base = {"a": 0.5, "b": 0.3, "c": 0.2}
    vs = make_variants("loo", 0, base, {}, seed=0)
    assert [v.name for v in vs] == ["base", "without-a", "without-b", "without-c"]
    without_a = vs[1].weights
    assert "a" not in without_a and without_a["b"] == pytest.approx(0.6) and without_a["c"] == pytest.approx(0.4)


def test_regmix_variants_baselines_and_seeded_draws():
    base = {"a": 0.7, "b": 0.2, "c": 0.1}
    avail = {"a": 400, "b": 100, "c": 25}
    vs = make_variants("regmix", 4, base, avail, seed=3)
    by = {v.name: v.weights for v in vs}
    assert by["stratified"] == pytest.approx({"a": 1 / 3, "b": 1 / 3, "c": 1 / 3}, abs=1e-6)
    # temperature 0.5: shares ∝ sqrt(available) = 20 : 10 : 5
    assert by["temperature"] == pytest.approx({"a": 20 / 35, "b": 10 / 35, "c": 5 / 35}, abs=1e-6)
    draws = [v.weights for v in vs if v.kind == "dirichlet"]
    assert len(draws) == 4 and all(abs(sum(w.values()) - 1) < 1e-4 for w in draws)
    assert draws == [v.weights for v in make_variants("regmix", 4, base, avail, seed=3) if v.kind == "dirichlet"]
    assert draws != [v.weights for v in make_variants("regmix", 4, base, avail, seed=4) if v.kind == "dirichlet"]


def test_variant_recipe_is_a_valid_weighted_recipe(tmp_path):
    base = {"name": "x", "seed": 1, "sources": {
        "a": {"adapter": "local", "from": "/d/a", "all": True, "options": {"domain": "radiology", "license": "MIT"}},
        "b": {"adapter": "local", "from": "/d/b", "samples": 10, "options": {"domain": "radiology",
                                                                              "license": "MIT"}}}}
    v = make_variants("loo", 0, {"a": 0.75, "b": 0.25}, {}, seed=0)[2]  # without-b
    recipe = write_recipe(tmp_path / "v.yaml", variant_recipe(base, v, 40))
    assert recipe.target_samples == 40
    assert [(s.name, s.mode, s.value) for s in recipe.sources] == [("a", "weight", 1.0)]


def test_heldout_is_deterministic_and_never_in_a_subset(planted_build, tmp_path):
    mix = planted_build
    a = select_heldout(mix, tmp_path / "h1.parquet", seed=0, fraction=0.3, cap=5)
    select_heldout(mix, tmp_path / "h2.parquet", seed=0, fraction=0.3, cap=5)
    assert (tmp_path / "h1.parquet").read_bytes() == (tmp_path / "h2.parquet").read_bytes()
    counts = {s: a.column("source").to_pylist().count(s) for s in set(a.column("source").to_pylist())}
    assert len(counts) == 4 and max(counts.values()) <= 5
    c = select_heldout(mix, tmp_path / "h3.parquet", seed=1, fraction=0.3, cap=5)
    assert set(c.column("id").to_pylist()) != set(a.column("id").to_pylist())
    held = set(a.column("id").to_pylist())
    summary = training_subset(mix, tmp_path / "sub", held, lambda row: 10, budget=500)
    ids = pq.read_table(tmp_path / "sub" / "data" / "train-00000-of-00001.parquet").column("id").to_pylist()
    assert not held & {i.split("#")[0] for i in ids}
    assert summary["rows"] == 50 == len(ids) and summary["tokens"] == 500 and summary["covered"]
    assert read_manifest(tmp_path / "sub")["total_rows"] == 50


def test_base_weights_from_manifest(planted_build):
    weights, avail = base_weights(read_manifest(planted_build))
    assert weights == pytest.approx({s: 0.25 for s in ("useful", "noise", "neutral_a", "neutral_b")})
    assert set(avail.values()) == {48}


def test_paired_bootstrap_interval_covers_the_shift():
    rng = np.random.default_rng(0)
    sources = np.array(["s"] * 200 + ["t"] * 100)
    b = rng.normal(1.0, 0.3, 300)
    a = b + 0.2 + rng.normal(0, 0.01, 300)
    lo, hi = analyze.paired_bootstrap(a, b, sources, ["s", "t"], seed=0)
    assert lo < 0.2 < hi and hi - lo < 0.01
    assert analyze.metric(a, sources, ["t"]) == pytest.approx(a[200:].mean())


def test_regression_search_moves_weight_to_the_helpful_source():
    rng = np.random.default_rng(0)
    x = rng.dirichlet(np.ones(3), 12)
    y = 2.0 - 1.5 * x[:, 0] + 0.5 * x[:, 2]  # source 0 helps, source 2 hurts
    model = analyze.fit_regression(x, y)
    best, predicted = analyze.search(model, np.array([1 / 3] * 3), seed=0, n=5000, top=20)
    assert best[0] > 0.6 and best[2] < 0.1 and predicted < y.min()


def test_cv_r2_says_when_a_fit_beats_the_mean():
    y = np.array([1.0, 2.0, 3.0, 4.0])
    assert analyze.cv_r2(y + 0.01, y) > 0.99
    assert analyze.cv_r2(np.full(4, y.mean()), y) == pytest.approx(0.0)
    assert analyze.cv_r2(y[::-1], y) < 0
