"""PMC-OA: 1.65M subfigure–subcaption pairs cut from PubMed Central Open Access articles (PMC-CLIP).

The Hub release carries no license of its own; every figure keeps the license of its article.
So the adapter joins each row, on the PMCID in its image name, with NCBI's PMC Open Access file
list and writes that article's license on the row. Rows whose article is not in the list get
`LicenseRef-PMC-OA-unknown`, which the license policy refuses until a recipe accepts it.

Why units carry byte offsets: `pmc_oa.jsonl` is one 450 MB file; `units()` scans it once and
records where every 50k-line slice starts, so a unit seeks to its slice instead of re-reading
the lines before it, and a unit's rows (ids included) do not depend on how many units there are.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from medmix.errors import MedmixError
from medmix.sources.base import Bad, Record, Remote, Source, Unit

HF_REPO = "axiong/pmc_oa"
OA_FILE_LIST_URL = "https://ftp.ncbi.nlm.nih.gov/pub/pmc/oa_file_list.csv"
UNKNOWN_LICENSE = "LicenseRef-PMC-OA-unknown"
# The folder images.zip unpacks to (the PMC-CLIP build's name for the subfigure crops).
IMAGE_SUBDIR = "caption_T060_filtered_top4_sep_v0_subfigures"
_PMCID = re.compile(r"^(PMC\d+)_")

# PMC's license column names CC families without a version; the family decides what a license
# allows (commercial use, derivatives, share-alike), so 4.0 stands for the family and the raw
# value is kept in `meta.pmc_license`.
PMC_LICENSES = {
    "CC0": "CC0-1.0",
    "CC BY": "CC-BY-4.0",
    "CC BY-SA": "CC-BY-SA-4.0",
    "CC BY-ND": "CC-BY-ND-4.0",
    "CC BY-NC": "CC-BY-NC-4.0",
    "CC BY-NC-SA": "CC-BY-NC-SA-4.0",
    "CC BY-NC-ND": "CC-BY-NC-ND-4.0",
    "NO-CC CODE": "LicenseRef-PMC-OA-no-CC",
}


def pmc_license_to_spdx(value: str | None) -> str:
    """PMC's license label ("CC BY-NC", "CC-BY", "NO-CC CODE") → an SPDX id or a clear LicenseRef."""
    if not value or not value.strip():
        return UNKNOWN_LICENSE
    key = re.sub(r"\s+", " ", value.strip().upper()).replace("CC-BY", "CC BY")
    return PMC_LICENSES.get(key, UNKNOWN_LICENSE)


def article_licenses(file_list: Path, pmcids: set[str]) -> dict[str, str]:
    """PMCID → PMC license label for the articles in `pmcids`, streaming the (multi-GB) file list.

    Only the two needed columns are parsed and only matching rows are kept, so memory stays
    at one unit's worth of articles however large the list grows.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv

    wanted = ["Accession ID", "License"]
    try:
        reader = pacsv.open_csv(
            file_list,
            read_options=pacsv.ReadOptions(block_size=8 << 20),
            parse_options=pacsv.ParseOptions(newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(include_columns=wanted,
                                                 column_types={c: pa.string() for c in wanted}),
        )
    except (pa.ArrowInvalid, KeyError) as exc:
        raise MedmixError(f"{file_list.name}: not a PMC OA file list with columns {wanted}: {exc}") from None
    found: dict[str, str] = {}
    if not pmcids:
        return found
    value_set = pa.array(sorted(pmcids), type=pa.string())
    for batch in reader:
        mask = pc.is_in(batch.column(0), value_set=value_set)
        if not pc.any(mask).as_py():
            continue
        hits = batch.filter(mask)
        for pmcid, lic in zip(hits.column(0).to_pylist(), hits.column(1).to_pylist()):
            found[pmcid] = lic or ""
    return found


def _image_dir(root: Path) -> Path:
    for candidate in (root / IMAGE_SUBDIR, root / "images" / IMAGE_SUBDIR, root / "images"):
        if candidate.is_dir():
            return candidate
    return root


class PMCOA(Source):
    name = "pmc_oa"
    title = "PMC-OA: subfigure–subcaption pairs from PubMed Central Open Access (PMC-CLIP)"
    homepage = "https://weixionglin.github.io/PMC-CLIP/"
    citation = """
