"""Export a built mixture to every format and read each back with its real reader, row by row.

The export tests (tests/export) do this on the 94-row demo and a 3,000-row generated mixture; this
script does it on a mixture of any size, e.g. the rehearsal's (`benchmarks/rehearsal.py --dir`),
so sharding, image sharing and licenses are checked where the row counts are real:

    python benchmarks/export_readback.py /tmp/reh03/out --work /tmp/readback --workers 2 \
        --mds-python /tmp/medmix-test-cache/mds-venv-0.13.0/bin/python

Readers: `webdataset.WebDataset` for tar shards, `datasets.load_dataset("json")` for LLaVA and
ShareGPT, mosaicml-streaming's `StreamingDataset` for MDS (run by `--mds-python`, a venv that has
it: see tests/export/test_export_mds.py; without it MDS is skipped and the summary says so).

Per row, in the mixture's order, every reader must give back: the id, the source and license
(the provenance a reuser needs), and the image as the stored bytes (sha256 equal; for the JSON
formats, the file named by its sha256 holds those bytes). Rows are streamed from the mixture's
shards, so memory is one batch, not the mixture. Prints one JSON summary; exits 1 on a mismatch.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from medmix.core.layout import iter_batches, mixture_files
from medmix.export import export

ROOT = Path(__file__).resolve().parents[1]
FORMATS = ("webdataset", "llava", "sharegpt", "mds")


def mixture_rows(mixture: Path) -> Iterator[dict]:
    """(id, source, license, image sha256 or None) of every train row, in the mixture's order."""
    files = [path for path, _ in mixture_files(mixture)]
    for batch in iter_batches(files, ["id", "source", "license", "image"], batch_rows=2048):
        for r in batch.to_pylist():
            image = r["image"]["bytes"] if r["image"] else None
            yield {"id": r["id"], "source": r["source"], "license": r["license"],
                   "image_sha256": hashlib.sha256(image).hexdigest() if image else None}


def read_webdataset(out: Path, index: dict) -> Iterator[dict]:
    import webdataset as wds

    urls = [str(out / s["path"]) for s in index["shards"]]
    for sample in wds.WebDataset(urls, shardshuffle=False):
        rec = json.loads(sample["json"])
        ext = rec["image"].rsplit(".", 1)[-1] if rec.get("image") else None
        data = sample.get(ext) if ext else None
        yield {"id": rec["id"], "source": rec["source"], "license": rec["license"],
               "image_sha256": hashlib.sha256(data).hexdigest() if data else None}


def read_conversations(out: Path, index: dict, fmt: str, cache: Path) -> Iterator[dict]:
    import datasets

    files = [str(out / s["path"]) for s in index["shards"]]
    ds = datasets.load_dataset("json", data_files=files, split="train", cache_dir=str(cache))
    for rec in ds:
        paths = ([rec["image"]] if rec.get("image") else []) if fmt == "llava" else (rec.get("images") or [])
        sha = None
        if paths:
            data = (out / paths[0]).read_bytes()
            sha = hashlib.sha256(data).hexdigest()
            if Path(paths[0]).stem != sha:
                sha = f"file {paths[0]} is not named by its sha256"
        yield {"id": rec["id"], "source": rec["source"], "license": rec["license"], "image_sha256": sha}


def read_mds(out: Path, python: str) -> Iterator[dict]:
    proc = subprocess.run([python, str(ROOT / "tests" / "export" / "read_mds.py"), str(out)],
                          capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"read_mds.py failed:\n{proc.stderr[-3000:]}")
    for s in json.loads(proc.stdout)["samples"]:
        rec = json.loads(s["record"]) if isinstance(s["record"], str) else s["record"]
        yield {"id": s["id"], "source": rec["source"], "license": rec["license"], "image_sha256": s["image_sha256"]}


def compare(expected: Iterator[dict], got: Iterator[dict], limit: int = 5) -> dict:
    """Row by row; a row only one side has is counted too (plain `zip` would swallow one of them)."""
    rows = images = mismatches = only_mixture = only_reader = 0
    first: list[dict] = []
    for want, have in itertools.zip_longest(expected, got):
        if want is None:
            only_reader += 1
            continue
        if have is None:
            only_mixture += 1
            continue
        rows += 1
        images += want["image_sha256"] is not None
        if want != have:
            mismatches += 1
            if len(first) < limit:
                first.append({"row": rows - 1, "want": want, "got": have})
    return {"rows": rows, "image_rows": images, "mismatches": mismatches, "first_mismatches": first,
            "rows_only_in_mixture": only_mixture, "rows_only_in_reader": only_reader}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mixture", type=Path)
    ap.add_argument("--work", type=Path, required=True, help="exports go here (one folder per format)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--format", default=",".join(FORMATS))
    ap.add_argument("--mds-python", help="python of a venv with mosaicml-streaming (reads the MDS export)")
    args = ap.parse_args(argv)
    summary: dict = {"mixture": str(args.mixture), "date": time.strftime("%Y-%m-%d"), "formats": {}}
    ok = True
    for fmt in args.format.split(","):
        if fmt == "mds" and not args.mds_python:
            summary["formats"][fmt] = {"skipped": "no --mds-python given"}
            continue
        out = args.work / fmt
        t0 = time.perf_counter()
        result = export(args.mixture, out, fmt, workers=args.workers, log=lambda m: None)
        seconds = time.perf_counter() - t0
        if fmt == "webdataset":
            got = read_webdataset(out, result.index)
        elif fmt == "mds":
            got = read_mds(out, args.mds_python)
        else:
            got = read_conversations(out, result.index, fmt, args.work / "hf-cache")
        t1 = time.perf_counter()
        check = compare(mixture_rows(args.mixture), got)
        check.update(export_seconds=round(seconds, 1), read_seconds=round(time.perf_counter() - t1, 1),
                     shards=len(result.index["shards"]), image_files=result.index.get("image_files"))
        check["ok"] = not (check["mismatches"] or check["rows_only_in_mixture"] or check["rows_only_in_reader"])
        ok &= check["ok"]
        summary["formats"][fmt] = check
        print(f"{fmt}: {check['rows']:,} rows, ok={check['ok']}", file=sys.stderr)
    summary["ok"] = ok
    print(json.dumps(summary, indent=1))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
