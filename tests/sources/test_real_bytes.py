"""Adapters read fixtures cut from real upstream files (tests/fixtures/real/<source>/, see each PROVENANCE).

Why these exist beside the per-source tests: those build their fixtures from the upstream
documentation, and three adapters once passed them while failing on the real files (issue 22).
Here the rows, headers, nesting and file names are upstream's own bytes; only images are
placeholders. Every expected value below was read off the real rows, not computed by the adapter.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from fixtures import Served, encode, radiology_image, read_split, run_twice, zip_bytes
from PIL import Image

from medmix.sources import registry
from medmix.sources.arch import ARCH, caption_id
from medmix.sources.medmcqa import MedMCQA
from medmix.sources.medqa import MedQA
from medmix.sources.pneumoniamnist import PneumoniaMNIST
from medmix.sources.slake import Slake
from medmix.sources.vqa_med_2019 import TEST_ZIP, TRAIN_ZIP, VAL_ZIP, VQAMed2019

REAL = Path(__file__).resolve().parents[1] / "fixtures" / "real"


def _placeholder(path: Path, fmt: str = "JPEG") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (90, 90, 90)).save(path, format=fmt)


def _copy(name: str, dest: Path) -> Path:
    return Path(shutil.copytree(REAL / name, dest))


# -- every declaration has its fixture --------------------------------------------------------------
def _provenance_files(text: str) -> set[str]:
    """The fixture files a PROVENANCE lists: in its `files` section, the backticked names that open a
    line (`- `name`` or a continuation `  `name``), up to the `<-` that says where they were cut from."""
    section = text.split("\nfiles", 1)[1].split("\n\n", 1)[0] if "\nfiles" in text else ""
    names: set[str] = set()
    for line in section.splitlines():
        if line.startswith(("- `", "  `")):
            names.update(re.findall(r"`([^`]+)`", line.split("<-", 1)[0]))
    return names


def test_every_real_bytes_declaration_has_a_matching_provenance():
    declared = {name: cls for name, cls in registry().items() if cls.real_bytes}
    assert {"slake", "vqa_med_2019", "medqa", "medmcqa", "arch", "pneumoniamnist"} <= set(declared)
    for name, cls in declared.items():
        folder = REAL / name
        provenance = folder / "PROVENANCE"
        assert provenance.is_file(), f"{name} declares real_bytes but {provenance} is missing"
        text = provenance.read_text()
        for rb in cls.real_bytes:
            assert f"{rb.repo}@{rb.commit}" in text, f"{provenance} does not name {rb.repo}@{rb.commit}"
            for path in rb.paths:
                assert path in text, f"{provenance} does not name the upstream path {path}"
        listed = _provenance_files(text)
        on_disk = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()} - {"PROVENANCE"}
        assert listed, f"{provenance} lists no files"
        assert not listed - on_disk, f"{provenance} lists files that are not there: {sorted(listed - on_disk)}"
        assert not on_disk - listed, f"{provenance} does not say where {sorted(on_disk - listed)} came from"
        assert sum((folder / f).stat().st_size for f in on_disk) < 64_000, f"{folder}: keep real fixtures small"


def test_an_adapter_without_real_bytes_says_documentation_only():
    reg = registry()
    assert reg["slake"].format_status() == "real bytes"
    assert reg["pathvqa"].format_status() == "documentation only"
    assert reg["local"].format_status() == "not applicable"


# -- SLAKE ---------------------------------------------------------------------------------------
def _slake_files(tmp_path: Path) -> dict[str, Path]:
    root = _copy("slake", tmp_path / "raw")
    imgs = tmp_path / "extracted" / "imgs.zip" / "imgs"
    for f in ("train.json", "validate.json", "test.json"):
        for row in json.loads((root / f).read_text(encoding="utf-8")):
            _placeholder(imgs / row["img_name"])
    return {"train.json": root / "train.json", "validation.json": root / "validate.json",
            "test.json": root / "test.json", "imgs.zip": tmp_path / "extracted" / "imgs.zip"}


def test_slake_reads_the_real_json(tmp_path):
    files = _slake_files(tmp_path)
    train, bad = read_split(Slake(), "train", files)
    assert bad == []
    assert [r.native_id for r in train] == [f"train-{q}" for q in range(7)]  # the 3 Chinese rows are filtered
    first = train[0]
    assert (first.question, first.answer) == ("What modality is used to take this image?", "MRI")
    assert first.image_name == "xmlab1/source.jpg" and first.modality == "MRI"
    assert first.meta == {"img_id": 1, "img_name": "xmlab1/source.jpg", "q_lang": "en", "answer_type": "OPEN",
                          "content_type": "Modality", "location": "Abdomen", "base_type": "vqa",
                          "triple": ["vhead", "_", "_"], "qid": 0}
    assert train[1].question == "Which part of the body does this image belong to?" and train[1].answer == "Abdomen"
    both, _ = read_split(Slake(languages=["en", "zh"]), "train", files)
    zh = [r for r in both if r.meta["q_lang"] == "zh"]
    assert [r.native_id for r in zh] == ["train-4919", "train-4920", "train-4921"]
    assert zh[0].question == "这张图片的成像方式是什么?" and zh[0].answer == "MRI"
    assert zh[0].image_name == "xmlab0/source.jpg"


def test_slake_real_validation_and_test_qids_run_on(tmp_path):
    files = _slake_files(tmp_path)
    val, _ = read_split(Slake(), "validation", files)
    test, _ = read_split(Slake(), "test", files)
    assert [r.native_id for r in val] == ["validation-9835", "validation-9836", "validation-9837", "validation-9838"]
    assert [r.native_id for r in test] == ["test-11934", "test-11935", "test-11936", "test-11937"]
    assert (test[0].question, test[0].answer, test[0].modality) == ("What modality is used to take this image?",
                                                                   "CT", "CT")
    assert test[0].image_name == "xmlab102/source.jpg" and test[0].meta["location"] == "Lung"


def test_slake_real_rows_through_the_whole_pipeline(http_server, tmp_path):
    """Served at the Hub paths the adapter pins, normalized and written twice: same bytes both runs."""
    from fixtures.slake import REPO, REVISION

    root = REAL / "slake"
    names = {f: json.loads((root / f).read_text(encoding="utf-8")) for f in ("train.json", "validate.json",
                                                                           "test.json")}
    folders = sorted({row["img_name"] for rows in names.values() for row in rows})
    images = zip_bytes({f"imgs/{n}": encode(radiology_image(i)) for i, n in enumerate(folders)})
    upstream = {hub: Served(hub, (root / local).read_bytes(), hf_repo=REPO, hf_path=hub, revision=REVISION)
                for hub, local in (("train.json", "train.json"), ("validation.json", "validate.json"),
                                   ("test.json", "test.json"))}
    upstream["imgs.zip"] = Served("imgs.zip", images, hf_repo=REPO, hf_path="imgs.zip", revision=REVISION)
    rows, bad = run_twice(Slake, ("train", "validation", "test"), upstream, http_server, tmp_path)
    assert bad == [] and len(rows) == 7 + 4 + 4
    assert [r["id"] for r in rows[:2]] == ["slake/train-0", "slake/train-1"]
    assert rows[0]["answer"] == "MRI" and rows[0]["split"] == "train" and rows[-1]["id"] == "slake/test-11937"


# -- VQA-Med 2019 ----------------------------------------------------------------------------------
def _vqa_med_files(tmp_path: Path) -> dict[str, Path]:
    root = _copy("vqa_med_2019", tmp_path / "real")
    out = tmp_path / "extracted"
    for zip_name, top, images in ((TRAIN_ZIP, "ImageClef-2019-VQA-Med-Training", "Train_images"),
                                  (VAL_ZIP, "ImageClef-2019-VQA-Med-Validation", "Val_images")):
        base = Path(shutil.copytree(root / top, out / zip_name / top))
        qa = next(base.glob("All_QA_Pairs_*.txt"))
        for line in qa.read_text().splitlines():
            _placeholder(base / images / f"{line.split('|')[0]}.jpg")
    test = Path(shutil.copytree(root / "VQAMed2019Test", out / TEST_ZIP / "VQAMed2019Test"))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for line in (test / "VQAMed2019_Test_Questions_w_Ref_Answers.txt").read_text().splitlines():
            img = io.BytesIO()
            Image.new("L", (8, 8)).save(img, format="JPEG")
            zf.writestr(f"VQAMed2019_Test_Images/{line.split('|')[0]}.jpg", img.getvalue())
    (test / "VQAMed2019_Test_Images.zip").write_bytes(buf.getvalue())
    return {TRAIN_ZIP: out / TRAIN_ZIP, VAL_ZIP: out / VAL_ZIP, TEST_ZIP: out / TEST_ZIP}


def test_vqa_med_2019_reads_the_real_pipe_files_with_categories(tmp_path):
    files = _vqa_med_files(tmp_path)
    train, bad = read_split(VQAMed2019(), "train", files)
    assert bad == []
    got = [(r.native_id, r.question, r.answer, r.meta["category"]) for r in train]
    assert got == [
        ("train/synpic41148/0", "what kind of image is this?", "cta - ct angiography", "modality"),
        ("train/synpic43984/0", "is this a t1 weighted image?", "no", "modality"),
        ("train/synpic41148/1", "which plane is this image taken?", "axial", "plane"),
        ("train/synpic41148/2", "which organ is captured by this ct scan?", "lung, mediastinum, pleura", "organ"),
        ("train/synpic41148/3", "what is abnormal in the ct scan?",
         "cryptococcal pneumonia in an immunocompetent host", "abnormality"),
        ("train/synpic35685/0", "is this image normal?", "yes", "abnormality"),
    ]
    val, bad = read_split(VQAMed2019(), "validation", files)
    assert bad == [] and [r.meta["category"] for r in val] == ["modality", "modality", "plane", "organ",
                                                               "abnormality", "abnormality"]
    assert (val[0].native_id, val[0].answer) == ("validation/synpic54733/0", "ct with iv contrast")


def test_vqa_med_2019_reads_the_real_test_answers(tmp_path):
    test, bad = read_split(VQAMed2019(), "test", _vqa_med_files(tmp_path))
    assert bad == [] and len(test) == 7
    assert [r.meta["category"] for r in test] == ["modality", "modality", "plane", "organ", "organ",
                                                  "abnormality", "abnormality"]
    alt = test[4]
    assert alt.native_id == "test/synpic40410/0" and alt.answer == "face, sinuses, and neck#skull and contents"
    assert alt.meta["answer_alternatives"] == ["face, sinuses, and neck", "skull and contents"]
    assert (test[-1].question, test[-1].answer) == ("what is the primary abnormality in this image?", "meningioma")


# -- MedQA -----------------------------------------------------------------------------------------
def test_medqa_reads_the_real_test_lines(tmp_path):
    path = _copy("medqa", tmp_path / "raw") / "phrases_no_exclude_test.jsonl"
    records, bad = read_split(MedQA(), "test", {"phrases_no_exclude_test.jsonl": path})
    assert bad == [] and len(records) == 6
    first = records[0]
    assert first.native_id == "test-00001"
    assert first.options == ["Disclose the error to the patient and put it in the operative report",
                             "Tell the attending that he cannot fail to disclose this mistake",
                             "Report the physician to the ethics committee",
                             "Refuse to dictate the operative report"]
    assert first.answer == "Tell the attending that he cannot fail to disclose this mistake"
    assert first.meta == {"answer_letter": "B", "step": "step1", "line": 1}
    assert [r.meta["answer_letter"] for r in records] == ["B", "D", "B", "D", "B", "D"]
    assert [r.meta["step"] for r in records] == ["step1", "step1", "step2&3", "step1", "step2&3", "step2&3"]
    assert records[1].answer == "Cross-linking of DNA"


# -- MedMCQA --------------------------------------------------------------------------------------
def _medmcqa_files(tmp_path: Path) -> dict[str, Path]:
    """The real release lines as the Hub's Parquet: the loading script's mapping (PROVENANCE cites it)
    is `cop = int(cop or 0) - 1` and `exp = exp or ""`, with the script's features."""
    from datasets import ClassLabel, Value
    from fixtures import hf_parquet

    features = {"id": Value("string"), "question": Value("string"), **{c: Value("string") for c in
                ("opa", "opb", "opc", "opd")}, "cop": ClassLabel(names=["a", "b", "c", "d"]),
                "choice_type": Value("string"), "exp": Value("string"), "subject_name": Value("string"),
                "topic_name": Value("string")}
    files = {}
    for split, raw in (("train", "train.json"), ("validation", "dev.json"), ("test", "test.json")):
        rows = []
        for line in (REAL / "medmcqa" / raw).read_text(encoding="utf-8").splitlines():
            data = json.loads(line)
            rows.append(data | {"cop": int(data.get("cop", 0)) - 1, "exp": data.get("exp", "")})
        path = tmp_path / f"data/{split}-00000-of-00001.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(hf_parquet(rows, features))
        files[f"data/{split}-00000-of-00001.parquet"] = path
    return files


