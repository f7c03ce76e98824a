"""Identifiers burned into pixels or written in captions of user data (medmix.phi, issue 27).

OCR runs for real (Debian's tesseract-ocr); images are small and the text large, so each OCR call
takes well under a second. No identifier string may reach a quarantine file, a log, the manifest
or the viewer.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image, ImageDraw, ImageFont
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from medmix.core.errors import RecipeError, RowError
from medmix.imaging.canonical import ImagePolicy, normalize_image
from medmix.phi import check_text, find_identifying_text, identifiers, ocr
from medmix.pipeline import BuildOptions, build
from medmix.recipe import parse_recipe

FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
PATIENT_ID = "QX7Z9K"
PATIENT_NAME = "Kowalczyk^Zbigniew"


def _canvas(lines: list[tuple[str, tuple[int, int]]], size: int = 320, base: int = 0) -> np.ndarray:
    """A dark, scan-like picture (a bright disc) with white text drawn at the given positions."""
    img = Image.new("L", (size, size), base)
    d = ImageDraw.Draw(img)
    d.ellipse((size // 4, size // 4, 3 * size // 4, 3 * size // 4), fill=150)
    font = ImageFont.truetype(FONT, 18)
    for text, xy in lines:
        d.text(xy, text, fill=255, font=font)
    return np.asarray(img)


def _png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    return buf.getvalue()


def _dicom(pixels: np.ndarray, **attrs) -> bytes:
    """An uncompressed 8-bit secondary capture holding `pixels`, with header `attrs`."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "OT"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit, ds.PixelRepresentation = 7, 0
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    for key, value in attrs.items():
        setattr(ds, key, value)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


CLEAN = _canvas([("A", (8, 8)), ("R", (300, 150)), ("5 mm", (250, 290))])


# -- the detectors, on text ---------------------------------------------------------------------

@pytest.mark.parametrize(("text", "kinds"), [
    ("DOE^JOHN", {"name"}), ("Name: Anna Kowalska", {"name"}), ("John Smith", {"name"}), ("Smith, John", {"name"}),
    ("Dr. Kovacs", {"name"}), ("DOB 03/14/1961", {"demographics", "date"}), ("2023-05-01 14:22:10", {"date"}),
    ("26 Jan 2013", {"date"}), ("14,06. 2008", {"date"}), ("MRN: 1234567", {"id"}), ("Acc: A1234567", {"id"}),
    ("48213377", {"id"}), ("ID: 4821", {"id"}), ("45Y M", {"demographics"}), ("Age: 60  Sex: F", {"demographics"}),
    # an inverted "Surname, Given" needs only the given name in the lexicon (seed-1 canary misses)
    ("Andersson, John", {"name"}), ("Andersson, Sven-Erik", {"name"}), ("O'Neil, Erik", {"name"}),
    # a bare pair of a lexicon given name and a surname rare in English, surnames no list holds
    ("Filip Chmielak", {"name"}), ("KAZIMIERZ MLOCEK", {"name"}), ("Micael Adolfsson", {"name"}),
    ("Mick McKay", {"name"}), ("Mr Wu", {"name"}), ("MRS SMITH", {"name"}),
    ("Age: 63pex: M", {"demographics"}),  # OCR ran "63 Sex:" together after the label
    ("DOE” JOHN", {"name"}), ("SMITH, JOHN", {"name"}),
    ("12.01.2606", {"date"}),  # OCR read 2006 as 2606: a separated day-month-year is a date
])
def test_identifying_text_is_found(text, kinds):
    assert set(identifiers.classify(text.split()).kinds) == kinds


@pytest.mark.parametrize("text", ["A", "(b)", "L", "R", "A P", "5 cm", "100 µm", "12.5 mm", "x40", "Time (s)",
                                  "T2 FLAIR", "0 50 100 150", "Slice 12/40", "WL 40 WW 400", "Long Axis",
                                  "Graves Disease", "14:22", "Grace", "Gain 60%", "Cornea, Iris",
                                  "Mutation, Gene", "Andersson John", "A1b, John", "Left, Kidney",
                                  # a one-locale given name that is a common word, an acronym, a bare
                                  # pair without a given name: false flags seen in PubMedQA abstracts
                                  "Brain Ischemia", "Among SSI", "Red CMXRos", "Transcranial Doppler",
                                  "Multivariate Cox",
                                  # all-caps MR/MS (modality, sclerosis) before a short word, a title
                                  # with a comma, a lower-case split caret: OCR noise seen on canaries
                                  "MR ER", "MS SS", "ms, Ad", "aor “MS", "Figure 63pex M", "Se, WES",
                                  "Mn. Beta” Pre"])
