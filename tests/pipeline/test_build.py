"""End to end: the embedded demo recipe through `medmix build`, offline.

Covers the foundation's promises: loads with `datasets` and polars, determinism across builds and
worker counts, atomic + resumable after SIGKILL, bad inputs quarantined, and no DICOM header value
anywhere in the output.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pydicom
import pytest

from medmix.core.modality import CODES
from medmix.pipeline import BuildOptions, build
from medmix.recipe import load_recipe

DEMO_DICOM = Path(__file__).resolve().parents[2] / "medmix" / "data" / "demo" / "dicom"


def _build(tmp: Path, name: str, workers: int = 1, cache: Path | None = None) -> tuple[Path, dict]:
    out = tmp / name
    manifest = build(load_recipe("demo"), BuildOptions(out=out, cache=cache or tmp / f"cache-{name}", workers=workers),
                     log=lambda m: None)
    return out, manifest


def _stable(manifest: dict) -> dict:
    m = dict(manifest)
    m.pop("build_info")
    return m


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> tuple[Path, dict]:
    return _build(tmp_path_factory.mktemp("demo"), "a")


def test_demo_loads_with_datasets_and_polars(demo):
    out, manifest = demo
    import datasets
    import polars as pl

    files = [str(out / s["path"]) for s in manifest["shards"]]
    ds = datasets.load_dataset("parquet", data_files=files, split="train")
    assert len(ds) == manifest["total_rows"] > 50
    image_rows = [r for r in ds if r["image"] is not None]
    assert image_rows, "the demo has image rows"
    from PIL import Image
    assert all(isinstance(r["image"], Image.Image) for r in image_rows[:20])
    assert pl.scan_parquet(files).select(pl.len()).collect().item() == manifest["total_rows"]
    assert sum(s["rows"] for s in manifest["shards"]) == manifest["total_rows"]
    ids = ds["id"]
    assert len(set(ids)) == len(ids)
    assert set(ds["source"]) == {"vqa_rad", "slake", "pubmedqa", "dicom_demo"}
    counts = {k: v["counts"]["selected"] for k, v in manifest["sources"].items() if "counts" in v}
    for name, n in counts.items():
        assert ds["source"].count(name) == n
    assert counts["pubmedqa"] == 30  # `samples: 30` is exact


def test_bad_inputs_are_quarantined_and_counted(demo):
    out, manifest = demo
    q = pq.read_table(out / "quarantine.parquet").to_pylist()
    reasons = {(r["source"], r["file"]): r["reason"] for r in q}
    assert any("truncat" in reasons.get(("dicom_demo", "mr/MR_truncated.dcm"), "").lower() for _ in [0]), reasons
    assert "missing" in reasons[("dicom_demo", "ct/missing.dcm")]
    dicom = manifest["sources"]["dicom_demo"]["counts"]
    assert dicom["quarantined"] == 2 and dicom["read"] == 9
    # the good DICOM files all made it (one exact duplicate pair: MR_small and its RLE copy)
    assert dicom["read"] - dicom["quarantined"] - dicom["duplicates"] == dicom["selected"] == 6
    assert manifest["quarantine"]["rows"] == len(q)


def test_no_dicom_header_value_leaks(demo):
    out, _ = demo
    secrets: set[str] = set()
    for path in DEMO_DICOM.rglob("*.dcm"):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        except Exception:
            continue
        for kw in ("PatientName", "PatientID", "PatientBirthDate", "StudyDate", "SeriesDate", "AcquisitionDate",
                   "ContentDate", "InstitutionName", "ReferringPhysicianName", "StudyInstanceUID",
                   "SeriesInstanceUID", "SOPInstanceUID", "AccessionNumber", "StationName", "StudyID"):
            value = str(ds.get(kw, "") or "").strip()
            if len(value) >= 4:
                secrets.add(value)
    assert len(secrets) > 5
    blobs = [p.read_bytes() for p in out.rglob("*") if p.is_file() and p.suffix != ".parquet"]
    for p in out.rglob("*.parquet"):
        for row in pq.read_table(p).to_pylist():
            for v in row.values():
                if isinstance(v, dict) and v.get("bytes"):
                    blobs.append(v["bytes"])
                elif v is not None:
                    blobs.append(json.dumps(v, default=str).encode())
    haystack = b"\n".join(blobs)
    leaked = [s for s in secrets if s.encode() in haystack]
    assert not leaked


def test_same_recipe_same_bytes_whatever_the_workers(tmp_path, demo):
    _, reference = demo
    _, again = _build(tmp_path, "b", workers=2)
    assert _stable(again) == _stable(reference)
    assert [s["sha256"] for s in again["shards"]] == [s["sha256"] for s in reference["shards"]]


def test_decontamination_and_dedup_reported(demo):
    out, manifest = demo
    removed = pq.read_table(out / "removed.parquet").to_pylist()
    assert manifest["removed"]["rows"] == len(removed)
    assert any(r["reason"] == "duplicate" for r in removed)


def _run_cli(out: Path, cache: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "medmix.cli", "build", "--out", str(out), "--cache", str(cache)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)


def test_sigkill_at_any_point_then_resume_gives_the_same_output(tmp_path, demo):
    ref_out, reference = demo
    ref_shards = {s["path"]: s["sha256"] for s in reference["shards"]}
    out, cache = tmp_path / "k", tmp_path / "cache"
    from medmix.core.writer import sha256_file

    for delay in (0.5, 1.5, 2.5, 3.5, 5.0):
        proc = _run_cli(out, cache)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        # whatever is visible under a final name is complete and final
        for shard in (out / "data").glob("*.parquet") if (out / "data").exists() else []:
            assert sha256_file(shard) == ref_shards[f"data/{shard.name}"]
        if (out / "manifest.json").exists():
            assert _stable(json.loads((out / "manifest.json").read_text())) == _stable(reference)
    proc = _run_cli(out, cache)
    assert proc.wait(timeout=300) == 0
    resumed = json.loads((out / "manifest.json").read_text())
    assert _stable(resumed) == _stable(reference)
    assert not list(out.rglob(".*.tmp-*"))


def _variant(tmp: Path, demo_cache: Path, name: str, edit) -> tuple[Path, dict]:
    """The demo recipe with one change, reusing the demo build's normalized cache (mix stage only)."""
    from medmix.recipe import find_recipe, parse_recipe

    path = find_recipe("demo")
    recipe = parse_recipe(edit(path.read_text()), str(path))
    out = tmp / name
    return out, build(recipe, BuildOptions(out=out, cache=demo_cache), log=lambda m: None)


