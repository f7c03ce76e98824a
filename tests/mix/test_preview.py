"""`medmix build --plan` counts rows with the build's own arithmetic, so the two agree."""

from __future__ import annotations

from typer.testing import CliRunner

from medmix.cli.main import app
from medmix.pipeline import build
from medmix.planning import BuildOptions
from medmix.preview import expected_rows
from medmix.recipe import find_recipe, parse_recipe

# three equal weights and a target not divisible by three: rounding each share gives 3/3/3 (9 rows)
THREE_EQUAL = """name: three-equal
seed: 0
shard_rows: 64
target_samples: 10
decontaminate: {against: []}
sources:
  vqa_rad: {splits: [train], weight: 1, from: package:data/demo/vqa_rad}
  slake: {splits: [train], weight: 1, from: package:data/demo/slake}
  pubmedqa: {splits: [pqa_unlabeled], weight: 1, from: package:data/demo/pubmedqa}
"""


def test_plan_and_build_agree_on_three_equal_weights_and_a_target_of_ten(tmp_path):
    path = tmp_path / "three.yaml"
    path.write_text(THREE_EQUAL)
    recipe = parse_recipe(THREE_EQUAL, str(path))
    opts = BuildOptions(out=tmp_path / "out", cache=tmp_path / "cache")
    planned = {r["name"]: r["selected"] for r in expected_rows(recipe, opts)}
    manifest = build(recipe, opts, log=lambda m: None)
    built = {k: v["counts"]["selected"] for k, v in manifest["sources"].items()}
    assert planned == built
    assert sorted(built.values()) == [3, 3, 4] and manifest["total_rows"] == 10

    res = CliRunner().invoke(app, ["build", "--recipe", str(path), "--plan", "--out", str(tmp_path / "o2"),
                                   "--cache", str(tmp_path / "c2")])
    assert res.exit_code == 0, res.output
    assert "expected total before dedup/decontamination: 10 rows" in res.stdout


def test_plan_of_the_demo_selects_what_the_demo_declares(tmp_path):
    recipe = parse_recipe(find_recipe("demo").read_text(), str(find_recipe("demo")))
    rows = {r["name"]: r for r in expected_rows(recipe, BuildOptions(out=tmp_path / "o", cache=tmp_path / "c"))}
    assert rows["pubmedqa"]["selected"] == 30                     # samples: 30
    assert rows["vqa_rad"]["selected"] == rows["vqa_rad"]["available"]   # all: true
    assert rows["vqa_rad@eval"]["evaluation"] and rows["vqa_rad@eval"]["selected"] == 0
