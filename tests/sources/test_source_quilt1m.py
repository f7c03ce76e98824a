"""Quilt-1M adapter: bring-your-own gated files, clear instructions when they are missing."""

from __future__ import annotations

import io
import json

import pytest
from adapter_harness import run_adapter
from fixtures import quilt1m as fx
from fixtures import read_split
from PIL import Image

from medmix.core.errors import ManualFilesMissing
from medmix.core.licenses import terms
from medmix.fetch.download import fetch_files
from medmix.sources import Manual, get_source
from medmix.sources.quilt1m import Quilt1M


def test_registered_gated_non_commercial_not_redistributable():
    assert get_source("quilt1m") is Quilt1M
    assert all(isinstance(f, Manual) for f in Quilt1M.files)
    assert Quilt1M.redistributable is False and Quilt1M.domain == "pathology"
    lic = terms(Quilt1M.license)
    assert lic.known and not lic.commercial and not lic.redistribution


def test_missing_files_name_each_file_where_to_request_it_and_the_from_flag(tmp_path):
    with pytest.raises(ManualFilesMissing) as err:
        fetch_files(Quilt1M(), ("train",), cache_dir=tmp_path)
    msg = str(err.value)
    assert "quilt_1M_lookup.csv" in msg and "quilt_1m" in msg
    assert "--from quilt1m=DIR" in msg
    assert "https://zenodo.org/records/8239942" in msg and "github.com/wisdomikezogwo/quilt1m" in msg


def test_half_placed_files_name_what_is_still_missing(tmp_path):
    (tmp_path / "quilt_1M_lookup.csv").write_text(",caption,image_path,split\n")
    with pytest.raises(ManualFilesMissing, match=r"quilt_1m \(missing\)"):
        fetch_files(Quilt1M(), ("train",), cache_dir=tmp_path / "c", from_dir=tmp_path)


def test_from_dir_rows_per_split_with_bad_rows_quarantined(tmp_path):
    folder = fx.write(tmp_path / "quilt")
    rows, bad = run_adapter(Quilt1M(), ("train", "val"), cache_dir=tmp_path / "cache", from_dir=folder)
    assert [r["id"] for r in rows] == ["quilt1m/0", "quilt1m/1", "quilt1m/2", "quilt1m/3"]
    assert [r["split"] for r in rows] == ["train", "train", "train", "val"]
    assert rows[1]["answer"] == fx.ROWS[1][0]  # the newline inside the quoted caption survives
    meta = json.loads(rows[2]["meta"])
    assert meta["subset"] == "openpath" and meta["magnification"] == "20x" and meta["image"] == fx.image_name(2)
    assert all(r["license"] == "LicenseRef-Quilt-1M" and r["task"] == "caption" for r in rows)
    assert all(Image.open(io.BytesIO(r["image"]["bytes"])).size[0] > 0 for r in rows)
    reasons = {b["id"]: b["reason"] for b in bad}
    assert reasons["quilt1m/4"] == f"image file missing: {fx.image_name(90)}"
    assert reasons["quilt1m/5"] == "missing field: caption"
    assert reasons["quilt1m/6"] == "malformed row: wrong number of columns"
    assert reasons["quilt1m/7"].startswith("missing or unsafe field: image_path")
    assert len(bad) == 4


def test_units_cut_at_row_offsets_even_inside_multiline_captions(tmp_path, monkeypatch):
    folder = fx.write(tmp_path / "quilt")
    files = {"quilt_1M_lookup.csv": folder / "quilt_1M_lookup.csv", "quilt_1m": folder / "quilt_1m"}
    whole, _ = read_split(Quilt1M(), "train", files)
    monkeypatch.setattr(Quilt1M, "rows_per_unit", 2)
    units = Quilt1M().units("train", files)
    assert [u.args["start"] for u in units] == [0, 2, 4, 6]
    sliced, bads = read_split(Quilt1M(), "train", files)
    assert [r.native_id for r in sliced] == [r.native_id for r in whole] == ["0", "1", "2"]
    assert len(bads) == 4
