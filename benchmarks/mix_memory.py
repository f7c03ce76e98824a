"""Driver peak memory and time of the mix stage's selection at `--rows` rows (issue 24: ≤ 8 GiB at 30M).

Why this and not a build: at 30M rows a synthetic upstream with images would not fit on one disk
three times over, and normalize is per unit and bounded already. What grows with the row count
on the driver is the mix stage: the index, then license → dedup (exact, pHash near-dup, MinHash
bands) → decontamination → selection. This writes the per-unit index column files a build keeps
(`medmix.mix.index_cache`, one per unit of `--unit-rows`), shaped like openmedq-3.35m scaled to
`--rows` (each source's share, ids in its native form, half-width image hashes, text keys, six
MinHash band keys and a 64-byte sketch per row), with planted exact copies, near copies (pHash
within 4 bits), text copies and evaluation hits, then runs the mix stage's own functions on them:
`build_index` (reading the column files, as a rebuild does) and `mixture_rows`, with the recipe
the rehearsal uses. Measured: wall time per step, and the peak RSS (getrusage) of a fresh process that runs only them.

Not covered here: reading text to compute the columns (per batch, bounded; the rehearsal
measures it), the shard writer (per shard, in workers) and removed.parquet (streamed;
benchmarks/removed_memory.py).

    nice -n 5 /usr/bin/time -v python benchmarks/mix_memory.py --rows 30000000 --dir /tmp/mixmem
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rehearsal import SPECS, make_plan, recipe_yaml  # noqa: E402

from medmix.mix.decontam import NgramIndex  # noqa: E402
from medmix.mix.index import EvalIndex, build_index  # noqa: E402
from medmix.mix.index_cache import ColumnCache, eval_digest  # noqa: E402
from medmix.mix.select import mixture_rows  # noqa: E402
from medmix.mix.textsim import lsh_params  # noqa: E402
from medmix.recipe import parse_recipe  # noqa: E402

EVAL_TEXT = " ".join(f"word{i}" for i in range(20))  # one evaluation text: hits point at item 0
SHARE = {"exact": 0.004, "near": 0.002, "text": 0.001, "eval": 0.0002}  # of each image/text source's rows


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def synthesize(root: Path, rows: int, unit_rows: int, seed: int) -> tuple[list[str], list[str], dict]:
    """Column files for `rows` rows split over the sources by the recipe's shares; returns (unit
    keys, source per unit, planted counts)."""
    rng = np.random.default_rng(seed)
    total = sum(s.rows for s in SPECS.values())
    counts = {name: max(1, round(rows * s.rows / total)) for name, s in SPECS.items()}
    shape = lsh_params(0.9)
    cache = ColumnCache(root, bands=shape, evals=eval_digest([EVAL_TEXT], 13))
    keys, srcs = [], []
    planted = {k: 0 for k in SHARE}
    for name, n in counts.items():
        image = SPECS[name].kind == "image"
        for lo in range(0, n, unit_rows):
            m = min(unit_rows, n - lo)
            sha = np.zeros(m, "S17")
            if image:
                raw = rng.integers(0, 256, (m, 17), np.uint8)
                raw[:, 0] = 1
                sha = raw.view("S17").ravel()
            phash = rng.integers(1, 2**63, m, np.uint64) if image else np.zeros(m, np.uint64)
            text = rng.integers(1, 2**63, m, np.uint64)
            bands = rng.integers(0, 2**63, (m, shape[0]), np.uint64)
            sketch = rng.integers(0, 256, (m, 64), np.uint8)
            hit = np.full(m, -1, np.int64)
            # planted within the unit: the last rows copy earlier ones
            k = {kind: int(round(m * share)) for kind, share in SHARE.items()}
            at = m - sum(k.values())
            if image and at > 0:
                src = rng.integers(0, at, k["exact"] + k["near"])
                dst = np.arange(at, at + len(src))
                sha[dst[:k["exact"]]] = sha[src[:k["exact"]]]
                phash[dst] = phash[src]
                flips = np.uint64(1) << rng.integers(0, 64, len(src)).astype(np.uint64)
                phash[dst[k["exact"]:]] ^= flips[k["exact"]:]
                text[dst], bands[dst], sketch[dst] = text[src], bands[src], sketch[src]  # the same caption
                planted["exact"] += k["exact"]
                planted["near"] += k["near"]
                at += len(src)
            if not image and at > 0 and k["text"]:
                src = rng.integers(0, at, k["text"])
                dst = np.arange(at, at + k["text"])
                text[dst], bands[dst], sketch[dst] = text[src], bands[src], sketch[src]
                planted["text"] += k["text"]
                at += k["text"]
            hit[at:at + k["eval"]] = 0
            planted["eval"] += min(k["eval"], max(0, m - at))
            ids = np.array([f"{name}/{lo + i:09d}".encode() for i in range(m)])
            key = f"{name}/u{lo // unit_rows:06d}"
            cache.save(key, {
                "ids": ids, "has_image": np.full(m, image), "sha": sha, "phash": phash, "text": text,
                "bands": bands, "sketch": sketch, "text_hit": hit,
                "source_codes": np.zeros(m, np.int32), "license_codes": np.zeros(m, np.int32),
                "source_values": np.array(json.dumps([name])), "license_values": np.array(json.dumps(["CC-BY-4.0"]))})
            keys.append(key)
            srcs.append(name)
    return keys, srcs, planted


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=3_350_000)
    ap.add_argument("--unit-rows", type=int, default=20_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dir", type=Path, required=True, help="work folder (emptied first)")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)  # the child: --dir holds the files
    args = ap.parse_args(argv)
    if not args.measure:
        # synthesis in this process, the measurement in a fresh one: getrusage's peak never goes down,
        # so a measurement after synthesis in the same process would report the synthesis' peak
        if args.dir.exists():
            shutil.rmtree(args.dir)
        args.dir.mkdir(parents=True)
        t = time.perf_counter()
        keys, srcs, planted = synthesize(args.dir, args.rows, args.unit_rows, args.seed)
        (args.dir / "synth.json").write_text(json.dumps({"keys": keys, "srcs": srcs, "planted": planted,
                                                         "seconds": time.perf_counter() - t}))
        child = [sys.executable, __file__, *(argv if argv is not None else sys.argv[1:]), "--measure"]
        return subprocess.run(child).returncode
    synth = json.loads((args.dir / "synth.json").read_text())
    keys, srcs, planted, synth_s = synth["keys"], synth["srcs"], synth["planted"], synth["seconds"]
    base = _peak_mib()

    scale = args.rows / sum(s.rows for s in SPECS.values())
    plan = make_plan(0, scale)  # the rehearsal's recipe, target_samples scaled with the rows
    folders = {s: args.dir / "empty" / s for s in SPECS}
    for f in folders.values():
        f.mkdir(parents=True, exist_ok=True)
    recipe = parse_recipe(recipe_yaml(plan, folders))
    ngrams = NgramIndex([EVAL_TEXT], n=13)
    evals = EvalIndex(["medqa:test"], ["medqa/test-0"], np.zeros(0, np.uint64), np.zeros(0, np.int64),
                      [EVAL_TEXT], [0])
    cache = ColumnCache(args.dir, bands=lsh_params(0.9), evals=eval_digest([EVAL_TEXT], 13))
    steps = {}
    t = time.perf_counter()
    idx = build_index([args.dir / "missing.parquet"] * len(keys), list(SPECS), bands=True, text_threshold=0.9,
                      ngrams=ngrams, cache=cache, unit_keys=keys)
    steps["index (read column files)"] = (time.perf_counter() - t, _peak_mib())
    index_bytes = sum(getattr(idx, f).nbytes for f in ("unit", "row", "ids", "source", "license", "has_image", "sha",
                                                       "phash", "text", "bands", "sketch", "text_hit"))
    t = time.perf_counter()
    mix = mixture_rows(recipe, idx, evals)
    steps["license, dedup, decontaminate, select"] = (time.perf_counter() - t, _peak_mib())
    kinds = {}
    for r in mix.removed:
        kinds[r.kind] = kinds.get(r.kind, 0) + 1
    result = {
        "date": time.strftime("%Y-%m-%d"), "rows": len(idx), "units": len(keys), "unit_rows": args.unit_rows,
        "synthesize_s": round(synth_s, 1), "index_bytes": index_bytes,
        "index_bytes_per_row": round(index_bytes / len(idx), 1),
        "sketch_bytes_on_disk": int(idx.sketch.nbytes) if getattr(idx.sketch, "mapping", None) is not None else 0,
        "peak_before_mix_mib": round(base), "planted": planted, "removed": kinds, "selected": int(len(mix.unit)),
        "steps": {k: {"seconds": round(s, 1), "peak_rss_mib": round(p)} for k, (s, p) in steps.items()},
        "peak_rss_mib": round(_peak_mib()), "target_mib": 8 * 1024,
    }
    print(f"mix stage at {len(idx):,} rows ({len(keys)} units): index {index_bytes / 2**20:,.0f} MiB "
          f"({result['index_bytes_per_row']} B/row; {result['sketch_bytes_on_disk'] / 2**20:,.0f} MiB of it, the "
          "sketch, in a scratch file)")
    print("| step | seconds | peak RSS MiB |\n|---|---:|---:|")
    for k, v in result["steps"].items():
        print(f"| {k} | {v['seconds']} | {v['peak_rss_mib']:,} |")
    print(f"removed {kinds} (planted {planted}); peak {result['peak_rss_mib']:,} MiB of the 8,192 MiB target "
          f"({result['peak_rss_mib'] / 8192:.2f})")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
