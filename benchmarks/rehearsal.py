"""A synthetic upstream shaped like recipe `openmedq-3.35m`, built by the real `medmix build` (issue 24).

Why: no build had run with every stage together at the size medmix exists for. This writes an
upstream with each source's declared row count times `--scale`, builds it with `medmix build`
in a subprocess (the normal path: local folders, a generated recipe, the CLI), measures every
stage and checks the result against what was planted.

Upstream (deterministic from `--seed`; every row's content is a pure function of (seed, source,
row), so a planted copy regenerates its original instead of passing bytes between processes):
  * image sources (pmc_oa, quilt1m, pmc_vqa, rocov2, pathvqa, vqa_med_2019, arch, slake, vqa_rad,
    pubmedvision): `adapter: local` folders, one small JPEG (PNG for SLAKE) per row with a
    per-source log-normal size, and a metadata.csv with the source's text shape (captions, VQA,
    PMC-VQA's four options, PubMedVision's long answers);
  * text sources through their real adapters, in their upstream file formats: medmcqa (Parquet),
    pubmedqa pqa_unlabeled (Parquet, structured contexts), medqa (JSON lines). MedQuAD's upstream
    is an XML archive; it is written in PubMedQA's format and read with `adapter: pubmedqa`
    (question, a one-line focus as context, a long answer);
  * evaluation-only sources through their real adapters: vqa_rad:test (Parquet with image bytes)
    and medqa:test (JSON lines).
Planted: cross-source exact copies (same bytes and text, another id), re-encoded and resized
near copies (0.8x, JPEG q70, same text; see `near_copy`), text-only copies under another id, evaluation images
re-encoded into training sources and evaluation questions pasted into training questions.
Copies go into the source of lower dedup priority, so the planted copy is the row that must go.

Verified: normalized rows per source equal to what was written; removed.parquet holds exactly the
planted copies (kind duplicate, kept row = the original) and planted contamination (eval_image /
eval_text, against the planted evaluation item), nothing else; all-sources selected whole and the
weighted one fills target_samples; shards read by polars and `datasets` with the manifest's row
count; `medmix stats --json` counts per source equal to the manifest's.

Measured per stage (stage boundaries from `medmix build --timings FILE`): wall time, peak RSS of
the driver and of its workers (psutil polling of the process tree every 0.1 s), disk used by the
cache and the output at the end of the stage.

With `--rebuilds`, two more builds on the same cache, each timed per stage and checked: the recipe
with one source's weight changed (quilt1m from all rows to weight 0.5: no unit may be normalized
again, the selection must change), then the first recipe after one rocov2 upstream image is
re-encoded (only rocov2's units may be normalized again).

    nice -n 10 python benchmarks/rehearsal.py --scale 0.01 --workers 2 --json rehearsal.json
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from dataclasses import dataclass
from multiprocessing import Pool
from pathlib import Path

# one BLAS thread: the generator runs a process per core, and tiny matrix products only lose to threads
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

TARGET = 3_350_000


@dataclass(frozen=True)
class Spec:
    rows: int                 # declared rows of the recipe's splits (medmix/sources/*.py)
    kind: str                 # image | medmcqa | pubmedqa | medqa
    domain: str = "general-biomedical"
    task: str = "caption"
    side: int = 0             # median longest side in px (log-normal, sigma 0.3)
    gray: bool = False
    fmt: str = "JPEG"
    q: int = 0                # median question words (0: none)
    a: int = 20               # median answer / caption words
    options: int = 0


# Row counts: the adapters' declared sizes of the splits openmedq-3.35m takes.
SPECS: dict[str, Spec] = {
    "pmc_oa": Spec(1_650_000, "image", side=480, a=28),
    "quilt1m": Spec(1_000_000, "image", "pathology", side=560, a=14),
    "pmc_vqa": Spec(176_948, "image", task="mcqa", side=460, q=12, a=3, options=4),
    "medmcqa": Spec(182_822, "medmcqa", "clinical-text", "mcqa", q=14, a=3, options=4),
    "rocov2": Spec(59_962 + 9_904 + 9_927, "image", "radiology", side=520, gray=True, a=18),
    "pubmedqa": Spec(61_249, "pubmedqa", "clinical-text", "qa", q=14, a=35),
    "medquad": Spec(16_407, "pubmedqa", "clinical-text", "qa", q=9, a=120),
    "pathvqa": Spec(19_654 + 6_259, "image", "pathology", "vqa", side=480, q=8, a=1),
    "vqa_med_2019": Spec(12_792 + 2_000, "image", "radiology", "vqa", side=500, gray=True, q=7, a=2),
    "arch": Spec(7_576, "image", "pathology", side=500, a=40),
    "slake": Spec(4_919 + 1_053, "image", "radiology", "vqa", side=480, gray=True, fmt="PNG", q=7, a=2),
    "medqa": Spec(10_178, "medqa", "clinical-text", "mcqa", q=110, a=3, options=4),
    "vqa_rad": Spec(1_793, "image", "radiology", "vqa", side=512, gray=True, q=8, a=1),
    "pubmedvision": Spec(504_501, "image", task="vqa", side=450, q=15, a=110),
}
EVAL = {"vqa_rad": 451, "medqa": 1_273}  # evaluation splits: vqa_rad:test, medqa:test
# (kind, original source, copy's source, share of the copy source's rows)
DUPS = [
    ("exact", "rocov2", "pmc_oa", 0.01),
    ("exact", "pmc_vqa", "pubmedvision", 0.02),
    ("near", "pubmedvision", "pmc_oa", 0.005),
    ("near", "quilt1m", "arch", 0.03),
    ("text", "pubmedqa", "medquad", 0.02),
    ("text", "medmcqa", "medqa", 0.02),
]
# (kind, evaluation source, training source, share of the training source's rows)
CONTAM = [
    ("eval_image", "vqa_rad", "pmc_vqa", 0.002),
    ("eval_image", "vqa_rad", "slake", 0.01),
    ("eval_text", "medqa", "medmcqa", 0.002),
    ("eval_text", "medqa", "pmc_vqa", 0.001),
]
PRIORITY = ["pmc_vqa", "rocov2", "pubmedvision", "pmc_oa"]
MEDQA_FILES = {"train": "phrases_no_exclude_train.jsonl", "test": "phrases_no_exclude_test.jsonl"}
VQA_RAD_TEST = "data/test-00000-of-00001-e5bc3d208bb4deeb.parquet"
MEDMCQA_TRAIN = "data/train-00000-of-00001.parquet"
PQA_UNLABELED = "pqa_unlabeled/train-00000-of-00001.parquet"


# ---------------------------------------------------------------- content: pure functions of (seed, source, row)

def _vocab(seed: int, n: int = 30_000) -> list[str]:
    """Pseudo-words from syllables: random texts over 30k words never share 13 words by chance."""
    rng = np.random.default_rng([seed, 7])
    syl = [c + v for c in "bcdfghklmnprstvz" for v in "aeiou"]
    picks, lens = rng.integers(0, len(syl), (n * 2, 4)).tolist(), rng.integers(2, 5, n * 2).tolist()
    words = {"".join(syl[j] for j in row[:k]) for row, k in zip(picks, lens)}
    return sorted(words)[:n]


_VOCAB: list[str] = []


def _rng(seed: int, source: str, row: int) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(source.encode()), row])


def _words(rng: np.random.Generator, median: int, sigma: float = 0.5) -> str:
    n = max(1, int(round(median * math.exp(sigma * rng.standard_normal())))) if median > 1 else median
    return " ".join(_VOCAB[i] for i in rng.integers(0, len(_VOCAB), max(n, 1)))


def texts(seed: int, source: str, row: int) -> dict:
    """The text fields of one row, in the source's shape."""
    s = SPECS.get(source) or SPECS[source.split("@")[0]]
    rng = _rng(seed, source, row + 10**9)
    out: dict = {}
    if s.q:
        out["question"] = _words(rng, s.q) + "?"
    if s.options:
        out["options"] = [_words(rng, 3, 0.4) for _ in range(s.options)]
        out["answer"] = out["options"][int(rng.integers(0, s.options))]
    elif s.a == 1:
        out["answer"] = ["yes", "no"][int(rng.integers(0, 2))] if rng.random() < 0.5 else _words(rng, 1)
    else:
        out["answer"] = _words(rng, s.a, 0.6)
    if s.kind == "pubmedqa":
        n_sections = 1 if source == "medquad" else int(rng.integers(2, 5))
        out["contexts"] = [_words(rng, 4 if source == "medquad" else 60) for _ in range(n_sections)]
        out["labels"] = ["FOCUS"] if source == "medquad" else ["BACKGROUND", "METHODS", "RESULTS", "OBJECTIVE"][
            :n_sections]
    return out


