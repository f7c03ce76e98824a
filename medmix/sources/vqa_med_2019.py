"""VQA-Med 2019 (ImageCLEF): radiology VQA over MedPix images, four question categories.

Layout of the three zips (Zenodo record 10499039, the organisers' archive):
    ImageClef-2019-VQA-Med-Training/All_QA_Pairs_train.txt   img_id|question|answer
    ImageClef-2019-VQA-Med-Training/QAPairsByCategory/C1_Modality_train.txt ... C4_Abnormality_train.txt
    ImageClef-2019-VQA-Med-Training/Train_images/<img_id>.jpg
    ImageClef-2019-VQA-Med-Validation/... the same with _val / Val_images
    VQAMed2019Test/VQAMed2019_Test_Questions_w_Ref_Answers.txt   img_id|category|question|answer
    VQAMed2019Test/VQAMed2019_Test_Images.zip                    (a zip inside the zip)

The test set is the benchmark OpenMedQ reports (BLEU-1 64.5), so `test` is an evaluation split.
When Zenodo is unreachable, put the three zips in a folder and pass `--from vqa_med_2019=DIR`.
"""

from __future__ import annotations

import contextlib
import re
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from medmix.core.errors import MedmixError
from medmix.sources.base import Bad, RealBytes, Record, Remote, Source, Unit

ZENODO = "https://zenodo.org/records/10499039/files"
TRAIN_ZIP = "ImageClef-2019-VQA-Med-Training.zip"
VAL_ZIP = "ImageClef-2019-VQA-Med-Validation.zip"
TEST_ZIP = "VQAMed2019Test.zip"
# split → (zip, top folder, QA file, image folder, category-file suffix)
LAYOUT = {
    "train": (TRAIN_ZIP, "ImageClef-2019-VQA-Med-Training", "All_QA_Pairs_train.txt", "Train_images", "train"),
    "validation": (VAL_ZIP, "ImageClef-2019-VQA-Med-Validation", "All_QA_Pairs_val.txt", "Val_images", "val"),
    "test": (TEST_ZIP, "VQAMed2019Test", "VQAMed2019_Test_Questions_w_Ref_Answers.txt", "VQAMed2019_Test_Images",
             None),
}
CATEGORY_FILES = {"C1_Modality": "modality", "C2_Plane": "plane", "C3_Organ": "organ", "C4_Abnormality": "abnormality"}
MAX_IMAGE_BYTES = 64 << 20
_IMG_ID = re.compile(r"^[A-Za-z0-9_.-]+$")


def _lines(path: Path) -> Iterator[tuple[int, str | None]]:
    """(line number, text) per non-empty line; text None when the line is not UTF-8."""
    with open(path, "rb") as fh:
        for no, raw in enumerate(fh, start=1):
            raw = raw.rstrip(b"\r\n")
            if not raw.strip():
                continue
            try:
                yield no, raw.decode("utf-8")
            except UnicodeDecodeError:
                yield no, None


class _TestImages:
    """Test images live in a zip inside the extracted test zip; read members by name, never extract.

    Reading (not unpacking) keeps the shared safe-extraction code the only writer of archive
    contents; the size cap keeps one forged member from filling memory.
    """

    def __init__(self, root: Path) -> None:
        self.folder = next((d for d in (root / "VQAMed2019_Test_Images", root / "Test_Images") if d.is_dir()), None)
        inner = root / "VQAMed2019_Test_Images.zip"
        self.zip = zipfile.ZipFile(inner) if inner.is_file() else None
        self.names = {Path(n).name: n for n in self.zip.namelist()} if self.zip else {}

    def get(self, name: str) -> bytes | Path | None:
        if self.folder is not None and (self.folder / name).is_file():
            return self.folder / name
        member = self.names.get(name)
        if member is None or self.zip is None:
            return None
        if self.zip.getinfo(member).file_size > MAX_IMAGE_BYTES:
            raise MedmixError(f"VQAMed2019_Test_Images.zip/{member} claims more than {MAX_IMAGE_BYTES} bytes")
        return self.zip.read(member)

    def __enter__(self) -> _TestImages:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.zip is not None:
            self.zip.close()


