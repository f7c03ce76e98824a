"""`medmix stats` on the real demo mixture: tables, JSON equal to the manifest and to an independent
polars computation, PNG charts, token counts with an offline tokenizer, compare, and clear errors.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

from medmix.cli.stats_command import stats_command
from medmix.core.errors import MedmixError
from medmix.pipeline import BuildOptions, build
from medmix.publish.plots import PLOTS, plot_all
from medmix.publish.stats import IntCounts, compute_stats
from medmix.recipe import load_recipe

RECIPES = Path(__file__).resolve().parents[2] / "medmix" / "recipes"


def _app() -> typer.Typer:
    app = typer.Typer(add_completion=False)
    app.command("stats")(stats_command)
    app.command("version")(lambda: None)  # two commands, so `stats` stays a subcommand as in medmix's CLI
    return app


def _run(*args: str):
    return CliRunner().invoke(_app(), ["stats", *args], catch_exceptions=False)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def demo(tmp_path_factory, cache) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("demo") / "mixture"
    manifest = build(load_recipe("demo"), BuildOptions(out=out, cache=cache), log=lambda m: None)
    return out, manifest


@pytest.fixture(scope="module")
def smaller(tmp_path_factory, cache) -> tuple[Path, dict]:
    """The demo with 10 instead of 30 PubMedQA rows: a second mixture that differs in a known way."""
    text = (RECIPES / "demo.yaml").read_text()
    assert "samples: 30" in text
    path = tmp_path_factory.mktemp("recipe") / "demo-small.yaml"
    path.write_text(text.replace("samples: 30", "samples: 10"))
    out = tmp_path_factory.mktemp("small") / "mixture"
    return out, build(load_recipe(str(path)), BuildOptions(out=out, cache=cache), log=lambda m: None)


def _frame(out: Path, manifest: dict) -> pl.DataFrame:
    files = [str(out / s["path"]) for s in manifest["shards"]]
    return pl.read_parquet(files, columns=["source", "domain", "task", "license", "width", "height", "question",
                                           "answer", "context"])


def _nearest_rank(values: list[int]) -> dict:
    v = np.sort(np.array(values))
    n = len(v)
    return {"n": n, "min": int(v[0]), "max": int(v[-1]),
            **{name: int(v[max(1, math.ceil(q * n)) - 1]) for name, q in (("p5", .05), ("p50", .5), ("p95", .95))}}


def test_tables_name_every_source_and_the_build_accounting(demo):
    out, manifest = demo
    result = _run(str(out))
    assert result.exit_code == 0, result.output
    text = result.output
    for title in ("rows per source", "rows per domain", "rows per task", "rows per license", "image size",
                  "text length (characters) per task", "build funnel"):
        assert title in text
    for name, entry in manifest["sources"].items():
        if "counts" in entry:
            assert name in text
            assert f"{entry['counts']['selected']:,}" in text
    reasons = {r for e in manifest["sources"].values() for r in e.get("counts", {}).get("quarantine_reasons", {})}
    assert reasons, "the demo quarantines its truncated and missing DICOM files"
    for reason in reasons:
        assert reason[:20] in text
    decon = {k for e in manifest["sources"].values() for k in e.get("decontamination", {})}
    for key in decon:
        assert key in text
    assert "inconsistent" not in text


def test_json_counts_equal_the_manifest_and_an_independent_scan(demo):
    out, manifest = demo
    result = _run(str(out), "--json")
    assert result.exit_code == 0
    stats = json.loads(result.stdout)
    assert stats["problems"] == []
    assert stats["rows"]["total"] == manifest["total_rows"]
    training = {n: e for n, e in manifest["sources"].items() if "counts" in e}
    assert stats["rows"]["by_source"] == {n: e["counts"]["selected"] for n, e in training.items()
                                          if e["counts"]["selected"]}
    for name, entry in training.items():
        assert stats["manifest"]["sources"][name]["counts"] == entry["counts"]
        assert stats["manifest"]["sources"][name]["decontamination"] == entry["decontamination"]
    assert sorted(stats["manifest"]["evaluation_sources"]) == sorted(n for n, e in manifest["sources"].items()
                                                                     if "counts" not in e)
    assert stats["manifest"]["quarantine"]["rows"] == manifest["quarantine"]["rows"]
    assert sum(n for _, n in stats["manifest"]["quarantine"]["top_reasons"]) == manifest["quarantine"]["rows"]
    assert stats["manifest"]["totals"]["duplicates"] == sum(e["counts"]["duplicates"] for e in training.values())
    assert sum(stats["manifest"]["decontamination"].values()) == sum(e["counts"]["contaminated"]
                                                                     for e in training.values())
    assert stats["manifest"]["removed_rows"] == manifest["removed"]["rows"]

    df = _frame(out, manifest)
    for column in ("domain", "task", "license"):
        expected = dict(df.group_by(column).len().iter_rows())
        assert stats["rows"][f"by_{column}"] == dict(sorted(expected.items(), key=lambda kv: (-kv[1], kv[0])))
    images = df.filter(pl.col("width").is_not_null())
    assert stats["images"]["rows"] == images.height > 0
    for axis in ("width", "height"):
        got = {k: stats["images"][axis][k] for k in ("n", "min", "p5", "p50", "p95", "max")}
        assert got == _nearest_rank(images[axis].to_list())
    for task in df["task"].unique().to_list():
        for field in ("question", "answer", "context"):
            lengths = df.filter((pl.col("task") == task) & pl.col(field).is_not_null())[field].str.len_chars()
            if lengths.len() == 0:
                assert field not in stats["text"]["chars"].get(task, {})
                continue
            s = stats["text"]["chars"][task][field]
            assert {k: s[k] for k in ("n", "min", "p5", "p50", "p95", "max")} == _nearest_rank(lengths.to_list())
            assert sum(s["histogram"]["counts"]) == s["n"]
    han = df.filter(pl.any_horizontal(pl.col(f).str.contains(r"\p{Han}").fill_null(False)
                                      for f in ("question", "answer", "context"))).height
    assert stats["rows"]["rows_with_han_script"] == han


def test_stats_never_reads_image_bytes(demo, monkeypatch):
    out, _ = demo
    requested: list[list[str]] = []
    original = pq.ParquetFile.iter_batches

    def spy(self, *args, **kwargs):
        requested.append(list(kwargs.get("columns") or []))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(pq.ParquetFile, "iter_batches", spy)
    compute_stats(out)
    assert requested and all(cols and "image" not in cols for cols in requested)


def test_plots_are_readable_pngs_and_deterministic(demo, tmp_path):
    out, _ = demo
    result = _run(str(out), "--plot", str(tmp_path / "a"))
    assert result.exit_code == 0
    written = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert written == sorted(PLOTS)
    for name in written:
        path = tmp_path / "a" / name
        with Image.open(path) as img:
            assert img.format == "PNG"
            assert 600 <= img.width <= 2500 and 250 <= img.height <= 2500, (name, img.size)
            colors = img.convert("RGB").getcolors(maxcolors=1 << 20)
            assert colors is not None and len(colors) > 20, f"{name} looks blank"
        assert 10_000 < path.stat().st_size < 1_000_000
    # same figures → same bytes (no matplotlib version or date in the PNG)
    again = plot_all(compute_stats(out), tmp_path / "b")
    for path in again:
        assert path.read_bytes() == (tmp_path / "a" / path.name).read_bytes(), path.name


def test_token_counts_with_an_offline_tokenizer(demo, tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({"[UNK]": 0, "the": 1, "of": 2, "yes": 3, "no": 4}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]").save_pretrained(tmp_path / "tok")

    out, manifest = demo
    result = _run(str(out), "--json", "--tokenizer", str(tmp_path / "tok"))
    assert result.exit_code == 0, result.output
    tokens = json.loads(result.stdout)["text"]["tokens"]
    df = _frame(out, manifest)
    words = re.compile(r"\w+|[^\w\s]+")  # what the Whitespace pre-tokenizer splits on; one id per piece
    checked = 0
    for task, fields in tokens.items():
        for field, s in fields.items():
            texts = df.filter((pl.col("task") == task) & pl.col(field).is_not_null())[field].to_list()
            expected = _nearest_rank([len(words.findall(t)) for t in texts])
            assert {k: s[k] for k in expected} == expected, (task, field)
            checked += 1
    assert checked >= 3
    tables = _run(str(out), "--tokenizer", str(tmp_path / "tok"))
    assert "text length (tokens) per task" in tables.output


def test_a_tokenizer_that_cannot_load_is_named(demo, tmp_path):
    out, _ = demo
    result = _run(str(out), "--tokenizer", str(tmp_path / "no-such-tokenizer"))
    assert result.exit_code == 2
    assert "no-such-tokenizer" in result.output and "could not be loaded" in result.output


def test_compare_shows_the_known_difference(demo, smaller):
    (a, _), (b, mb) = demo, smaller
    assert mb["sources"]["pubmedqa"]["counts"]["selected"] == 10
    result = _run(str(a), "--compare", str(b), "--json")
    assert result.exit_code == 0
    payload = json.loads(result.stdout)
    diff = payload["diff"]
    assert diff["rows"]["by_source"]["pubmedqa"] == [30, 10, -20]
    assert diff["rows"]["total"][2] == -20
    assert diff["same_recipe"] is False
    assert "by_source: pubmedqa" in diff["changed"]
    assert diff["funnel"]["pubmedqa"]["selected"] == [30, 10, -20]
    for name in ("vqa_rad", "slake", "dicom_demo"):
        assert diff["rows"]["by_source"][name][2] == 0
    tables = _run(str(a), "--compare", str(b))
    assert tables.exit_code == 0
    assert "-20" in tables.output and "pubmedqa" in tables.output and "differ" in tables.output
    same = json.loads(_run(str(a), "--compare", str(a), "--json").stdout)["diff"]
    assert same["changed"] == [] and same["same_recipe"] is True
    assert "identical figures" in _run(str(a), "--compare", str(a)).output


def test_not_a_mixture_is_named(tmp_path):
    result = _run(str(tmp_path))
    assert result.exit_code == 2
    assert "manifest.json" in result.output and "not a built mixture" in result.output
    (tmp_path / "manifest.json").write_text("{not json")
    result = _run(str(tmp_path))
    assert result.exit_code == 2 and "not valid JSON" in result.output


def test_broken_and_tampered_mixtures_are_named(demo, tmp_path):
    out, manifest = demo
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    shard = copy / manifest["shards"][0]["path"]
    shard.write_bytes(b"PAR1 this is not parquet")
    result = _run(str(copy))
    assert result.exit_code == 2
    assert shard.name in result.output and "Parquet" in result.output
    shard.unlink()
    result = _run(str(copy))
    assert result.exit_code == 2 and shard.name in result.output and "missing" in result.output

    shutil.rmtree(copy)
    shutil.copytree(out, copy)
    m = json.loads((copy / "manifest.json").read_text())
    m["sources"]["pubmedqa"]["counts"]["selected"] += 5
    (copy / "manifest.json").write_text(json.dumps(m))
    result = _run(str(copy))
    assert result.exit_code == 1
    assert "inconsistent mixture" in result.output and "pubmedqa" in result.output

    m["shards"][0]["path"] = "../../outside.parquet"
    (copy / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(MedmixError, match="outside the mixture"):
        compute_stats(copy)


def test_int_counts_quantiles_are_exact_across_dense_and_sparse_values():
    rng = np.random.default_rng(7)
    values = np.concatenate([rng.integers(0, 500, 5000), rng.integers(IntCounts.DENSE, 10 * IntCounts.DENSE, 300)])
    counts = IntCounts()
    for chunk in np.array_split(rng.permutation(values), 7):
        counts.add(chunk)
    s = counts.summary()
    assert {k: s[k] for k in ("n", "min", "p5", "p50", "p95", "max")} == _nearest_rank(values.tolist())
    assert s["mean"] == round(float(values.mean()), 3)
    assert sum(s["histogram"]["counts"]) == len(values)
    edges = s["histogram"]["edges"]
    assert edges == sorted(edges) and edges[0] <= values.min() and edges[-1] > values.max()
    with pytest.raises(ValueError):
        counts.add(np.array([-1]))
    assert IntCounts().summary() == {"n": 0}