def image(seed: int, source: str, row: int, pixels: float = 1.0) -> bytes:
    """A smooth random picture (a random 12-24 cell grid, bilinear upsampled): compresses like a figure and
    has an unpredictable perceptual hash, so only planted copies fall within dedup/decontam distance."""
    from PIL import Image

    s = SPECS[source.split("@")[0]]
    rng = _rng(seed, source, row)
    side = int(np.clip(s.side * pixels * math.exp(0.3 * rng.standard_normal()), 64, 2048))
    aspect = float(rng.uniform(0.65, 1.0))
    w, h = (side, max(32, int(side * aspect))) if rng.random() < 0.6 else (max(32, int(side * aspect)), side)
    g = int(rng.integers(12, 25))
    grid = rng.integers(0, 256, (g, g) if s.gray else (g, g, 3)).astype(np.float32)
    # bilinear upsampling as two small matrix products: 10x faster than PIL's resize from a 6x6 image
    wy, wx = _lerp(h, g), _lerp(w, g)
    pix = wy @ grid @ wx.T if s.gray else np.stack([wy @ grid[..., c] @ wx.T for c in range(3)], axis=-1)
    im = Image.fromarray(np.clip(pix, 0, 255).astype(np.uint8))
    buf = io.BytesIO()
    if s.fmt == "PNG":
        im.save(buf, "PNG", compress_level=1)
    else:
        im.save(buf, "JPEG", quality=int(rng.integers(80, 96)))
    return buf.getvalue()


