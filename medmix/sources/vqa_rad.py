"""VQA-RAD: clinician-written questions and answers about radiology images from MedPix.

Fetched from the Hugging Face copy `flaviagiammarino/vqa-rad` (two Parquet files, columns
`image`, `question`, `answer`), pinned to the commit whose tree we saw. That copy is the
2,244-QA version (1,793 train / 451 test); an older 3,515-QA version from the MEVF repository
also circulates, which is why the revision is pinned rather than left at `main`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

from medmix.sources._common import iter_parquet
from medmix.sources.base import Bad, Record, Remote, Source, Unit

_REPO = "flaviagiammarino/vqa-rad"
# The tree at this commit lists both data files (huggingface.co/datasets/flaviagiammarino/vqa-rad/tree/bcf91e7...).
_REVISION = "bcf91e7654fb9d51c8ab6a5b82cacf3fafd2fae9"
_FILES = {
    "train": "data/train-00000-of-00001-eb8844602202be60.parquet",
    "test": "data/test-00000-of-00001-e5bc3d208bb4deeb.parquet",
}
_COLUMNS = ["image", "question", "answer"]
# Small batches: every row carries its image bytes, and memory must follow the batch, not the file.
_BATCH = 64
_CLOSED = frozenset({"yes", "no"})


class VqaRad(Source):
    name = "vqa_rad"
    title = "VQA-RAD"
    homepage = "https://osf.io/89kps/"
    citation = """
@article{lau2018dataset,
  title   = {A dataset of clinically generated visual questions and answers about radiology images},
  author  = {Lau, Jason J. and Gayen, Soumya and Ben Abacha, Asma and Demner-Fushman, Dina},
  journal = {Scientific Data},
  volume  = {5},
  pages   = {180251},
  year    = {2018},
  doi     = {10.1038/sdata.2018.251}
}
"""
    license = "CC0-1.0"
    domain = "radiology"
    modality = None  # CT, MR and X-ray mixed; the upstream files do not say which per row
    tasks = ("vqa",)
    splits = {"train": 1793, "test": 451}
    # The test split is the benchmark everyone reports (closed/open accuracy); keep it out of training.
    eval_splits = frozenset({"test"})
    files = tuple(
        Remote(name=path, hf_repo=_REPO, hf_path=path, revision=_REVISION, splits=(split,))
        for split, path in _FILES.items()
    )
    notes = "HF copy de-duplicated by its uploader; 1 train triplet also appears in test (see the card)."

    def read(self, unit: Unit, files: Mapping[str, Path]) -> Iterator[Record | Bad]:
        name = _FILES[unit.split]
        path = Path(files[name])
        for index, row in enumerate(iter_parquet(path, _COLUMNS)):
            native_id = f"{unit.split}-{index:05d}"
            image = row.get("image") or {}
            data = image.get("bytes")
            if not data:
                yield Bad(native_id, f"image missing: row {index} has no image bytes", file=name)
                continue
            question, answer = row.get("question"), row.get("answer")
            if not (question or "").strip() or answer is None:
                field = "question" if not (question or "").strip() else "answer"
                yield Bad(native_id, f"missing field {field!r} in row {index}", file=name)
                continue
            # `closed` follows the VQA-RAD evaluation convention: yes/no answers are the closed set.
            closed = str(answer).strip().lower() in _CLOSED
            yield Record(
                native_id=native_id,
                question=question,
                answer=answer,
                image=data,
                image_name=image.get("path") or f"{name}#row{index}",
                task="vqa",
                meta={"answer_type": "closed" if closed else "open", "row": index},
            )