def test_figure_text_is_not_flagged(text):
    assert not identifiers.classify(text.split())


def test_typed_text_reads_quotes_and_capitals_as_typed():
    """A caret is a caret in typed text (OCR may read it as a quote, typing does not), and all caps
    are acronyms: 244 of 11,247 real PubMedQA/MedQuAD texts were flagged as names before, 21 after
    (benchmarks/phi_text_flags.py)."""
    for text in ("in the 'high-risk' group", "patients' first choice", "PRK, ASA and LASIK", "BRAF, RAS",
                 "MR Diagnosis of"):
        assert "name" not in identifiers.scan_text(text)[0], text
    assert identifiers.scan_text("seen by DOE^JOHN today")[0] == {"name"}
    assert identifiers.classify(["DOE\"JOHN"]).kinds == {"name"}  # OCR read the caret as a quote


def test_the_lexicon_reads_every_latin_alphabet_locale():
    locales = identifiers.latin_locales()
    assert {"pl_PL", "nl_NL", "sv_SE", "en_US", "tr_TR"} <= set(locales)
    assert not {"ru_RU", "zh_CN", "ja_JP", "el_GR"} & set(locales)
    first, last = identifiers.lexicon()
    assert {"kazimierz", "filip"} <= first and "brain" in first  # Faker's `en` baby names hold words too
    assert not identifiers.classify(["Brain", "Kowalczyk"])  # ...which is why a one-locale word-name does not count


def test_header_values_match_with_one_ocr_slip_and_nothing_else():
    header = identifiers.HeaderValues([PATIENT_NAME, "48213377"])
    assert header.matches("KOWALCZYK") and header.matches("48233377")  # one digit misread
    assert not header.matches("48200077") and not header.matches("Zb")
    assert identifiers.classify(["KOWALCZYK"], header).kinds == {"header"}
    assert not identifiers.classify(["KOWALCZYK"])  # an unknown surname alone is not a name


def test_text_columns_quarantine_with_kinds_or_redact():
    texts = {"question": "What is seen?", "answer": "Patient John Smith, seen 03/14/2021: a nodule.",
             "context": None}
    with pytest.raises(RowError) as err:
        check_text(texts, "quarantine")
    assert "date" in err.value.reason and "name" in err.value.reason and "answer" in err.value.reason
    assert "Smith" not in err.value.reason and "03/14" not in err.value.reason
    out, meta = check_text(texts, "redact")
    assert out["answer"] == "Patient [REDACTED] seen [REDACTED] a nodule."
    assert out["question"] == "What is seen?"
    assert meta == {"method": "regex+lexicon", "fields": ["answer"], "kinds": ["name", "date"]}
    assert check_text(texts, "off") == (texts, None)


# -- images -------------------------------------------------------------------------------------

def _dicom_with_flag(flag: str | None, value: str | None) -> bytes:
    attrs = {flag: value} if flag else {}
    return _dicom(CLEAN, PatientName=PATIENT_NAME, PatientID=PATIENT_ID, **attrs)


@pytest.mark.parametrize(("flag", "value", "quarantined"), [
    ("BurnedInAnnotation", "YES", True), ("BurnedInAnnotation", "NO", False), (None, None, False),
    ("RecognizableVisualFeatures", "YES", True),
])
def test_declared_burned_in_annotation(flag, value, quarantined):
    data = _dicom_with_flag(flag, value)
    policy = ImagePolicy(burned_in_text_dicom="quarantine")
    if quarantined:
        with pytest.raises(RowError) as err:
            normalize_image(data, name="x.dcm", policy=policy)
        assert err.value.reason.startswith(("burned-in annotation declared", "recognizable visual features declared"))
        assert PATIENT_ID not in str(err.value)
    else:
        assert normalize_image(data, name="x.dcm", policy=policy).deid is None
    # redact admits a declared file, and says so
    img = normalize_image(data, name="x.dcm", policy=ImagePolicy(burned_in_text_dicom="redact"))
    if quarantined:
        assert img.deid["declared"] == [flag] and img.deid["boxes"] == 0
    # off checks nothing, not even the flag
    assert normalize_image(data, name="x.dcm", policy=ImagePolicy()).deid is None


def test_a_header_value_rendered_into_the_pixels_is_caught():
    pixels = _canvas([(PATIENT_ID, (10, 10))])
    data = _dicom(pixels, PatientName=PATIENT_NAME, PatientID=PATIENT_ID)
    with pytest.raises(RowError) as err:
        normalize_image(data, name="us.dcm", policy=ImagePolicy(burned_in_text_dicom="quarantine"))
    assert err.value.reason.startswith("burned-in identifying text (header)")
    assert PATIENT_ID not in str(err.value)
    # the same pixels without that header: a bare 6-character token is no identifier by itself
    other = _dicom(pixels, PatientName="Doe^Jane", PatientID="12")
    assert normalize_image(other, name="us.dcm", policy=ImagePolicy(burned_in_text_dicom="quarantine")).deid is None