def _lerp(n: int, g: int) -> np.ndarray:
    """(n, g) weights that interpolate g grid values linearly onto n pixels."""
    pos = np.linspace(0, g - 1, n, dtype=np.float32)
    lo = np.minimum(pos.astype(np.int64), g - 2)
    frac = pos - lo
    out = np.zeros((n, g), np.float32)
    out[np.arange(n), lo] = 1 - frac
    out[np.arange(n), lo + 1] = frac
    return out


NEAR_MARGIN = 4  # planted near copies stay within this many pHash bits of their original (recipes allow 8-10)


def near_copy(data: bytes) -> bytes:
    """Re-encoded and resized, as a republished figure would be: 0.8x on each side at JPEG quality 70,
    else 0.9x at 85, else the same size at 90 — the first whose reference pHash (imagehash, not
    medmix's own) is within NEAR_MARGIN bits. About 1 in 600 of these smooth pictures drifts to 8
    bits at 0.8x; the margin keeps "every planted copy caught" a statement about the pipeline, not
    about where that tail lands."""
    import imagehash
    from PIL import Image

    src = Image.open(io.BytesIO(data))
    src = src.convert("RGB") if src.mode not in ("L", "RGB") else src
    ref = imagehash.phash(src)
    for f, q in ((0.8, 70), (0.9, 85), (1.0, 90)):
        im = src.resize((max(16, int(src.width * f)), max(16, int(src.height * f))), Image.BILINEAR) if f < 1 else src
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=q)
        if imagehash.phash(Image.open(io.BytesIO(buf.getvalue()))) - ref <= NEAR_MARGIN:
            break
    return buf.getvalue()


# ---------------------------------------------------------------- the plan: which rows are planted copies

@dataclass
class Plan:
    seed: int
    scale: float
    rows: dict[str, int]
    evals: dict[str, int]
    planted: dict[str, dict[int, tuple]]   # source → row → (kind, origin source, origin row | eval row)
    pixels: float = 1.0                    # factor on every source's median side (see --pixels)

    def expected(self) -> dict[str, dict]:
        """Per source: normalized rows and the ids expected in removed.parquet, by kind."""
        out: dict[str, dict] = {}
        for src, n in self.rows.items():
            dup = {row_id(src, r): row_id(*o[1:]) for r, o in self.planted[src].items() if o[0] in ("exact", "near",
                                                                                                  "text")}
            img = {row_id(src, r): eval_id(o[1], o[2]) for r, o in self.planted[src].items() if o[0] == "eval_image"}
            txt = {row_id(src, r): eval_id(o[1], o[2]) for r, o in self.planted[src].items() if o[0] == "eval_text"}
            out[src] = {"normalized": n, "duplicate": dup, "eval_image": img, "eval_text": txt}
        return out


def make_plan(seed: int, scale: float, pixels: float = 1.0) -> Plan:
    rows = {s: max(1, round(spec.rows * scale)) for s, spec in SPECS.items()}
    evals = {s: max(8, round(n * scale)) for s, n in EVAL.items()}
    rng = np.random.default_rng([seed, 1])
    planted: dict[str, dict[int, tuple]] = {s: {} for s in SPECS}
    # planted rows of a source are its last rows; originals come from the rows before them
    n_planted = {s: 0 for s in SPECS}
    want = [(k, o, t, max(1, round(share * rows[t]))) for k, o, t, share in DUPS + CONTAM]
    for _, _, t, n in want:
        n_planted[t] += n
    plain = {s: rows[s] - n_planted[s] for s in SPECS}
    if min(plain.values()) < 1:
        raise SystemExit("scale too small: a source would be all planted rows")
    free = {s: list(rng.permutation(plain[s])) for s in SPECS}
    free_eval = {s: list(rng.permutation(n)) for s, n in evals.items()}
    nxt = dict(plain)
    for kind, origin, target, n in want:
        for _ in range(n):
            if kind.startswith("eval"):
                pool = free_eval[origin]
                o = int(pool.pop()) if pool else int(rng.integers(0, evals[origin]))
            else:
                o = int(free[origin].pop())
            planted[target][nxt[target]] = (kind, origin, o)
            nxt[target] += 1
    return Plan(seed, scale, rows, evals, planted, pixels)


def row_id(source: str, row: int) -> str:
    """The id medmix gives the row (`source/native_id`; see each writer below)."""
    s = SPECS[source]
    if s.kind == "image":
        return f"{source}/{_image_name(source, row)}"
    if s.kind == "medmcqa":
        return f"{source}/mcq-{row:08d}"
    if s.kind == "pubmedqa":
        return f"{source}/pqa_unlabeled-{_pubid(source, row)}"
    return f"{source}/train-{row + 1:05d}"  # medqa: line number


def eval_id(source: str, row: int) -> str:
    """The evaluation item's id: `@eval` because the recipe also trains on that source's train split."""
    return f"{source}@eval/test-{row:05d}" if source == "vqa_rad" else f"{source}@eval/test-{row + 1:05d}"


def _image_name(source: str, row: int) -> str:
    ext = "png" if SPECS[source].fmt == "PNG" else "jpg"
    return f"img/{row // 10_000:03d}/{row:08d}.{ext}"


def _pubid(source: str, row: int) -> int:
    return (30_000_000 if source == "medquad" else 10_000_000) + row


