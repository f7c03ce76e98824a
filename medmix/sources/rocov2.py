"""ROCOv2: 79,789 radiology figures from PMC Open Access with captions and UMLS concepts (CUIs).

Pinned release: the authors' Zenodo record 10821435 (the data DOI of the Sci Data paper), not
the Hub mirror `eltorio/ROCOv2-radiology`. Why: the Zenodo files are the originals (JPEGs as
published, the automatic + manual concept files, and `license_information.csv` with every
image's article license), while the mirror re-encodes images to PNG, keeps only the manual
concepts, drops the per-image licenses and relabels the whole set CC BY-NC-SA 4.0.

ROCOv2 kept only articles under CC BY or CC BY-NC, so each row gets its own article's license;
a row whose license cannot be read gets the stricter of the two, CC-BY-NC-4.0, and says so in
`meta.license_inferred`.

Modality comes from `{split}_concepts_manual.csv`, the curated concepts (modality for every
image, body region and direction for X-rays), and from the automatic `{split}_concepts.csv`
(MedCAT on the caption) only for an image the manual file has no row for. Why: the automatic
file disagrees with the curated one on 181 train / 40 valid / 45 test rows (issue 22, over the
full files), mostly by listing a PET concept first where the curators gave none: in the first
288 train rows (read here from the mirror below) `ROCOv2_2023_train_000186` and `_000203` are
`C0032743;...` (PET) automatically and empty in the curated file; `ROCOv2_2023_test_000028`, a
PET/CT fusion, is CT first automatically and empty curated. A curated row without a modality
concept leaves the modality unset rather than taking the automatic guess. Both CUI lists stay
in `meta` (`cuis`, automatic; `cuis_manual`, curated, None without a row) with
`modality_source` saying which one was used.

Split sizes: the Sci Data paper and the Zenodo page say 59,958 / 9,904 / 9,927; the real
`train_captions.csv` and concept files have 59,962 train rows. Evidence from real bytes: the
eltorio/ROCOv2-radiology mirror loads `train_captions.csv` whole and its notebook's output
(sctg-development/ROCOv2-radiology, generate.ipynb) pushes the train split as 27 shards of which
22 hold 2,221 rows and 5 hold 2,220, i.e. 59,962 rows; its valid and test saves show 9,904 and
9,927. medmix reads every caption row, so it declares 59,962.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from medmix.core.errors import MedmixError
from medmix.sources.base import Bad, RealBytes, Record, Remote, Source, Unit

ZENODO = "https://zenodo.org/records/10821435/files"
# medmix split → the prefix Zenodo uses for its files and the folder inside each images zip.
SPLIT_PREFIX = {"train": "train", "valid": "valid", "test": "test"}
FALLBACK_LICENSE = "CC-BY-NC-4.0"
# The manually curated modality concepts (one per image) → a readable modality.
MODALITY_CUIS = {  # UMLS concept → medmix.core.modality code (DICOM's Modality terms)
    "C1306645": "DX",  # Plain x-ray
    "C0040405": "CT",  # X-Ray Computed Tomography
    "C0024485": "MR",  # Magnetic Resonance Imaging
    "C0041618": "US",  # Ultrasonography
    "C0002978": "XA",  # angiogram
    "C0032743": "PT",  # Positron-Emission Tomography
}
_CC = re.compile(r"\bCC[\s_-]*(?:BY(?P<mods>(?:[\s_-]*(?:NC|SA|ND))*)|0)\b(?:[\s_-]*(?P<ver>\d\.\d))?", re.I)


def cc_license_to_spdx(text: str | None) -> str | None:
    """The first Creative Commons license named in `text` ("CC BY-NC 4.0", "cc by") as SPDX, else None."""
    match = _CC.search(text or "")
    if match is None:
        return None
    if match.group(0).upper().replace(" ", "").startswith("CC0"):
        return "CC0-1.0"
    mods = re.findall(r"NC|SA|ND", (match.group("mods") or "").upper())
    return "-".join(["CC", "BY", *mods, match.group("ver") or "4.0"])


def read_csv_rows(path: Path) -> list[dict[str, str]]:
    """A small upstream CSV as dicts; raises MedmixError naming the file when it is not readable text."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            return list(csv.DictReader(fh))
    except UnicodeDecodeError as exc:
        raise MedmixError(f"{path.name}: not UTF-8 text ({exc})") from None


