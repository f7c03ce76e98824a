"""PMC-OA adapter: captions, per-article licenses from the `pmc-oa-opendata` bucket (or an archived
`oa_file_list.csv`), refusals counted by reason, byte-offset units, a license table pinned in the lock."""

from __future__ import annotations

import io
import json
from collections import Counter

import pytest
from adapter_harness import run_adapter
from fixtures import assert_matches_remotes, local_files, read_split, serve, write_tree
from fixtures import pmc_oa as fx
from PIL import Image

from medmix.core.errors import MedmixError
from medmix.fetch.download import fetch_files
from medmix.fetch.lock import apply_lock, derived_entry
from medmix.normalize import reason_class
from medmix.sources import get_source
from medmix.sources._pmc_licenses import fetch_table, http_get, lookup, read_table, refusal, table_from_file_list
from medmix.sources.base import Derived
from medmix.sources.pmc_oa import PMCOA


def test_registered_with_refused_default_and_the_bucket_as_upstream():
    assert get_source("pmc_oa") is PMCOA
    assert PMCOA.tasks == ("caption",) and PMCOA.domain == "general-biomedical"
    assert PMCOA.license == "LicenseRef-PMC-OA-refused"
    assert_matches_remotes(PMCOA, fx.build())
    upstreams = PMCOA.describe()["upstream"]
    assert "https://pmc-oa-opendata.s3.amazonaws.com/metadata/" in upstreams
    assert not any("ftp.ncbi.nlm.nih.gov" in u for u in upstreams)


@pytest.mark.parametrize("entry, reason", [
    ({"absent": True}, "absent from the PMC OA bucket"),
    ({"is_pmc_openaccess": True, "is_retracted": True, "license_code": "CC BY"}, "retracted article"),
    ({"is_pmc_openaccess": False, "license_code": "CC BY"}, "no open-access version"),
    ({"is_pmc_openaccess": True, "license_code": None}, "open access without a CC license code"),
    ({"is_pmc_openaccess": True, "license_code": "TDM"}, "text-mining-only (TDM) manuscript"),
    ({"is_pmc_openaccess": True, "license_code": "CC BY-XYZ"}, "unknown license code 'CC BY-XYZ'"),
    ({"is_pmc_openaccess": True, "license_code": "cc-by-nc-nd"}, None),
])
def test_refusals_never_fall_back_to_a_default(entry, reason):
    assert refusal(entry) == reason


def _rows(http_server, tmp_path, **serve_kw):
    serve(http_server, fx.build())
    fx.serve_bucket(http_server, **serve_kw)
    return run_adapter(PMCOA(), ("train",), server=http_server, cache_dir=tmp_path)


def test_end_to_end_rows_carry_their_article_license_and_refusals_are_counted(http_server, tmp_path):
    rows, bad = _rows(http_server, tmp_path)
    by_image = {json.loads(r["meta"])["image"]: r for r in rows}
    assert set(by_image) == set(fx.GOOD)
    for name, (caption, spdx) in fx.GOOD.items():
        row = by_image[name]
        assert row["answer"] == caption and row["task"] == "caption" and row["split"] == "train"
        assert row["license"] == spdx, name
        assert Image.open(io.BytesIO(row["image"]["bytes"])).size[0] > 0
    latest = json.loads(by_image["PMC212319_Fig3_4.jpg"]["meta"])
    assert latest["pmc_version"] == 2 and latest["pmc_license"] == "CC BY"  # v1 was CC BY-NC
    counts = Counter(reason_class(b["reason"]) for b in bad)
    for _caption, why in fx.REFUSED.values():
        assert counts[f"license refused ({why})"] == 1, (why, counts)
    assert counts["image file missing"] == 1 and counts["missing field"] == 1
    assert all(r["id"].startswith("pmc_oa/L") for r in rows)
    # only the cited articles were asked for, and the absent one answered 404
    asked = {p for _m, p, _r in http_server.requests if "metadata" in p}
    assert not any("PMC13900" in p for p in asked)
    assert any(p.endswith("prefix=metadata/PMC9999999.") for p in asked)