def _eval_question(seed: int, row: int) -> dict:
    rng = _rng(seed, "medqa@eval", row)
    opts = {k: _words(rng, 3, 0.4) for k in "ABCD"}
    letter = "ABCD"[int(rng.integers(0, 4))]
    return {"question": _words(rng, 110, 0.3) + "?", "options": opts, "answer_idx": letter, "answer": opts[letter],
            "meta_info": "step1"}


def _eval_image(seed: int, row: int, pixels: float = 1.0) -> bytes:
    return image(seed, "vqa_rad@eval", row, pixels)


def row_content(plan: Plan, source: str, row: int) -> tuple[bytes | None, dict]:
    """(image bytes, text fields) of one row, planted or not."""
    p = plan.planted[source].get(row)
    if p is None:
        data = image(plan.seed, source, row, plan.pixels) if SPECS[source].kind == "image" else None
        return data, texts(plan.seed, source,
                                                                                                 row)
    kind, origin, o = p
    if kind in ("exact", "near", "text"):
        data = image(plan.seed, origin, o, plan.pixels) if SPECS[origin].kind == "image" else None
        if kind == "near":
            data = near_copy(data)
        t = texts(plan.seed, origin, o)
        if SPECS[source].kind == "medqa" and "options" in t:
            pass  # medmcqa → medqa: both are four-option MCQA
        return data, t
    own = texts(plan.seed, source, row)
    if kind == "eval_image":
        return near_copy(_eval_image(plan.seed, o, plan.pixels)), own
    q = _eval_question(plan.seed, o)["question"]
    own["question"] = "Case: " + q  # the whole evaluation vignette pasted into a training question
    return (image(plan.seed, source, row, plan.pixels) if SPECS[source].kind == "image" else None), own


# ---------------------------------------------------------------- writers

def _write_images(args: tuple) -> list[dict]:
    """One chunk of an image source: writes the files, returns their metadata rows (in a worker)."""
    plan, source, folder, lo, hi = args
    _init_vocab(plan.seed)
    s = SPECS[source]
    meta = []
    for r in range(lo, hi):
        data, t = row_content(plan, source, r)
        name = _image_name(source, r)
        path = Path(folder) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        meta.append({"file_name": name, "question": t.get("question", ""),
                     "answer": t["answer"], "options": json.dumps(t["options"]) if "options" in t else "",
                     "task": s.task})
    return meta


def _text_chunk(args: tuple) -> list[dict]:
    plan, source, lo, hi = args
    _init_vocab(plan.seed)
    return [row_content(plan, source, r)[1] for r in range(lo, hi)]


def _init_vocab(seed: int) -> None:
    if not _VOCAB:
        _VOCAB.extend(_vocab(seed))


