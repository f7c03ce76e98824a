"""Latency and memory of `medmix view` on a synthetic 1M-row mixture (30% image rows), against the issue's limits.

What is measured, with a real HTTP client (httpx) against the real server (uvicorn in a child process):

    overview, cold      first GET /  after the server is up           target < 2 s
    browse, warm        GET /browse?image=yes (48 cards) + 48 thumbnails, seen before   target < 300 ms
    browse, filtered    GET /browse?source=..&q=.. + its thumbnails    target < 1 s

Thumbnails are fetched over 6 connections at once, as Chromium does over HTTP/1.1. The overview is
served from the manifest at once; its per-row figures (and the filter codes) come from a background
pass whose duration is printed too. Filtered pages are measured after that pass.
    server RSS          peak resident memory of the server process    target < 1 GiB

The generator writes columns with pyarrow directly (not row dicts), so 1M rows take about a minute;
images are small random PNGs (16-96 px) drawn from a pool, which keeps generation fast while every
thumbnail request still decodes and re-encodes a real image.

    python benchmarks/view_latency.py [--rows 1000000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
from PIL import Image

from medmix.core.layout import QUARANTINE, REMOVED, REMOVED_SCHEMA, shard_path, write_manifest
from medmix.core.schema import ARROW_SCHEMA
from medmix.core.writer import ParquetAtomicWriter, write_parquet_atomic

# name → (domain, task, license, modality, image share, rows share): 30% of all rows carry an image
SOURCES = {
    "pubmedqa": ("clinical-text", "qa", "MIT", None, 0.0, 0.25),
    "medmcqa": ("clinical-text", "mcqa", "Apache-2.0", None, 0.0, 0.25),
    "medquad": ("clinical-text", "qa", "CC-BY-4.0", None, 0.0, 0.20),
    "pmc_vqa": ("general-biomedical", "vqa", "CC-BY-SA-4.0", None, 1.0, 0.15),
    "rocov2": ("radiology", "caption", "CC-BY-4.0", "CT", 1.0, 0.10),
    "nct_crc_he": ("pathology", "classification", "CC-BY-4.0", "H&E", 1.0, 0.05),
}
WORDS = np.array(["patient", "tumor", "cell", "lesion", "mri", "ct", "biopsy", "histology", "shows", "the", "of",
                  "with", "a", "normal", "abnormal", "cardiac", "renal", "liver", "findings", "consistent",
                  "carcinoma", "benign", "scan", "nodule", "effusion", "fracture"])


def _pngs(n: int, rng: np.random.Generator) -> list[tuple[bytes, int, int]]:
    out = []
    for _ in range(n):
        w, h = int(rng.integers(16, 96)), int(rng.integers(16, 96))
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(buf, format="PNG")
        out.append((buf.getvalue(), w, h))
    return out


def _texts(rng: np.random.Generator, n: int, mean_words: float) -> list[str]:
    lens = np.maximum(1, rng.exponential(mean_words, n).astype(int))
    words = WORDS[rng.integers(0, len(WORDS), int(lens.sum()))]
    cuts = np.cumsum(lens)[:-1]
    return [" ".join(part) for part in np.split(words, cuts)]


def make_mixture(out: Path, rows: int, shard_rows: int = 50_000, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    pool = _pngs(256, rng)
    names = list(SOURCES)
    probs = np.array([SOURCES[n][5] for n in names])
    which = rng.choice(len(names), size=rows, p=probs / probs.sum())
    n_shards = max(1, -(-rows // shard_rows))
    shards, counts = [], dict.fromkeys(names, 0)
    for s in range(n_shards):
        lo, hi = s * shard_rows, min(rows, (s + 1) * shard_rows)
        rel = shard_path(s, n_shards)
        with ParquetAtomicWriter(out / rel) as w:
            for start in range(lo, hi, 10_000):
                idx = np.arange(start, min(hi, start + 10_000))
                src = [names[k] for k in which[idx]]
                for name in src:
                    counts[name] += 1
                spec = [SOURCES[name] for name in src]
                has = np.array([sp[4] > 0 for sp in spec])
                img = [pool[i % len(pool)] if h else None for i, h in zip(idx, has)]
                n = len(idx)
                q, a, c, o = _texts(rng, n, 12), _texts(rng, n, 6), _texts(rng, n, 60), _texts(rng, 4 * n, 2)
                cols = {
                    "id": [f"{name}:train:{i}" for name, i in zip(src, idx)], "source": src, "split": ["train"] * n,
                    "domain": [sp[0] for sp in spec], "modality": [sp[3] for sp in spec],
                    "task": [sp[1] for sp in spec],
                    "image": [{"bytes": im[0], "path": None} if im else None for im in img],
                    "image_hash": [f"{i % len(pool):032x}" if im else None for i, im in zip(idx, img)],
                    "image_phash": [int(i % len(pool)) if im else None for i, im in zip(idx, img)],
                    "width": [im[1] if im else None for im in img], "height": [im[2] if im else None for im in img],
                    "question": [None if sp[1] == "caption" else t for sp, t in zip(spec, q)], "answer": a,
                    "options": [o[4 * k:4 * k + 4] if sp[1] == "mcqa" else None for k, sp in enumerate(spec)],
                    "context": [t if name == "pubmedqa" else None for name, t in zip(src, c)],
                    "license": [sp[2] for sp in spec], "meta": ["{}"] * n,
                }
                w.write_table(pa.Table.from_pydict(cols, schema=ARROW_SCHEMA))
            digest, n_rows = w.commit()
        shards.append({"path": rel, "rows": n_rows, "sha256": digest})
    q_digest, q_rows = write_parquet_atomic(out / QUARANTINE, pa.schema([(c, pa.string()) for c in (
        "source", "split", "id", "file", "reason")]).empty_table())
    r_digest, r_rows = write_parquet_atomic(out / REMOVED, REMOVED_SCHEMA.empty_table())
    sources = {name: {"adapter": name, "license": SOURCES[name][2], "license_terms": "", "splits": ["train"],
                      "evaluation_only": False, "upstream": [], "pinned": True,
                      "counts": {"read": counts[name], "quarantined": 0, "quarantine_reasons": {},
                                 "normalized": counts[name], "license_filtered": 0, "duplicates": 0,
                                 "contaminated": 0, "available": counts[name], "selected": counts[name],
                                 "epochs": 1.0},
                      "decontamination": {}} for name in names}
    manifest = {"medmix_version": "bench", "schema_version": "1.0",
                "recipe": {"name": f"synthetic-{rows}", "shard_rows": shard_rows}, "recipe_sha256": "0" * 64,
                "sources": sources, "accepted_licenses": [], "unpinned_upstreams": [], "shards": shards,
                "total_rows": rows, "quarantine": {"path": QUARANTINE, "rows": q_rows, "sha256": q_digest},
                "removed": {"path": REMOVED, "rows": r_rows, "sha256": r_digest}, "build_info": {}}
    return write_manifest(out, manifest)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rss_bytes(pid: int) -> tuple[int, int]:
    """(current, peak) resident memory of a process, from /proc (VmRSS, VmHWM)."""
    text = Path(f"/proc/{pid}/status").read_text()
    def get(key: str) -> int:
        return int(re.search(rf"^{key}:\s+(\d+) kB", text, re.MULTILINE).group(1)) * 1024

    return get("VmRSS"), get("VmHWM")


def measure(mixture: Path) -> dict:
    import httpx

    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "medmix.cli", "view", str(mixture), "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, timeout=60) as client:
            t_start = time.perf_counter()
            while True:  # the server answers /healthz as soon as it listens; nothing is scanned before that
                try:
                    if client.get("/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    if proc.poll() is not None:
                        sys.exit(f"server exited: {proc.stderr.read()}")
                    time.sleep(0.05)
            listening = time.perf_counter() - t_start
            t0 = time.perf_counter()
            r = client.get("/")
            overview = time.perf_counter() - t0
            assert r.status_code == 200, r.text[:500]

            t0 = time.perf_counter()
            while not client.get("/healthz").json()["scanned"]:  # the background pass behind per-row figures
                time.sleep(0.05)
            figures = overview + time.perf_counter() - t0

            def browse(url: str) -> tuple[float, int]:
                """The page, then its thumbnails over 6 connections at once, as a browser fetches them."""
                t0 = time.perf_counter()
                page = client.get(url)
                assert page.status_code == 200, page.text[:500]
                thumbs = re.findall(r'src="(/thumb/[^"]+)"', page.text)
                assert all(s == 200 for s in pool.map(lambda t: client.get(t).status_code, thumbs))
                return time.perf_counter() - t0, len(thumbs)

            with ThreadPoolExecutor(6) as pool:
                url = "/browse?image=yes&order=random&seed=7"
                browse(url)  # warm-up: rows and thumbnails of this page
                warm = [browse(url) for _ in range(5)]
                warm_s, thumbs = sorted(w[0] for w in warm)[2], warm[0][1]
                cold_page = browse("/browse?image=yes&page=3")
                filtered = browse("/browse?source=rocov2&q=carcinoma%20benign&page=2")
                filtered2 = browse("/browse?task=vqa&license=CC-BY-SA-4.0&q=nodule")
            rss, peak = _rss_bytes(proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return {"listening_s": round(listening, 3), "overview_cold_s": round(overview, 3),
            "figures_ready_s": round(figures, 3),
            "browse_warm_s": round(warm_s, 3), "browse_thumbnails": thumbs,
            "browse_cold_s": round(cold_page[0], 3), "browse_filtered_s": round(filtered[0], 3),
            "browse_filtered_thumbnails": filtered[1], "browse_filtered2_s": round(filtered2[0], 3),
            "open_from_command_s": round(listening + overview, 3),
            "rss_mib": round(rss / 2**20, 1), "peak_rss_mib": round(peak / 2**20, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--keep", type=Path, help="write the mixture here and keep it (default: a temp folder)")
    ap.add_argument("--generate-only", action="store_true")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="medmix-view-bench-"))
    out = args.keep or tmp / "mixture"
    try:
        if not (out / "manifest.json").exists():
            t0 = time.perf_counter()
            make_mixture(out, args.rows)
            print(f"generated {args.rows:,} rows in {time.perf_counter() - t0:.1f}s → {out}", file=sys.stderr)
        if args.generate_only:
            return
        m = measure(out)
        load = os.getloadavg()
        rows = [("overview, cold (s)", m["overview_cold_s"], 2.0),
                (f"browse warm, page + {m['browse_thumbnails']} thumbnails (s)", m["browse_warm_s"], 0.3),
                (f"browse filtered, page + {m['browse_filtered_thumbnails']} thumbnails (s)",
                 m["browse_filtered_s"], 1.0),
                ("browse filtered, 3 filters + search (s)", m["browse_filtered2_s"], 1.0),
                ("server peak RSS (MiB)", m["peak_rss_mib"], 1024.0)]
        print(f"{'measure':<52} {'value':>9} {'target':>9} {'ratio':>7}")
        for name, value, target in rows:
            verdict = "ok" if value < target else "MISS"
            print(f"{name:<52} {value:>9} {'< ' + str(target):>9} {value / target:>7.2f} {verdict}")
        print(f"(also: from `medmix view` to the overview served {m['open_from_command_s']} s, of which the server's "
              f"start (imports, shard footers) {m['listening_s']} s; overview's per-row figures complete after "
              f"{m['figures_ready_s']} s; a never-seen page of {m['browse_thumbnails']} thumbnails "
              f"{m['browse_cold_s']} s; "
              f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} cores)")
        print(json.dumps({**m, "rows": args.rows, "loadavg": [round(x, 2) for x in load]}))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