@article{lin2023pmc,
  title={PMC-CLIP: Contrastive Language-Image Pre-training using Biomedical Documents},
  author={Lin, Weixiong and Zhao, Ziheng and Zhang, Xiaoman and Wu, Chaoyi and Zhang, Ya and Wang, Yanfeng and
    Xie, Weidi},
  journal={arXiv preprint arXiv:2303.07240},
  year={2023}
}"""
    license = UNKNOWN_LICENSE  # per row: the article's license from the PMC OA file list
    domain = "general-biomedical"
    tasks = ("caption",)
    splits = {"train": 1_650_000}  # approximate: ~1.65M in pmc_oa.jsonl (paper); exact count unverified
    per_row_license = True
    files = (
        Remote("pmc_oa.jsonl", hf_repo=HF_REPO, hf_path="pmc_oa.jsonl"),
        Remote("images.zip", hf_repo=HF_REPO, hf_path="images.zip", extract=True),
        Remote("oa_file_list.csv", url=OA_FILE_LIST_URL),
    )
    notes = ("Per-row licenses come from NCBI's oa_file_list.csv, joined on the PMCID in the image name; "
             "rows of articles missing from the list are labelled LicenseRef-PMC-OA-unknown. "
             "Figures overlap ROCOv2, PMC-VQA, PubMedVision and Quilt-1M's PubMed part.")
    version = "1"
    rows_per_unit = 50_000

    def units(self, split: str, files: Mapping[str, Path]) -> list[Unit]:
        """One unit per `rows_per_unit` lines, each with the byte offset its first line starts at."""
        units: list[Unit] = []
        start_line, start_offset, line, offset = 0, 0, 0, 0
        with open(files["pmc_oa.jsonl"], "rb") as fh:
            for raw in fh:
                if line - start_line == self.rows_per_unit:
                    units.append(self._unit(split, len(units), start_line, line, start_offset))
                    start_line, start_offset = line, offset
                line += 1
                offset += len(raw)
        if line > start_line or not units:
            units.append(self._unit(split, len(units), start_line, line, start_offset))
        return units

    def _unit(self, split: str, part: int, start: int, stop: int, offset: int) -> Unit:
        return Unit(self.name, split, part=str(part), args={"start": start, "stop": stop, "offset": offset})

    def read(self, unit: Unit, files: Mapping[str, Path]) -> Iterator[Record | Bad]:
        jsonl = Path(files["pmc_oa.jsonl"])
        entries = list(self._entries(jsonl, unit))
        pmcids = {e["pmcid"] for e in entries if isinstance(e, dict) and e["pmcid"]}
        licenses = article_licenses(Path(files["oa_file_list.csv"]), pmcids)
        image_dir = _image_dir(Path(files["images.zip"]))
        for entry in entries:
            if isinstance(entry, Bad):
                yield entry
                continue
            yield self._record(entry, licenses, image_dir)

    def _entries(self, jsonl: Path, unit: Unit) -> Iterator[dict[str, Any] | Bad]:
        start, stop = int(unit.args["start"]), int(unit.args["stop"])
        with open(jsonl, "rb") as fh:
            fh.seek(int(unit.args["offset"]))
            for line_no in range(start, stop):
                raw = fh.readline()
                if not raw:
                    raise MedmixError(f"{jsonl.name} ends at line {line_no}, but the unit expects {stop} lines; "
                                      "the file changed after units were planned")
                native = f"L{line_no:07d}"
                where = f"{jsonl.name}:{line_no + 1}"
                try:
                    obj = json.loads(raw)
                except UnicodeDecodeError:
                    yield Bad(native, "malformed line: not valid UTF-8", file=where)
                    continue
                except ValueError as exc:
                    yield Bad(native, f"malformed JSON line: {exc}", file=where)
                    continue
                if not isinstance(obj, dict):
                    yield Bad(native, "malformed JSON line: not an object", file=where)
                    continue
                image, caption = obj.get("image"), obj.get("caption")
                if not isinstance(image, str) or not image.strip():
                    yield Bad(native, "missing field: image", file=where)
                    continue
                image = image.strip()
                if PurePosixPath(image).name != image or image in (".", ".."):
                    yield Bad(native, f"unsafe image name: {image!r}", file=where)
                    continue
                native = f"{native}-{PurePosixPath(image).stem}"
                if not isinstance(caption, str) or not caption.strip():
                    yield Bad(native, "missing field: caption", file=where)
                    continue
                match = _PMCID.match(image)
                yield {"native": native, "image": image, "caption": caption,
                       "pmcid": match.group(1) if match else None,
                       "extra": {k: obj[k] for k in ("alignment_type", "alignment_score") if k in obj}}

    def _record(self, entry: dict[str, Any], licenses: dict[str, str], image_dir: Path) -> Record | Bad:
        image_path = image_dir / entry["image"]
        if not image_path.is_file():
            return Bad(entry["native"], f"image file missing: {entry['image']}", file=f"images.zip/{entry['image']}")
        pmcid = entry["pmcid"]
        raw_license = licenses.get(pmcid) if pmcid else None
        meta: dict[str, Any] = {"pmcid": pmcid, "image": entry["image"], "pmc_license": raw_license,
                                "license_source": "oa_file_list" if raw_license is not None else "unknown"}
        meta.update(entry["extra"])
        return Record(
            native_id=entry["native"],
            answer=entry["caption"],
            image=image_path,
            image_name=entry["image"],
            license=pmc_license_to_spdx(raw_license),
            meta=meta,
        )