class ROCOv2(Source):
    name = "rocov2"
    title = "ROCOv2: Radiology Objects in COntext version 2"
    homepage = "https://zenodo.org/records/10821435"
    citation = """
@article{ruckert2024rocov2,
  title={ROCOv2: Radiology Objects in COntext Version 2, an Updated Multimodal Image Dataset},
  author={R{\\"u}ckert, Johannes and Bloch, Louise and Br{\\"u}ngel, Raphael and Idrissi-Yaghir, Ahmad and
    Sch{\\"a}fer, Henning and Schmidt, Cynthia S. and Koitka, Sven and Pelka, Obioma and Ben Abacha, Asma and
    Garc{\\'i}a Seco de Herrera, Alba and M{\\"u}ller, Henning and Horn, Peter A. and Nensa, Felix and Friedrich,
    Christoph M.},
  journal={Scientific Data},
  volume={11},
  pages={688},
  year={2024},
  doi={10.1038/s41597-024-03496-6}
}"""
    license = FALLBACK_LICENSE  # per row from license_information.csv (CC BY or CC BY-NC)
    per_row_license = True
    domain = "radiology"
    tasks = ("caption",)
    splits = {"train": 59_962, "valid": 9_904, "test": 9_927}  # train: the real file's rows, not the paper's 59,958
    files = (
        *(Remote(f"{p}_captions.csv", url=f"{ZENODO}/{p}_captions.csv", splits=(s,)) for s, p in SPLIT_PREFIX.items()),
        *(Remote(f"{p}_concepts.csv", url=f"{ZENODO}/{p}_concepts.csv", splits=(s,)) for s, p in SPLIT_PREFIX.items()),
        *(Remote(f"{p}_concepts_manual.csv", url=f"{ZENODO}/{p}_concepts_manual.csv", splits=(s,))
          for s, p in SPLIT_PREFIX.items()),
        *(Remote(f"{p}_images.zip", url=f"{ZENODO}/{p}_images.zip", extract=True, splits=(s,))
          for s, p in SPLIT_PREFIX.items()),
        Remote("license_information.csv", url=f"{ZENODO}/license_information.csv"),
    )
    notes = ("A subset of PMC-OA figures: overlaps PMC-OA, PMC-VQA and PubMedVision; its test split "
             "was reused (with minor changes) in ImageCLEFmedical Caption 2023.")
    version = "2"
    rows_per_unit = 30_000
    # The Zenodo files themselves are not in a public repository; this mirror holds them unchanged
    # (source_dataset/). License_information.csv was found in none, so its columns stay documented only.
    real_bytes = (
        RealBytes(repo="sctg-development/ROCOv2-radiology", commit="982165ee0c5d97ec250b0794dceceb304b6de50b",
                  paths=("source_dataset/test_captions.csv",)),
        RealBytes(repo="sctg-development/ROCOv2-radiology", commit="5e93de596d561ac6dcc496acc17e8efc99f945e2",
                  paths=("source_dataset/test_concepts.csv",)),
        RealBytes(repo="sctg-development/ROCOv2-radiology", commit="bca098e340ecebee45417010d8832de68cde9355",
                  paths=("source_dataset/test_concepts_manual.csv", "generate.ipynb")),
    )

    def units(self, split: str, files: Mapping[str, Path]) -> list[Unit]:
        n = len(read_csv_rows(Path(files[f"{SPLIT_PREFIX[split]}_captions.csv"])))
        starts = range(0, max(n, 1), self.rows_per_unit)
        return [Unit(self.name, split, part=str(i), args={"start": s, "stop": min(s + self.rows_per_unit, n)})
                for i, s in enumerate(starts)]

    def read(self, unit: Unit, files: Mapping[str, Path]) -> Iterator[Record | Bad]:
        prefix = SPLIT_PREFIX[unit.split]
        captions_path = Path(files[f"{prefix}_captions.csv"])
        rows = read_csv_rows(captions_path)
        if rows and not {"ID", "Caption"} <= set(rows[0]):
            raise MedmixError(f"{captions_path.name}: expected columns ID, Caption; found {sorted(rows[0])}")
        rows = rows[int(unit.args["start"]):int(unit.args["stop"])]
        wanted = {(r.get("ID") or "").strip() for r in rows}
        concepts = self._concepts(Path(files[f"{prefix}_concepts.csv"]), wanted)
        manual = self._concepts(Path(files[f"{prefix}_concepts_manual.csv"]), wanted)
        licenses = self._licenses(Path(files["license_information.csv"]), wanted)
        images = Path(files[f"{prefix}_images.zip"])
        image_dirs = [d for d in (images / prefix, images) if d.is_dir()]
        for offset, row in enumerate(rows, start=int(unit.args["start"])):
            yield self._record(row, offset, captions_path.name, concepts, manual, licenses, image_dirs, prefix)

    def _record(self, row: dict[str, str], index: int, csv_name: str, concepts: dict[str, list[str]],
                manual: dict[str, list[str]], licenses: dict[str, str], image_dirs: list[Path],
                prefix: str) -> Record | Bad:
        image_id = (row.get("ID") or "").strip()
        where = f"{csv_name}:{index + 2}"  # header is line 1
        if not image_id:
            return Bad(None, "missing field: ID", file=where)
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", image_id):
            return Bad(image_id, f"unsafe image id: {image_id!r}", file=where)
        caption = (row.get("Caption") or "").strip()
        if not caption:
            return Bad(image_id, "missing field: Caption", file=where)
        name = f"{image_id}.jpg"
        path = next((d / name for d in image_dirs if (d / name).is_file()), None)
        if path is None:
            return Bad(image_id, f"image file missing: {name}", file=f"{prefix}_images.zip/{name}")
        cuis = concepts.get(image_id, [])
        curated = manual.get(image_id)  # None: no row in the manual file; []: a row without concepts
        source = "manual" if curated is not None else "automatic"
        attribution = licenses.get(image_id)
        license_id = cc_license_to_spdx(attribution)
        meta: dict[str, Any] = {"cuis": cuis, "cuis_manual": curated, "modality_source": source,
                                "license_attribution": attribution, "license_inferred": license_id is None}
        modality = next((MODALITY_CUIS[c] for c in (cuis if curated is None else curated) if c in MODALITY_CUIS),
                        None)
        return Record(native_id=image_id, answer=caption, image=path, image_name=name, modality=modality,
                      license=license_id or FALLBACK_LICENSE, meta=meta)

    @staticmethod
    def _concepts(path: Path, wanted: set[str]) -> dict[str, list[str]]:
        """ID → CUIs (upstream joins them with ';')."""
        out: dict[str, list[str]] = {}
        for row in read_csv_rows(path):
            image_id = (row.get("ID") or "").strip()
            if image_id in wanted:
                out[image_id] = [c.strip() for c in (row.get("CUIs") or "").split(";") if c.strip()]
        return out

    @staticmethod
    def _licenses(path: Path, wanted: set[str]) -> dict[str, str]:
        """ID → the license text of its article (every non-ID column, joined, so the CC id is found
        whichever column holds it)."""
        out: dict[str, str] = {}
        for row in read_csv_rows(path):
            image_id = (row.get("ID") or "").strip()
            if image_id in wanted:
                out[image_id] = " | ".join(str(v).strip() for k, v in row.items() if k != "ID" and v)
        return out
