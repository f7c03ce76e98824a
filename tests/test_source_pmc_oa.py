"""PMC-OA adapter: captions, per-article licenses joined from the PMC OA file list, byte-offset units."""

from __future__ import annotations

import io
import json

import pytest
from adapter_harness import run_adapter
from fixtures import assert_matches_remotes, local_files, read_split, serve
from fixtures import pmc_oa as fx
from PIL import Image

from medmix.errors import MedmixError
from medmix.sources import get_source
from medmix.sources.pmc_oa import PMCOA, pmc_license_to_spdx


def test_registered_with_per_article_license_default():
    assert get_source("pmc_oa") is PMCOA
    assert PMCOA.tasks == ("caption",) and PMCOA.domain == "general-biomedical"
    assert PMCOA.license == "LicenseRef-PMC-OA-unknown"
    assert_matches_remotes(PMCOA, fx.build())


@pytest.mark.parametrize("label, spdx", [
    ("CC BY", "CC-BY-4.0"), ("CC-BY", "CC-BY-4.0"), ("cc by-nc-nd", "CC-BY-NC-ND-4.0"), ("CC0", "CC0-1.0"),
    ("NO-CC CODE", "LicenseRef-PMC-OA-no-CC"), ("", "LicenseRef-PMC-OA-unknown"), (None, "LicenseRef-PMC-OA-unknown"),
    ("Something new", "LicenseRef-PMC-OA-unknown"),
])
def test_pmc_license_labels_map_to_spdx(label, spdx):
    assert pmc_license_to_spdx(label) == spdx


def test_end_to_end_rows_carry_their_article_license(http_server, tmp_path):
    serve(http_server, fx.build())
    rows, bad = run_adapter(PMCOA(), ("train",), server=http_server, cache_dir=tmp_path)
    by_image = {json.loads(r["meta"])["image"]: r for r in rows}
    assert set(by_image) == set(fx.GOOD)
    for name, (caption, spdx) in fx.GOOD.items():
        row = by_image[name]
        assert row["answer"] == caption and row["task"] == "caption" and row["split"] == "train"
        assert row["license"] == spdx, name
        assert Image.open(io.BytesIO(row["image"]["bytes"])).size[0] > 0
    unknown = json.loads(by_image["PMC9999999_F1.jpg"]["meta"])
    assert unknown["license_source"] == "unknown" and unknown["pmcid"] == "PMC9999999"
    known = json.loads(by_image["PMC1064097_F1.jpg"]["meta"])
    assert known == {**known, "pmc_license": "CC BY-NC", "license_source": "oa_file_list", "alignment_type": "exact"}
    assert all(r["id"].startswith("pmc_oa/L") for r in rows)
    reasons = sorted(b["reason"] for b in bad)
    assert len(bad) == 5
    assert any(r.startswith("image file missing: PMC212319_Fig9_1.jpg") for r in reasons)
    assert any(r.startswith("malformed JSON line") for r in reasons)
    assert "missing field: caption" in reasons
    assert "malformed line: not valid UTF-8" in reasons
    assert any(r.startswith("unsafe image name") for r in reasons)
    assert all(b["file"] for b in bad)


def test_ids_do_not_depend_on_unit_size_and_units_seek(tmp_path, monkeypatch):
    upstream = fx.build()
    files = local_files(tmp_path, PMCOA(), upstream, ("train",))
    whole = [r.native_id for r in read_split(PMCOA(), "train", files)[0]]
    monkeypatch.setattr(PMCOA, "rows_per_unit", 2)
    units = PMCOA().units("train", files)
    assert len(units) == 6  # 11 lines in slices of 2
    assert [u.args["start"] for u in units] == [0, 2, 4, 6, 8, 10]
    assert units[1].args["offset"] > 0
    sliced, bads = read_split(PMCOA(), "train", files)
    assert [r.native_id for r in sliced] == whole
    assert len(whole) == len(set(whole)) == len(fx.GOOD)
    assert len(bads) == 5


def test_file_list_without_license_column_stops_the_unit(tmp_path):
    upstream = fx.build(bad=False)
    upstream["oa_file_list.csv"] = fx.Served("oa_file_list.csv", b"File,Accession ID\nx,PMC212319\n",
                                             url=fx.FILE_LIST_URL)
    files = local_files(tmp_path, PMCOA(), upstream, ("train",))
    with pytest.raises(MedmixError, match="oa_file_list.csv"):
        read_split(PMCOA(), "train", files)
