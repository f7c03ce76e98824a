"""Loader throughput: medmix's MixtureDataset against raw pyarrow and HF `datasets` streaming.

Why these: raw pyarrow turning every row into a dict is the floor any Parquet loader pays;
MixtureDataset should add little to it (shuffle windows, rank/worker split, resume bookkeeping);
HF streaming + `interleave_datasets` is what users would otherwise write for weighted mixing.
All runs read the same sources at the same weights, and each stops when one source runs out.
Per-row mode (a dict per sample, batched by the DataLoader) is measured next to batched mode
(`batched=True`, `DataLoader(batch_size=None)`: workers hand over {column: list} batches); the
summary gives the ratios the loader is held to. Batched mode with worker_split="windows" (each
worker reads only its own share) runs on the weighted mixture, rows (b2v)/(c2v), and on the largest
source alone next to that source in the default worker split, rows (b2w)/(c2w). Rows (t) move ready
batches and read nothing: the DataLoader's own cost through the pipe and through medmix's
shared-memory rings. The load average is printed because on a shared machine the worker numbers
mean little when it exceeds the core count.

    python benchmarks/loader_throughput.py                 # generate 200k rows in a temp dir
    python benchmarks/loader_throughput.py --rows 50000    # quicker
    python benchmarks/loader_throughput.py --data DIR      # DIR holds one mixture folder per source
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import resource
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import pyarrow.parquet as pq
from torch.utils.data import IterableDataset, get_worker_info

from medmix.core.schema import dumps_meta, empty_row, to_table
from medmix.loader import MixtureDataset, mixture_files, pass_batch
from medmix.loader.handoff import SharedBatch

WORDS = ["the", "lesion", "margin", "shows", "mild", "enhancement", "with", "no", "evidence", "of", "necrosis",
         "in", "left", "lobe", "histology", "reveals", "glandular", "structures", "lined", "by", "atypical",
         "epithelium", "and", "scattered", "mitoses"]


def _text(rng: np.random.Generator, lo: int, hi: int) -> str:
    return " ".join(rng.choice(WORDS, size=int(rng.integers(lo, hi))))


def _png_pool(rng: np.random.Generator, n: int = 256) -> list[bytes]:
    pool = []
    for _ in range(n):
        side = int(rng.integers(48, 96))
        pixels = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
        buf = io.BytesIO()
        PIL.Image.fromarray(pixels).save(buf, format="PNG")
        pool.append(buf.getvalue())
    return pool


def generate(root: Path, rows: int, weights: list[float], image_frac: float, shard_rows: int = 20_000,
             row_group_rows: int = 256) -> list[Path]:
    """One mixture folder per source (sizes proportional to the weights), laid out like `medmix build`."""
    rng = np.random.default_rng(0)
    pool = _png_pool(rng)
    folders = []
    for s, weight in enumerate(weights):
        name, n = f"src{s}", round(rows * weight / sum(weights))
        folder = root / name
        (folder / "data").mkdir(parents=True)
        n_shards = max(1, -(-n // shard_rows))
        shards = []
        for k in range(n_shards):
            batch = []
            for i in range(k * shard_rows, min(n, (k + 1) * shard_rows)):
                row = empty_row()
                row.update(id=f"{name}/{i}", source=name, split="train", domain="pathology", task="vqa",
                           question=_text(rng, 6, 20), answer=_text(rng, 1, 60), license="CC-BY-4.0",
                           context=_text(rng, 80, 200) if rng.random() < 0.2 else None,
                           meta=dumps_meta({"row": i}))
                if rng.random() < image_frac:
                    png = pool[int(rng.integers(len(pool)))]
                    row.update(image={"bytes": png, "path": None}, image_hash=hashlib.sha256(png).hexdigest(),
                               image_phash=int(rng.integers(1 << 62)), width=64, height=64)
                batch.append(row)
            rel = f"data/train-{k:05d}-of-{n_shards:05d}.parquet"
            pq.write_table(to_table(batch), folder / rel, row_group_size=row_group_rows)
            shards.append({"path": rel, "rows": len(batch)})
        (folder / "manifest.json").write_text(json.dumps({"shards": shards, "total_rows": n}))
        folders.append(folder)
    return folders


def raw_pyarrow(folders: list[Path]) -> Iterable[dict[str, Any]]:
    """Every row of every shard as a dict, in file order: the cheapest way to the same rows."""
    for folder in folders:
        for path, _ in mixture_files(folder):
            for batch in pq.ParquetFile(path).iter_batches(batch_size=256):
                names = batch.schema.names
                columns = [c.to_pylist() for c in batch.columns]
                yield from (dict(zip(names, values)) for values in zip(*columns))


def raw_arrow_only(folders: list[Path]) -> int:
    n = 0
    for folder in folders:
        for path, _ in mixture_files(folder):
            pf = pq.ParquetFile(path)
            n += sum(pf.read_row_group(g).num_rows for g in range(pf.num_row_groups))
    return n


def medmix_stream(folders: list[Path], weights: list[float], decode: bool, batch: int, batched: bool = False,
                  workers: int | None = None) -> Any:
    """The weighted mixture; `workers` set: worker_split="windows" for that many DataLoader workers."""
    split = {} if workers is None else {"worker_split": "windows", "num_workers": workers}
    return MixtureDataset.from_sources(dict(zip(folders, weights)), exhausted="stop", decode_images=decode,
                                       batch_size=batch, seed=0, batched=batched, **split)


def windows_stream(folder: Path, decode: bool, batch: int, workers: int) -> Any:
    """Batched mode with worker_split="windows" over one source: each worker reads its own windows alone.

    (worker_split="windows" is a `MixtureDataset` option, so it is measured on the largest source,
    next to the same source in today's batched mode: the (b2w)/(b2s) and (c2w)/(c2s) pairs.)
    """
    return MixtureDataset(folder, decode_images=decode, batch_size=batch, seed=0, batched=True,
                          worker_split="windows", num_workers=workers)


def single_stream(folder: Path, decode: bool, batch: int) -> Any:
    return MixtureDataset(folder, decode_images=decode, batch_size=batch, seed=0, batched=True)


def hf_stream(folders: list[Path], weights: list[float], decode: bool) -> Any:
    import datasets

    parts = []
    for folder in folders:
        files = [str(p) for p, _ in mixture_files(folder)]
        ds = datasets.load_dataset("parquet", data_files={"train": files}, split="train", streaming=True)
        parts.append(ds if decode else ds.decode(False))  # decode(False): HF's fastest no-decode path
    return datasets.interleave_datasets(parts, probabilities=[w / sum(weights) for w in weights], seed=0,
                                        stopping_strategy="first_exhausted")


def _loader(ds: Any, workers: int, batch: int) -> Iterable[Any]:
    from torch.utils.data import DataLoader

    loader = DataLoader(ds, batch_size=batch, num_workers=workers, collate_fn=_as_list)
    return (row for rows in loader for row in rows)


def _batched_loader(ds: Any, workers: int) -> Iterable[Any]:
    """Batched mode as the README recommends: the dataset yields whole batches, the DataLoader passes them on."""
    from torch.utils.data import DataLoader

    return DataLoader(ds, batch_size=None, num_workers=workers, collate_fn=pass_batch)


def _as_list(rows: list[Any]) -> list[Any]:
    return rows


class Premade(IterableDataset):
    """The transport floor: workers hand over one ready batch again and again, reading nothing.

    What the DataLoader itself costs to move real batches (the first batch of the batched stream)
    from workers to the trainer: through the pipe (`shared=False`) or through medmix's
    shared-memory rings (`handoff`). No loader can beat it, so (b2) workers vs 0 workers can only
    reach (this rate) / (b2, 0 workers) on this machine.
    """

    def __init__(self, batch: dict[str, list[Any]], rows: int, shared: bool) -> None:
        self.batch, self.rows, self.shared = batch, rows, shared

    def __iter__(self) -> Iterable[dict[str, list[Any]]]:
        info = get_worker_info()
        workers = info.num_workers if info else 1
        make = SharedBatch if self.shared and info else dict
        for _ in range(self.rows // len(self.batch["id"]) // workers):
            yield make(self.batch)


def timed(make: Callable[[], Iterable[dict[str, Any]]], limit: int | None) -> tuple[int, float, float]:
    """Rows, wall seconds and this process's CPU seconds, from asking for the first row to
    holding the last one. Items are rows, or whole batches ({column: list}) in batched mode.

    Teardown is left out on purpose: HF's interleave sleeps 5 s when its iterator closes (an
    Arrow threading workaround) and DataLoader workers take a while to exit; neither is
    throughput. Start-up (opening files, forking workers) is counted for everyone. CPU time is
    reported because wall time on a shared machine swings by tens of percent between runs.
    """
    wall, cpu = time.perf_counter(), time.process_time()
    it = iter(make())
    n = 0
    for item in it:
        images = item.get("image")
        if isinstance(images, list):  # a batch
            n += len(images)
        else:
            n += 1
            images = [images]
        for image in images:
            if isinstance(image, PIL.Image.Image) and image.size[0] <= 0:
                raise AssertionError("empty image")  # touch decoded images so laziness cannot cheat
        if limit is not None and n >= limit:
            break
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    del it
    return n, wall, cpu


TRANSPORT = {False: "(t) transport floor: ready batches, pipe", True: "(t) transport floor: ready batches, shm"}
B2V, C2V = "(b2v) MixtureDataset batched windows, no decode", "(c2v) MixtureDataset batched windows, decode"
B2S, B2W = "(b2s) one source batched (blocks), no decode", "(b2w) one source batched windows, no decode"
C2S, C2W = "(c2s) one source batched (blocks), decode", "(c2w) one source batched windows, decode"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="folder of per-source mixture folders (default: generate)")
    parser.add_argument("--rows", type=int, default=200_000, help="rows to generate")
    parser.add_argument("--image-frac", type=float, default=0.3)
    parser.add_argument("--weights", type=float, nargs="+", default=[0.5, 0.3, 0.2])
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=2, help="best of N runs (the machine may be shared)")
    parser.add_argument("--decode-repeat", type=int, default=2, help="best of N for the batched decode runs")
    parser.add_argument("--hf-limit", type=int, default=30_000,
                        help="rows timed for HF streaming (rates are per second; this keeps the run short)")
    parser.add_argument("--generate-only", type=Path, metavar="DIR",
                        help="write the generated sources to DIR, then exit")
    parser.add_argument("--only", choices=["raw", "mixture", "weighted"],
                        help="iterate once with one reader, no timing (for profilers: valgrind --tool=callgrind)")
    args = parser.parse_args(argv)
    if args.only and not args.data:
        parser.error("--only needs --data (make it with --generate-only DIR)")
    if args.generate_only:
        args.generate_only.mkdir(parents=True, exist_ok=True)
        generate(args.generate_only, args.rows, args.weights, args.image_frac)
        return

    with tempfile.TemporaryDirectory() as tmp:
        if args.data:
            folders = sorted(p for p in args.data.iterdir() if (p / "manifest.json").is_file()) or [args.data]
            weights = args.weights if len(args.weights) == len(folders) else [1.0] * len(folders)
            if args.only:
                readers = {"raw": lambda: raw_pyarrow(folders),
                           "mixture": lambda: (r for f in folders for r in MixtureDataset(f, decode_images=False)),
                           "weighted": lambda: medmix_stream(folders, weights, False, args.batch)}
                print(f"{args.only}: {sum(1 for _ in readers[args.only]())} rows")
                return
        else:
            t0 = time.perf_counter()
            folders = generate(Path(tmp), args.rows, args.weights, args.image_frac)
            weights = args.weights
            print(f"generated {args.rows} rows ({args.image_frac:.0%} with PNGs) in {time.perf_counter() - t0:.1f}s",
                  file=sys.stderr)
        size = sum(p.stat().st_size for f in folders for p, _ in mixture_files(f))
        print(f"data: {len(folders)} sources, weights {weights}, {size / 2**20:.0f} MiB of Parquet", file=sys.stderr)
        os.sync()  # generated files written back now, not during the first runs
        for _ in raw_pyarrow(folders):  # warm the page cache so the first run is not charged for the disk
            pass

        results: list[tuple[str, int, int, float, float]] = []
        print(f"load average before: {os.getloadavg()[0]:.2f} ({os.cpu_count()} cores)", file=sys.stderr)

        def run(label: str, workers: int, make: Callable[[], Iterable[dict[str, Any]]], limit: int | None = None,
                repeat: int = args.repeat, runs: list[tuple[int, float, float]] | None = None) -> None:
            runs = runs or [timed(make, limit) for _ in range(repeat)]
            n = runs[0][0]
            wall = n / min(r[1] for r in runs)  # best of the repeats, separately for each clock
            cpu = n / min(r[2] for r in runs)
            results.append((label, workers, n, wall, cpu))
            print(f"  {label:<44} workers={workers} {n:>8} rows {wall:>9,.0f} rows/s {cpu:>9,.0f} rows/CPU-s",
                  file=sys.stderr)

        t0 = time.perf_counter()
        n = raw_arrow_only(folders)
        print(f"  (pyarrow read_row_group only, no Python rows: {n / (time.perf_counter() - t0):,.0f} rows/s)",
              file=sys.stderr)
        # The floor and the target it sets, timed in turn (a, b, a, b, ...): a slow spell of a shared
        # machine then hits both, not only whichever ran during it.
        floor, ours = [], []
        for _ in range(max(args.repeat, 3)):
            floor.append(timed(lambda: raw_pyarrow(folders), None))
            ours.append(timed(lambda: medmix_stream(folders, weights, False, 1), None))
        run("(a) raw pyarrow -> dicts", 0, lambda: raw_pyarrow(folders), runs=floor)
        run("(b) MixtureDataset, no decode, no DataLoader", 0, lambda: medmix_stream(folders, weights, False, 1),
            runs=ours)
        for workers in args.workers:
            def medmix(decode: bool, workers: int = workers) -> Iterable[dict[str, Any]]:
                return _loader(medmix_stream(folders, weights, decode, args.batch), workers, args.batch)

            def hf(decode: bool, workers: int = workers) -> Iterable[dict[str, Any]]:
                return _loader(hf_stream(folders, weights, decode), workers, args.batch)

            def batched(decode: bool, workers: int = workers, split: bool = False) -> Iterable[dict[str, Any]]:
                ds = medmix_stream(folders, weights, decode, args.batch, True, workers if split else None)
                return _batched_loader(ds, workers)

            def one(decode: bool, windows: bool, workers: int = workers) -> Iterable[dict[str, Any]]:
                big = folders[int(np.argmax(weights))]
                ds = windows_stream(big, decode, args.batch, workers) if windows else single_stream(big, decode,
                                                                                                      args.batch)
                return _batched_loader(ds, workers)

            run("(b) MixtureDataset, no decode", workers, lambda: medmix(False))
            run("(b2) MixtureDataset batched, no decode", workers, lambda: batched(False))
            run(B2V, workers, lambda: batched(False, split=True))
            run("(b2s) one source batched (blocks), no decode", workers, lambda: one(False, False))
            run("(b2w) one source batched windows, no decode", workers, lambda: one(False, True))
            run("(c) MixtureDataset, decode", workers, lambda: medmix(True), None, 1)
            run("(c2) MixtureDataset batched, decode", workers, lambda: batched(True), None, args.decode_repeat)
            run(C2V, workers, lambda: batched(True, split=True), None, args.decode_repeat)
            run("(c2s) one source batched (blocks), decode", workers, lambda: one(True, False), None,
                args.decode_repeat)
            run("(c2w) one source batched windows, decode", workers, lambda: one(True, True), None,
                args.decode_repeat)
            if workers:
                first = next(iter(medmix_stream(folders, weights, False, args.batch, True)))
                total = next(r[2] for r in results if r[0].startswith("(b2) "))  # as many rows as (b2)
                for shared in (False, True):
                    ready = Premade(first, total, shared)
                    run(TRANSPORT[shared], workers, lambda ready=ready, w=workers: _batched_loader(ready, w))
            run("(d) HF streaming+interleave, no decode", workers, lambda: hf(False), args.hf_limit, 1)
            run("(e) HF streaming+interleave, decode", workers, lambda: hf(True), args.hf_limit, 1)

    floor_wall, floor_cpu = results[0][3], results[0][4]
    hf = {(label[:3], w): r for label, w, _, r, _ in results if label[:3] in ("(d)", "(e)")}
    print("\n| loader | workers | rows | rows/s (wall) | vs (a), wall | rows/CPU-s (main process) | vs (a), CPU "
          "| vs HF, same workers (wall) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for label, workers, n, wall, cpu in results:
        peer = {"(b)": "(d)", "(c)": "(e)"}.get(label[:3])
        vs_hf = f"{wall / hf[(peer, workers)]:.1f}x" if peer and (peer, workers) in hf else ""
        cpu_cols = f"{cpu:,.0f} | {cpu / floor_cpu:.2f}x" if workers == 0 else "n/a (workers) | "
        print(f"| {label} | {workers} | {n:,} | {wall:,.0f} | {wall / floor_wall:.2f}x | {cpu_cols} | {vs_hf} |")
    rate = {(label, w): r for label, w, _, r, _ in results}
    print(f"\nload average after: {os.getloadavg()[0]:.2f} ({os.cpu_count()} cores)")
    print("\n| target | measured |\n|---|---:|")
    targets = [("no decode, no DataLoader vs (a) raw pyarrow (>= 0.9x)",
                ("(b) MixtureDataset, no decode, no DataLoader", 0), ("(a) raw pyarrow -> dicts", 0))]
    for workers in [w for w in args.workers if w > 0]:
        targets += [(f"batched no decode, {workers} workers vs 0 (>= 1.0x)", ("(b2) MixtureDataset batched, no decode",
                     workers), ("(b2) MixtureDataset batched, no decode", 0)),
                    (f"batched decode, {workers} workers vs 0 (>= 1.5x)", ("(c2) MixtureDataset batched, decode",
                     workers), ("(c2) MixtureDataset batched, decode", 0)),
                    (f"ceiling for (b2): ready batches through shared memory, {workers} workers, vs (b2) 0 "
                     "workers", (TRANSPORT[True], workers), ("(b2) MixtureDataset batched, no decode", 0)),
                    (f"ceiling through the pipe, {workers} workers, vs (b2) 0 workers",
                     (TRANSPORT[False], workers), ("(b2) MixtureDataset batched, no decode", 0)),
                    (f"weighted, windows, no decode, {workers} workers vs 0", (B2V, workers), (B2V, 0)),
                    (f"weighted, windows, decode, {workers} workers vs 0", (C2V, workers), (C2V, 0)),
                    (f"per-row no decode, {workers} workers vs 0", ("(b) MixtureDataset, no decode", workers),
                     ("(b) MixtureDataset, no decode", 0)),
                    (f"one source, blocks, no decode, {workers} workers vs 0", (B2S, workers), (B2S, 0)),
                    (f"one source, windows, no decode, {workers} workers vs 0 (>= 1.0x)", (B2W, workers), (B2W, 0)),
                    (f"one source, blocks, decode, {workers} workers vs 0", (C2S, workers), (C2S, 0)),
                    (f"one source, windows, decode, {workers} workers vs 0 (>= 1.5x)", (C2W, workers), (C2W, 0))]
    for name, num, den in targets:
        if num in rate and den in rate:
            print(f"| {name} | {rate[num] / rate[den]:.2f}x |")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\npeak RSS of the benchmark process: {peak:.0f} MiB (includes the generator when it ran)")


if __name__ == "__main__":
    main()
