"""PubMedVision alignment VQA: 647,031 PubMed figure descriptions rewritten by GPT-4V (HuatuoGPT-Vision).

Upstream is one 710 MB JSON array (`PubMedVision_Alignment_VQA.json`) whose rows are
    {"id": "Alignment_VQA_801", "image": ["images/pmc_801_0.jpg", ...], "body_part": ..., "modality": ...,
     "conversations": [{"from": "human", "value": ...}, {"from": "gpt", "value": ...}]}
and twenty image zips (`images_0.zip` ... `images_19.zip`) that upstream unpacks flat into `images/`.

Multi-image rows (~22%): the schema holds one image per row, and the answers of those rows
describe several panels together ("Image C and Image B both display ..."), so pairing the text
with any single image teaches a wrong caption. The default `multi_image="drop"` leaves them
out, counted as "filtered: multi-image row"; `multi_image="first"` keeps them with their first
image and `meta.n_images`, for recipes that prefer volume. The 9 rows whose images are missing
from the zips (e.g. pmc_9_0.jpg) are quarantined as missing images.

The JSON is read as a stream (stdlib `raw_decode`, one element at a time), and `units()` records
the byte offset where every 50k-element slice starts, so no unit parses the file before its slice.
"""

from __future__ import annotations

import codecs
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from medmix.core.errors import MedmixError
from medmix.sources.base import Bad, Record, Remote, Source, Unit

HF_REPO = "FreedomIntelligence/PubMedVision"
REVISION = "32485b589a249f8b056f1c0855d7b1b09376a332"
JSON_NAME = "PubMedVision_Alignment_VQA.json"
N_IMAGE_ZIPS = 20
MAX_ELEMENT_CHARS = 64 << 20
_WS = " \t\r\n"
_DECODER = json.JSONDecoder()

# Upstream `modality` label → schema domain (first keyword that matches; default general-biomedical).
DOMAIN_KEYWORDS = (
    ("microscop", "microscopy"), ("patholog", "pathology"), ("histolog", "pathology"),
    ("dermo", "dermatology"), ("fundus", "ophthalmology"), ("optical coherence", "ophthalmology"),
    ("computed tomography", "radiology"), ("magnetic resonance", "radiology"), ("x-ray", "radiology"),
    ("ultrasound", "radiology"), ("angiograph", "radiology"), ("mammograph", "radiology"),
    ("positron", "radiology"), ("nuclear", "radiology"), ("fluoroscop", "radiology"),
)


def modality_domain(modality: str | None) -> str | None:
    low = (modality or "").lower()
    return next((domain for key, domain in DOMAIN_KEYWORDS if key in low), None)


def iter_json_array(path: Path, offset: int = 0, chunk: int = 1 << 20) -> Iterator[tuple[int, Any]]:
    """Yield (byte offset, element) for the elements of the top-level JSON array in `path`.

    `offset` 0 starts at the file's '['; any other offset must be one this function yielded.
    Memory holds one read chunk plus one element.
    """
    decoder = codecs.getincrementaldecoder("utf-8")()
    with open(path, "rb") as fh:
        fh.seek(offset)
        buf, pos, at, eof = "", 0, offset, False  # `at` = byte offset of buf[pos]

        def fill() -> bool:
            nonlocal buf, pos, eof
            data = fh.read(chunk)
            if not data:
                eof = True
            buf = buf[pos:] + decoder.decode(data, final=eof)
            pos = 0
            return bool(data)

        def skip(chars: str) -> None:
            nonlocal pos, at
            while True:
                while pos < len(buf) and buf[pos] in chars:
                    pos += 1
                    at += 1
                if pos < len(buf) or not fill():
                    return

        fill()
        if offset == 0:
            skip(_WS)
            if buf[pos:pos + 1] != "[":
                raise MedmixError(f"{path.name}: expected a JSON array, found {buf[pos:pos + 20]!r}")
            pos += 1
            at += 1
        while True:
            skip(_WS + ",")
            if pos >= len(buf):
                raise MedmixError(f"{path.name}: the JSON array is not closed (truncated file?)")
            if buf[pos] == "]":
                return
            while True:
                try:
                    value, end = _DECODER.raw_decode(buf, pos)
                    break
                except json.JSONDecodeError as exc:
                    if eof or len(buf) - pos > MAX_ELEMENT_CHARS:
                        raise MedmixError(f"{path.name}: malformed JSON at byte {at}: {exc.msg}") from None
                    fill()
            yield at, value
            at += len(buf[pos:end].encode("utf-8"))
            pos = end


def find_images(roots: list[Path], names: set[str]) -> dict[str, Path]:
    """name → file for the wanted image names, scanning the unpacked zips in order (first wins).

    Scanning per unit (not indexing all ~900k images once) keeps memory at one unit's names.
    """
    found: dict[str, Path] = {}
    for root in roots:
        for folder, _dirs, filenames in os.walk(root):
            for name in filenames:
                if name in names and name not in found:
                    found[name] = Path(folder) / name
    return found


