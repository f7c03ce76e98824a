"""MedQuAD: 47,457 consumer-health question–answer pairs from 12 NIH websites, as XML documents.

Fetched as the GitHub archive of a pinned commit, in the repository's own layout
(`1_CancerGov_QA/*.xml` ... `12_MPlusHerbsSupplements_QA/*.xml`), one unit per folder.

Three collections (A.D.A.M. encyclopedia, MedlinePlus drugs, MedlinePlus herbs and supplements)
ship with every answer removed for MedlinePlus copyright. Those pairs are yielded as `Bad`
with a reason starting "filtered:" so the build counts them (they show up in the quarantine
report under that reason) instead of losing them silently; medmix never crawls the answers back.

Native ids are `<folder>/<qid>`, except where CancerGov splits one PDQ page over several files
(`0000013_2.xml`, then `0000013_2_1.xml` ... `0000013_2_6.xml`): those files repeat the page's
Document id and qids (`0000013_2-1`, ...) with another Focus and other answers, so a pair whose
qid does not belong to its own file gets `<folder>/<file stem>/<qid>`. Why not the stem for every
pair: the ids of the 16,372 answered pairs in files that own their qids stay as they were.
Before, the repeats were quarantined as duplicate ids. On the real archive at the pinned commit
(`tests/fixtures/real/count_real.py`): 47,441 pairs, 16,407 answered records with 16,407
distinct ids (35 of them from split-page files), 31,029 filtered for copyright, 5 empty answers.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from medmix.core.errors import MedmixError
from medmix.sources.base import Bad, RealBytes, Record, Remote, Source, Unit

COMMIT = "7e94c7b336f1f8e010c03091df691c8bea014399"
ARCHIVE_URL = f"https://github.com/abachaa/MedQuAD/archive/{COMMIT}.zip"
_FOLDER = re.compile(r"^\d+_[A-Za-z0-9_]+$")
# Collections whose answers upstream removed (readme.txt: "to respect the MedlinePlus copyright").
COPYRIGHT_REMOVED = {"10_MPlus_ADAM_QA", "11_MPlusDrugs_QA", "12_MPlusHerbsSupplements_QA"}


def qa_folders(root: Path) -> list[Path]:
    """The numbered collection folders, wherever the archive's top folder (MedQuAD-<sha>/) put them."""
    found: list[Path] = []
    for base in (root, *sorted(p for p in root.iterdir() if p.is_dir())):
        found.extend(p for p in base.iterdir() if p.is_dir() and _FOLDER.match(p.name))
        if found:
            break
    return sorted(found, key=lambda p: int(p.name.split("_", 1)[0]))


def _text(node: ET.Element | None) -> str:
    return "".join(node.itertext()).strip() if node is not None else ""


class MedQuAD(Source):
    name = "medquad"
    title = "MedQuAD: Medical Question Answering Dataset"
    homepage = "https://github.com/abachaa/MedQuAD"
    citation = """
@article{BenAbacha-BMC-2019,
  author={Asma {Ben Abacha} and Dina Demner{-}Fushman},
  title={A Question-Entailment Approach to Question Answering},
  journal={{BMC} Bioinform.},
  volume={20},
  number={1},
  pages={511:1--511:23},
  year={2019},
  url={https://bmcbioinformatics.biomedcentral.com/articles/10.1186/s12859-019-3119-4}
}"""
    license = "CC-BY-4.0"  # LICENSE.txt in the repository
    domain = "clinical-text"
    tasks = ("qa",)
    splits = {"train": 16_407}  # answered pairs of the real archive at COMMIT (count_real.py); lavita/MedQuAD agrees
    files = (Remote("MedQuAD.zip", url=ARCHIVE_URL, revision=COMMIT, extract=True),)
    notes = ("Answers of 3 MedlinePlus collections were removed upstream for copyright; those pairs are "
             "counted as 'filtered: answer removed upstream' and not crawled. Questions overlap the TREC 2017 "
             "LiveQA-Med test questions used in its QA test collection.")
    version = "2"
    real_bytes = (RealBytes(repo="abachaa/MedQuAD", commit=COMMIT,
                            paths=("1_CancerGov_QA/0000013_2.xml", "1_CancerGov_QA/0000013_2_4.xml",
                                   "1_CancerGov_QA/0000013_2_6.xml", "2_GARD_QA/0000931.xml",
                                   "2_GARD_QA/0002079.xml", "10_MPlus_ADAM_QA/0003664.xml"),
                            note="whole files; the full archive was counted once (count_real.py)"),)

    def units(self, split: str, files: Mapping[str, Path]) -> list[Unit]:
        folders = qa_folders(Path(files["MedQuAD.zip"]))
        if not folders:
            raise MedmixError(f"{files['MedQuAD.zip']}: no MedQuAD collection folders (1_CancerGov_QA, ...) found")
        return [Unit(self.name, split, part=f.name, args={"folder": f.name}) for f in folders]

    def read(self, unit: Unit, files: Mapping[str, Path]) -> Iterator[Record | Bad]:
        folder_name = str(unit.args["folder"])
        folder = next((f for f in qa_folders(Path(files["MedQuAD.zip"])) if f.name == folder_name), None)
        if folder is None:
            raise MedmixError(f"MedQuAD archive has no folder {folder_name!r}")
        for path in sorted(folder.glob("*.xml")):
            yield from self._document(path, folder_name)

    def _document(self, path: Path, folder: str) -> Iterator[Record | Bad]:
        where = f"{folder}/{path.name}"
        try:
            doc = ET.parse(path).getroot()
        except ET.ParseError as exc:
            yield Bad(f"{folder}/{path.stem}", f"malformed XML: {exc}", file=where)
            return
        focus = _text(doc.find("Focus"))
        base_meta: dict[str, Any] = {
            "collection": folder,
            "document": doc.get("id"),
            "site": doc.get("source"),
            "url": doc.get("url"),
            "focus": focus or None,
            "focus_cuis": [_text(c) for c in doc.findall("FocusAnnotations/UMLS/CUIs/CUI")],
            "semantic_group": _text(doc.find("FocusAnnotations/UMLS/SemanticGroup")) or None,
            "focus_category": _text(doc.find("FocusAnnotations/Category")) or None,
        }
        for pos, pair in enumerate(doc.findall("QAPairs/QAPair"), start=1):
            qnode = pair.find("Question")
            qid = (qnode.get("qid") if qnode is not None else None) or f"{path.stem}-p{pair.get('pid') or pos}"
            own = qid.rsplit("-", 1)[0] == path.stem  # CancerGov's split-page files reuse their page's qids
            native = f"{folder}/{qid}" if own else f"{folder}/{path.stem}/{qid}"
            question = _text(qnode)
            answer = _text(pair.find("Answer"))
            if not question:
                yield Bad(native, "missing field: Question", file=where)
                continue
            if not answer:
                reason = ("filtered: answer removed upstream for MedlinePlus copyright" if folder in COPYRIGHT_REMOVED
                          else "empty answer")
                yield Bad(native, reason, file=where)
                continue
            meta = dict(base_meta, qtype=qnode.get("qtype") if qnode is not None else None)
            yield Record(native_id=native, question=question, answer=answer, meta=meta)
