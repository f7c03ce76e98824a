"""NCT-CRC-HE-100K / CRC-VAL-HE-7K adapter against zipped class-folder fixtures in the Zenodo layout."""

from __future__ import annotations

import json

import pytest
from fixtures import assert_matches_remotes, decodes, local_files, read_split, run_twice
from fixtures import nct_crc_he as fx

from medmix.core.errors import MedmixError
from medmix.sources import get_source
from medmix.sources.nct_crc_he import CLASS_DIRS, NctCrcHe


def test_declared_as_benchmark_with_zenodo_layout():
    assert get_source("nct_crc_he") is NctCrcHe
    assert NctCrcHe.benchmark and NctCrcHe.eval_splits == {"test"}
    assert NctCrcHe.splits == {"train": 100000, "test": 7180}
    assert len(NctCrcHe.classes) == len(CLASS_DIRS) == 9
    assert_matches_remotes(NctCrcHe, fx.build())
    assert [f.name for f in NctCrcHe().files_for(("test",))] == ["CRC-VAL-HE-7K.zip"]


def test_one_unit_per_class_and_labels_follow_the_folder(tmp_path):
    src = NctCrcHe()
    files = local_files(tmp_path, src, fx.build(), ("train", "test"))
    assert [u.part for u in src.units("train", files)] == list(CLASS_DIRS)
    for split, per_class in (("train", 3), ("test", 2)):
        records, bads = read_split(src, split, files)
        assert bads == [] and len(records) == 9 * per_class
        for r in records:
            folder = r.native_id.split("/")[1]
            assert r.meta["label"] == CLASS_DIRS.index(folder) and r.answer == src.classes[r.meta["label"]]
            assert r.native_id.startswith(f"{split}/")


def test_missing_class_folder_stops_the_unit(tmp_path):
    src = NctCrcHe()
    files = local_files(tmp_path, src, fx.build(drop_class="MUC"), ("test",))
    with pytest.raises(MedmixError, match=r"class folder 'MUC' is missing"):
        read_split(src, "test", files)


def test_wrong_archive_content_is_named(tmp_path):
    from fixtures import Served, zip_bytes

    upstream = fx.build()
    upstream["CRC-VAL-HE-7K.zip"] = Served("CRC-VAL-HE-7K.zip", zip_bytes({"readme.txt": b"hi"}),
                                           url=fx.URL.format(file="CRC-VAL-HE-7K.zip"))
    src = NctCrcHe()
    with pytest.raises(MedmixError, match=r"none of the class folders \['ADI'"):
        read_split(src, "test", local_files(tmp_path, src, upstream, ("test",)))


def test_end_to_end_truncated_tile_quarantined_stray_file_ignored(http_server, tmp_path):
    rows, bad = run_twice(NctCrcHe, ("train", "test"), fx.build(bad=True), http_server, tmp_path)
    assert len(rows) == 9 * 3 + 9 * 2
    assert [b["id"] for b in bad] == ["nct_crc_he/train/TUM/TUM-BROKEN"]
    assert "TUM-BROKEN.tif" in bad[0]["file"]
    assert all(decodes(r) == (32, 32) for r in rows)
    assert all(r["answer"] == NctCrcHe.classes[json.loads(r["meta"])["label"]] for r in rows)
