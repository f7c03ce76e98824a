"""Scale benchmark for medmix.mix.dedup and medmix.mix.textsim, at the size of the OpenMedQ mixture.

    python benchmarks/dedup_scale.py                  # every part, each in a fresh process
    python benchmarks/dedup_scale.py --part images    # 3.35M pHashes, planted near pairs
    python benchmarks/dedup_scale.py --part text      # 200k QA texts, planted near-duplicates
    python benchmarks/dedup_scale.py --part thresholds  # real-image distance distributions

Each part prints time (wall and CPU: the CPU figure is the one to compare on a shared machine),
peak RSS of its own process, recall of what was planted, and a reference to read it against:
for images the numpy sort of the same array (the floor of any sort-based search) and brute
force extrapolated from a sample; for text datasketch extrapolated from a sample.
"""

from __future__ import annotations

import argparse
import math
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "mix"))  # test_dedup (the real-image corpus) lives there

N_IMAGES = 3_350_000
N_PLANTED = 10_000
N_TEXTS = 200_000
N_TEXT_DUPS = 10_000


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


class Timer:
    def __enter__(self) -> Timer:  # noqa: PYI034 (typing.Self needs 3.11; the package supports 3.10)
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu

    def __str__(self) -> str:
        return f"{self.wall:7.2f} s wall {self.cpu:7.2f} s CPU"


def row(label: str, value: str) -> None:
    print(f"  {label:44s} {value}")


# ---------------------------------------------------------------------------------------------


PAIRS_ONLY = False