def test_medmcqa_maps_the_real_one_based_answers_and_withholds_test(tmp_path):
    files = _medmcqa_files(tmp_path)
    (dev,), bad = read_split(MedMCQA(), "validation", files)
    assert bad == []
    assert dev.native_id == "f7469b1f-dda2-476a-9b27-312a080e0c8a"
    assert dev.options == ["Balantidium coli", "Clostridium difficile", "Cystoisospora belli",
                           "Cryptosporidium hominis"]
    assert dev.answer == "Cryptosporidium hominis" and dev.meta["answer_letter"] == "D"  # "cop": 4, "Ans. d."
    assert dev.meta["explanation"].startswith("Ans. d. Cryptosporidium hominis")
    assert dev.meta["subject"] == "Microbiology" and "topic" not in dev.meta  # topic_name is null upstream
    (train,), _ = read_split(MedMCQA(), "train", files)
    raw = json.loads((REAL / "medmcqa" / "train.json").read_text())
    assert train.answer == raw["op" + "abcd"[raw["cop"] - 1]] and train.meta["answer_letter"] == "ABCD"[raw["cop"] - 1]
    test, bad = read_split(MedMCQA(), "test", files)
    assert test == []
    assert [(b.native_id, b.reason) for b in bad] == [
        ("50682996-2eb8-467a-b5fb-840f6b36e235", "answer withheld upstream: cop = -1 (MedMCQA hides test answers)")]


