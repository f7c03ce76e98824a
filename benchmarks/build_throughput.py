"""Normalize throughput of `medmix build` against the bare floor, side by side in one run.

Floor: a plain loop, in this process, of Pillow decode + re-encode (same format and quality as
medmix writes) + sha256 of the output, over the same images. medmix: the normalize stage of a real
build (local-folder source, quarantine/validation/Parquet writing included), timed from the first
to the last finished unit, with 1 and with 2 workers. Reported as images/s and ratios.

Both the floor and 1-worker medmix run in this process, so their CPU-time rates are printed too
(`cpu w1/floor`): on a machine shared with other jobs the wall-clock ratio swings with the
neighbours, the CPU one much less. 2-worker scaling can only be read from wall time, so the load
average is printed with every row: w2/w1 means something only when the load stayed below
(cores - 2) during the row.

    python benchmarks/build_throughput.py --images 3000
    python benchmarks/build_throughput.py --images 1500 --formats jpeg --rounds 3   # on a busy machine
Targets (issues 2 and 15): forced JPEG re-encode ≥ 0.8× floor with 1 worker, default `keep`
≥ 1.0× the same floor, PNG re-encode ≥ 0.8×; 2 workers ≥ 1.7× medmix's 1-worker rate.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from medmix.pipeline import BuildOptions, build
from medmix.recipe import parse_recipe


def make_images(folder: Path, n: int, side: int, fmt: str, seed: int = 0) -> list[Path]:
    """Photo-like images (smooth gradients + noise + shapes): compress like real figures, unlike pure noise."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32) / side
    paths = []
    rows = ["file_name,answer"]
    for i in range(n):
        a, b, c = rng.uniform(0, 6, 3)
        base = np.stack([np.sin(a * xx + b * yy + c), np.cos(b * xx - a * yy), np.sin((a + b) * xx * yy)], -1)
        img = ((base + 1) * 110 + rng.normal(0, 6, (side, side, 3))).clip(0, 255).astype(np.uint8)
        x0, y0 = rng.integers(0, side // 2, 2)
        img[y0:y0 + side // 4, x0:x0 + side // 4] = rng.integers(0, 255, 3)
        name = f"img_{i:05d}.{'jpg' if fmt == 'jpeg' else 'png'}"
        Image.fromarray(img).save(folder / name, **({"quality": 90} if fmt == "jpeg" else {}))
        paths.append(folder / name)
        rows.append(f"{name},synthetic figure {i}")
    (folder / "metadata.csv").write_text("\n".join(rows) + "\n")
    return paths


def floor_rate(paths: list[Path], fmt: str) -> tuple[float, float]:
    """(images/s wall, images/s CPU) of the floor."""
    t0, c0 = time.perf_counter(), time.process_time()
    for p in paths:
        with Image.open(io.BytesIO(p.read_bytes())) as im:
            im = im.convert("RGB")
            buf = io.BytesIO()
            im.save(buf, format="JPEG" if fmt == "jpeg" else "PNG", **({"quality": 90} if fmt == "jpeg" else {}))
        hashlib.sha256(buf.getvalue()).hexdigest()
    return len(paths) / (time.perf_counter() - t0), len(paths) / (time.process_time() - c0)


def bench_recipe(folder: Path, tmp: Path, encode: str = "jpeg"):
    """A recipe of one local-folder source with dedup off: only normalize work differs between runs."""
    return parse_recipe(f"""name: bench
image: {{max_side: null, encode: {encode}}}
dedup: {{exact: false, image_distance: null, text_threshold: null}}
sources:
  bench:
    adapter: local
    from: {folder}
    options: {{domain: radiology, license: CC0-1.0}}
""", str(tmp / "bench.yaml"))


def medmix_rate(folder: Path, encode: str, workers: int, tmp: Path) -> tuple[float, float]:
    """(images/s wall, images/s CPU of this process) of the normalize stage; the CPU figure means
    something only with workers=1, where units run in this process."""
    recipe = bench_recipe(folder, tmp, encode)
    marks: list[tuple[float, float]] = []

    def progress(stage: str, label: str, advance: int, total) -> None:
        if stage == "normalize":
            marks.append((time.perf_counter(), time.process_time()))

    out, cache = tmp / f"out-{encode}-{workers}", tmp / f"cache-{encode}-{workers}"
    build(recipe, BuildOptions(out=out, cache=cache, workers=workers), progress=progress, log=lambda m: None)
    n = sum(1 for _ in folder.glob("img_*"))
    shutil.rmtree(out), shutil.rmtree(cache)
    return n / (marks[-1][0] - marks[0][0]), n / max(marks[-1][1] - marks[0][1], 1e-9)


def load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg()[:2])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=3000)
    ap.add_argument("--side", type=int, default=384)
    ap.add_argument("--rounds", type=int, default=1,
                    help="measure floor, w=1 and w=2 this many times, interleaved, and report each one's best "
                         "(its least disturbed run): for a machine shared with other jobs")
    ap.add_argument("--formats", nargs="+", choices=("jpeg", "png"), default=["jpeg", "png"],
                    help="input formats to measure (PNG rows take ~10x longer: the floor's PNG encode is slow)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        print(f"{os.cpu_count()} cores, load average (1/5 min) at start {load()}")
        print(f"{'input':6} {'medmix encode':14} {'floor img/s':>12} {'medmix w=1':>11} {'medmix w=2':>11} "
              f"{'w1/floor':>9} {'w2/w1':>7} {'cpu w1/floor':>13} {'load 1/5m':>10}")
        for fmt in args.formats:
            folder = tmp / f"src-{fmt}"
            paths = make_images(folder, args.images, args.side, fmt)
            # forced re-encode (same work as the floor) and the default policy ("keep": a clean
            # JPEG/PNG keeps its compressed stream minus metadata, no generation loss); one floor
            # per round serves both
            encodes = (fmt, "keep")
            floors, rates = [], {e: [] for e in encodes}
            for _ in range(args.rounds):
                floors.append(floor_rate(paths, fmt))
                for encode in encodes:
                    rates[encode].append((medmix_rate(folder, encode, 1, tmp), medmix_rate(folder, encode, 2, tmp)))
            floor, floor_cpu = map(max, zip(*floors))
            for encode in encodes:
                (one, one_cpu), (two, _) = (tuple(map(max, zip(*col))) for col in zip(*rates[encode]))
                print(f"{fmt:6} {encode:14} {floor:12.1f} {one:11.1f} {two:11.1f} {one / floor:9.2f} {two / one:7.2f} "
                      f"{one_cpu / floor_cpu:13.2f} {load():>10}", flush=True)


if __name__ == "__main__":
    main()
