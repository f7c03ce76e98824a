"""Quilt-1M: ~1M histopathology image–text pairs (YouTube lectures, Twitter, PubMed, LAION). Gated.

Nothing here downloads it: access is granted by the authors after a request, on terms that forbid
redistribution and commercial use. The user places the files under one folder and runs with
`--from quilt1m=DIR`:
    DIR/quilt_1M_lookup.csv   the lookup table (index, caption, image_path, subset, split, pathology, ...)
    DIR/quilt_1m/             the unzipped images, named as in `image_path`

Rows are units of `rows_per_unit` lines of the lookup table, cut at byte offsets found by one
streaming pass, so no unit re-parses the ones before it.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from medmix.core.errors import MedmixError
from medmix.sources.base import Bad, Manual, Record, Source, Unit

LOOKUP = "quilt_1M_lookup.csv"
IMAGES = "quilt_1m"
HOW = ("Quilt-1M is access-restricted. Request it from the authors: the 512-px copy on Zenodo "
       "(https://zenodo.org/records/8239942, 'Request access') or the full-size copy through the Google form "
       "linked in the 'Data (QUILT-1M) Restricted Access' section of https://github.com/wisdomikezogwo/quilt1m. "
       "Accept the terms (research only, no redistribution), then put {what} in DIR.")
META_COLUMNS = ("subset", "split", "pathology", "magnification", "med_umls_ids", "height", "width")


def _record_offsets(path: Path, every: int) -> tuple[list[tuple[int, int]], int]:
    """[(first row index, byte offset)] every `every` data rows, and the row count.

    Rows may hold newlines inside quoted captions, so rows are found with the csv module over
    lines read in binary (to know byte offsets), not by counting newlines.
    """
    marks: list[tuple[int, int]] = []
    rows = 0
    with open(path, "rb") as fh:
        header = fh.readline()
        if not header:
            raise MedmixError(f"{path.name} is empty")
        offset = len(header)
        pending = b""
        start = offset
        for raw in fh:
            if not pending:
                start = offset
            pending += raw
            offset += len(raw)
            if pending.count(b'"') % 2:  # inside a quoted field: the row continues on the next line
                continue
            if rows % every == 0:
                marks.append((rows, start))
            rows += 1
            pending = b""
        if pending:
            if rows % every == 0:
                marks.append((rows, start))
            rows += 1
    return marks, rows


class Quilt1M(Source):
    name = "quilt1m"
    title = "Quilt-1M: one million histopathology image–text pairs"
    homepage = "https://github.com/wisdomikezogwo/quilt1m"
    citation = """
@inproceedings{ikezogwo2023quilt1m,
  title={Quilt-1M: One Million Image-Text Pairs for Histopathology},
  author={Ikezogwo, Wisdom Oluchi and Seyfioglu, Mehmet Saygin and Ghezloo, Fatemeh and Geva, Dylan Stefan Chan
    and Mohammed, Fatwir Sheikh and Anand, Pavan Kumar and Krishna, Ranjay and Shapiro, Linda},
  booktitle={Advances in Neural Information Processing Systems (NeurIPS) Datasets and Benchmarks Track},
  year={2023},
  eprint={2306.11207}
}"""
    license = "LicenseRef-Quilt-1M"  # gated terms: research only, no redistribution (HF family tag cc-by-nc-nd-3.0)
    domain = "pathology"
    modality = "histopathology"
    tasks = ("caption",)
    # approximate (paper: ~1M pairs); the lookup's `split` column; counts unverified
    splits = {"train": 1_000_000, "val": None}
    redistributable = False
    files = (
        Manual(LOOKUP, how=HOW.format(what=f"{LOOKUP} (the lookup table)")),
        Manual(IMAGES, how=HOW.format(what=f"the unzipped image folder as {IMAGES}/"), is_dir=True),
    )
    notes = ("Gated, non-commercial, never redistributable: a mixture containing it cannot be pushed publicly. "
             "Video frames give many near-duplicates; its PubMed part overlaps PMC-OA.")
    version = "1"
    rows_per_unit = 50_000

    def units(self, split: str, files: Mapping[str, Path]) -> list[Unit]:
        """Every unit scans a slice of the whole table and keeps the rows of its split, so the
        same byte slices serve every split and a row's id never depends on the split asked for."""
        marks, total = _record_offsets(Path(files[LOOKUP]), self.rows_per_unit)
        return [Unit(self.name, split, part=str(i),
                     args={"start": row, "stop": min(row + self.rows_per_unit, total), "offset": off})
                for i, (row, off) in enumerate(marks)]

    def read(self, unit: Unit, files: Mapping[str, Path]) -> Iterator[Record | Bad]:
        lookup, images = Path(files[LOOKUP]), Path(files[IMAGES])
        with open(lookup, "rb") as fh:
            header = next(csv.reader([fh.readline().decode("utf-8-sig")]))
            missing = {"caption", "image_path", "split"} - set(header)
            if missing:
                raise MedmixError(f"{LOOKUP}: missing column(s) {sorted(missing)}; found {header}")
            fh.seek(int(unit.args["offset"]))
            text = io.TextIOWrapper(fh, encoding="utf-8", errors="replace", newline="")
            reader = csv.reader(text)
            for index in range(int(unit.args["start"]), int(unit.args["stop"])):
                values = next(reader, None)
                if values is None:
                    raise MedmixError(f"{LOOKUP} ends before row {index}; the file changed after units were planned")
                item = self._record(dict(zip(header, values)), index, len(values) == len(header), unit.split, images)
                if item is not None:
                    yield item

    def _record(self, row: dict[str, str], index: int, complete: bool, split: str,
                images: Path) -> Record | Bad | None:
        if (row.get("split") or "").strip() != split:
            return None
        key = (row.get("") or row.get("Unnamed: 0") or "").strip()  # pandas' saved index: stable row id
        native = key if key.isdigit() else f"row{index}"
        where = f"{LOOKUP}:row {index}"
        if not complete:
            return Bad(native, "malformed row: wrong number of columns", file=where)
        if any("\ufffd" in v for v in row.values()):
            return Bad(native, "malformed row: not valid UTF-8", file=where)
        caption = (row.get("caption") or "").strip()
        image = (row.get("image_path") or "").strip()
        if not caption:
            return Bad(native, "missing field: caption", file=where)
        if not image or PurePosixPath(image).name != image or image in (".", ".."):
            return Bad(native, f"missing or unsafe field: image_path ({image!r})", file=where)
        path = images / image
        if not path.is_file():
            return Bad(native, f"image file missing: {image}", file=f"{IMAGES}/{image}")
        meta: dict[str, Any] = {k: row[k] for k in META_COLUMNS if row.get(k) not in (None, "")}
        meta["image"] = image
        return Record(native_id=native, answer=caption, image=path, image_name=image, meta=meta)