def part_images(seed: int = 0) -> None:
    from medmix.mix import dedup

    d = dedup.DEFAULT_IMAGE_DISTANCE
    rng = np.random.default_rng(seed)
    hashes = rng.integers(0, 2**64, size=N_IMAGES, dtype=np.uint64)
    # plant near copies at distances 1..d over the first rows
    src = rng.choice(N_IMAGES - N_PLANTED, size=N_PLANTED, replace=False)
    dst = np.arange(N_IMAGES - N_PLANTED, N_IMAGES)
    dist = 1 + np.arange(N_PLANTED) % d
    for k, (s, t) in enumerate(zip(src, dst)):
        bits = rng.choice(64, size=int(dist[k]), replace=False)
        hashes[t] = hashes[s] ^ np.uint64(sum(1 << int(b) for b in bits))
    print(f"images: {N_IMAGES:,} random 64-bit hashes, {N_PLANTED:,} planted copies at distance 1..{d}")
    rss0 = peak_rss_mib()

    n_unique = len(np.unique(hashes))
    plan, (kind, k) = dedup._plan(d, n_unique, n_unique * (n_unique - 1) / 2, "auto")
    with Timer() as t_design:
        design = dedup._design_masks(d, kind, k) if plan == "tables" else ()
    bits = {"nibble": 4, "crumb": 2}.get(kind, 0) * k
    with Timer() as t_pairs:
        pairs = dedup.near_pairs(hashes, d)
    found = {(int(a), int(b)) for a, b in pairs}
    planted = {(int(min(s, t)), int(max(s, t))) for s, t in zip(src, dst)}
    recall = len(planted & found) / len(planted)
    exact = np.bitwise_count(hashes[pairs[:, 0]] ^ hashes[pairs[:, 1]]) <= d
    n_pairs_all = N_IMAGES * (N_IMAGES - 1) / 2
    p_chance = sum(math.comb(64, k) for k in range(d + 1)) / 2.0**64
    if PAIRS_ONLY:  # --pairs-only: the search alone (image_clusters repeats it, near_match is another)
        row(f"plan for d={d}", f"{plan}: {len(design)} tables of {k}-{kind} ({bits}-bit) keys "
                               f"(design built and checked in {t_design.cpu:.2f} s CPU)")
        row("near_pairs", str(t_pairs))
        row("pairs found / all within distance", f"{len(pairs):,} / {int(exact.sum()):,} verified")
        row("chance pairs expected (uniform hashes)", f"{n_pairs_all * p_chance:,.0f}")
        row("recall of planted pairs", f"{recall:.4f} ({len(planted & found):,}/{len(planted):,})")
        row("peak RSS", f"{peak_rss_mib():.0f} MiB (process start {rss0:.0f} MiB)")
        return
    with Timer() as t_clusters:
        labels = dedup.image_clusters(hashes, d)
    peak = peak_rss_mib()
    # decontamination shape: 10k evaluation images against all 3.35M training rows
    eval_idx = rng.choice(N_IMAGES, size=min(10_000, N_IMAGES // 2), replace=False)
    eval_hashes = hashes[eval_idx].copy()
    eval_hashes[::2] ^= np.uint64(0b1011)  # half are edited copies (distance 3) of training rows
    with Timer() as t_match:
        hit = dedup.near_match(eval_hashes, hashes, d)
    flagged = np.zeros(N_IMAGES, dtype=bool)
    flagged[eval_idx] = True
    match_recall = float((hit[flagged] >= 0).mean())

    with Timer() as t_sort:
        np.sort(hashes)
    sample = hashes[:20_000]
    with Timer() as t_brute:
        dedup._brute_self_pairs(np.unique(sample), d)
    brute_rate = (len(sample) ** 2 / 2) / t_brute.cpu

    row(f"plan for d={d}", f"{plan}: {len(design)} tables of {k}-{kind} ({bits}-bit) keys "
                           f"(design built and checked in {t_design.cpu:.2f} s CPU)")
    row("near_pairs", str(t_pairs))
    row("  per table", f"{1000 * t_pairs.cpu / max(1, len(design)):.0f} ms CPU")
    row("image_clusters (same search + components)", str(t_clusters))
    row("pairs found / all within distance", f"{len(pairs):,} / {int(exact.sum()):,} verified")
    row("chance pairs expected (uniform hashes)", f"{n_pairs_all * p_chance:,.0f}")
    row("recall of planted pairs", f"{recall:.4f} ({len(planted & found):,}/{len(planted):,})")
    row("clusters", f"{len(np.unique(labels)):,}")
    row("peak RSS", f"{peak:.0f} MiB (process start {rss0:.0f} MiB)")
    row(f"near_match: {len(eval_hashes):,} eval vs {N_IMAGES:,} rows", f"{t_match}, recall {match_recall:.4f} of "
        "the eval images' own rows")
    print("  reference:")
    row(f"np.sort of the {N_IMAGES:,} hashes (floor of one table)", f"{t_sort.cpu:.3f} s CPU -> near_pairs = "
        f"{t_pairs.cpu / t_sort.cpu:.0f} sorts = {t_pairs.cpu / t_sort.cpu / max(1, len(design)):.1f} per table")
    if kind == "crumb":  # the engine the plan chose before the compiled loops, on the same distinct hashes
        with Timer() as t_nibble:
            dedup._table_self_pairs(np.unique(hashes), d, 5)
        row(f"nibble engine, {len(dedup._design(d, 5))} tables of 20-bit keys", f"{t_nibble} -> near_pairs "
            f"{t_nibble.wall / t_pairs.wall:.2f}x faster wall, {t_nibble.cpu / t_pairs.cpu:.2f}x CPU")
    row("brute force all pairs (20k sample)", f"{brute_rate:.3g} pairs/s CPU")
    row(f"  extrapolated to {N_IMAGES:,} ({n_pairs_all:.2g} pairs)", f"{n_pairs_all / brute_rate / 3600:.1f} h CPU -> "
        f"{n_pairs_all / brute_rate / t_pairs.cpu:.0f}x slower than near_pairs")


# ---------------------------------------------------------------------------------------------

_WORDS = [
    "patient", "presents", "with", "fever", "cough", "chest", "pain", "dyspnea", "history", "hypertension",
    "diabetes", "mellitus", "smoker", "weight", "loss", "night", "sweats", "haemoptysis", "jaundice", "pruritus",
    "ascites", "oedema", "syncope", "palpitations", "headache", "vomiting", "diarrhoea", "rash", "arthralgia",
    "fatigue", "pallor", "anaemia", "lymphadenopathy", "splenomegaly", "hepatomegaly", "murmur", "crackles",
    "wheeze", "tachycardia", "hypotension", "confusion", "seizure", "weakness", "numbness", "biopsy", "shows",
    "granulomas", "necrosis", "atypia", "mitoses", "dysplasia", "fibrosis", "inflammation", "infiltrate",
    "eosinophils", "neutrophils", "lymphocytes", "plasma", "cells", "macrophages", "giant", "cells", "keratin",
    "mucin", "amyloid", "serum", "sodium", "potassium", "calcium", "creatinine", "bilirubin", "albumin",
    "troponin", "lactate", "glucose", "ferritin", "radiograph", "ultrasound", "tomography", "resonance",
    "opacity", "consolidation", "effusion", "nodule", "mass", "cavity", "left", "right", "upper", "lower", "lobe",
    "kidney", "liver", "spleen", "pancreas", "colon", "stomach", "brain", "heart", "lung", "skin", "bone",
    "marrow", "thyroid", "adrenal", "prostate", "breast", "ovary", "uterus", "bladder", "artery", "vein", "nerve",
    "muscle"
]
_QUESTIONS = ("Which of the following is the most likely diagnosis?", "What is the next best step in management?",
              "Which investigation is most appropriate?", "What is the most likely underlying mechanism?",
              "Which drug is the treatment of choice?", "What is the most likely complication?")


def generate_texts(n: int, n_dups: int, seed: int = 0) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Medical-MCQ-like rows (vignette, question, 4 options) and planted near-duplicates.

    Returns (texts built with qa_text as the pipeline does, planted source rows, planted copy rows).
    Copies are: options reordered, one vignette word swapped, or case/spacing/punctuation noise.
    """
    from medmix.mix.textsim import qa_text

    rng = np.random.default_rng(seed)
    words = np.array(_WORDS)
    rows = []
    for _ in range(n - n_dups):
        age = int(rng.integers(1, 95))
        vignette = f"A {age}-year-old {'man' if rng.random() < 0.5 else 'woman'} " + " ".join(
            rng.choice(words, int(rng.integers(18, 45)))) + "."
        question = vignette + " " + _QUESTIONS[int(rng.integers(len(_QUESTIONS)))]
        options = [" ".join(rng.choice(words, int(rng.integers(1, 4)))) for _ in range(4)]
        rows.append((question, options, options[int(rng.integers(4))]))
    src = rng.choice(n - n_dups, size=n_dups, replace=False)
    for k, s in enumerate(src):
        q, opts, ans = rows[s]
        kind = k % 3
        if kind == 0:
            opts = list(opts[::-1])
        elif kind == 1:
            toks = q.split()
            toks[2 + int(rng.integers(len(toks) - 12))] = str(rng.choice(words))
            q = " ".join(toks)
        else:
            q = q.upper().replace(" ", "  ").replace(".", " ;")
        rows.append((q, opts, ans))
    texts = [qa_text(q, o, a) for q, o, a in rows]
    return texts, src, np.arange(n - n_dups, n)


def part_text(seed: int = 0) -> None:
    from medmix.mix import textsim

    texts, src, dst = generate_texts(N_TEXTS, N_TEXT_DUPS, seed)
    avg_chars = sum(map(len, texts)) / len(texts)
    bands_n, rows_n = textsim.lsh_params()
    print(f"text: {N_TEXTS:,} MCQ-like texts (avg {avg_chars:.0f} chars), {N_TEXT_DUPS:,} planted near-duplicates; "
          f"threshold {textsim.DEFAULT_THRESHOLD}, {textsim.DEFAULT_NUM_PERM} permutations = "
          f"{bands_n} bands x {rows_n} rows")
    rss0 = peak_rss_mib()
    bands_parts, sketch_parts = [], []
    with Timer() as t_bands:
        for i in range(0, len(texts), 20_000):  # what the pipeline does per shard
            sig = textsim.minhash_signatures(texts[i:i + 20_000])
            bands_parts.append(textsim.bands_from_signatures(sig, bands_n, rows_n))
            sketch_parts.append(textsim.sketch_from_signatures(sig))
    bands, sketch = np.concatenate(bands_parts), np.concatenate(sketch_parts)
    with Timer() as t_plain:
        plain = textsim.clusters_from_bands(bands)
    with Timer() as t_verified:
        labels = textsim.clusters_from_bands(bands, sketch)
    peak = peak_rss_mib()
    kinds = np.arange(N_TEXT_DUPS) % 3
    js = [textsim.jaccard(texts[s], texts[t]) for s, t in zip(src[:3000], dst[:3000])]

    row("signatures + band keys + sketches (20k batches)", str(t_bands))
    row("  per text", f"{1e6 * t_bands.cpu / N_TEXTS:.0f} us CPU")
    row("kept per row for the corpus",
        f"bands {bands.nbytes / N_TEXTS:.0f} B + sketch {sketch.nbytes / N_TEXTS:.0f} B "
        f"= {(bands.nbytes + sketch.nbytes) / 2**20:.0f} MiB")
    row("  Jaccard of planted pairs (3k sample)", f"min {min(js):.3f} median {np.median(js):.3f}")
    for name, lab, t in (("clusters_from_bands (LSH only)", plain, t_plain),
                         ("clusters_from_bands (+ sketch check)", labels, t_verified)):
        recall = float((lab[src] == lab[dst]).mean())
        originals = lab[: N_TEXTS - N_TEXT_DUPS]
        values, counts = np.unique(originals, return_counts=True)
        merged_j = []  # how similar are the distinct texts that got merged?
        for v in values[counts > 1][:200]:
            members = np.flatnonzero(originals == v)
            merged_j.append(textsim.jaccard(texts[members[0]], texts[members[1]]))
        row(name, str(t))
        row("  recall of planted near-duplicates", f"{recall:.4f}  (" + ", ".join(
            f"{kind} {float((lab[src] == lab[dst])[kinds == i].mean()):.4f}"
            for i, kind in enumerate(("reordered", "one word", "formatting"))) + ")")
        row("  distinct texts merged with another", f"{int(counts[counts > 1].sum()):,} of {N_TEXTS - N_TEXT_DUPS:,}"
            + (f", Jaccard {min(merged_j):.2f}-{max(merged_j):.2f}" if merged_j else ""))
    row("peak RSS", f"{peak:.0f} MiB (process start {rss0:.0f} MiB, the texts themselves)")
    print("  reference:")
    try:
        from datasketch import MinHash
    except ImportError:  # pragma: no cover
        row("datasketch", "not installed")
        return
    sample = texts[:2000]
    with Timer() as t_ds:
        for s in sample:
            raw = s.encode()
            m = MinHash(num_perm=textsim.DEFAULT_NUM_PERM, seed=textsim.DEFAULT_SEED)
            m.update_batch([raw[i:i + 5] for i in range(max(1, len(raw) - 4))])
    per = t_ds.cpu / len(sample)
    row("datasketch MinHash, same shingles (2k sample)", f"{1e6 * per:.0f} us CPU per text -> "
        f"{per * N_TEXTS:.0f} s for {N_TEXTS:,} = {per * N_TEXTS / t_bands.cpu:.1f}x numpy")


# ---------------------------------------------------------------------------------------------


def part_thresholds() -> None:
    from test_dedup import EDITS, SINGLE_EDITS, distinct_distances, measured, real_images, reference_phash

    from medmix.mix.dedup import DEFAULT_IMAGE_DISTANCE, hamming

    originals, distances, _ = measured()
    between = distinct_distances(originals)
    print(f"thresholds: {len(originals)} distinct real images (pydicom test DICOMs, tiles, sklearn photos), "
          f"medmix.imaging.phash.phash64 (the stored image_phash); default max_distance = {DEFAULT_IMAGE_DISTANCE}")
    reference = np.array([reference_phash(im) for im in real_images().values()], dtype=np.uint64)
    agree = hamming(originals, reference)
    row("medmix pHash vs imagehash.phash", f"max {agree.max()} bits, mean {agree.mean():.2f}, "
        f"identical on {int((agree == 0).sum())} of {len(agree)}")
    for edit in EDITS:
        dist = distances[edit]
        row(f"planted copy: {edit}", f"max {dist.max():2d}  histogram(0..) {np.bincount(dist).tolist()}")
    single = np.concatenate([distances[e] for e in SINGLE_EDITS])
    row("all single edits", f"max {single.max()}  (margin {DEFAULT_IMAGE_DISTANCE - single.max()} below default)")
    margin = between.min() - DEFAULT_IMAGE_DISTANCE
    row("distinct pairs", f"{len(between)} pairs, min {between.min()} (margin {margin} "
        f"above default), 1st percentile {np.percentile(between, 1):.0f}, median {np.median(between):.0f}")
    hist = np.bincount(between, minlength=65)
    row("distinct histogram 0..30", str(hist[:31].tolist()))


PARTS = {"images": part_images, "text": part_text, "thresholds": part_thresholds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=sorted(PARTS), help="run one part in this process")
    parser.add_argument("--scale", type=float, default=1.0, help="shrink the inputs (smoke test), e.g. 0.01")
    parser.add_argument("--pairs-only", action="store_true", help="images: time near_pairs alone (large --scale)")
    args = parser.parse_args()
    global N_IMAGES, N_PLANTED, N_TEXTS, N_TEXT_DUPS, PAIRS_ONLY
    PAIRS_ONLY = args.pairs_only
    N_IMAGES, N_PLANTED = int(N_IMAGES * args.scale), max(10, int(N_PLANTED * args.scale))
    N_TEXTS, N_TEXT_DUPS = int(N_TEXTS * args.scale), max(10, int(N_TEXT_DUPS * args.scale))
    if args.part:
        PARTS[args.part]()
        return
    for name in ("thresholds", "images", "text"):  # a fresh process each, so peak RSS is per part
        subprocess.run([sys.executable, __file__, "--part", name, "--scale", str(args.scale)]
                       + (["--pairs-only"] if args.pairs_only else []), check=True)
        print()


if __name__ == "__main__":
    main()
