"""ROCOv2 adapter: Zenodo release, captions, UMLS concepts, per-image article licenses."""

from __future__ import annotations

import io
import json

import pytest
from adapter_harness import run_adapter
from fixtures import assert_matches_remotes, local_files, read_split, serve
from fixtures import rocov2 as fx
from PIL import Image

from medmix.core.errors import MedmixError
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
        "license_information.csv", "valid_captions.csv", "valid_concepts.csv", "valid_concepts_manual.csv",
        "valid_images.zip"]
    assert ROCOv2.splits["train"] == 59_962  # the real file's rows (see the adapter docstring), not the paper's


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
    assert (xray["modality"], angio["modality"]) == ("DX", "XA")  # the CUIs map straight to medmix.core.modality codes
    assert "modality_upstream" not in json.loads(xray["meta"])
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


def test_real_rows_curated_modality_wins_and_automatic_is_the_fallback(http_server, tmp_path):
    """Real test-split rows: captions, automatic and curated concepts (see real/rocov2/PROVENANCE)."""
    serve(http_server, fx.real())
    rows, bad = run_adapter(ROCOv2(), ("test",), server=http_server, cache_dir=tmp_path)
    assert bad == []
    by_id = {r["id"].split("/", 1)[1]: r for r in rows}
    assert list(by_id) == [f"ROCOv2_2023_test_{n:06d}" for n in (1, 6, 11, 15, 21, 28, 29)]
    meta = {k: json.loads(r["meta"]) for k, r in by_id.items()}
    # the real disagreement: a PET/CT fusion, CT first automatically, no curated modality
    fusion = meta["ROCOv2_2023_test_000028"]
    assert fusion["cuis"][0] == "C0040405" and fusion["cuis_manual"] == [] and fusion["modality_source"] == "manual"
    assert by_id["ROCOv2_2023_test_000028"]["modality"] is None
    assert by_id["ROCOv2_2023_test_000028"]["answer"].startswith("The whole body F18-FDG PET/CT tomography scan")
    # no curated row (left out of the cut on purpose): the automatic file gives US
    assert meta["ROCOv2_2023_test_000011"]["cuis_manual"] is None
    assert meta["ROCOv2_2023_test_000011"]["modality_source"] == "automatic"
    assert by_id["ROCOv2_2023_test_000011"]["modality"] == "US"
    assert by_id["ROCOv2_2023_test_000011"]["answer"].endswith("the \u201cstring of pearls\u201d sign.")
    assert meta["ROCOv2_2023_test_000015"]["cuis_manual"] == ["C1306645", "C0817096", "C1996865"]
    assert [by_id[f"ROCOv2_2023_test_{n:06d}"]["modality"] for n in (1, 6, 15, 21, 29)] == [
        "CT", "CT", "DX", "CT", "PT"]
    assert by_id["ROCOv2_2023_test_000006"]["answer"].endswith("no extravasation of contrast media was seen.")
    assert by_id["ROCOv2_2023_test_000021"]["answer"].startswith("Computed tomography of the head")


def test_real_bytes_are_declared_with_their_provenance():
    provenance = (fx.REAL / "PROVENANCE").read_text()
    declared = {p: rb for rb in ROCOv2.real_bytes for p in rb.paths}
    assert {p.rsplit("/", 1)[-1] for p in declared if p.endswith(".csv")} == {
        p.name for p in fx.REAL.glob("*.csv")}
    for path, rb in declared.items():
        assert f"{rb.repo}@{rb.commit}:{path}" in provenance or (path == "generate.ipynb" and rb.commit in provenance)
