"""ROCOv2 adapter: Zenodo release, captions, UMLS concepts, per-image article licenses."""

from __future__ import annotations

import io
import json

import pytest
from adapter_harness import run_adapter
from fixtures import assert_matches_remotes, local_files, read_split, serve
from fixtures import rocov2 as fx
from PIL import Image

from medmix.errors import MedmixError
from medmix.sources import get_source
from medmix.sources.rocov2 import ROCOv2, cc_license_to_spdx


def test_registered_pins_the_zenodo_release():
    assert get_source("rocov2") is ROCOv2
    assert ROCOv2.domain == "radiology" and ROCOv2.tasks == ("caption",)
    assert set(ROCOv2.splits) == {"train", "valid", "test"}
    assert all("zenodo.org/records/10821435/" in f.url for f in ROCOv2.files)
    assert_matches_remotes(ROCOv2, fx.build())
    # a valid-only recipe downloads valid files and the shared license list, nothing of train/test
    assert sorted(f.name for f in ROCOv2().files_for(("valid",))) == [
        "license_information.csv", "valid_captions.csv", "valid_concepts.csv", "valid_images.zip"]


@pytest.mark.parametrize("text, spdx", [
    ("Author et al., CC BY 4.0", "CC-BY-4.0"), ("CC BY-NC", "CC-BY-NC-4.0"), ("cc-by-nc-sa 3.0", "CC-BY-NC-SA-3.0"),
    ("CC0", "CC0-1.0"), ("no license named", None), (None, None),
])
def test_license_text_to_spdx(text, spdx):
    assert cc_license_to_spdx(text) == spdx


def test_end_to_end_captions_concepts_and_licenses(http_server, tmp_path):
    serve(http_server, fx.build())
    rows, bad = run_adapter(ROCOv2(), ("train", "valid"), server=http_server, cache_dir=tmp_path)
    by_id = {r["id"]: r for r in rows}
    first = by_id["rocov2/ROCOv2_2023_train_000001"]
    assert first["answer"] == fx.CAPTIONS["train"][0] and first["split"] == "train"
    assert first["modality"] == "CT" and first["license"] == "CC-BY-4.0"
    assert json.loads(first["meta"])["cuis"] == fx.CUIS[0]
    assert by_id["rocov2/ROCOv2_2023_train_000002"]["license"] == "CC-BY-NC-4.0"
    assert by_id["rocov2/ROCOv2_2023_train_000002"]["answer"].startswith("Computed tomography")  # leading space gone
    xray, angio = by_id["rocov2/ROCOv2_2023_train_000003"], by_id["rocov2/ROCOv2_2023_valid_000002"]
    assert (xray["modality"], json.loads(xray["meta"])["modality_upstream"]) == ("DX", "X-ray")
    assert (angio["modality"], json.loads(angio["meta"])["modality_upstream"]) == ("XA", "angiography")
    inferred = by_id["rocov2/ROCOv2_2023_train_000093"]
    assert inferred["license"] == "CC-BY-NC-4.0" and json.loads(inferred["meta"])["license_inferred"] is True
    assert all(Image.open(io.BytesIO(r["image"]["bytes"])).mode for r in rows)
    assert len(rows) == 4 + 1 + 2
    reasons = {b["id"]: b["reason"] for b in bad}
    assert reasons == {"rocov2/ROCOv2_2023_train_000091": "image file missing: ROCOv2_2023_train_000091.jpg",
                       "rocov2/ROCOv2_2023_train_000092": "missing field: Caption"}


def test_units_slice_rows_without_changing_ids(tmp_path, monkeypatch):
    files = local_files(tmp_path, ROCOv2(), fx.build(), ("train",))
    whole, _ = read_split(ROCOv2(), "train", files)
    monkeypatch.setattr(ROCOv2, "rows_per_unit", 3)
    assert len(ROCOv2().units("train", files)) == 3
    sliced, bads = read_split(ROCOv2(), "train", files)
    assert [r.native_id for r in sliced] == [r.native_id for r in whole]
    assert len({r.native_id for r in whole}) == len(whole) == 5 and len(bads) == 2


def test_wrong_caption_columns_stop_with_the_file_name(tmp_path):
    upstream = fx.build(bad=False)
    upstream["test_captions.csv"] = fx.Served("test_captions.csv", b"image,text\nx,y\n",
                                              url=f"{fx.ZENODO}/test_captions.csv")
    files = local_files(tmp_path, ROCOv2(), upstream, ("test",))
    with pytest.raises(MedmixError, match="test_captions.csv: expected columns ID, Caption"):
        read_split(ROCOv2(), "test", files)
