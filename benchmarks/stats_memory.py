"""Peak memory and time of `medmix stats` on a synthetic 1M-row mixture (issue 6 target: < 1 GiB).

The mixture is text-heavy like the real OpenMedQ mix (QA/MCQA rows with long contexts) with ~10%
rows carrying tiny real PNG images, written with medmix's own schema and Parquet writer, and a
manifest whose counts agree with the shards (so stats reports no problems). Stats runs in a child
process, exactly as `medmix stats PATH [--plot DIR]` would, and the parent reads the child's peak
RSS from getrusage(RUSAGE_CHILDREN).

    python benchmarks/stats_memory.py --rows 1000000 [--keep DIR] [--plot]
"""

from __future__ import annotations

import argparse
import io
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from medmix.core.schema import dumps_meta, to_table
from medmix.core.writer import ParquetAtomicWriter, atomic_write_json, write_parquet_atomic

# name → (domain, task, license(s), image share, rows share)
SOURCES = {
    "pubmedqa": ("clinical-text", "qa", ("MIT",), 0.0, 0.30),
    "medmcqa": ("clinical-text", "mcqa", ("Apache-2.0",), 0.0, 0.30),
    "medquad": ("clinical-text", "qa", ("CC-BY-4.0",), 0.0, 0.15),
    "pmc_vqa": ("general-biomedical", "vqa", ("CC-BY-SA-4.0",), 1.0, 0.10),
    "rocov2": ("radiology", "caption", ("CC-BY-4.0", "CC-BY-NC-4.0"), 1.0, 0.05),
    "pubmedvision_alignment_vqa": ("general-biomedical", "caption", ("Apache-2.0",), 0.0, 0.10),
}
WORDS = ("patient", "tumor", "cell", "lesion", "mri", "ct", "biopsy", "histology", "shows", "the", "of", "with", "a",
         "normal", "abnormal", "cardiac", "renal", "liver", "findings", "consistent", "carcinoma", "benign", "scan")


def tiny_pngs(n: int, rng: np.random.Generator) -> list[tuple[bytes, int, int]]:
    out = []
    for _ in range(n):
        w, h = int(rng.integers(16, 64)), int(rng.integers(16, 64))
        img = Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        out.append((buf.getvalue(), w, h))
    return out


def text(rng: np.random.Generator, mean_words: float) -> str:
    n = max(1, int(rng.exponential(mean_words)))
    return " ".join(WORDS[i] for i in rng.integers(0, len(WORDS), n))


