"""PubMedVision adapter: streamed JSON array, multi-image policy, images spread over twenty zips."""

from __future__ import annotations

import io
import json

import pytest
from adapter_harness import run_adapter
from fixtures import assert_matches_remotes, local_files, read_split, serve
from fixtures import pubmedvision as fx
from PIL import Image

from medmix.core.errors import MedmixError
from medmix.sources import get_source
from medmix.sources.pubmedvision import PubMedVision, iter_json_array


def test_registered_pinned_and_declares_all_zips():
    assert get_source("pubmedvision") is PubMedVision
    assert PubMedVision.license == "Apache-2.0" and "GPT-4V" in PubMedVision.notes
    assert {f.revision for f in PubMedVision.files} == {fx.REVISION}
    assert len(PubMedVision.files) == 21
    assert_matches_remotes(PubMedVision, fx.build())


def test_end_to_end_single_image_rows_missing_images_and_filtered_multi(http_server, tmp_path):
    serve(http_server, fx.build())
    rows, bad = run_adapter(PubMedVision(), ("train",), server=http_server, cache_dir=tmp_path)
    assert [r["id"] for r in rows] == [f"pubmedvision/Alignment_VQA_{n}" for n, *_ in fx.SINGLE]
    mri, cells, ct, skin = rows
    assert mri["question"] == fx.SINGLE[0][3] and mri["answer"] == fx.SINGLE[0][4]
    assert cells["answer"] == fx.SINGLE[1][4]  # non-ASCII text intact
    assert ct["question"] == "Describe this CT scan."  # the <image> placeholder is not question text
    assert (mri["domain"], mri["modality"]) == ("radiology", "MR")
    assert json.loads(mri["meta"])["modality_upstream"] == "Magnetic Resonance Imaging"
    assert (cells["domain"], skin["domain"]) == ("microscopy", "dermatology")
    assert json.loads(mri["meta"])["body_part"] == "Brain"
    assert all(r["task"] == "vqa" and r["license"] == "Apache-2.0" for r in rows)
    assert all(Image.open(io.BytesIO(r["image"]["bytes"])).size[0] > 0 for r in rows)
    reasons = {b["id"]: b["reason"] for b in bad}
    assert reasons["pubmedvision/Alignment_VQA_9"] == "image file missing: pmc_9_0.jpg"
    assert reasons["pubmedvision/Alignment_VQA_4"].startswith("filtered: multi-image row (2 images")
    assert reasons["pubmedvision/row2"] == "malformed element: not an object"
    assert reasons["pubmedvision/Alignment_VQA_7"].startswith("malformed conversations")
    assert len(bad) == 4


def test_first_image_policy_keeps_multi_image_rows(tmp_path):
    files = local_files(tmp_path, PubMedVision(), fx.build(bad=False), ("train",))
    records, _ = read_split(PubMedVision(multi_image="first"), "train", files)
    multi = next(r for r in records if r.native_id == "Alignment_VQA_4")
    assert multi.image.name == "pmc_4_0.jpg" and multi.meta["n_images"] == 2


def test_unknown_multi_image_policy_is_refused():
    with pytest.raises(MedmixError, match="multi_image must be 'drop' or 'first'"):
        PubMedVision(multi_image="all")


def test_units_seek_to_their_slice_and_keep_ids(tmp_path, monkeypatch):
    files = local_files(tmp_path, PubMedVision(), fx.build(), ("train",))
    whole, whole_bad = read_split(PubMedVision(), "train", files)
    monkeypatch.setattr(PubMedVision, "rows_per_unit", 3)
    units = PubMedVision().units("train", files)
    assert [u.args["start"] for u in units] == [0, 3, 6]
    assert 0 < units[1].args["offset"] < units[2].args["offset"]
    sliced, sliced_bad = read_split(PubMedVision(), "train", files)
    assert [r.native_id for r in sliced] == [r.native_id for r in whole]
    assert [b.native_id for b in sliced_bad] == [b.native_id for b in whole_bad]


def test_json_stream_offsets_point_at_elements_and_errors_name_the_file(tmp_path):
    path = tmp_path / "a.json"
    path.write_text('[\n  {"a": "\u00e9\u00e9"},\n  {"b": [1, 2]} , 3\n]\n', encoding="utf-8")
    items = list(iter_json_array(path, chunk=4))
    assert [v for _, v in items] == [{"a": "\u00e9\u00e9"}, {"b": [1, 2]}, 3]
    for offset, value in items:  # every offset restarts the stream at that element
        assert next(iter_json_array(path, offset))[1] == value
    path.write_text('[{"a": 1}, {"b": ', encoding="utf-8")
    with pytest.raises(MedmixError, match=r"a.json: malformed JSON at byte 11"):
        list(iter_json_array(path))
    path.write_text('{"not": "an array"}', encoding="utf-8")
    with pytest.raises(MedmixError, match="expected a JSON array"):
        list(iter_json_array(path))