def generate(plan: Plan, root: Path, workers: int) -> dict[str, Path]:
    """Writes every source's upstream under `root`; returns source → folder."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    _init_vocab(plan.seed)
    folders = {s: root / s for s in SPECS}
    chunk = 250  # small jobs keep every generator process busy at tiny scales too
    with Pool(workers, initializer=_init_vocab, initargs=(plan.seed,)) as pool:
        for source, s in SPECS.items():
            folder = folders[source]
            folder.mkdir(parents=True, exist_ok=True)
            n = plan.rows[source]
            if s.kind == "image":
                jobs = [(plan, source, str(folder), lo, min(n, lo + chunk)) for lo in range(0, n, chunk)]
                meta = [m for part in pool.imap(_write_images, jobs) for m in part]
                with open(folder / "metadata.csv", "w", newline="", encoding="utf-8") as f:
                    w = csv.DictWriter(f, fieldnames=list(meta[0]))
                    w.writeheader()
                    w.writerows(meta)
                continue
            rows = [t for part in pool.imap(_text_chunk, [(plan, source, lo, min(n, lo + chunk))
                                                          for lo in range(0, n, chunk)]) for t in part]
            if s.kind == "medmcqa":
                table = pa.table({
                    "id": [f"mcq-{i:08d}" for i in range(n)], "question": [t["question"] for t in rows],
                    **{c: [t["options"][k] for t in rows] for k, c in enumerate(("opa", "opb", "opc", "opd"))},
                    "cop": pa.array([t["options"].index(t["answer"]) for t in rows], pa.int64()),
                    "choice_type": ["single"] * n, "exp": [""] * n, "subject_name": ["Anatomy"] * n,
                    "topic_name": [None] * n})
                (folder / "data").mkdir(exist_ok=True)
                pq.write_table(table, folder / MEDMCQA_TRAIN)
            elif s.kind == "pubmedqa":
                table = pa.table({
                    "pubid": pa.array([_pubid(source, i) for i in range(n)], pa.int32()),
                    "question": [t["question"] for t in rows],
                    "context": [{"contexts": t["contexts"], "labels": t["labels"], "meshes": ["Humans"]}
                                for t in rows],
                    "long_answer": [t["answer"] for t in rows]})
                (folder / "pqa_unlabeled").mkdir(exist_ok=True)
                pq.write_table(table, folder / PQA_UNLABELED)
            else:  # medqa: JSON lines, options A-D
                with open(folder / MEDQA_FILES["train"], "w", encoding="utf-8") as f:
                    for t in rows:
                        opts = dict(zip("ABCD", t["options"]))
                        letter = "ABCD"[t["options"].index(t["answer"])]
                        f.write(json.dumps({"question": t["question"], "answer": t["answer"], "options": opts,
                                            "meta_info": "step1", "answer_idx": letter}) + "\n")
    # evaluation splits, beside the training files of the same source (medmix reads both from one folder)
    with open(folders["medqa"] / MEDQA_FILES["test"], "w", encoding="utf-8") as f:
        for i in range(plan.evals["medqa"]):
            f.write(json.dumps(_eval_question(plan.seed, i)) + "\n")
    n = plan.evals["vqa_rad"]
    table = pa.table({"image": [{"bytes": _eval_image(plan.seed, i, plan.pixels), "path": None} for i in range(n)],
                      "question": [texts(plan.seed, "vqa_rad@eval", i)["question"] for i in range(n)],
                      "answer": [texts(plan.seed, "vqa_rad@eval", i)["answer"] for i in range(n)]})
    (folders["vqa_rad"] / "data").mkdir(exist_ok=True)
    pq.write_table(table, folders["vqa_rad"] / VQA_RAD_TEST)
    return folders


def recipe_yaml(plan: Plan, folders: dict[str, Path], weights: dict[str, float] | None = None) -> str:
    target = round(TARGET * plan.scale)
    lines = ["name: rehearsal-openmedq", "description: synthetic upstream shaped like openmedq-3.35m (benchmarks/"
             "rehearsal.py)", "seed: 0", f"target_samples: {target}", "shard_rows: 2000",
             "image: {max_side: 1024, encode: keep, burned_in_text: 'off'}",
             "dedup: {exact: true, image_distance: 8, text_threshold: 0.9, images: shared, "
             f"priority: [{', '.join(PRIORITY)}]}}",
             "decontaminate: {against: [vqa_rad:test, medqa:test], image_distance: 10, ngram: 13}", "sources:"]
    for source, s in SPECS.items():
        mode = "weight: 1.0" if source == "pubmedvision" else "all: true"
        if weights and source in weights:
            mode = f"weight: {weights[source]}"
        frm = f"from: '{folders[source]}'"
        if s.kind == "image":
            lines.append(f"  {source}: {{adapter: local, {frm}, splits: [train], {mode}, options: {{domain: "
                         f"{s.domain}, task: {s.task}, license: CC-BY-4.0}}}}")
        elif s.kind == "pubmedqa":
            lines.append(f"  {source}: {{adapter: pubmedqa, {frm}, splits: [pqa_unlabeled], {mode}}}")
        else:
            lines.append(f"  {source}: {{{frm}, splits: [train], {mode}}}")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- measuring the build

def _du(path: Path) -> int:
    total = 0
    for folder, _dirs, names in os.walk(path):
        for name in names:
            try:
                total += os.lstat(os.path.join(folder, name)).st_blocks * 512
            except OSError:
                pass
    return total


class Watch:
    """Polls the build's process tree: driver RSS and each worker's RSS, attributed to the stage the
    build's --timings file says is running; disk use of cache and output at each stage change."""

    def __init__(self, pid: int, timings: Path, cache: Path, out: Path, every: float = 0.1) -> None:
        import psutil

        self.proc = psutil.Process(pid)
        self.timings, self.cache, self.out, self.every = timings, cache, out, every
        self.stages: dict[str, dict] = {}
        self.order: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _stage(self) -> str | None:
        try:
            lines = self.timings.read_text().splitlines()
        except FileNotFoundError:
            return None
        starts = [json.loads(x) for x in lines if x.strip()]
        starts = [e for e in starts if e.get("event") == "start"]
        return starts[-1]["stage"] if starts else None

    def _run(self) -> None:
        import psutil

        last = None
        while not self._stop.is_set():
            stage = self._stage() or "setup"
            if stage != last:
                if last is not None:
                    self._disk(last)
                if stage not in self.stages:
                    self.stages[stage] = {"driver_peak_rss": 0, "worker_peak_rss": 0, "workers_peak_rss_sum": 0}
                    self.order.append(stage)
                last = stage
            try:
                drv = self.proc.memory_info().rss
                kids = [c.memory_info().rss for c in self.proc.children(recursive=True)]
            except psutil.Error:
                kids, drv = [], 0
            st = self.stages[stage]
            st["driver_peak_rss"] = max(st["driver_peak_rss"], drv)
            st["worker_peak_rss"] = max(st["worker_peak_rss"], max(kids, default=0))
            st["workers_peak_rss_sum"] = max(st["workers_peak_rss_sum"], sum(kids))
            self._stop.wait(self.every)
        if last is not None:
            self._disk(last)

    def _disk(self, stage: str) -> None:
        self.stages[stage]["cache_bytes"] = _du(self.cache)
        self.stages[stage]["out_bytes"] = _du(self.out)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def medmix_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "medmix.cli", *args]