class VQAMed2019(Source):
    name = "vqa_med_2019"
    title = "VQA-Med 2019 (ImageCLEF 2019 medical visual question answering)"
    homepage = "https://github.com/abachaa/VQA-Med-2019"
    citation = """
@inproceedings{ImageCLEFVQA-Med2019,
  author={Asma {Ben Abacha} and Sadid A. Hasan and Vivek V. Datla and Joey Liu and Dina Demner-Fushman and Henning
    M{\\"u}ller},
  title={VQA-Med: Overview of the Medical Visual Question Answering Task at ImageCLEF 2019},
  booktitle={CLEF 2019 Working Notes},
  series={{CEUR} Workshop Proceedings},
  volume={2380},
  year={2019},
  publisher={CEUR-WS.org},
  url={https://ceur-ws.org/Vol-2380/paper_272.pdf}
}"""
    license = "CC-BY-4.0"  # stated by the repository README (github.com/abachaa/VQA-Med-2019)
    domain = "radiology"
    tasks = ("vqa",)
    splits = {"train": 12_792, "validation": 2_000, "test": 500}
    eval_splits = frozenset({"test"})
    files = (
        Remote(TRAIN_ZIP, url=f"{ZENODO}/{TRAIN_ZIP}", extract=True, splits=("train",)),
        Remote(VAL_ZIP, url=f"{ZENODO}/{VAL_ZIP}", extract=True, splits=("validation",)),
        Remote(TEST_ZIP, url=f"{ZENODO}/{TEST_ZIP}", extract=True, splits=("test",)),
    )
    notes = ("Images come from MedPix, like VQA-RAD's: decontaminate VQA-RAD and every radiology source against "
             "the test split. Test answers may list alternatives ('a#b') and optional parts ('(x) y'); the raw "
             "answer is kept and the alternatives are in meta.")
    version = "1"
    # The organisers' files as unzipped, committed whole by a project that trained on them.
    real_bytes = (
        RealBytes("thiliniprr/AquaNet_VQA", "b01a92fb53880b9f84db92e3e4b09df19b46dc99",
                  tuple(f"{top}/{f}" for top, suffix in (("ImageClef-2019-VQA-Med-Training", "train"),
                                                         ("ImageClef-2019-VQA-Med-Validation", "val"))
                        for f in (f"All_QA_Pairs_{suffix}.txt",
                                  *(f"QAPairsByCategory/{c}_{suffix}.txt" for c in CATEGORY_FILES))),
                  note="full train/validation files: 12,792 / 2,000 rows, every one categorised"),
        RealBytes("thiliniprr/AquaNet_VQA", "af1d8bb990ed4390d517875317343d1e4e1216cc",
                  ("dataset/VQAMed2019_Test_Questions_w_Ref_Answers.txt",), note="full test file: 500 rows"),
    )

    def read(self, unit: Unit, files: Mapping[str, Path]) -> Iterator[Record | Bad]:
        zip_name, top, qa_name, image_folder, cat_suffix = LAYOUT[unit.split]
        root = Path(files[zip_name])
        base = root / top if (root / top).is_dir() else root
        qa_path = base / qa_name
        if not qa_path.is_file():
            raise MedmixError(f"{zip_name}: {top}/{qa_name} is missing; is this the VQA-Med 2019 archive?")
        categories = self._categories(base / "QAPairsByCategory", cat_suffix) if cat_suffix else {}
        with contextlib.ExitStack() as stack:
            images = stack.enter_context(_TestImages(base)) if unit.split == "test" else base / image_folder
            yield from self._rows(unit.split, qa_path, f"{top}/{qa_name}", categories, images,
                                  f"{zip_name}/{top}/{image_folder}", with_category_column=cat_suffix is None)

    def _rows(self, split: str, qa_path: Path, qa_where: str, categories: dict[tuple[str, str], str],
              images: _TestImages | Path, image_where: str, with_category_column: bool) -> Iterator[Record | Bad]:
        seen: dict[str, int] = {}
        n_fields = 4 if with_category_column else 3
        for line_no, text in _lines(qa_path):
            where = f"{qa_where}:{line_no}"
            if text is None:
                yield Bad(f"{split}/line{line_no}", "malformed line: not valid UTF-8", file=where)
                continue
            parts = [p.strip() for p in text.split("|")]
            if len(parts) != n_fields:
                yield Bad(f"{split}/line{line_no}",
                          f"malformed line: {len(parts)} '|'-separated fields, expected {n_fields}", file=where)
                continue
            img_id, question, answer = parts[0], parts[-2], parts[-1]
            if not _IMG_ID.match(img_id):
                yield Bad(f"{split}/line{line_no}", f"unsafe image id: {img_id!r}", file=where)
                continue
            k = seen.get(img_id, 0)
            seen[img_id] = k + 1
            native = f"{split}/{img_id}/{k}"
            if not question or not answer:
                yield Bad(native, "missing field: question or answer", file=where)
                continue
            category = parts[1].lower() if with_category_column else categories.get((img_id, question.lower()))
            name = f"{img_id}.jpg"
            image = images.get(name) if isinstance(images, _TestImages) else images / name
            if image is None or (isinstance(image, Path) and not image.is_file()):
                yield Bad(native, f"image file missing: {name}", file=f"{image_where}/{name}")
                continue
            meta: dict[str, Any] = {"image_id": img_id, "category": category}
            if "#" in answer:
                meta["answer_alternatives"] = [a.strip() for a in answer.split("#") if a.strip()]
            yield Record(native_id=native, question=question, answer=answer, image=image, image_name=name, meta=meta)

    @staticmethod
    def _categories(folder: Path, suffix: str) -> dict[tuple[str, str], str]:
        """(img_id, lower-cased question) → category, from QAPairsByCategory/C<n>_<Category>_<split>.txt."""
        out: dict[tuple[str, str], str] = {}
        for prefix, category in CATEGORY_FILES.items():
            path = folder / f"{prefix}_{suffix}.txt"
            if not path.is_file():
                continue
            for _, text in _lines(path):
                parts = (text or "").split("|")
                if len(parts) >= 2:
                    out[(parts[0].strip(), parts[1].strip().lower())] = category
        return out
