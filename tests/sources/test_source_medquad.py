"""MedQuAD adapter: XML collections of consumer-health QA; copyright-removed answers are counted, not kept."""

from __future__ import annotations

import hashlib
import json
import re

from adapter_harness import run_adapter
from fixtures import assert_matches_remotes, local_files, read_split, serve
from fixtures import medquad as fx

from medmix.sources import get_source
from medmix.sources.medquad import COMMIT, MedQuAD


def test_registered_as_text_qa_pinned_to_a_commit():
    assert get_source("medquad") is MedQuAD
    assert MedQuAD.tasks == ("qa",) and MedQuAD.domain == "clinical-text" and MedQuAD.license == "CC-BY-4.0"
    assert COMMIT in MedQuAD.files[0].url and MedQuAD.files[0].extract
    assert_matches_remotes(MedQuAD, fx.build())


def test_end_to_end_text_rows_and_filtered_copyright_pairs(http_server, tmp_path):
    serve(http_server, fx.build())
    rows, bad = run_adapter(MedQuAD(), ("train",), server=http_server, cache_dir=tmp_path)
    assert [r["id"] for r in rows] == ["medquad/1_CancerGov_QA/0000001_1-1", "medquad/1_CancerGov_QA/0000001_1-2",
                                       "medquad/2_GARD_QA/0000004-1"]
    first = rows[0]
    assert first["question"] == fx.CANCER_QA[0][1]
    assert first["answer"].endswith('at risk & ask about "tests".')  # XML entities decoded
    assert first["task"] == "qa" and first["image"] is None and first["license"] == "CC-BY-4.0"
    meta = json.loads(first["meta"])
    assert meta["qtype"] == "information" and meta["focus"] == "Adult Acute Lymphoblastic Leukemia"
    assert meta["focus_cuis"] == ["C0751606"] and meta["site"] == "CancerGov"
    by_id = {b["id"]: b["reason"] for b in bad}
    assert by_id["medquad/10_MPlus_ADAM_QA/0000001-1"] == "filtered: answer removed upstream for MedlinePlus copyright"
    assert by_id["medquad/10_MPlus_ADAM_QA/0000001-2"].startswith("filtered:")
    assert by_id["medquad/2_GARD_QA/0000005-1"] == "empty answer"
    assert by_id["medquad/2_GARD_QA/0000006"].startswith("malformed XML")
    assert len(bad) == 4


def test_one_unit_per_collection_in_numeric_order_and_stable_ids(tmp_path):
    files = local_files(tmp_path, MedQuAD(), fx.build(), ("train",))
    units = MedQuAD().units("train", files)
    assert [u.args["folder"] for u in units] == ["1_CancerGov_QA", "2_GARD_QA", "10_MPlus_ADAM_QA"]
    a, _ = read_split(MedQuAD(), "train", files)
    b, _ = read_split(MedQuAD(), "train", files)
    assert [r.native_id for r in a] == [r.native_id for r in b]
    assert len({r.native_id for r in a}) == len(a) == 3


def test_real_cancergov_split_page_gives_distinct_stable_ids(http_server, tmp_path):
    """Real files: 0000013_2.xml and two of its split files repeat Document id and qids."""
    serve(http_server, fx.real())
    rows, bad = run_adapter(MedQuAD(), ("train",), server=http_server, cache_dir=tmp_path)
    ids = [r["id"] for r in rows]
    assert ids == ["medquad/1_CancerGov_QA/0000013_2-1", "medquad/1_CancerGov_QA/0000013_2-2",
                   "medquad/1_CancerGov_QA/0000013_2-3", "medquad/1_CancerGov_QA/0000013_2-4",
                   "medquad/1_CancerGov_QA/0000013_2_4/0000013_2-1", "medquad/1_CancerGov_QA/0000013_2_4/0000013_2-2",
                   "medquad/1_CancerGov_QA/0000013_2_6/0000013_2-1", "medquad/1_CancerGov_QA/0000013_2_6/0000013_2-2",
                   "medquad/2_GARD_QA/0000931-1"]
    by_id = {r["id"]: r for r in rows}
    page, split = (json.loads(by_id[f"medquad/1_CancerGov_QA/{i}"]["meta"])
                   for i in ("0000013_2-1", "0000013_2_6/0000013_2-1"))
    assert page["document"] == split["document"] == "0000013_2"
    assert (page["focus"], split["focus"]) == ("Chronic Myeloproliferative Neoplasms", "Chronic Myelogenous Leukemia")
    assert by_id["medquad/1_CancerGov_QA/0000013_2_6/0000013_2-1"]["question"] == (
        "What is (are) Chronic Myelogenous Leukemia ?")
    assert by_id["medquad/1_CancerGov_QA/0000013_2_6/0000013_2-2"]["answer"] == (
        "See the PDQ summary about Chronic Myelogenous Leukemia Treatment for information.")
    assert {b["id"]: b["reason"] for b in bad} == {
        "medquad/2_GARD_QA/0002079-1": "empty answer",
        "medquad/10_MPlus_ADAM_QA/0003664-1": "filtered: answer removed upstream for MedlinePlus copyright"}


def test_real_bytes_are_declared_with_their_provenance():
    (declared,) = MedQuAD.real_bytes
    provenance = (fx.REAL / "PROVENANCE").read_text()
    assert declared.repo == "abachaa/MedQuAD" and declared.commit == COMMIT
    assert f"{declared.repo}@{COMMIT}" in provenance
    assert sorted(declared.paths) == sorted(p.relative_to(fx.REAL).as_posix() for p in fx.REAL.rglob("*.xml"))
    assert all(p in provenance for p in declared.paths)


def test_real_files_are_the_upstream_blobs_unedited():
    """Each fixture file hashes to the git blob id its PROVENANCE names (`git hash-object`)."""
    blobs = dict(re.findall(r"^\s+(\S+\.xml)\s+blob ([0-9a-f]{40})", (fx.REAL / "PROVENANCE").read_text(), re.M))
    assert len(blobs) == 6
    for rel, blob in blobs.items():
        data = (fx.REAL / rel).read_bytes()
        assert hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest() == blob, rel
