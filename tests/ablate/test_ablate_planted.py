"""End to end on planted sources: `loo` and `regmix` with proxy-tiny on CPU find what was planted.

`useful` duplicates the evaluation distribution, `noise` has its labels shuffled, the two
`neutral` sources ask other questions (see planted.py). The tests check the ranking, the outputs
and that a killed ablation resumes without redoing finished units.
"""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
import torch

from medmix.ablate import proxy
from medmix.ablate.runner import AblationOptions, run_ablation
from medmix.recipe import load_recipe

TOKENS = 20_000  # ~105 proxy-tiny steps: enough for the planted map to show (measured: useful +0.99, noise -0.33)


@pytest.fixture(autouse=True)
def one_thread():
    """proxy-tiny's steps are per-op overhead: one thread ran them 3.6x faster on 2 shared cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _opts(recipe, out, plan):
    return AblationOptions(recipe=str(recipe), plan=plan, proxy="proxy-tiny", tokens=TOKENS, out=out,
                           cache=out.parent / f"{out.name}-cache", eval_sources=("useful",), heldout_fraction=0.3,
                           heldout_cap=20)


def test_loo_ranks_useful_first_noise_last_and_resumes(planted_recipe, tmp_path, monkeypatch):
    out = tmp_path / "loo"

    calls = []
    original = proxy.train_proxy

    def failing(cfg, subset, run, tok):
        calls.append(run.name)
        if len(calls) == 3:
            raise RuntimeError("killed")
        return original(cfg, subset, run, tok)

    monkeypatch.setattr(proxy, "train_proxy", failing)
    with pytest.raises(RuntimeError, match="killed"):
        run_ablation(_opts(planted_recipe, out, "loo"), log=lambda m: None)
    done = {p.name: p.stat().st_mtime_ns for p in (out / "units").glob("*.json")}
    assert "base.eval.json" in done and "without-neutral_a.eval.json" in done
    assert "without-neutral_b.train.json" not in done

    seen = []
    monkeypatch.setattr(proxy, "train_proxy", lambda *a: seen.append(a[2].name) or original(*a))
    summary = run_ablation(_opts(planted_recipe, out, "loo"), log=lambda m: None)
    assert "base" not in seen and "without-neutral_a" not in seen and "without-neutral_b" in seen
    assert {p.name: p.stat().st_mtime_ns for p in (out / "units").glob("*.json") if p.name in done} == done

    ranking = [c["source"] for c in summary["contributions"]]
    assert ranking[0] == "useful" and ranking[-1] == "noise", summary["contributions"]
    useful = summary["contributions"][0]
    assert useful["low"] > 0  # the interval, not only the point, says it helps
    # variant builds reuse every normalize unit: only the mix stage ran
    for v in summary["variants"]:
        n = v["build"]["normalize"]
        assert n["reused"] == n["units"] > 0
    assert summary["prepared"]["base_build"]["normalize"]["reused"] == 0
    # same steps, seed and schedule for every variant
    steps = {json.loads((out / "runs" / v["name"] / "config.json").read_text())["train"]["steps"]
             for v in summary["variants"]}
    assert steps == {summary["prepared"]["steps"]}
    report = (out / "report.md").read_text()
    assert "| 1 | useful |" in report and (out / "contributions.png").stat().st_size > 1000
    suggested = load_recipe(str(out / "suggested.yaml"))
    assert "noise" not in {s.name for s in suggested.sources}
    # per-row losses do not depend on how rows are batched (padding, row order inside a batch)
    from medmix.ablate.evaluate import heldout_losses

    one = heldout_losses(out / "runs" / "base", out / "heldout.parquet", tmp_path / "one.parquet", batch_size=1)
    stored = pq.read_table(out / "evals" / "base.parquet")
    assert one.column("id").to_pylist() == stored.column("id").to_pylist()
    assert one.column("loss").to_numpy() == pytest.approx(stored.column("loss").to_numpy(), abs=1e-4)
    plan = json.loads((out / "plan.json").read_text())
    assert plan["command"].startswith("medmix ablate") and len(plan["variants"]) == 6


def test_regmix_puts_more_weight_on_the_useful_source(planted_recipe, tmp_path):
    summary = run_ablation(_opts(planted_recipe, tmp_path / "regmix", "regmix:3"), log=lambda m: None)
    base = summary["prepared"]["base_weights"]
    suggested = summary["suggested"]["weights"]
    assert suggested["useful"] > base["useful"], suggested
    assert suggested.get("noise", 0.0) < base["noise"], suggested
    kinds = [v["kind"] for v in summary["variants"]]
    assert kinds[:3] == ["base", "stratified", "temperature"] and kinds.count("dirichlet") == 3
    assert summary["regression"]["coef"]["useful"] < 0 < summary["regression"]["coef"]["noise"]
    assert (tmp_path / "regmix" / "predicted_vs_observed.png").is_file()
    assert "Predicted metric" in (tmp_path / "regmix" / "report.md").read_text()
