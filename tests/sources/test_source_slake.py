"""SLAKE adapter against fixture files in the real `BoKelvin/SLAKE` layout (JSON + imgs.zip)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from adapter_harness import run_adapter
from fixtures import assert_matches_remotes, decodes, local_files, read_split, run_twice
from fixtures import slake as fx

from medmix.core.errors import MedmixError
from medmix.sources import get_source
from medmix.sources.slake import Slake

DEMO = Path(__file__).resolve().parents[2] / "medmix" / "data" / "demo"


def _read(tmp_path, upstream, split, **options):
    src = Slake(**options)
    return read_split(src, split, local_files(tmp_path, src, upstream, (split,)))


def test_registered_with_eval_split_and_layout():
    assert get_source("slake") is Slake
    assert Slake.eval_splits == {"test"}
    assert_matches_remotes(Slake, fx.build())
    names = [f.name for f in Slake().files_for(("validation",))]
    assert names == ["validation.json", "imgs.zip"]  # the renamed file, and the shared image archive


def test_english_only_by_default_and_images_shared(tmp_path):
    records, bads = _read(tmp_path, fx.build(bad=False), "train")
    assert bads == []
    assert len(records) == 3 * 2                      # 3 images x 2 English questions
    assert all(r.meta["q_lang"] == "en" for r in records)
    assert len({r.image for r in records}) == 3       # questions share their image file
    first = records[0]
    assert first.question == fx.QUESTIONS[0][0] and first.answer == "CT"
    assert first.image.name == "source.jpg" and first.image.is_file()
    assert first.image_name == "xmlab0/source.jpg"
    assert first.modality == "CT" and first.task == "vqa"
    assert first.native_id == "train-0"


def test_chinese_rows_kept_when_asked(tmp_path):
    records, _ = _read(tmp_path, fx.build(bad=False), "train", languages=["en", "zh"])
    zh = [r for r in records if r.meta["q_lang"] == "zh"]
    assert len(zh) == 3 and zh[0].answer == "CT"
    assert any(r.question == "图片中包含肝脏吗?" for r in zh)


def test_bad_language_option_is_refused_clearly():
    with pytest.raises(MedmixError, match="languages"):
        Slake(languages=["fr"])
    with pytest.raises(TypeError, match="takes no option"):
        Slake(language="en")


def test_missing_image_and_malformed_entries_are_bad_rows(tmp_path):
    records, bads = _read(tmp_path, fx.build(bad=True), "train")
    reasons = {b.reason for b in bads}
    assert "image file missing: xmlab999/source.jpg" in reasons
    assert any("missing field(s) ['answer']" in r for r in reasons)
    assert any("not a JSON object" in r for r in reasons)
    assert next(b for b in bads if "xmlab999" in b.reason).file == "imgs.zip:xmlab999/source.jpg"
    assert len(records) == 6  # every good row survives


def test_ids_stable_and_unique_across_splits(tmp_path):
    up = fx.build(bad=False)
    ids = []
    for split in ("train", "validation", "test"):
        a, _ = _read(tmp_path / "a" / split, up, split, languages=["en", "zh"])
        b, _ = _read(tmp_path / "b" / split, up, split, languages=["en", "zh"])
        assert [r.native_id for r in a] == [r.native_id for r in b]
        ids += [r.native_id for r in a]
    assert len(ids) == len(set(ids))
    assert "test-11934" in ids


def test_image_names_cannot_escape_the_archive(tmp_path):
    up = fx.build(bad=False)
    rows = json.loads(up["train.json"].data)
    escape = "../../../raw/train.json"  # from extracted/imgs.zip/imgs/ to a file that does exist
    rows[0]["img_name"] = escape
    up["train.json"] = fx.Served("train.json", json.dumps(rows).encode(), hf_repo=fx.REPO, hf_path="train.json")
    records, bads = _read(tmp_path, up, "train")
    assert (tmp_path / "extracted" / "imgs.zip" / "imgs" / escape).resolve().is_file()
    assert bads and bads[0].reason == f"image file missing: {escape}"


def test_unreadable_json_stops_the_unit_naming_the_file(tmp_path):
    up = fx.build(bad=False)
    up["test.json"] = fx.Served("test.json", b"[{\"qid\": 1,", hf_repo=fx.REPO, hf_path="test.json")
    with pytest.raises(MedmixError, match="test.json: not a readable JSON"):
        _read(tmp_path, up, "test")


def test_end_to_end_through_fetch_extract_and_normalize(http_server, tmp_path):
    rows, bad = run_twice(Slake, ("train", "validation", "test"), fx.build(bad=True), http_server, tmp_path,
                          languages=["en", "zh"])
    assert len(rows) == (3 + 1 + 1) * 3  # every image: 2 English questions and 1 Chinese
    assert {r["license"] for r in rows} == {"CC-BY-4.0"}
    assert {r["modality"] for r in rows} <= {"CT", "MR", "DX"}  # SLAKE's "MRI" / "X-Ray" in DICOM's codes
    assert {json.loads(r["meta"]).get("modality_upstream") for r in rows} <= {None, "MRI", "X-Ray"}
    assert all(decodes(r) == (r["width"], r["height"]) for r in rows)
    # questions about one picture carry the same content hash
    by_image = {}
    for r in rows:
        by_image.setdefault(json.loads(r["meta"])["img_name"], set()).add(r["image_hash"])
    assert all(len(h) == 1 for h in by_image.values())
    assert sorted(b["reason"].split(" in entry")[0] for b in bad) == [
        "entry 11 is not a JSON object", "image file missing: xmlab999/source.jpg", "missing field(s) ['answer']"]


def test_demo_folder_builds_offline(tmp_path):
    rows, bad = run_adapter(Slake(), ("train", "validation", "test"), cache_dir=tmp_path, from_dir=DEMO / "slake")
    assert bad == []
    assert [sum(r["split"] == s for r in rows) for s in ("train", "validation", "test")] == [16, 6, 4]


def test_demo_plants_cross_source_duplicates_and_matches_its_generator(tmp_path):
    """The committed demo is what make_demo.py generates, and holds the duplicates it documents."""
    from fixtures import make_demo

    from medmix.sources.vqa_rad import VqaRad

    generated = make_demo.build_all()
    slake_rows, _ = run_adapter(Slake(), ("train", "validation"), cache_dir=tmp_path / "s", from_dir=DEMO / "slake")
    rad_rows, _ = run_adapter(VqaRad(), ("train", "test"), cache_dir=tmp_path / "v", from_dir=DEMO / "vqa_rad")
    regenerated, _ = read_split(Slake(), "train", local_files(tmp_path / "g", Slake(), generated["slake"], ("train",)))
    committed = [r for r in slake_rows if r["split"] == "train"]
    assert [(r.native_id, r.question, r.answer) for r in regenerated] == [
        (r["id"].split("/", 1)[1], r["question"], r["answer"]) for r in committed]

    def image_of(rows, key, value):
        return next(r for r in rows if r[key] == value)

    slake0 = next(r for r in slake_rows if json.loads(r["meta"])["img_name"] == "xmlab0/source.jpg")
    slake1 = next(r for r in slake_rows if json.loads(r["meta"])["img_name"] == "xmlab1/source.jpg")
    val0 = next(r for r in slake_rows if r["split"] == "validation")
    rad_train0 = image_of(rad_rows, "id", "vqa_rad/train-00000")
    rad_train3 = image_of(rad_rows, "id", "vqa_rad/train-00009")   # 3 questions per picture: picture 3
    rad_test1 = image_of(rad_rows, "id", "vqa_rad/test-00003")
    assert slake0["image_hash"] == rad_train0["image_hash"]                        # exact duplicate
    for near, orig in ((slake1, rad_train3), (val0, rad_test1)):                       # near duplicates
        assert near["image_hash"] != orig["image_hash"]
        assert bin(near["image_phash"] ^ orig["image_phash"]).count("1") <= 4