def test_throttled_and_failing_answers_are_retried(http_server, tmp_path):
    serve(http_server, fx.build())
    fx.serve_bucket(http_server)
    http_server.fail(fx.metadata_path("PMC1064097", 1), "429", times=2)
    http_server.fail(fx.listing_path("PMC3000777"), "503", times=1)
    http_server.fail(fx.metadata_path("PMC212319", 2), "500", times=1)
    table = fetch_table(["PMC1064097", "PMC3000777", "PMC212319"], tmp_path / "p.jsonl",
                        base=http_server.url + "/pmc-oa-opendata.s3.amazonaws.com", workers=3,
                        get=lambda url: http_get(url, backoff=0.01))
    arts = table["articles"]
    assert arts["PMC1064097"]["license_code"] == "CC BY-NC" and arts["PMC3000777"]["license_code"] == "CC0"
    assert arts["PMC212319"]["version"] == 2 and len(arts["PMC212319"]["etag"]) == 32
    gets = Counter(p for m, p, _ in http_server.requests if m == "GET")
    assert gets[fx.metadata_path("PMC1064097", 1)] == 3 and gets[fx.metadata_path("PMC212319", 2)] == 2


def test_a_killed_lookup_resumes_without_asking_again(http_server, tmp_path):
    fx.serve_bucket(http_server)
    base = http_server.url + "/pmc-oa-opendata.s3.amazonaws.com"
    partial = tmp_path / "p.jsonl"
    partial.write_text(json.dumps(["PMC1064097", lookup("PMC1064097", base)]) + "\n" + '["PMC30007')  # cut line
    http_server.requests.clear()
    table = fetch_table(["PMC1064097", "PMC3000777"], partial, base=base)
    assert set(table["articles"]) == {"PMC1064097", "PMC3000777"}
    assert not any("PMC1064097" in p for _m, p, _r in http_server.requests)
    # canonical: the same answers give the same table
    assert table == fetch_table(["PMC1064097", "PMC3000777"], partial, base=base)


def test_a_bucket_that_refuses_listing_is_probed_by_version(http_server, tmp_path):
    fx.serve_bucket(http_server, listing=False)
    base = http_server.url + "/pmc-oa-opendata.s3.amazonaws.com"
    assert lookup("PMC212319", base)["version"] == 2
    assert lookup("PMC9999999", base) == {"absent": True}


def test_lock_pins_the_table_and_a_rebuild_asks_nothing(http_server, tmp_path):
    serve(http_server, fx.build())
    fx.serve_bucket(http_server)
    first = fetch_files(PMCOA(), ("train",), cache_dir=tmp_path / "c1", mirror=http_server.url,
                        hf_endpoint=http_server.hf_endpoint)
    record = next(r for r in first.provenance if r["name"] == "pmc_licenses.json")
    assert record["articles"] == 8 and record["fetched"] and not record["pinned"]
    item = next(f for f in PMCOA.files if isinstance(f, Derived))
    entry = derived_entry(item, record, first.paths["pmc_licenses.json"])
    assert entry["sha256"] == record["sha256"] and entry["table"]["etags_sha256"] == record["etags_sha256"]
    src = PMCOA()
    assert apply_lock(src, "pmc_oa", {"sources": {"pmc_oa": {"pmc_licenses.json": entry}}}) == 1
    http_server.requests.clear()
    again = fetch_files(src, ("train",), cache_dir=tmp_path / "c2", mirror=http_server.url,
                        hf_endpoint=http_server.hf_endpoint)
    assert not any("pmc-oa-opendata" in p for _m, p, _r in http_server.requests)
    assert again.fingerprints["pmc_licenses.json"] == record["sha256"]
    assert read_table(again.paths["pmc_licenses.json"]) == entry["table"]


def test_archived_oa_file_list_under_from(http_server, tmp_path):
    upstream = fx.build()
    serve(http_server, upstream)
    from_dir = tmp_path / "from"
    write_tree(from_dir, upstream)
    (from_dir / "oa_file_list.csv").write_text(fx.FILE_LIST)
    rows, bad = run_adapter(PMCOA(), ("train",), server=http_server, cache_dir=tmp_path, from_dir=from_dir)
    assert not any("pmc-oa-opendata" in p for _m, p, _r in http_server.requests)
    licenses = {json.loads(r["meta"])["image"]: r["license"] for r in rows}
    assert licenses == {k: v for k, (_c, v) in fx.GOOD.items()}
    counts = Counter(reason_class(b["reason"]) for b in bad)
    assert counts["license refused (retracted article)"] == 1                 # Retracted: yes
    assert counts["license refused (absent from the PMC OA bucket)"] == 3      # not in the list
    assert counts["license refused (open access without a CC license code)"] == 1