def run_build(recipe: Path, out: Path, cache: Path, workers: int, timings: Path) -> dict:
    cmd = medmix_cmd("build", "--recipe", str(recipe), "--out", str(out), "--cache", str(cache),
                     "--workers", str(workers), "--timings", str(timings))
    t0, t0_unix = time.perf_counter(), time.time()
    log_path = out.parent / ("build.log" if out.name == "out" else f"build-{out.name}.log")
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        watch = Watch(proc.pid, timings, cache, out)
        watch.start()
        rc = proc.wait()
        watch.stop()
    wall = time.perf_counter() - t0
    if rc != 0:
        raise SystemExit(f"medmix build failed (rc {rc}):\n" + log_path.read_text()[-4000:])
    events = [json.loads(x) for x in timings.read_text().splitlines() if x.strip()]
    seconds = {e["stage"]: e["seconds"] for e in events if e["event"] == "end"}
    first = next((e["unix"] for e in events if e["event"] == "start"), None)
    if first is not None:  # interpreter start, imports, recipe and plan checks
        seconds["setup"] = round(first - t0_unix, 3)
    last = max((e["unix"] for e in events), default=None)
    if last is not None and "finish" in seconds:  # after the last stage: summary table, exit
        seconds["exit"] = round(t0_unix + wall - last, 3)
    # the stage order comes from the build's own start events: the watch polls every 0.1 s and
    # misses a stage shorter than that (a gather of one small shard), which then has no memory figures
    started = [e["stage"] for e in events if e["event"] == "start"]
    order = ["setup"] if "setup" in watch.stages else []
    order += [s for s in dict.fromkeys(started) if s != "setup"]
    unseen = {"driver_peak_rss": None, "worker_peak_rss": None, "workers_peak_rss_sum": None}
    stages = []
    for name in order:
        m = watch.stages.get(name, unseen)
        stages.append({"stage": name, "seconds": seconds.get(name), **m})
    if "exit" in seconds:
        stages.append({"stage": "exit", "seconds": seconds["exit"], "driver_peak_rss": None,
                       "worker_peak_rss": None, "workers_peak_rss_sum": None})
    return {"wall_seconds": round(wall, 2), "stages": stages}


# ---------------------------------------------------------------- verification

def verify(plan: Plan, out: Path) -> dict:
    """Every check as name → (ok, detail)."""
    import polars as pl
    import pyarrow.parquet as pq

    checks: dict[str, dict] = {}

    def check(name: str, ok: bool, detail) -> None:
        checks[name] = {"ok": bool(ok), "detail": detail}

    manifest = json.loads((out / "manifest.json").read_text())
    exp = plan.expected()
    removed = pq.read_table(out / manifest["removed"]["path"], columns=["id", "kind", "other"]).to_pylist()
    got = {k: {r["id"]: r["other"] for r in removed if r["kind"] == k} for k in ("duplicate", "eval_image",
                                                                                 "eval_text")}
    other_kinds = sorted({r["kind"] for r in removed} - set(got))
    want = {k: {i: o for e in exp.values() for i, o in e[k].items()} for k in got}
    for k in got:
        missed = sorted(set(want[k]) - set(got[k]))
        extra = sorted(set(got[k]) - set(want[k]))
        wrong = sorted(i for i in set(want[k]) & set(got[k]) if got[k][i] != want[k][i])
        check(f"planted {k} all caught", not missed, {"planted": len(want[k]), "missed": missed[:10]})
        check(f"nothing distinct removed as {k}", not extra, {"removed": len(got[k]), "unplanted": extra[:10]})
        check(f"{k}: matched the planted original", not wrong, {"wrong": wrong[:10]})
    check("no other removal kinds", not other_kinds, other_kinds)
    counts = {s: manifest["sources"][s]["counts"] for s in SPECS}
    bad = {s: (counts[s]["normalized"], exp[s]["normalized"]) for s in SPECS
           if counts[s]["normalized"] != exp[s]["normalized"] or counts[s]["quarantined"]}
    check("normalized rows per source exact, none quarantined", not bad, bad)
    bad = {s: (counts[s]["duplicates"], len(exp[s]["duplicate"]), counts[s]["contaminated"],
               len(exp[s]["eval_image"]) + len(exp[s]["eval_text"])) for s in SPECS
           if counts[s]["duplicates"] != len(exp[s]["duplicate"])
           or counts[s]["contaminated"] != len(exp[s]["eval_image"]) + len(exp[s]["eval_text"])}
    check("manifest duplicate/contaminated counts per source", not bad, bad)
    target = round(TARGET * plan.scale)
    fixed = {s: counts[s]["available"] for s in SPECS if s != "pubmedvision"}
    bad = {s: (counts[s]["selected"], counts[s]["available"]) for s in fixed
           if counts[s]["selected"] != counts[s]["available"]}
    pmv = counts["pubmedvision"]["selected"]
    check("all-sources taken whole; pubmedvision fills target", not bad and pmv == target - sum(fixed.values())
          and manifest["total_rows"] == target, {"unequal": bad, "pubmedvision": pmv, "total": manifest["total_rows"],
                                                 "target": target})
    files = [str(out / s["path"]) for s in manifest["shards"]]
    df = pl.read_parquet(files, columns=["id", "source"])
    check("polars reads every shard", df.height == manifest["total_rows"] and df["id"].n_unique() == df.height,
          {"rows": df.height, "distinct_ids": df["id"].n_unique()})
    import datasets

    ds = datasets.load_dataset("parquet", data_files=files, split="train",
                               cache_dir=str(out.parent / "hf-cache"))
    img = next((r["image"] for r in ds.select(range(min(50, len(ds)))) if r["image"] is not None), None)
    n_ds = len(ds)
    del ds
    shutil.rmtree(out.parent / "hf-cache", ignore_errors=True)  # a full copy of the shards: not kept at 3.35M
    check("datasets reads every shard, images decode", n_ds == manifest["total_rows"] and img is not None
          and img.size[0] > 0, {"rows": n_ds})
    res = subprocess.run(medmix_cmd("stats", str(out), "--json"), capture_output=True, text=True)
    stats = json.loads(res.stdout) if res.stdout.strip() else {}
    by_source = (stats.get("rows") or {}).get("by_source", {})
    want_sel = {s: c["selected"] for s, c in counts.items() if c["selected"]}
    check("medmix stats counts equal the manifest's", res.returncode == 0 and by_source == want_sel
          and stats["rows"]["total"] == manifest["total_rows"], {"rc": res.returncode, "stats": by_source,
                                                                  "manifest": want_sel})
    return checks