def make_mixture(out: Path, rows: int, shard_rows: int = 50_000, seed: int = 0) -> dict:
    """Write `rows` synthetic rows as shards + quarantine + removed + a consistent manifest under `out`."""
    rng = np.random.default_rng(seed)
    images = tiny_pngs(64, rng)
    names = list(SOURCES)
    probs = np.array([SOURCES[n][4] for n in names])
    which = rng.choice(len(names), size=rows, p=probs / probs.sum())
    n_shards = max(1, -(-rows // shard_rows))
    shards, selected = [], {n: 0 for n in names}
    for s in range(n_shards):
        path = out / f"data/train-{s:05d}-of-{n_shards:05d}.parquet"
        with ParquetAtomicWriter(path) as w:
            for start in range(s * shard_rows, min(rows, (s + 1) * shard_rows), 10_000):
                batch = []
                for i in range(start, min(rows, (s + 1) * shard_rows, start + 10_000)):
                    name = names[which[i]]
                    domain, task, lics, img_share, _ = SOURCES[name]
                    selected[name] += 1
                    row = {"id": f"{name}:train:{i}", "source": name, "split": "train", "domain": domain,
                           "modality": None, "task": task, "license": lics[i % len(lics)], "meta": dumps_meta({}),
                           "question": text(rng, 12) if task != "caption" else None,
                           "answer": text(rng, 6 if task != "caption" else 25),
                           "context": text(rng, 200) if name == "pubmedqa" else None,
                           "options": [text(rng, 2) for _ in range(4)] if task == "mcqa" else None,
                           "image": None, "image_hash": None, "image_phash": None, "width": None, "height": None}
                    if img_share and rng.random() < img_share:
                        data, w_, h_ = images[i % len(images)]
                        row.update(image={"bytes": data, "path": None}, image_hash=f"{i % len(images):064x}",
                                   image_phash=i % len(images), width=w_, height=h_)
                    batch.append(row)
                w.write_table(to_table(batch))
            digest, n = w.commit()
        shards.append({"path": path.relative_to(out).as_posix(), "rows": n, "sha256": digest})
    import pyarrow as pa
    q_schema = pa.schema([(c, pa.string()) for c in ("source", "split", "id", "file", "reason")])
    q_digest, q_rows = write_parquet_atomic(out / "quarantine.parquet", q_schema.empty_table())
    r_schema = pa.schema([(c, pa.string()) for c in ("id", "reason", "other")])
    r_digest, r_rows = write_parquet_atomic(out / "removed.parquet", r_schema.empty_table())
    sources = {}
    for name in names:
        domain, task, lics, _, _ = SOURCES[name]
        n = selected[name]
        sources[name] = {"adapter": name.split("_alignment")[0], "license": lics[0], "license_terms": "",
                         "splits": ["train"],
                         "evaluation_only": False, "upstream": [], "pinned": True,
                         "counts": {"read": n, "quarantined": 0, "quarantine_reasons": {}, "normalized": n,
                                    "license_filtered": 0, "duplicates": 0, "contaminated": 0, "available": n,
                                    "selected": n, "epochs": 1.0},
                         "decontamination": {}}
    manifest = {"medmix_version": "bench", "schema_version": "1.0",
                "recipe": {"name": f"synthetic-{rows}", "shard_rows": shard_rows}, "recipe_sha256": "0" * 64,
                "sources": sources, "accepted_licenses": ["CC-BY-NC-4.0"], "unpinned_upstreams": [], "shards": shards,
                "total_rows": sum(s["rows"] for s in shards),
                "quarantine": {"path": "quarantine.parquet", "rows": q_rows, "sha256": q_digest},
                "removed": {"path": "removed.parquet", "rows": r_rows, "sha256": r_digest}, "build_info": {}}
    atomic_write_json(out / "manifest.json", manifest)
    return manifest


CHILD = """
import sys, typer
from medmix.cli.stats_command import stats_command
app = typer.Typer(add_completion=False)
app.command("stats")(stats_command)
app.command("noop")(lambda: None)
app(sys.argv[1:], standalone_mode=True)
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--shard-rows", type=int, default=50_000)
    ap.add_argument("--keep", type=Path, help="write the mixture here and keep it (default: a temp folder)")
    ap.add_argument("--plot", action="store_true", help="also draw the PNGs (stats --plot)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="medmix-stats-bench-"))
    out = args.keep or tmp / "mixture"
    try:
        if not (out / "manifest.json").exists():
            t0 = time.perf_counter()
            make_mixture(out, args.rows, args.shard_rows)
            print(f"generated {args.rows:,} rows in {time.perf_counter() - t0:.1f}s → {out}", file=sys.stderr)
        size = sum(p.stat().st_size for p in out.rglob("*.parquet"))
        cmd = [sys.executable, "-c", CHILD, "stats", str(out), "--json"]
        if args.plot:
            cmd += ["--plot", str(tmp / "plots")]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        seconds = time.perf_counter() - t0
        if proc.returncode != 0:
            sys.exit(f"stats failed ({proc.returncode}):\n{proc.stderr}")
        stats = json.loads(proc.stdout)
        assert stats["rows"]["total"] == args.rows and not stats["problems"], stats["problems"]
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # Linux reports KiB
        print(json.dumps({"rows": args.rows, "parquet_bytes": size, "seconds": round(seconds, 2),
                          "peak_rss_bytes": peak, "peak_rss_mib": round(peak / 2**20, 1),
                          "rows_per_second": round(args.rows / seconds), "plots": args.plot,
                          "target_ok": peak < 2**30}, indent=2))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
