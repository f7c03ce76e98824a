"""PMC-OA: 1.65M subfigure–subcaption pairs cut from PubMed Central Open Access articles (PMC-CLIP).

The Hub release carries no license of its own; every figure keeps the license of its article.
So the adapter joins each row, on the PMCID in its image name, with a PMCID → license table built
from NCBI's PMC Cloud Service bucket `pmc-oa-opendata` (`medmix.sources._pmc_licenses`: one ~1 KB metadata
JSON per cited article, pinned in the lock). NCBI's `oa_file_list.csv` that this adapter used
until 2026 was removed with the legacy FTP bulk files; a user who kept a copy can still pass it
with `--from pmc_oa=DIR` (DIR/oa_file_list.csv). A row whose article is absent, retracted, not
open access, without a CC code or TDM-only is quarantined with that reason; no row ever gets a
default license.

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

from medmix.core.errors import MedmixError
from medmix.sources._pmc_licenses import BUCKET_URL, TABLE_NAME, normalize_code, read_table, refusal, spdx
from medmix.sources.base import Bad, Derived, Record, Remote, Source, Unit

HF_REPO = "axiong/pmc_oa"
REFUSED_LICENSE = "LicenseRef-PMC-OA-refused"
# The folder images.zip unpacks to (the PMC-CLIP build's name for the subfigure crops).
IMAGE_SUBDIR = "caption_T060_filtered_top4_sep_v0_subfigures"
_PMCID = re.compile(r"^(PMC\d+)_")


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
    license = REFUSED_LICENSE  # per row: the article's license; rows without one are quarantined
    domain = "general-biomedical"
    tasks = ("caption",)
    splits = {"train": 1_650_000}  # approximate: ~1.65M in pmc_oa.jsonl (paper); exact count unverified
    per_row_license = True
    files = (
        Remote("pmc_oa.jsonl", hf_repo=HF_REPO, hf_path="pmc_oa.jsonl"),
        Remote("images.zip", hf_repo=HF_REPO, hf_path="images.zip", extract=True),
        Derived(TABLE_NAME, make="medmix.sources._pmc_licenses:make", url=f"{BUCKET_URL}/metadata/",
                inputs=("pmc_oa.jsonl",)),
    )
    notes = ("Per-row licenses come from the PMC Cloud Service bucket pmc-oa-opendata (metadata/PMC<id>.<ver>.json "
             "of each cited article), joined on the PMCID in the image name and pinned in the lock; rows whose "
             "article is absent, retracted, not open access, without a CC code or TDM-only are quarantined. "
             "Figures overlap ROCOv2, PMC-VQA, PubMedVision and Quilt-1M's PubMed part.")
    version = "2"
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
        articles = read_table(Path(files[TABLE_NAME]))["articles"]
        licenses = {p: articles.get(p) for p in pmcids}
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

    def _record(self, entry: dict[str, Any], licenses: dict[str, Any], image_dir: Path) -> Record | Bad:
        pmcid = entry["pmcid"]
        article = licenses.get(pmcid) if pmcid else None
        why = refusal(article) if pmcid else "no PMCID in the image name"
        if why is not None:
            return Bad(entry["native"], f"license refused ({why}): {pmcid or entry['image']}", file=entry["image"])
        image_path = image_dir / entry["image"]
        if not image_path.is_file():
            return Bad(entry["native"], f"image file missing: {entry['image']}", file=f"images.zip/{entry['image']}")
        meta: dict[str, Any] = {"pmcid": pmcid, "image": entry["image"],
                                "pmc_license": normalize_code(article["license_code"]),  # type: ignore[index]
                                "pmc_version": article.get("version")}  # type: ignore[union-attr]
        meta.update(entry["extra"])
        return Record(
            native_id=entry["native"],
            answer=entry["caption"],
            image=image_path,
            image_name=entry["image"],
            license=spdx(article),  # type: ignore[arg-type]
            meta=meta,
        )