def test_planted_eval_image_and_question_are_removed_and_reported(demo):
    _, manifest = demo
    decon = {k: v.get("decontamination", {}) for k, v in manifest["sources"].items()}
    assert decon["vqa_rad"].get("vqa_rad:test (image)", 0) >= 1      # the VQA-RAD train/test leak
    assert decon["slake"].get("vqa_rad:test (image)", 0) >= 1        # a near-copy of a VQA-RAD test image
    assert decon["pubmedqa"] == {"pubmedqa:pqa_labeled (text)": 1}   # the copied PQA-L question + abstract
    assert manifest["sources"]["pubmedqa"]["counts"]["contaminated"] == 1


def test_weights_sum_exactly_and_seed_changes_selection(tmp_path, demo):
    out, ref = demo
    demo_cache = next(p for p in out.parent.iterdir() if p.name == "cache-a")

    def weighted(text: str) -> str:
        text = text.replace("seed: 0", "seed: 0\ntarget_samples: 101")
        for src, w in (("vqa_rad", 0.5), ("slake", 0.3)):
            text = text.replace(f"  {src}:\n    splits", f"  {src}:\n    weight: {w}\n    splits", 1)
        text = text.replace("    splits: [train]\n    all: true\n", "    splits: [train]\n")
        return text.replace("    splits: [train, validation]\n    all: true\n", "    splits: [train, validation]\n")

    _, m = _variant(tmp_path, demo_cache, "w", weighted)
    sel = {k: v["counts"]["selected"] for k, v in m["sources"].items() if "counts" in v}
    assert sum(sel.values()) == m["total_rows"] == 101
    assert sel["pubmedqa"] == 30 and sel["dicom_demo"] == 6
    assert sel["vqa_rad"] == 41 and sel["slake"] == 24  # 65 rows split 5:3 by largest remainder
    assert m["sources"]["vqa_rad"]["counts"]["epochs"] > 1  # more than available: whole epochs + remainder

    _, other = _variant(tmp_path, demo_cache, "s", lambda t: t.replace("seed: 0", "seed: 7"))
    assert [s["sha256"] for s in other["shards"]] != [s["sha256"] for s in ref["shards"]]
    assert other["total_rows"] == ref["total_rows"]


def test_images_unique_keeps_the_priority_source(tmp_path, demo):
    out, ref = demo
    demo_cache = next(p for p in out.parent.iterdir() if p.name == "cache-a")
    unique = lambda t: t.replace("images: shared", "images: unique\n  priority: [slake]")  # noqa: E731
    _, m = _variant(tmp_path, demo_cache, "u", unique)
    removed = pq.read_table(tmp_path / "u" / "removed.parquet").to_pylist()
    same_image = [r for r in removed if r["reason"].startswith("same image")]
    assert same_image, "rows sharing an image with another task are dropped under images: unique"
    # where VQA-RAD and SLAKE share a picture, the prioritised SLAKE row survives
    assert any(r["id"].startswith("vqa_rad/") and r["other"].startswith("slake/") for r in same_image)
    assert not any(r["id"].startswith("slake/") and r["other"].startswith("vqa_rad/") for r in same_image)
    assert m["total_rows"] < ref["total_rows"]