# ---------------------------------------------------------------- report

def _mib(n: int | None) -> str:
    return "-" if n is None else f"{n / 2**20:,.0f}"


def table(result: dict) -> str:
    lines = ["| stage | seconds | driver peak RSS MiB | worker peak RSS MiB | workers sum MiB | cache MiB | out MiB |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for s in result["build"]["stages"]:
        secs = "-" if s["seconds"] is None else f"{s['seconds']:.1f}"
        lines.append(f"| {s['stage']} | {secs} | {_mib(s['driver_peak_rss'])} | {_mib(s['worker_peak_rss'])} | "
                     f"{_mib(s['workers_peak_rss_sum'])} | {_mib(s.get('cache_bytes'))} | "
                     f"{_mib(s.get('out_bytes'))} |")
    return "\n".join(lines)


# ---------------------------------------------------------------- re-running

REWEIGHT = "quilt1m"   # the one source whose weight the second build changes (all rows -> weight 0.5)
RETOUCH = "rocov2"     # the one source whose upstream the third build changes (one image re-encoded)
RETOUCH_SAVED = "retouched-original.json"


def _units(cache: Path) -> set[str]:
    return {p.relative_to(cache).as_posix() for p in (cache / "normalized").glob("*/*.parquet")
            if not p.name.endswith(".quarantine.parquet")}


def rebuilds(plan: Plan, work: Path, folders: dict[str, Path], workers: int) -> tuple[dict, dict]:
    """Two more builds on the same cache, each into its own output: one source's weight changed
    (nothing may be normalized again: only the mix and write stages run), then one upstream image
    of one source re-encoded (only that source's units may be normalized again)."""
    cache = work / "cache"
    out: dict = {}
    checks: dict[str, dict] = {}
    before = _units(cache)
    recipe = work / "reweighted.yaml"
    recipe.write_text(recipe_yaml(plan, folders, weights={REWEIGHT: 0.5}))
    out["weight"] = run_build(recipe, work / "out-weight", cache, workers, work / "timings-weight.jsonl")
    m = json.loads((work / "out-weight" / "manifest.json").read_text())
    norm = out["weight"]["normalize"] = m["build_info"]["normalize"]
    new = _units(cache) - before
    checks["weight change re-normalizes nothing"] = {
        "ok": norm["reused"] == norm["units"] and not new, "detail": f"{norm}, new unit files {sorted(new)[:5]}"}
    sel = m["sources"][REWEIGHT]["counts"]
    checks["weight change reaches the selection"] = {
        "ok": sel["selected"] < sel["available"], "detail": f"{REWEIGHT}: {sel}"}
    shutil.rmtree(work / "out-weight")  # checked; at full scale the disk holds one rebuild's output at a time

    img = sorted((folders[RETOUCH] / "img").rglob("*.jpg"))[0]
    from PIL import Image

    # the original bytes are kept, so --keep-upstream can give the next run the upstream it planned
    (work / "upstream" / RETOUCH_SAVED).write_text(json.dumps({"path": str(img), "bytes": img.read_bytes().hex()}))
    with Image.open(img) as im:
        buf = io.BytesIO()
        im.convert("RGB").save(buf, "JPEG", quality=60)
    img.write_bytes(buf.getvalue())
    before = _units(cache)
    out["upstream"] = run_build(work / "rehearsal.yaml", work / "out-upstream", cache, workers,
                                work / "timings-upstream.jsonl")
    m = json.loads((work / "out-upstream" / "manifest.json").read_text())
    norm = out["upstream"]["normalize"] = m["build_info"]["normalize"]
    new = _units(cache) - before
    checks["one changed upstream file re-normalizes only its source"] = {
        "ok": bool(new) and all(u.split("/")[1] == RETOUCH for u in new)
        and norm["units"] - norm["reused"] == len(new), "detail": f"{norm}, new unit files {sorted(new)}"}
    shutil.rmtree(work / "out-upstream" / "data")  # checked; at full scale it filled the disk of the run after
    return out, checks


STAMP = "rehearsal-plan.json"  # beside the source folders, so no source's fingerprint sees it


def _stamp(work: Path) -> dict | None:
    try:
        return json.loads((work / "upstream" / STAMP).read_text())
    except (OSError, ValueError):
        return None


def _clear(work: Path, keep_upstream: bool) -> None:
    """Empty `work`, keeping its upstream when asked; a file a rebuild re-encoded gets its bytes back."""
    if keep_upstream:
        for name in os.listdir(work):
            if name != "upstream":
                path = work / name
                shutil.rmtree(path) if path.is_dir() else path.unlink()
        saved = work / "upstream" / RETOUCH_SAVED
        if saved.exists():
            record = json.loads(saved.read_text())
            Path(record["path"]).write_bytes(bytes.fromhex(record["bytes"]))
            saved.unlink()
        return
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scale", type=float, default=0.01, help="share of each source's declared rows (0.1: a tenth)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--pixels", type=float, default=1.0, help="factor on every source's median image side "
                    "(0.3: ~150 px, ~4 KB JPEGs; lets the full 3.35M run's three image copies fit on one disk)")
    ap.add_argument("--workers", type=int, default=2, help="generator processes and `medmix build --workers`")
    ap.add_argument("--dir", type=Path, help="work folder (default: a temporary one, removed after)")
    ap.add_argument("--json", type=Path, help="write the summary JSON here ('-': stdout)")
    ap.add_argument("--keep-upstream", action="store_true", help="reuse the upstream already in --dir when it was "
                    "generated with the same --seed, --scale and --pixels (the full one takes ~24 min); "
                    "everything else in --dir is removed")
    ap.add_argument("--rebuilds", action="store_true", help="then two more builds on the same cache: one "
                    "source's weight changed, then one upstream file changed; each timed and checked")
    args = ap.parse_args(argv)

    tmp = None
    if args.dir is None:
        tmp = tempfile.mkdtemp(prefix="medmix-rehearsal-")
        work = Path(tmp)
    else:
        work = args.dir
    stamp = {"seed": args.seed, "scale": args.scale, "pixels": args.pixels}
    reuse = args.keep_upstream and tmp is None and _stamp(work) == stamp
    if tmp is None:
        _clear(work, keep_upstream=reuse)
    try:
        t0 = time.perf_counter()
        plan = make_plan(args.seed, args.scale, args.pixels)
        if reuse:
            folders = {s: work / "upstream" / s for s in SPECS}
        else:
            folders = generate(plan, work / "upstream", args.workers)
            (work / "upstream" / STAMP).write_text(json.dumps(stamp))
        gen = time.perf_counter() - t0
        recipe = work / "rehearsal.yaml"
        recipe.write_text(recipe_yaml(plan, folders))
        build = run_build(recipe, work / "out", work / "cache", args.workers, work / "timings.jsonl")
        t1 = time.perf_counter()
        checks = verify(plan, work / "out")
        verified = time.perf_counter() - t1
        again = None
        if args.rebuilds:
            # checked: at --scale 1 the disk holds one build's shards plus one spill, not three builds'
            shutil.rmtree(work / "out" / "data", ignore_errors=True)
            again, more = rebuilds(plan, work, folders, args.workers)
            checks.update(more)
        result = {
            "scale": args.scale, "pixels": args.pixels, "seed": args.seed, "workers": args.workers,
            "cpus": os.cpu_count(),
            "loadavg": os.getloadavg(), "rows": plan.rows, "eval_rows": plan.evals,
            "upstream_rows": sum(plan.rows.values()), "target_samples": round(TARGET * args.scale),
            "planted": {k: sum(1 for p in plan.planted.values() for o in p.values() if o[0] == k)
                        for k in ("exact", "near", "text", "eval_image", "eval_text")},
            "upstream_bytes": _du(work / "upstream"), "upstream_reused": reuse, "generate_seconds": round(gen, 2),
            "build": build,
            "verify_seconds": round(verified, 2), "rebuilds": again, "checks": checks,
            "passed": all(c["ok"] for c in checks.values()),
        }
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"rehearsal --scale {args.scale}: {result['upstream_rows']:,} upstream rows "
          f"({result['upstream_bytes'] / 2**20:,.0f} MiB) "
          + ("reused from --dir; " if reuse else f"generated in {gen:.1f} s; ")
          + f"build {build['wall_seconds']:.1f} s with {args.workers} workers")
    print(table(result))
    for key, what in (("weight", f"{REWEIGHT} weight changed"), ("upstream", f"one {RETOUCH} image re-encoded")):
        if result["rebuilds"]:
            r = result["rebuilds"][key]
            stages = ", ".join(f"{s['stage']} {s['seconds']}" for s in r["stages"] if s["seconds"] is not None)
            print(f"rebuild, {what}: {r['wall_seconds']:.1f} s ({stages}); normalize {r['normalize']}")
    for name, c in checks.items():
        print(f"{'ok  ' if c['ok'] else 'FAIL'} {name}" + ("" if c["ok"] else f": {c['detail']}"))
    if args.json is not None:
        text = json.dumps(result, indent=2, default=str)
        if str(args.json) == "-":
            print(text)
        else:
            args.json.write_text(text + "\n")
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
