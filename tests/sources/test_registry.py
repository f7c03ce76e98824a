"""The registry as users see it: `medmix sources`, DATASETS.md, and the plan of the big recipes."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from medmix.cli.main import app
from medmix.publish.datasets_md import datasets_markdown

PRETRAINING = {"pmc_oa", "quilt1m", "pmc_vqa", "medmcqa", "rocov2", "pubmedqa", "medquad", "pathvqa",
               "vqa_med_2019", "arch", "slake", "medqa", "vqa_rad", "pubmedvision"}
ROOT = Path(__file__).resolve().parents[2]


def test_sources_json_lists_every_pretraining_source_with_its_facts():
    res = CliRunner().invoke(app, ["sources", "--json"])
    assert res.exit_code == 0, res.output
    by_name = {d["name"]: d for d in json.loads(res.stdout)}
    assert PRETRAINING <= set(by_name)
    for name in PRETRAINING:
        d = by_name[name]
        assert d["license"] and d["domain"] and d["tasks"] and d["homepage"].startswith("http")
        assert d["citation"].startswith("@"), name
    assert by_name["pathvqa"]["eval_splits"] == ["test"]
    assert by_name["pubmedqa"]["eval_splits"] == ["pqa_labeled"]
    assert by_name["quilt1m"]["manual"] and not by_name["quilt1m"]["redistributable"]
    assert all(by_name[b]["benchmark"] for b in ("pcam", "bloodmnist", "nct_crc_he"))


def test_sources_table_renders():
    res = CliRunner().invoke(app, ["sources"])
    assert res.exit_code == 0 and "vqa_rad" in res.stdout and "CC0-1.0" in res.stdout


def test_datasets_md_is_generated_from_the_registry():
    fix = "run: python -m medmix.publish.datasets_md > DATASETS.md"
    assert (ROOT / "DATASETS.md").read_text() == datasets_markdown(), fix
    for name in PRETRAINING:
        assert f"(`{name}`)" in datasets_markdown()


def test_plan_of_openmedq_totals_about_3_35m_offline(tmp_path):
    res = CliRunner().invoke(app, ["build", "--recipe", "openmedq-3.35m", "--plan", "--out", str(tmp_path / "o"),
                                   "--cache", str(tmp_path / "c")])
    assert res.exit_code == 0, res.output
    from medmix.planning import BuildOptions
    from medmix.preview import expected_rows
    from medmix.recipe import load_recipe

    rows = expected_rows(load_recipe("openmedq-3.35m"), BuildOptions(out=tmp_path / "o", cache=tmp_path / "c"))
    total = sum(r["selected"] for r in rows if not r["evaluation"])
    assert abs(total - 3_350_000) / 3_350_000 < 0.05
    assert len([r for r in rows if not r["evaluation"]]) == 14
    assert "quilt1m needs manual files" in res.stdout.replace("\n", " ")
    assert not (tmp_path / "c").exists(), "the plan must not download or cache anything"


def test_openmedq_open_accepts_nothing_restricted(tmp_path):
    from medmix.core.licenses import terms
    from medmix.planning import BuildOptions, plan_sources
    from medmix.recipe import load_recipe

    planned = plan_sources(load_recipe("openmedq-open"), BuildOptions(out=tmp_path / "o", cache=tmp_path / "c"))
    for p in planned:
        if not p.evaluation:
            assert p.source.redistributable
            assert p.source.per_row_license or not terms(p.source.license).needs_acceptance, p.name
