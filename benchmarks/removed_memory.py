"""Peak memory (tracemalloc) of writing removed.parquet: the old whole-table writer against the
streamed one, on one synthetic unit of 256 px random JPEGs with ~700-char texts, every row but one a
duplicate of the last. Also checks that both files have the same sha256.

The old writer is `medmix/removed.py` as of commit 99e12b6 (before streaming), loaded with
`git show`; its imports are mapped to where those modules live now (`OLD_IMPORTS`), so the
comparison keeps running after the package layout changed.

    python benchmarks/removed_memory.py 2000 8000
"""

from __future__ import annotations

import importlib.util
import io
import subprocess
import sys
import tempfile
import tracemalloc
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

import medmix.mix.removed as new
from medmix.core.writer import write_parquet_atomic
from medmix.mix.index import build_index
from medmix.mix.select import Removal

OLD_REV = "99e12b6"
# where the old writer's imports live since the package layout (8d77a50)
OLD_IMPORTS = {"medmix.decontam": "medmix.mix.decontam", "medmix.dedup": "medmix.mix.dedup",
               "medmix.index": "medmix.mix.index", "medmix.layout": "medmix.core.layout",
               "medmix.mixture": "medmix.mix.select", "medmix.textsim": "medmix.mix.textsim",
               "medmix.thumbnail": "medmix.imaging.thumbnail"}


def old_module(tmp: Path):
    src = subprocess.run(["git", "show", f"{OLD_REV}:medmix/removed.py"], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1]).stdout
    for old, now in OLD_IMPORTS.items():
        src = src.replace(f"from {old} import", f"from {now} import")
    (tmp / "old_removed.py").write_text(src)
    spec = importlib.util.spec_from_file_location("old_removed", tmp / "old_removed.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def run(n_removals: int, tmp: Path, old) -> None:
    rng = np.random.default_rng(0)

    def jpg() -> bytes:
        b = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (256, 256, 3), np.uint8)).save(b, "JPEG", quality=85)
        return b.getvalue()

    N = n_removals
    n = N + 1
    unit = tmp / f"u{N}.parquet"
    pq.write_table(pa.table({
        "id": [f"a/{i:07d}" for i in range(n)], "source": ["a"] * n, "task": ["vqa"] * n, "license": ["MIT"] * n,
        "image": pa.array([{"bytes": jpg(), "path": None} for _ in range(n)],
                          pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
        "image_hash": [f"{i:032x}" for i in range(n)], "image_phash": pa.array(range(n), pa.uint64()),
        "question": [f"question {i} " + "word " * 100 for i in range(n)],
        "options": pa.array([None] * n, pa.list_(pa.string())),
        "answer": ["x " * 200] * n, "context": pa.array([None] * n, pa.string())}), unit, row_group_size=256)
    idx = build_index([unit], ["a"], bands=False, text_threshold=None)
    rem = [Removal(f"a/{r:07d}", "duplicate", f"a/{N:07d}", "duplicate", r, N) for r in range(N)]
    digests = []
    for name, fn in (
            ("before", lambda: write_parquet_atomic(tmp / "old.parquet",
                                                    old.removed_table(rem, idx, [unit], None, [], 13))),
            ("after", lambda: new.write_removed(tmp / "new.parquet", rem, idx, [unit], None, [], 13))):
        tracemalloc.start()
        digest, _ = fn()
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        digests.append(digest)
        print(f"{name:7} {N:8} removals: peak {peak / 2**20:7.1f} MiB")
    print(f"same sha256: {digests[0] == digests[1]}")


def main() -> None:
    sizes = [int(a) for a in sys.argv[1:]] or [2000, 8000]
    with tempfile.TemporaryDirectory() as d:
        old = old_module(Path(d))
        for n in sizes:
            run(n, Path(d), old)


if __name__ == "__main__":
    main()