def test_exact_image_dedup_without_perceptual_hashing(tmp_path, demo):
    """image_distance: null falls back to identical decoded pixels (image_hash)."""
    out, _ = demo
    demo_cache = next(p for p in out.parent.iterdir() if p.name == "cache-a")
    edit = lambda t: t.replace("  image_distance: 8\n", "  image_distance: null\n", 1)  # noqa: E731
    _, m = _variant(tmp_path, demo_cache, "x", edit)
    removed = pq.read_table(tmp_path / "x" / "removed.parquet").to_pylist()
    rle = next(r for r in removed if r["id"] == "dicom_demo/mr/MR_small_RLE.dcm")
    assert (rle["reason"], rle["other"], rle["kind"]) == ("duplicate", "dicom_demo/mr/MR_small.dcm", "duplicate")
    assert rle["exact_image"] and rle["exact_text"] and rle["hamming"] == 0
    assert m["recipe"]["dedup"]["image_distance"] is None


def test_removed_parquet_shows_every_removal_beside_what_it_matched(tmp_path, demo):
    """Format 2: each dedup/decontamination row carries the measure and both sides' text and thumbnail."""
    import io
    import sys

    from PIL import Image

    from medmix.core import layout

    sys.path.insert(0, str(Path(__file__).parents[1]))
    from view_fixtures import audit_recipe

    out, _ = demo
    cache = next(p for p in out.parent.iterdir() if p.name == "cache-a")
    m = build(load_recipe(str(audit_recipe(tmp_path))), BuildOptions(out=tmp_path / "audit", cache=cache),
              log=lambda m: None)
    assert m["format_version"] == layout.FORMAT_VERSION == 2
    assert layout.removed_format(tmp_path / "audit") == 2
    rows = {r["id"]: r for r in pq.read_table(tmp_path / "audit" / layout.REMOVED).to_pylist()}
    near, text = rows["audit/near.png"], rows["audit/copy.png"]
    assert near["kind"] == "duplicate" and near["other"] == "audit/base.png" and 0 < near["hamming"] <= 8
    assert not near["exact_image"] and near["exact_text"]
    assert text["exact_image"] and not text["exact_text"] and 0.7 < text["jaccard"] < 1
    assert "hemangioma" in text["other_answer"] and "haemangioma" in text["answer"]
    ngram = next(r for r in rows.values() if r["kind"] == "eval_text")
    assert ngram["other_source"] == "pubmedqa:pqa_labeled" and len(ngram["ngram"].split()) == 13
    from medmix.mix.textsim import normalize_text
    assert ngram["ngram"] in normalize_text(ngram["question"])
    assert ngram["ngram"] in normalize_text(ngram["other_question"])
    image = next(r for r in rows.values() if r["kind"] == "eval_image")
    assert image["other_source"] == "vqa_rad:test" and image["hamming"] is not None and image["other_question"]
    for r in (near, image):
        for blob in (r["thumb"], r["other_thumb"]):
            with Image.open(io.BytesIO(blob)) as im:
                assert im.format == "JPEG" and max(im.size) <= layout.REMOVED_THUMB_PX


def test_demo_mixture_speaks_one_vocabulary(demo):
    out, manifest = demo
    shards = [out / s["path"] for s in manifest["shards"]]
    rows = pq.read_table(shards, columns=["source", "modality", "meta"]).to_pylist()
    assert {r["modality"] for r in rows} - {None} <= set(CODES)
    slake = [r for r in rows if r["source"] == "slake"]
    upstream = {(r["modality"], json.loads(r["meta"]).get("modality_upstream")) for r in slake}
    # SLAKE writes MRI and X-Ray; the rows say MR and DX, and keep what SLAKE wrote
    assert ("MR", "MRI") in upstream and ("DX", "X-Ray") in upstream and ("CT", None) in upstream
    # the DICOM folder's MR files meet SLAKE's MRI on one value
    assert {r["modality"] for r in rows if r["source"] == "dicom_demo"} >= {"MR", "CT"}


def test_the_summary_never_cuts_a_source_name(demo):
    """At 80 columns the table used to print "pubmed…" and "dicom_…"; names stay whole, numbers give way."""
    from rich.console import Console

    from medmix.cli.build_summary import print_build_summary

    out, manifest = demo
    console = Console(width=80, record=True, color_system=None)
    print_build_summary(manifest, out, console)
    lines = console.export_text().splitlines()
    for name, s in manifest["sources"].items():
        if "counts" in s:
            row = next(line for line in lines if line.split() and line.split()[0] == name)
            assert "…" not in row and str(s["counts"]["selected"]) in row.split()
    assert manifest["unpinned_upstreams"] == []  # the embedded demo folder is pinned by its lock