def test_redaction_covers_the_text_and_a_second_ocr_reads_nothing():
    pixels = _canvas([("DOB 03/14/1961", (10, 10)), ("ID: 48213377", (10, 280))])
    assert {"date", "demographics", "id"} <= set().union(*(k for k, _ in find_identifying_text(pixels)))
    img = normalize_image(_png(pixels), name="us.png", policy=ImagePolicy(burned_in_text="redact"))
    assert img.deid["method"] == "ocr-black-box" and img.deid["boxes"] >= 2
    assert img.deid["engine"].startswith("tesseract ")
    out = np.asarray(Image.open(io.BytesIO(img.data)))
    assert out[10:30, 10:150].max() == 0 and out[280:300, 10:130].max() == 0  # the text's rows, blacked
    assert out[160, 160] == 150  # the picture itself untouched
    assert not find_identifying_text(out)
    read = {identifiers.fold(w.text) for w in ocr.read_words(out)}
    assert not read & {"dob", "03141961", "48213377"}


def test_panel_letters_scale_bars_and_markers_are_not_flagged():
    data = _png(CLEAN)
    img = normalize_image(data, name="fig.png", policy=ImagePolicy(burned_in_text="quarantine"))
    assert img.deid is None
    assert img.data == normalize_image(data, name="fig.png", policy=ImagePolicy()).data


def test_missing_tesseract_names_the_install_command(monkeypatch):
    from medmix.core.errors import MedmixError

    ocr.engine_version.cache_clear()
    monkeypatch.delenv("TESSDATA_PREFIX", raising=False)
    monkeypatch.setattr(ocr, "TESSDATA_DIRS", ("/nonexistent/tessdata",))
    try:
        with pytest.raises(MedmixError, match="apt-get install tesseract-ocr"):
            normalize_image(_png(CLEAN), name="fig.png", policy=ImagePolicy(burned_in_text="quarantine"))
    finally:
        ocr.engine_version.cache_clear()


def test_without_faker_the_manifest_says_so_and_a_needed_check_stops(monkeypatch):
    """A core install (no `medmix[phi]`) builds registry sources, whose DICOM check is on by default
    but never ran without a DICOM input; a text check that does need the names stops with the hint."""
    from medmix.core.errors import MedmixError
    from medmix.phi import settings

    identifiers.lexicon.cache_clear()
    try:
        monkeypatch.setitem(__import__("sys").modules, "faker", None)
        recorded = settings("off", "quarantine", "off")
        assert recorded["lexicon"].startswith("faker and wordfreq (one not installed")
        with pytest.raises(MedmixError, match=r"pip install medmix\[phi\]"):
            check_text({"answer": "Seen by Dr Kowalczyk on 2021-03-04"}, mode="quarantine")
    finally:
        monkeypatch.undo()
        identifiers.lexicon.cache_clear()
    assert "person names" in settings("off", "quarantine", "off")["lexicon"]


def test_without_wordfreq_a_pair_check_names_the_install(monkeypatch):
    from medmix.core.errors import MedmixError

    monkeypatch.setitem(__import__("sys").modules, "wordfreq", None)
    with pytest.raises(MedmixError, match=r"wordfreq.*pip install medmix\[phi\]"):
        identifiers.rare_word("Zqwvexly")  # a word no earlier call has cached


# -- recipes ------------------------------------------------------------------------------------

_RECIPE = """name: phi
image:
  burned_in_text: {mode}
sources:
  mine:
    adapter: local
    from: {folder}
    options: {{domain: radiology, task: caption, license: CC0-1.0}}
  vqa_rad:
    splits: [train]
"""


def test_recipe_modes_and_their_defaults():
    r = parse_recipe(_RECIPE.format(mode="null", folder="/x"))
    mine, vqa = r.sources
    assert r.burned_in_text(mine) == ("quarantine", "quarantine", "quarantine")
    assert r.burned_in_text(vqa) == ("off", "quarantine", "off")
    r = parse_recipe(_RECIPE.format(mode="redact", folder="/x"))
    assert r.burned_in_text(r.sources[0]) == ("redact",) * 3
    assert r.burned_in_text(r.sources[1]) == ("redact", "redact", "off")  # on for a registry source's images
    r = parse_recipe(_RECIPE.format(mode="{vqa_rad: quarantine}", folder="/x"))
    assert r.burned_in_text(r.sources[1]) == ("quarantine", "quarantine", "off")
    assert r.burned_in_text(r.sources[0]) == ("quarantine",) * 3  # unnamed: its default
    r = parse_recipe(_RECIPE.format(mode="off", folder="/x"))
    assert r.burned_in_text(r.sources[0]) == ("off",) * 3