def test_file_list_without_license_column_names_the_file(tmp_path):
    bad = tmp_path / "oa_file_list.csv"
    bad.write_text("File,Accession ID\nx,PMC212319\n")
    with pytest.raises(MedmixError, match="oa_file_list.csv"):
        table_from_file_list(bad, {"PMC212319"})


def test_ids_do_not_depend_on_unit_size_and_units_seek(tmp_path, monkeypatch):
    upstream = fx.build()
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "oa_file_list.csv").write_text(fx.FILE_LIST)
    table = table_from_file_list(tmp_path / "raw" / "oa_file_list.csv", {"PMC212319", "PMC1064097", "PMC3000777"})
    (tmp_path / "raw" / "pmc_licenses.json").write_text(json.dumps(table))
    files = local_files(tmp_path, PMCOA(), upstream, ("train",))
    whole = [r.native_id for r in read_split(PMCOA(), "train", files)[0]]
    monkeypatch.setattr(PMCOA, "rows_per_unit", 2)
    units = PMCOA().units("train", files)
    assert len(units) == 7  # 14 lines in slices of 2
    assert [u.args["start"] for u in units] == [0, 2, 4, 6, 8, 10, 12]
    assert units[1].args["offset"] > 0
    sliced, bads = read_split(PMCOA(), "train", files)
    assert [r.native_id for r in sliced] == whole
    assert len(whole) == len(set(whole)) == len(fx.GOOD)
    assert len(bads) == 5 + len(fx.REFUSED)


def test_medmix_lock_then_a_build_without_ncbi(http_server, tmp_path):
    """`medmix lock` pins the table in the lock; a later build with the bucket gone gives the same rows."""
    import pyarrow.parquet as pq

    from medmix.pipeline import BuildOptions, build
    from medmix.planning import lock_recipe
    from medmix.recipe import parse_recipe

    serve(http_server, fx.build(bad=False))
    fx.serve_bucket(http_server)
    recipe = parse_recipe("name: pmc\nlicenses: {accept: [CC-BY-NC-4.0]}\n"
                          "decontaminate: {against: []}\nsources:\n  pmc_oa: {}\n", str(tmp_path / "pmc.yaml"))
    opts = dict(mirror=http_server.url, hf_endpoint=http_server.hf_endpoint)
    lock = lock_recipe(recipe, BuildOptions(out=tmp_path, cache=tmp_path / "c1", **opts), offline=False)
    entry = lock["sources"]["pmc_oa"]["pmc_licenses.json"]
    assert entry["sha256"] and entry["fetched"] and entry["table"]["articles"]["PMC212319"]["version"] == 2
    lock_file = tmp_path / "pmc.lock.json"
    lock_file.write_text(json.dumps(lock))

    http_server.requests.clear()
    http_server._entries = {k: v for k, v in http_server._entries.items() if "pmc-oa-opendata" not in k}  # NCBI gone
    manifest = build(recipe, BuildOptions(out=tmp_path / "out", cache=tmp_path / "c2", lock=lock_file, **opts),
                     log=lambda m: None)
    assert not any("pmc-oa-opendata" in p for _m, p, _r in http_server.requests)
    upstream = {u["name"]: u for u in manifest["sources"]["pmc_oa"]["upstream"]}["pmc_licenses.json"]
    assert upstream["pinned"] and upstream["sha256"] == entry["sha256"]
    rows = pq.read_table(tmp_path / "out" / "data").to_pylist()
    assert sorted(r["license"] for r in rows) == sorted(spdx for _c, spdx in fx.GOOD.values())
    reasons = manifest["sources"]["pmc_oa"]["counts"]["quarantine_reasons"]
    assert sum(v for k, v in reasons.items() if k.startswith("license refused")) == len(fx.REFUSED)