# -- ARCH ------------------------------------------------------------------------------------------
def _arch_files(tmp_path: Path) -> dict[str, Path]:
    root = _copy("arch", tmp_path / "real")
    files = {}
    for folder in ("books_set", "pubmed_set"):
        base = tmp_path / "extracted" / f"{folder}.zip" / folder
        base.mkdir(parents=True)
        shutil.copy(root / folder / "captions.json", base / "captions.json")
        for name in (root / folder / "images.txt").read_text().split():
            _placeholder(base / "images" / name, "PNG" if name.endswith(".png") else "JPEG")
        files[f"{folder}.zip"] = tmp_path / "extracted" / f"{folder}.zip"
    return files


def test_arch_reads_the_real_captions_and_bags(tmp_path):
    records, bad = read_split(ARCH(), "train", _arch_files(tmp_path))
    books = [r for r in records if r.meta["set"] == "books_set"]
    pubmed = [r for r in records if r.meta["set"] == "pubmed_set"]
    assert [r.native_id for r in books] == ["books/890e2e79-ab0a-4a2e-9d62-b0b6b3d43884",
                                            "books/f12c8088-05a5-41a6-80b8-aa4cfa461236",
                                            "books/9a77b172-74e8-4e64-878f-d26b7c27239f",
                                            "books/c384e7fc-7b29-4a72-a8b2-0f4f8ff9d536",
                                            "books/d8f9e62e-e400-43c7-8202-b5c4033710ba"]
    spindle = ("A, Spindle cell variant of embryonal rhabdomyosarcoma is characterized by fascicles of eosinophilic "
               "spindle cells (B), some of which can show prominent paranuclear vacuolisation, as seen in "
               "leiomyosarcoma.")
    assert books[0].answer == books[1].answer == spindle  # upstream's leading space is stripped
    assert books[0].meta["caption_id"] == books[1].meta["caption_id"] == caption_id("books", spindle)
    assert [r.meta["bag_size"] for r in books] == [2, 2, 1, 2, 2]
    assert [(r.meta["figure_id"], r.meta["letter"]) for r in books] == [("00", "A"), ("00", "B"), ("01", "Single"),
                                                                        ("02", "A"), ("02", "B")]
    assert [r.image_name for r in pubmed] == ["3f93c716-8fc9-42e9-bc29-bec52a51ab4b.jpg",
                                              "9fcdf1e1-139c-4b63-bf1a-79d83c71f41a.jpg",
                                              "00f1ad7a-f4b0-4938-b874-089d40a123ce.jpg",
                                              "2821b4c5-77af-4837-9a6a-7c763b60f749.png"]
    assert pubmed[0].answer == "ER expression in tumor tissue. IHC staining, original"
    assert "figure_id" not in pubmed[0].meta
    reasons = {b.native_id: b.reason for b in bad}
    assert reasons == {
        "books/6f930579-bff1-45f4-b1d4-8996cb43ae11":
            "image file missing: 6f930579-bff1-45f4-b1d4-8996cb43ae11.png/.jpg",
        "books/c162bdbb-6638-471e-a6fa-e1f3b47e9c8d": "missing field: caption",
        "books/c2bf834d-cfdc-4433-b970-b31e4fef78f0": "missing field: caption",
    }


