"""All 14 pretraining sources of openmedq-3.35m, from fixtures in their native layouts, through
`medmix build` over real HTTP (the local fixture server as mirror and Hub endpoint) and `--from` for
the gated one; the manifest's per-source counts must equal what the rows say."""

from __future__ import annotations

from collections import Counter

import pyarrow.parquet as pq
import pytest
from fixtures import (
    arch,
    medmcqa,
    medqa,
    medquad,
    pathvqa,
    pmc_oa,
    pmc_vqa,
    pubmedqa,
    pubmedvision,
    quilt1m,
    rocov2,
    serve,
    slake,
    vqa_med_2019,
    vqa_rad,
)

from medmix.pipeline import BuildOptions, build
from medmix.recipe import load_recipe, parse_recipe

FIXTURES = [arch, medmcqa, medqa, medquad, pathvqa, pmc_oa, pmc_vqa, pubmedqa, pubmedvision, rocov2, slake,
            vqa_med_2019, vqa_rad]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    from httpserver import FixtureServer

    tmp = tmp_path_factory.mktemp("all14")
    with FixtureServer() as server:
        for module in FIXTURES:
            serve(server, module.build())
        pmc_oa.serve_bucket(server)  # PMC-OA's per-article licenses
        quilt_dir = quilt1m.write(tmp / "quilt")
        # the real recipe's sources, splits and license acceptances; decontamination against the
        # fixtures' own evaluation splits (the downstream benchmarks have their own tests)
        real = load_recipe("openmedq-3.35m")
        text = "\n".join(
            ["name: all14", "seed: 1", "shard_rows: 50",
             f"licenses: {{accept: [{', '.join(real.accept)}]}}",
             "decontaminate: {against: [vqa_rad:test, pathvqa:test, slake:test, pubmedqa:pqa_labeled]}",
             "sources:"]
            + [f"  {s.name}: {{splits: [{', '.join(s.splits)}], all: true}}" for s in real.sources])
        recipe = parse_recipe(text, str(tmp / "all14.yaml"))
        opts = BuildOptions(out=tmp / "out", cache=tmp / "cache", workers=2, mirror=server.url,
                            hf_endpoint=server.hf_endpoint, from_dirs={"quilt1m": quilt_dir})
        manifest = build(recipe, opts, log=lambda m: None)
    return tmp / "out", manifest, recipe


def test_every_source_arrives_with_consistent_counts(built):
    out, manifest, recipe = built
    assert {s.name for s in recipe.sources} == {k for k, v in manifest["sources"].items() if "counts" in v}
    assert len(recipe.sources) == 14
    rows = pq.read_table(out / "data").to_pylist()
    per_source = Counter(r["source"] for r in rows)
    for name, entry in manifest["sources"].items():
        if "counts" not in entry:
            continue
        c = entry["counts"]
        assert c["selected"] == per_source[name] > 0, name
        assert c["read"] == c["normalized"] + c["quarantined"], name
        assert c["available"] == c["normalized"] - c["license_filtered"] - c["duplicates"] - c["contaminated"], name
        assert c["selected"] == c["available"], name  # every source is `all: true`
    assert sum(per_source.values()) == manifest["total_rows"]
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids))


def test_rows_carry_the_task_and_license_of_their_source(built):
    out, manifest, _ = built
    rows = pq.read_table(out / "data").to_pylist()
    tasks = {r["source"]: r["task"] for r in rows}
    assert tasks["medmcqa"] == "mcqa" and tasks["vqa_rad"] == "vqa" and tasks["arch"] == "caption"
    assert {r["license"] for r in rows if r["source"] == "quilt1m"} == {"LicenseRef-Quilt-1M"}
    assert all(r["options"] for r in rows if r["task"] == "mcqa")
    assert all(r["image"] is not None for r in rows if r["source"] in ("pathvqa", "slake", "arch", "rocov2"))
    assert all(r["image"] is None for r in rows if r["source"] in ("medmcqa", "medqa", "medquad", "pubmedqa"))
    assert manifest["quarantine"]["rows"] > 0  # the fixtures plant bad rows in most sources