class PubMedVision(Source):
    name = "pubmedvision"
    title = "PubMedVision alignment VQA (GPT-4V-reformatted PubMed figure descriptions)"
    homepage = "https://huggingface.co/datasets/FreedomIntelligence/PubMedVision"
    citation = """
@misc{chen2024huatuogptvision,
  title={HuatuoGPT-Vision, Towards Injecting Medical Visual Knowledge into Multimodal LLMs at Scale},
  author={Junying Chen and Chi Gui and Ruyi Ouyang and Anningzhe Gao and Shunian Chen and Guiming Hardy Chen and
    Xidong Wang and Ruifei Zhang and Zhenyang Cai and Ke Ji and Guangjun Yu and Xiang Wan and Benyou Wang},
  year={2024},
  eprint={2406.19280},
  archivePrefix={arXiv},
  primaryClass={cs.CV}
}"""
    license = "Apache-2.0"
    domain = "general-biomedical"
    tasks = ("vqa",)
    splits = {"train": 504_501}  # single-image rows with their image present (multi_image="drop")
    files = (
        Remote(JSON_NAME, hf_repo=HF_REPO, hf_path=JSON_NAME, revision=REVISION),
        *(Remote(f"images_{i}.zip", hf_repo=HF_REPO, hf_path=f"images_{i}.zip", revision=REVISION, extract=True)
          for i in range(N_IMAGE_ZIPS)),
    )
    notes = ("Answers were written by GPT-4V: OpenAI's terms on using model outputs may apply on top of "
             "Apache-2.0. Images are PMC-OA figures (overlap PMC-OA, PMC-VQA, ROCOv2); the InstructionTuning "
             "subset reuses the same images and is not included.")
    version = "1"
    rows_per_unit = 50_000

    @classmethod
    def option_names(cls) -> tuple[str, ...]:
        return ("multi_image",)

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        policy = self.options.get("multi_image", "drop")
        if policy not in ("drop", "first"):
            raise MedmixError(f"pubmedvision: multi_image must be 'drop' or 'first', not {policy!r}")
        self.multi_image = policy

    def units(self, split: str, files: Mapping[str, Path]) -> list[Unit]:
        path = Path(files[JSON_NAME])
        marks: list[tuple[int, int]] = []
        count = 0
        for offset, _ in iter_json_array(path):
            if count % self.rows_per_unit == 0:
                marks.append((count, offset))
            count += 1
        return [Unit(self.name, split, part=str(i),
                     args={"start": start, "stop": min(start + self.rows_per_unit, count), "offset": off})
                for i, (start, off) in enumerate(marks)] or [Unit(self.name, split, part="0",
                                                                  args={"start": 0, "stop": 0, "offset": 0})]

    def read(self, unit: Unit, files: Mapping[str, Path]) -> Iterator[Record | Bad]:
        start, stop = int(unit.args["start"]), int(unit.args["stop"])
        if stop <= start:
            return
        parsed: list[dict[str, Any] | Bad] = []
        stream = iter_json_array(Path(files[JSON_NAME]), int(unit.args["offset"]))
        for index, (_, value) in zip(range(start, stop), stream):
            parsed.append(self._parse(index, value))
        wanted = {p["image"] for p in parsed if isinstance(p, dict)}
        roots = [Path(files[f"images_{i}.zip"]) for i in range(N_IMAGE_ZIPS) if f"images_{i}.zip" in files]
        found = find_images(roots, wanted)
        for item in parsed:
            if isinstance(item, Bad):
                yield item
            elif item["image"] not in found:
                yield Bad(item["native"], f"image file missing: {item['image']}", file=f"images_*.zip/{item['image']}")
            else:
                yield Record(native_id=item["native"], question=item["question"], answer=item["answer"],
                             image=found[item["image"]], image_name=item["image"], modality=item["modality"],
                             domain=modality_domain(item["modality"]), meta=item["meta"])

    def _parse(self, index: int, value: Any) -> dict[str, Any] | Bad:
        where = f"{JSON_NAME}[{index}]"
        if not isinstance(value, dict):
            return Bad(f"row{index}", "malformed element: not an object", file=where)
        row_id = value.get("id")
        native = row_id if isinstance(row_id, str) and row_id.strip() and "/" not in row_id else f"row{index}"
        images = value.get("image")
        if isinstance(images, str):
            images = [images]
        if not isinstance(images, list) or not images or not all(isinstance(i, str) and i for i in images):
            return Bad(native, "missing field: image", file=where)
        if len(images) > 1 and self.multi_image == "drop":
            return Bad(native, f"filtered: multi-image row ({len(images)} images; multi_image='drop')", file=where)
        name = PurePosixPath(images[0]).name
        if ".." in PurePosixPath(images[0]).parts or not name:
            return Bad(native, f"unsafe image path: {images[0]!r}", file=where)
        turns = value.get("conversations")
        if not isinstance(turns, list):
            return Bad(native, "missing field: conversations", file=where)
        question = next((t.get("value") for t in turns if isinstance(t, dict) and t.get("from") == "human"), None)
        answer = next((t.get("value") for t in turns if isinstance(t, dict) and t.get("from") == "gpt"), None)
        if not isinstance(question, str) or not isinstance(answer, str) or not answer.strip():
            return Bad(native, "malformed conversations: needs a human turn and a non-empty gpt turn", file=where)
        question = question.replace("<image>", "").strip()
        modality = value.get("modality") if isinstance(value.get("modality"), str) else None
        meta: dict[str, Any] = {"row": index, "image": images[0], "body_part": value.get("body_part"),
                                "n_images": len(images), "n_turns": len(turns)}
        return {"native": native, "image": name, "question": question, "answer": answer, "modality": modality,
                "meta": meta}
