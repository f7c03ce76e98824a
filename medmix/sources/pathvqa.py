"""PathVQA: pathology questions generated from the captions of two textbooks and the PEIR library.

Fetched from the Hugging Face copy `flaviagiammarino/path-vqa`: Parquet shards
(`data/{train,validation,test}-0000k-of-0000n-<hash>.parquet`, columns `image`, `question`,
`answer`). The uploader de-duplicated image-question-answer triplets within each split and
lower-cased the text (`scripts/processing.py`), so 32,632 QA remain of the original 32,799.

License: the HF card says MIT, but the original release states that the images and captions
belong to the books' publishers and authors and to PEIR. Rows therefore carry
`LicenseRef-PathVQA`, which the license policy refuses until a recipe accepts it by name.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

import pyarrow.parquet as pq

from medmix.sources._common import iter_parquet
from medmix.sources.base import Bad, Record, Remote, Source, Unit

_REPO = "flaviagiammarino/path-vqa"
# The shard set on `main` (the same 13 names in two independent listings; see docs/datasets/pathvqa.md).
_SHARDS = {
    "train": ["train-00000-of-00007-f2d0e9ef9f022d38", "train-00001-of-00007-47d8e0220bf6c933",
              "train-00002-of-00007-7fb5037c4c5da7be", "train-00003-of-00007-74b9b7b81cc55f90",
              "train-00004-of-00007-77eea90af4a55dce", "train-00005-of-00007-5332ec423be520bd",
              "train-00006-of-00007-637a58c700b604af"],
    "validation": ["validation-00000-of-00003-90a5518d26493b67", "validation-00001-of-00003-cbfe947a3418595c",
                   "validation-00002-of-00003-9ec816895bd3bc20"],
    "test": ["test-00000-of-00003-e9adadb4799f44d3", "test-00001-of-00003-7ea98873fc919813",
             "test-00002-of-00003-1628308435019820"],
}
_COLUMNS = ["image", "question", "answer"]
_CLOSED = frozenset({"yes", "no"})


def _name(shard: str) -> str:
    return f"data/{shard}.parquet"


class PathVQA(Source):
    name = "pathvqa"
    title = "PathVQA"
    homepage = "https://github.com/UCSD-AI4H/PathVQA"
    citation = """
@article{he2020pathvqa,
  title   = {PathVQA: 30000+ Questions for Medical Visual Question Answering},
  author  = {He, Xuehai and Zhang, Yichen and Mou, Luntian and Xing, Eric and Xie, Pengtao},
  journal = {arXiv preprint arXiv:2003.10286},
  year    = {2020}
}
"""
    license = "LicenseRef-PathVQA"
    domain = "pathology"
    modality = None  # mostly H&E micrographs, also gross photographs and other stains; not labelled per row
    tasks = ("vqa",)
    splits = {"train": 19654, "validation": 6259, "test": 6719}
    # PathVQA test is the OpenMedQ headline benchmark (BLEU-1 75.9); validation stays trainable.
    eval_splits = frozenset({"test"})
    redistributable = False  # image copyright stays with the textbook publishers and PEIR
    files = tuple(
        Remote(name=_name(shard), hf_repo=_REPO, hf_path=_name(shard), splits=(split,))
        for split, shards in _SHARDS.items() for shard in shards
    )
    notes = "HF copy: lower-cased, de-duplicated within splits; image copyright with the publishers (not MIT)."

    def units(self, split: str, files: Mapping[str, Path]) -> list[Unit]:
        """One unit per upstream shard; `offset` (rows in earlier shards, read from Parquet footers)
        makes row ids count through the whole split, so they do not depend on the sharding."""
        units, offset = [], 0
        for i, shard in enumerate(_SHARDS[split]):
            name = _name(shard)
            units.append(Unit(self.name, split, part=str(i), args={"file": name, "offset": offset}))
            offset += pq.ParquetFile(Path(files[name])).metadata.num_rows
        return units

    def read(self, unit: Unit, files: Mapping[str, Path]) -> Iterator[Record | Bad]:
        name = unit.args["file"]
        for row_in_file, row in enumerate(iter_parquet(Path(files[name]), _COLUMNS)):
            index = unit.args["offset"] + row_in_file
            native_id = f"{unit.split}-{index:05d}"
            image = row.get("image") or {}
            if not image.get("bytes"):
                yield Bad(native_id, f"image missing: row {row_in_file} has no image bytes", file=name)
                continue
            if not (row.get("question") or "").strip() or row.get("answer") is None:
                field = "question" if not (row.get("question") or "").strip() else "answer"
                yield Bad(native_id, f"missing field {field!r} in row {row_in_file}", file=name)
                continue
            closed = str(row["answer"]).strip().lower() in _CLOSED
            yield Record(
                native_id=native_id,
                question=row["question"],
                answer=row["answer"],
                image=image["bytes"],
                image_name=image.get("path") or f"{name}#row{row_in_file}",
                task="vqa",
                meta={"answer_type": "closed" if closed else "open"}
                | ({"image_path": image["path"]} if image.get("path") else {}),
            )