@pytest.mark.parametrize(("mode", "message"), [
    ("blur", "r.yaml:3: image.burned_in_text: 'blur' is not quarantine|redact|off"),
    ("{nobody: off}", "r.yaml:3: image.burned_in_text.nobody: names no source of this recipe"),
    ("{mine: maybe}", "r.yaml:3: image.burned_in_text.mine: 'maybe' is not quarantine|redact|off"),
])
def test_bad_modes_name_file_line_key_and_fix(mode, message):
    with pytest.raises(RecipeError) as err:
        parse_recipe(_RECIPE.format(mode=mode, folder="/x"), "r.yaml")
    assert str(err.value).startswith(message)


# -- a build: quarantine file, log, manifest and viewer hold kinds, never identifiers ----------------

SECRETS = ("Kowalczyk", "KOWALCZYK", "48213377", "03/14/1961", PATIENT_ID, "Smith")


def _folder(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    Image.fromarray(_canvas([("KOWALCZYK^ZBIGNIEW", (10, 10)), ("ID: 48213377", (10, 280))])).save(root / "us.png")
    Image.fromarray(CLEAN).save(root / "fig.png")
    (root / "caption.png").write_bytes(_png(_canvas([("B", (8, 8))])))
    (root / "metadata.csv").write_text("file_name,answer\nus.png,an ultrasound\nfig.png,a figure\n"
                                       "caption.png,Patient John Smith seen 03/14/1961\n")
    return root


def _build(tmp: Path, mode: str) -> tuple[Path, dict, list[str]]:
    folder = _folder(tmp / "data")
    recipe = parse_recipe(_RECIPE.format(mode=mode, folder=folder).replace("  vqa_rad:\n    splits: [train]\n", ""),
                          str(tmp / "r.yaml"))
    logged: list[str] = []
    out = tmp / f"out-{mode}"
    manifest = build(recipe, BuildOptions(out=out, cache=tmp / "cache"), log=logged.append)
    return out, manifest, logged


def _everything(out: Path, logged: list[str]) -> str:
    texts = ["\n".join(logged), (out / "manifest.json").read_text()]
    if (out / "quarantine.parquet").exists():
        texts.append(json.dumps(pq.read_table(out / "quarantine.parquet").to_pylist()))
    return "\n".join(texts)


def test_a_build_quarantines_by_default_and_writes_kinds_only(tmp_path):
    out, manifest, logged = _build(tmp_path, "null")
    q = pq.read_table(out / "quarantine.parquet").to_pylist()
    reasons = {r["id"]: r["reason"] for r in q}
    assert reasons["mine/us.png"].startswith("burned-in identifying text (name, id)")
    assert reasons["mine/caption.png"].startswith("identifying text (name, date): in answer")
    assert set(reasons) == {"mine/us.png", "mine/caption.png"}
    everything = _everything(out, logged)
    for secret in SECRETS:
        assert secret not in everything, secret
    deid = manifest["sources"]["mine"]["deidentification"]
    assert deid["images"] == deid["dicom"] == deid["text"] == "quarantine"
    assert "tesseract" in deid["method"] and deid["redacted"] == {"images": 0, "texts": 0}
    counts = manifest["sources"]["mine"]["counts"]["quarantine_reasons"]
    assert counts == {"burned-in identifying text (name, id)": 1, "identifying text (name, date)": 1}

    # the viewer: the quarantine page lists kinds, and no page or image of a quarantined row exists
    from starlette.testclient import TestClient

    from medmix.view.store import open_store
    from medmix.view.webapp import create_app

    store = open_store(out)
    assert store.figures.ready.wait(30)
    client = TestClient(create_app(store), raise_server_exceptions=False)
    page = client.get("/quarantine").text
    assert "burned-in identifying text (name, id)" in page
    assert "<img" not in page and "/image/" not in page
    for secret in SECRETS:
        assert secret not in page
    browse = client.get("/browse").text
    assert "mine/fig.png" in browse and "mine/us.png" not in browse
    served = [client.get(f"/image/0/{i}").content for i in range(store.total)]
    assert all(b"KOWALCZYK" not in s for s in served) and len(served) == 1


def test_redact_and_off_switches(tmp_path):
    out, manifest, logged = _build(tmp_path, "redact")
    rows = pq.read_table(sorted((out / "data").glob("*.parquet"))[0]).to_pylist()
    by_id = {r["id"]: r for r in rows}
    assert set(by_id) == {"mine/us.png", "mine/fig.png", "mine/caption.png"}
    assert by_id["mine/caption.png"]["answer"] == "Patient [REDACTED] seen [REDACTED]"
    assert json.loads(by_id["mine/caption.png"]["meta"])["deid"]["text"]["method"] == "regex+lexicon"
    image_deid = json.loads(by_id["mine/us.png"]["meta"])["deid"]["image"]
    assert image_deid["method"] == "ocr-black-box" and set(image_deid["kinds"]) >= {"name", "id"}
    assert "deid" not in json.loads(by_id["mine/fig.png"]["meta"] or "{}")
    assert not find_identifying_text(np.asarray(Image.open(io.BytesIO(by_id["mine/us.png"]["image"]["bytes"]))))
    assert manifest["sources"]["mine"]["deidentification"]["redacted"] == {"images": 1, "texts": 1}
    for secret in SECRETS:
        assert secret not in _everything(out, logged)
    # off: everything passes untouched, in a new cache entry (the mode is part of the unit key)
    out, manifest, _ = _build(tmp_path, "off")
    assert manifest["sources"]["mine"]["counts"]["quarantined"] == 0
    assert manifest["build_info"]["normalize"]["reused"] == 0
    assert manifest["sources"]["mine"]["deidentification"]["images"] == "off"
    assert "method" not in manifest["sources"]["mine"]["deidentification"]


# -- OCR: line grouping and the overlay bands ---------------------------------------------------

def test_confident_words_in_separate_tesseract_blocks_join_one_line_and_noise_does_not():
    """Sparse-text mode put "Seth" and "Porter" in two blocks (a canary miss); noise stays apart."""
    w = [ocr.Word("Seth", 96, (100, 10, 130, 22), (2, 1, 1, 1)),
         ocr.Word("Porter", 95, (136, 10, 180, 22), (2, 2, 1, 1)),
         ocr.Word("Spe", 20, (186, 10, 200, 22), (2, 3, 1, 1)),
         ocr.Word("Seth", 96, (100, 10, 130, 22), (0, 1, 1, 1))]  # another pass: never joined
    groups = [[x.text for x in g] for g in ocr.lines(w)]
    assert ["Seth", "Porter"] in groups
    assert ["Spe"] in groups and ["Seth"] in groups
    assert identifiers.classify(["Seth", "Porter"]).kinds == {"name"}


def test_words_too_small_to_be_legible_are_not_joined_across_blocks():
    """Read from a 63 px random-noise PNG (tests/sources/test_source_local.py): "Ms" 4 px tall
    and "TAG" in two blocks, both confident, joined into a title + name and quarantined it."""
    noise = [ocr.Word("Ms", 61.2, (4, 40, 10, 44), (2, 10, 1, 1)),
             ocr.Word("TAG", 50.3, (15, 40, 31, 47), (2, 11, 1, 1))]
    assert [[x.text for x in g] for g in ocr.lines(noise)] == [["Ms"], ["TAG"]]
    assert identifiers.classify(["Ms", "TAG"]).kinds == {"name"}  # what joining them would flag
    legible = [ocr.Word("Ms", 61.2, (4, 40, 14, 48), (2, 10, 1, 1)),
               ocr.Word("TAG", 50.3, (17, 40, 37, 48), (2, 11, 1, 1))]
    assert [[x.text for x in g] for g in ocr.lines(legible)] == [["Ms", "TAG"]]


def test_bands_read_an_overlay_at_the_bottom_edge_with_boxes_in_image_pixels():
    img = Image.fromarray(_canvas([], size=400)).convert("RGB")
    d = ImageDraw.Draw(img)
    d.text((6, 380), "MRN: 4821337", fill=(255, 255, 0), font=ImageFont.truetype(FONT, 14))
    words = ocr.read_bands(np.asarray(img))
    hit = [w for w in words if "4821337" in w.text]
    assert hit, [w.text for w in words]
    x0, y0, x1, y1 = hit[0].box
    assert 340 <= y0 < y1 <= 400 and 0 <= x0 < x1 <= 200


def test_a_scale_bar_read_as_50_ym_is_not_an_age_and_sex():
    """OCR reads "50 µm" as "50 ym"; "55 yoM" stays an age with a sex."""
    assert not identifiers.classify(["50", "ym"])
    assert identifiers.classify(["55", "yoM"]).kinds == {"demographics"}