# -- PneumoniaMNIST --------------------------------------------------------------------------------
def test_pneumoniamnist_reads_the_real_npz_layout(tmp_path):
    path = _copy("pneumoniamnist", tmp_path / "raw") / "pneumoniamnist.npz"
    real = np.load(path)
    assert real["train_images"].dtype == np.uint8 and real["train_images"].shape[1:] == (28, 28)
    assert real["train_labels"].shape[1:] == (1,)
    for split, prefix in (("train", "train"), ("validation", "val"), ("test", "test")):
        records, bad = read_split(PneumoniaMNIST(), split, {"pneumoniamnist.npz": path})
        assert bad == []
        labels = real[f"{prefix}_labels"].reshape(-1).tolist()
        assert labels == [1, 1, 0]  # rows 0, 1 and the first normal one, as cut
        assert [r.meta["label"] for r in records] == labels
        assert [r.answer for r in records] == ["pneumonia", "pneumonia", "normal"]
        assert [r.native_id for r in records] == [f"{split}/{i:06d}" for i in range(3)]
        for rec, pixels in zip(records, real[f"{prefix}_images"], strict=True):
            assert np.array_equal(np.asarray(Image.open(io.BytesIO(rec.image)).convert("L")), pixels)


@pytest.mark.parametrize("name", ["pneumoniamnist", "breastmnist", "dermamnist", "bloodmnist"])
def test_medmnist_adapters_match_the_upstream_registry(name):
    """Class order, counts, URL and MD5 against MedMNIST's own INFO (see medmnist_info/PROVENANCE)."""
    info = json.loads((REAL / "medmnist_info" / "info.json").read_text())[name]
    cls = registry()[name]
    labels = [info["label"][str(i)] for i in range(len(info["label"]))]
    # the one deliberate difference: upstream's "granulocytes(myelocytes" lacks a space
    assert list(cls.classes) == [label.replace("granulocytes(", "granulocytes (") for label in labels]
    assert cls.splits == {"train": info["n_samples"]["train"], "validation": info["n_samples"]["val"],
                          "test": info["n_samples"]["test"]}
    assert cls.remote(28).url == info["url"]
    assert f"Upstream MD5 (28 px): {info['MD5']}" in cls.notes
    assert (cls.name == "pneumoniamnist") == bool(cls.real_bytes)


@pytest.mark.parametrize("name", ["slake", "vqa_med_2019", "medqa", "medmcqa", "arch", "pneumoniamnist"])
def test_real_fixture_citations_are_well_formed(name):
    for rb in registry()[name].real_bytes:
        assert re.fullmatch(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+", rb.repo)
        assert rb.citation.startswith(f"{rb.repo}@{rb.commit}:")
        assert rb.url == f"https://github.com/{rb.repo}/tree/{rb.commit}"
