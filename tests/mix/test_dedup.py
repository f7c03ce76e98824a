"""Near-duplicate and exact dedup: images by pHash (medmix.mix.dedup), text by MinHash (medmix.mix.textsim).

The image threshold tests run on real pictures nobody here made: pydicom's bundled DICOM test
images, tiles of the larger ones, and scikit-learn's two sample photos cut into tiles. The
planted copies are the edits a figure goes through between PMC-OA, ROCO and PubMedVision.
Distances are those of medmix's own stored hash (`medmix.imaging.phash.phash64`), which is checked against
`imagehash.phash` on the same corpus. `python benchmarks/dedup_scale.py --part thresholds` prints
the same distributions.
"""

from __future__ import annotations

import io
import itertools
import warnings
from collections.abc import Callable
from functools import lru_cache

import imagehash
import numpy as np
import pyarrow as pa
import pydicom
import pytest
from PIL import Image, ImageEnhance
from pydicom.data import get_testdata_file
from sklearn.datasets import load_sample_images

from medmix.imaging.phash import phash64
from medmix.mix import dedup, textsim
from medmix.mix.dedup import DEFAULT_IMAGE_DISTANCE, DedupInputError, image_clusters, near_any, near_match, near_pairs

# ---------------------------------------------------------------------------------------------
# a corpus of distinct real images

# One file per distinct picture (pydicom ships many re-encodings of the same few images; e.g.
# examples_jpeg2k.dcm is examples_rgb_color.dcm again, and examples_ybr_color.dcm's 30 frames are
# one video scene, so only frame 0 is used). Left out on purpose: image_dfl.dcm (a synthetic
# nested-checkerboard test pattern) and SC_rgb_*.dcm (colour bars): their DCT coefficients tie at
# the median, which makes any pHash unstable (see medmix.mix.dedup, "Known limit").
DICOM_IMAGES = ("CT_small.dcm", "MR_small.dcm", "693_J2KI.dcm", "J2K_pixelrep_mismatch.dcm", "JPEG2000.dcm",
                "GDCMJ2K_TextGBR.dcm", "examples_overlay.dcm", "examples_palette.dcm", "examples_rgb_color.dcm",
                "examples_ybr_color.dcm", "liver_1frame.dcm")
# larger images cut into non-overlapping tiles: each tile is a different picture
DICOM_TILES = {"693_J2KI.dcm": (2, 2), "J2K_pixelrep_mismatch.dcm": (2, 2), "liver_1frame.dcm": (2, 2),
               "JPEG2000.dcm": (4, 1), "examples_palette.dcm": (1, 3), "examples_overlay.dcm": (2, 2),
               "GDCMJ2K_TextGBR.dcm": (2, 2)}
BLANK_STD = 8.0  # a 32x32 grey thumbnail flatter than this has no picture to hash


def _to_uint8(pixels: np.ndarray) -> np.ndarray:
    pixels = pixels.astype(np.float64)
    lo, hi = pixels.min(), pixels.max()
    return np.round((pixels - lo) / (hi - lo if hi > lo else 1.0) * 255).astype(np.uint8)


def _dicom(name: str) -> Image.Image:
    ds = pydicom.dcmread(get_testdata_file(name))
    pixels = ds.pixel_array
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        pixels = pixels[0]
    return Image.fromarray(_to_uint8(pixels))


def _tiles(image: Image.Image, rows: int, cols: int, prefix: str) -> dict[str, Image.Image]:
    w, h = image.size
    return {f"{prefix}[{r},{c}]": image.crop((c * w // cols, r * h // rows, (c + 1) * w // cols, (r + 1) * h // rows))
            for r in range(rows) for c in range(cols)}


def _blank(image: Image.Image) -> bool:
    return float(np.asarray(image.convert("L").resize((32, 32), Image.LANCZOS), dtype=np.float64).std()) < BLANK_STD


@lru_cache(maxsize=1)
def real_images() -> dict[str, Image.Image]:
    """>= 50 distinct real images, by name, in a fixed order."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        images = {name: _dicom(name) for name in DICOM_IMAGES}
    for name, (rows, cols) in DICOM_TILES.items():
        images.update(_tiles(images[name], rows, cols, name))
    for label, pixels in zip(("china", "flower"), load_sample_images().images):
        images.update(_tiles(Image.fromarray(pixels), 3, 4, label))
    return {name: im for name, im in images.items() if not _blank(im)}


def _jpeg(image: Image.Image, quality: int = 70) -> Image.Image:
    buf = io.BytesIO()
    image.convert("L" if image.mode == "L" else "RGB").save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue()))


def _half(image: Image.Image) -> Image.Image:
    return image.resize((max(1, image.width // 2), max(1, image.height // 2)), Image.LANCZOS)


def _crop2(image: Image.Image) -> Image.Image:
    """2 % of width and height removed, split over both sides."""
    dx, dy = round(image.width * 0.01), round(image.height * 0.01)
    return image.crop((dx, dy, image.width - dx, image.height - dy))


def _brighter(image: Image.Image) -> Image.Image:
    return ImageEnhance.Brightness(image).enhance(1.03)


SINGLE_EDITS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "half size": _half, "jpeg q70": _jpeg, "crop 2%": _crop2, "brightness +3%": _brighter}
EDITS = {**SINGLE_EDITS, "all four": lambda im: _jpeg(_brighter(_crop2(_half(im))))}


def phash(image: Image.Image) -> int:
    """The hash medmix stores for an image (corpus images are already 8-bit L or RGB)."""
    return phash64(image)


def reference_phash(image: Image.Image) -> int:
    return int(str(imagehash.phash(image, hash_size=8)), 16)


@lru_cache(maxsize=1)
def measured() -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
    """(original hashes, edit -> distance of each edited copy to its original, edited hashes)."""
    images = real_images()
    originals = np.array([phash(im) for im in images.values()], dtype=np.uint64)
    distances, edited = {}, []
    for edit, fn in EDITS.items():
        copies = np.array([phash(fn(im)) for im in images.values()], dtype=np.uint64)
        distances[edit] = dedup.hamming(originals, copies)
        edited.append(copies)
    return originals, distances, np.stack(edited, axis=1)


def distinct_distances(originals: np.ndarray) -> np.ndarray:
    i, j = np.triu_indices(len(originals), 1)
    return dedup.hamming(originals[i], originals[j])


# ---------------------------------------------------------------------------------------------
# threshold justification on real images


def test_corpus_has_at_least_50_distinct_real_images():
    images = real_images()
    assert len(images) >= 50
    originals, _, _ = measured()
    assert len(np.unique(originals)) == len(images)


def test_medmix_phash_agrees_with_imagehash_on_real_images():
    """Same algorithm as the reference library, written differently (exact box sums, float luma and
    Lanczos on the pixel array, 8x32 matrix products): on 57 real images at most 4 of 64 bits
    differ, 0.56 on average, 42 identical (schema 2.1, measured), far inside the dedup distance;
    images too small for the box pre-reduce differ by rounding alone, at most 2 bits."""
    images = list(real_images().values())
    ours, _, _ = measured()
    ref = np.array([reference_phash(im) for im in images], dtype=np.uint64)
    dist = dedup.hamming(ours, ref)
    assert dist.max() <= 4 and dist.mean() <= 1.0
    small = [i for i, im in enumerate(images) if min(im.size) < 128]  # no pre-reduce below 2 x 64 px
    assert small and all(dist[i] <= 2 for i in small)


def test_planted_copies_found_and_distinct_images_kept_apart_at_default_distance():
    originals, distances, _ = measured()
    between = distinct_distances(originals)
    print(f"\n{len(originals)} images, default max_distance={DEFAULT_IMAGE_DISTANCE}")
    for edit, dist in distances.items():
        print(f"  {edit:15s} max {dist.max():2d}  histogram {np.bincount(dist).tolist()}")
    print(f"  distinct pairs  min {between.min():2d}  lowest {np.sort(between)[:8].tolist()}")
    single = np.concatenate([distances[e] for e in SINGLE_EDITS])
    # the margins claimed in medmix.mix.dedup's docstring
    assert single.max() <= DEFAULT_IMAGE_DISTANCE - 2
    assert distances["all four"].max() <= DEFAULT_IMAGE_DISTANCE
    assert between.min() >= DEFAULT_IMAGE_DISTANCE + 6


def test_image_clusters_groups_each_real_image_with_exactly_its_edited_copies():
    originals, _, edited = measured()
    n, e = edited.shape
    hashes = np.concatenate([originals, edited.ravel()])  # row n + i*e + j: edit j of image i
    owner = np.concatenate([np.arange(n), np.repeat(np.arange(n), e)])
    labels = image_clusters(hashes)
    assert len(np.unique(labels)) == n
    # every cluster is one original (its smallest row) and its own copies
    assert np.array_equal(labels, owner)


# ---------------------------------------------------------------------------------------------
# near_pairs is exact


def _reference_pairs(h: np.ndarray, d: int) -> np.ndarray:
    dist = np.bitwise_count(h[:, None] ^ h[None, :])
    i, j = np.nonzero(np.triu(dist <= d, 1))
    return np.stack([i, j], axis=1).astype(np.int64)


def _flip(value: np.uint64, bits: int, rng: np.random.Generator) -> np.uint64:
    mask = 0
    for b in rng.choice(64, size=bits, replace=False):
        mask |= 1 << int(b)
    return value ^ np.uint64(mask)


def _planted(n: int, d: int, seed: int) -> np.ndarray:
    """n hashes: random ones plus copies at every distance 0..d+1 of random ones, shuffled."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 2**64, size=n // 2, dtype=np.uint64)
    copies = [_flip(base[rng.integers(len(base))], int(dist), rng) for dist in np.arange(n - n // 2) % (d + 2)]
    h = np.concatenate([base, np.array(copies, dtype=np.uint64)])
    rng.shuffle(h)
    return h


@pytest.mark.parametrize("d", [0, 3, DEFAULT_IMAGE_DISTANCE, 12])
@pytest.mark.parametrize("method", ["tables", "brute", "auto"])
def test_near_pairs_equals_all_pairs_reference(d, method):
    h = _planted(2000, d, seed=d)
    expected = _reference_pairs(h, d)
    got = near_pairs(h, d, method=method)
    assert got.dtype == np.int64 and got.shape[1] == 2
    assert np.array_equal(got, expected)
    # planted pairs at exactly d+1 exist and are excluded
    assert (np.bitwise_count(h[:, None] ^ h[None, :]) == d + 1).any()


@pytest.mark.parametrize("high", [2**4, 2**12, 2**24])
def test_near_pairs_exact_on_low_entropy_hashes(high):
    """Hashes that share most nibbles make huge buckets in every table; still exact."""
    h = np.random.default_rng(high).integers(0, high, size=1500).astype(np.uint64)
    assert np.array_equal(near_pairs(h, 4, method="tables"), _reference_pairs(h, 4))


def test_covering_design_is_exhaustive():
    """Exactness rests on this: every set of 16-d agreeing nibbles contains a table's key."""
    for d, k in [(8, 5), (8, 4), (6, 5), (3, 5), (12, 3)]:
        design = dedup._design(d, k)
        assert all(len(s) == k for s in design)
        masks = np.array([sum(1 << b for b in s) for s in design])
        for agree in itertools.combinations(range(16), 16 - d):
            a = sum(1 << b for b in agree)
            assert ((masks & a) == masks).any(), (d, k, agree)


def test_crumb_designs_are_exhaustive_and_stored_as_claimed():
    """The wide-key designs: every set of 8 differing crumbs (2-bit blocks) leaves a table clear."""
    for k, text in dedup._CRUMB_DESIGNS.items():
        masks = dedup._crumb_design(8, k)  # raises unless the exhaustive check passes
        assert len(masks) == dedup._CRUMB_TABLES[k] == len(text.split())
        assert all(bin(m).count("1") == 2 * k for m in masks)
        # an independent check on a random sample of bit-level difference sets, d = 8
        rng = np.random.default_rng(k)
        marr = np.array(masks, dtype=np.uint64)
        for _ in range(200):
            z = np.uint64(sum(1 << int(b) for b in rng.choice(64, size=8, replace=False)))
            assert ((marr & z) == 0).any()
    with pytest.raises(ValueError, match="no stored"):
        dedup._crumb_design(9, 11)


@pytest.mark.parametrize("kind,k", [("crumb", 11), ("crumb", 12), ("nibble", 5)])
@pytest.mark.parametrize("d", [3, DEFAULT_IMAGE_DISTANCE])
def test_wide_key_tables_equal_brute_force(kind, k, d):
    """The lookup-table engine (forced here at small N) against all pairs, on copies at d and d+1."""
    u = np.unique(_planted(3000, d, seed=10 + d))
    expected = dedup._brute_self_pairs(u, d)
    expected = dedup._sort_pairs(expected, len(u))
    for threads in (1, 2):
        raw = dedup._mask_self_pairs(u, d, dedup._design_masks(d, kind, k), threads=threads)
        assert len(raw) == len(expected)  # each pair reported by exactly one table
        assert np.array_equal(dedup._sort_pairs(raw, len(u)), expected)
    assert (np.bitwise_count(u[:, None] ^ u[None, :]) == d + 1).any()


@pytest.mark.parametrize("buffer", [dedup._RUN_PAIRS, 5])
def test_wide_key_tables_exact_on_low_entropy_hashes(buffer, monkeypatch):
    """Many pairs per lane; with 5-pair buffers every lane's scan overflows and runs again."""
    monkeypatch.setattr(dedup, "_RUN_PAIRS", buffer)
    h = np.unique(np.random.default_rng(5).integers(0, 2**20, size=1500).astype(np.uint64))
    raw = dedup._mask_self_pairs(h, 8, dedup._crumb_design(8, 11))
    assert np.array_equal(dedup._sort_pairs(raw, len(h)), dedup._sort_pairs(dedup._brute_self_pairs(h, 8), len(h)))


def test_plan_widens_keys_as_n_grows():
    """Fixed key width makes buckets grow with N: past ~1M hashes the crumb engine's 22-bit tables,
    past ~60M its 24-bit ones; below, the nibble engine, which has no once-per-process setup."""
    def kind(n):
        return dedup._plan(8, n, n * (n - 1) / 2, "auto")
    assert kind(300_000) == ("tables", ("nibble", 4))
    assert kind(3_350_000) == kind(30_150_000) == ("tables", ("crumb", 11))
    assert kind(100_000_000) == ("tables", ("crumb", 12))
    assert dedup._plan(8, 30_150_000, 1e14, "auto", wide=False)[1][0] == "nibble"
    assert dedup._plan(10, 30_150_000, 4.5e14, "auto")[1][0] == "nibble"  # no stored design past d = 8


def test_identical_hashes_are_collapsed_and_row_pairs_capped():
    h = np.concatenate([np.full(3000, 7, dtype=np.uint64), np.arange(100, dtype=np.uint64) << np.uint64(40)])
    labels = image_clusters(h, 8)
    assert (labels[:3000] == 0).all()
    with pytest.raises(DedupInputError, match="image_clusters"):
        near_pairs(h, 8, max_pairs=1_000_000)
    pairs = near_pairs(h[:50], 0)
    assert len(pairs) == 50 * 49 // 2


def test_near_pairs_rows_and_order():
    h = np.array([5, 1 << 40, 5, (1 << 40) | 3, 2**63 | 0xF0F0], dtype=np.uint64)
    assert near_pairs(h, 2).tolist() == [[0, 2], [1, 3]]
    assert near_pairs(h, 0).tolist() == [[0, 2]]
    assert near_pairs(h[:1], 8).shape == (0, 2)


def test_image_clusters_label_is_smallest_row_and_partition_ignores_order():
    h = _planted(1500, 8, seed=3)
    labels = image_clusters(h, 8)
    assert np.array_equal(labels, dedup.components(len(h), _reference_pairs(h, 8)))
    assert (labels <= np.arange(len(h))).all() and (labels[labels] == labels).all()
    perm = np.random.default_rng(0).permutation(len(h))
    relabelled = image_clusters(h[perm], 8)
    # same partition: rows together before are together after
    before = {frozenset(np.flatnonzero(labels == k)) for k in np.unique(labels)}
    after = {frozenset(perm[np.flatnonzero(relabelled == k)]) for k in np.unique(relabelled)}
    assert before == after


def test_near_match_exact_and_independent_of_query_batches():
    rng = np.random.default_rng(11)
    index = rng.integers(0, 2**64, size=300, dtype=np.uint64)
    index[10] = index[3]  # a duplicated eval image: the smaller row is reported
    queries = rng.integers(0, 2**64, size=4000, dtype=np.uint64)
    for q in range(400):
        queries[q] = _flip(index[rng.integers(300)], int(q % 11), rng)
    dist = np.bitwise_count(queries[:, None] ^ index[None, :]) <= 8
    expected = np.where(dist.any(axis=1), dist.argmax(axis=1), -1)
    for method in ("tables", "brute", "auto"):
        assert np.array_equal(near_match(index, queries, method=method), expected)
    batched = np.concatenate([near_match(index, queries[i:i + 700]) for i in range(0, len(queries), 700)])
    assert np.array_equal(batched, expected)
    assert np.array_equal(near_any(index, queries), expected >= 0)
    assert near_any(index[:0], queries).sum() == 0


def test_hash_inputs_are_validated():
    assert dedup.as_hashes(np.array([-1], dtype=np.int64))[0] == np.uint64(2**64 - 1)
    assert dedup.as_hashes([1, 2, 2**64 - 1]).dtype == np.uint64
    with pytest.raises(DedupInputError, match="dtype float64"):
        near_pairs(np.array([0.5, 1.5]), 8)
    with pytest.raises(DedupInputError, match="1-D"):
        image_clusters(np.zeros((2, 2), dtype=np.uint64))
    with pytest.raises(DedupInputError, match="negative"):
        near_pairs(np.array([-3, 4], dtype=np.int32), 8)
    with pytest.raises(DedupInputError, match="max_distance"):
        near_pairs(np.zeros(3, dtype=np.uint64), 65)
    with pytest.raises(DedupInputError, match="method"):
        near_pairs(np.arange(3000, dtype=np.uint64), 8, method="fast")


def test_exact_clusters_on_sha256_strings_with_nulls():
    keys = ["aa", None, "bb", "aa", None, "bb", "cc"]
    assert dedup.exact_clusters(keys).tolist() == [0, 1, 2, 0, 4, 2, 6]
    assert dedup.exact_clusters(pa.chunked_array([["x", "y"], ["x"]])).tolist() == [0, 1, 0]
    assert dedup.exact_clusters([None, None]).tolist() == [0, 1]
    with pytest.raises(DedupInputError, match="strings or bytes"):
        dedup.exact_clusters([1, 2])


# ---------------------------------------------------------------------------------------------
# text: normalization, exact keys, MinHash clusters


def test_normalize_text():
    assert textsim.normalize_text("  Ｈｅｌｌｏ,\tWORLD!!\n") == "hello world"
    assert textsim.normalize_text("Straße") == "strasse"
    assert textsim.normalize_text("end.Start—next") == "end start next"
    assert textsim.normalize_text("ER+ 5 mg/kg") == "er+ 5 mg kg"
    assert textsim.normalize_text(None) == ""
    with pytest.raises(textsim.TextInputError):
        textsim.normalize_text(3)  # type: ignore[arg-type]


def test_text_key_ignores_formatting_and_option_order_but_not_content():
    key = textsim.text_key("What is the drug of choice?", ["Penicillin", "Doxycycline"], "Penicillin")
    assert key == textsim.text_key("what is the drug  of choice", ["doxycycline", "PENICILLIN."], "penicillin")
    assert key != textsim.text_key("What is the drug of choice?", ["Penicillin", "Doxycycline"], "Doxycycline")
    assert textsim.text_key("a b", None, "c") != textsim.text_key("a", None, "b c")
    assert len(key) == 64 and int(key, 16) >= 0


MCQS = [
    (("A 45-year-old man presents with crushing substernal chest pain radiating to the left arm and "
      "diaphoresis. Which of the following is the most likely diagnosis?"),
     ["Myocardial infarction", "Pulmonary embolism", "Aortic dissection", "Pericarditis"]),
    (("A 6-year-old boy has periorbital edema, cola-coloured urine and hypertension two weeks after a "
      "sore throat. Which of the following is the most likely diagnosis?"),
     ["Post-streptococcal glomerulonephritis", "IgA nephropathy", "Minimal change disease", "Alport syndrome"]),
    ("Which of the following stains is used to demonstrate acid-fast bacilli in a lung biopsy?",
     ["Ziehl-Neelsen", "Gram stain", "Periodic acid-Schiff", "Congo red"]),
    ("Drug of choice for the treatment of syphilis in pregnancy is:",
     ["Benzathine penicillin", "Doxycycline", "Azithromycin", "Ceftriaxone"]),
    ("Drug of choice for the treatment of gonorrhoea in pregnancy is:",
     ["Ceftriaxone", "Ciprofloxacin", "Doxycycline", "Benzathine penicillin"]),
    ("Which nerve is most commonly injured in fractures of the surgical neck of the humerus?",
     ["Axillary nerve", "Radial nerve", "Ulnar nerve", "Musculocutaneous nerve"]),
]


def _one_word_changed(question: str) -> str:
    words = question.split()
    words[len(words) // 2] = words[len(words) // 2][::-1]
    return " ".join(words)


def test_text_clusters_merge_near_identical_mcqs_only():
    """Rows go through qa_text as the pipeline does: reordered options become identical text,
    case/spacing/punctuation vanish, and one changed word in a clinical vignette (30+ words)
    leaves character-shingle Jaccard above 0.9. (In a 15-word question one changed word gives
    0.82-0.84 and is merged about 60 % of the time at the default; there it is often a different
    question, e.g. "treatment" vs "prophylaxis".) The two "Drug of choice ... in pregnancy"
    questions share their template (Jaccard 0.49) and must stay apart."""
    rows, owner = [], []
    for i, (q, opts) in enumerate(MCQS):
        rows.append(textsim.qa_text(q, opts, opts[0]))
        owner.append(i)
    for i, (q, opts) in enumerate(MCQS):
        variants = [
            textsim.qa_text(q, opts[::-1], opts[0]),
            textsim.qa_text(q.upper().replace(" ", "  ").replace("?", " ?!") + "...", [o + "." for o in opts],
                            opts[0].lower()),
        ]
        if len(q.split()) >= 30:
            variants.append(textsim.qa_text(_one_word_changed(q), opts, opts[0]))
            assert textsim.jaccard(rows[i], variants[-1]) > 0.9
        rows += variants
        owner += [i] * len(variants)
    assert textsim.jaccard(rows[3], rows[4]) < 0.6
    labels = textsim.text_clusters(rows)
    assert np.array_equal(labels, np.array(owner))  # each base MCQ is the smallest row of its cluster


def test_raw_strings_with_reordered_options_still_merge_when_long():
    q, opts = MCQS[0]
    raw = q + " " + " ".join(f"({'ABCD'[i]}) {o}" for i, o in enumerate(opts))
    reordered = q + " " + " ".join(f"({'ABCD'[i]}) {o}" for i, o in enumerate(opts[::-1]))
    other = MCQS[1][0] + " " + " ".join(MCQS[1][1])
    assert textsim.text_clusters([raw, reordered, other]).tolist() == [0, 0, 2]


def test_text_clusters_deterministic_across_batching_and_order():
    rng = np.random.default_rng(4)
    vocab = ["fever", "cough", "pain", "lesion", "biopsy", "nodule", "opacity", "carcinoma", "infarct", "embolism",
             "cell", "nuclei"]
    base = [" ".join(rng.choice(vocab, 30)) for _ in range(60)]
    texts = base + [t.replace(t.split()[5], "mass", 1) for t in base[:30]] + [None, "", "  !! "]
    labels = textsim.text_clusters(texts)
    for batch_size in (1, 7, 1000):
        assert np.array_equal(textsim.text_clusters(texts, batch_size=batch_size), labels)
    assert np.array_equal(textsim.text_clusters(iter(texts)), labels)
    perm = rng.permutation(len(texts))
    relabelled = textsim.text_clusters([texts[i] for i in perm])
    before = {frozenset(np.flatnonzero(labels == k)) for k in np.unique(labels)}
    after = {frozenset(perm[np.flatnonzero(relabelled == k)]) for k in np.unique(relabelled)}
    assert before == after
    # texts without content never join each other or anything else
    assert labels[-3:].tolist() == [len(texts) - 3, len(texts) - 2, len(texts) - 1]
    bands = textsim.minhash_bands(texts)
    halves = [textsim.minhash_bands(texts[:41]), textsim.minhash_bands(texts[41:])]
    assert np.array_equal(np.concatenate(halves), bands)
    assert bands.dtype == np.uint64 and bands.shape == (len(texts), textsim.lsh_params()[0])
    assert not np.array_equal(textsim.minhash_bands(texts, seed=2), bands)


def test_minhash_estimates_jaccard():
    rng = np.random.default_rng(9)
    vocab = [f"w{i}" for i in range(400)]
    a, b, exact = [], [], []
    for _ in range(400):
        words = list(rng.choice(vocab, 40))
        other = list(words)
        for _ in range(int(rng.integers(0, 15))):
            other[int(rng.integers(40))] = str(rng.choice(vocab))
        a.append(" ".join(words))
        b.append(" ".join(other))
        exact.append(textsim.jaccard(a[-1], b[-1]))
    sa, sb = textsim.minhash_signatures(a), textsim.minhash_signatures(b)
    estimate = (sa == sb).mean(axis=1)
    error = estimate - np.array(exact)
    assert np.abs(error).mean() < 0.04  # sampling error of 128 permutations is ~0.03
    assert abs(error.mean()) < 0.02
    sketch = textsim.sketch_from_signatures(np.concatenate([sa, sb]))
    rows = np.arange(len(a))
    sketch_error = textsim.sketch_similarity(sketch, rows, rows + len(a)) - np.array(exact)
    assert np.abs(sketch_error).mean() < 0.05
    assert abs(sketch_error.mean()) < 0.02


def test_lsh_params_put_half_merge_probability_at_threshold():
    for t in (0.5, 0.7, 0.8, 0.9):
        bands, rows = textsim.lsh_params(t, 128)
        assert bands * rows <= 128
        assert abs(float(textsim.merge_probability(t, bands, rows)) - 0.5) < 0.1
    bands, rows = textsim.lsh_params(0.8, 128)
    assert textsim.merge_probability(0.95, bands, rows) > 0.99
    assert textsim.merge_probability(0.6, bands, rows) < 0.03
    with pytest.raises(textsim.TextInputError):
        textsim.text_clusters(["a"], threshold=1.0)


def test_sketch_rejects_chance_band_collisions_and_keeps_true_ones():
    texts = [textsim.qa_text(q, o, o[0]) for q, o in MCQS]
    texts += [texts[0]] * 40 + [texts[1].replace("hypertension", "hypotension")]
    sig = textsim.minhash_signatures(texts)
    bands = textsim.bands_from_signatures(sig, *textsim.lsh_params())
    sketch = textsim.sketch_from_signatures(sig)
    assert sketch.shape == (len(texts), 64) and sketch.dtype == np.uint8
    forged = bands.copy()
    forged[2, 3] = forged[0, 3]  # two different questions collide in one band by chance
    assert textsim.clusters_from_bands(forged)[2] == 0
    labels = textsim.clusters_from_bands(forged, sketch)
    assert labels[2] == 2
    assert (labels[len(MCQS):len(MCQS) + 40] == 0).all()  # a big bucket of copies stays one cluster
    assert labels[-1] == 1
    a, b = np.array([0, 1, 3]), np.array([len(MCQS), len(texts) - 1, 4])
    est = textsim.sketch_similarity(sketch, a, b)
    assert est[0] == 1.0
    assert np.abs(est - (sig[a] == sig[b]).mean(axis=1)).max() < 0.1  # 4 bits lose little
    with pytest.raises(textsim.TextInputError, match="sketch"):
        textsim.clusters_from_bands(bands, sketch[:3])


def test_compiled_run_scan_against_numpy():
    """word_runs' loops against numpy: the permutation, and the run scan past its buffers' size."""
    from medmix.mix.word_runs import near_in_runs, permute_words

    rng = np.random.default_rng(3)
    u = rng.integers(0, 2**64, 4000, dtype=np.uint64) >> np.uint64(rng.integers(0, 3))
    mask = dedup._crumb_design(8, 11)[5]
    fwd, inv = dedup._perm_luts(mask)
    cols = [((u >> np.uint64(16 * c)) & np.uint64(0xFFFF)).astype(np.uint16) for c in range(4)]
    words = np.empty(len(u), dtype=np.uint64)
    permute_words(*cols, fwd, words)
    assert np.array_equal(words, np.bitwise_or.reduce([fwd[c][cols[c]] for c in range(4)]))
    assert np.array_equal(dedup._unpermute(words, inv), u)
    words = np.sort(words >> np.uint64(12))  # fewer distinct keys: long runs, many pairs
    limit, d = np.uint64(1 << 40), 22
    x = words[:, None] ^ words[None, :]
    ii, jj = np.nonzero(np.triu((x < limit) & (np.bitwise_count(x) <= d), 1))
    assert len(ii) > 100
    small = np.empty(7, dtype=np.uint64), np.empty(7, dtype=np.uint64)
    assert near_in_runs(words, limit, d, *small) == len(ii)  # counts all, writes what fits
    assert set(zip(small[0].tolist(), small[1].tolist())) <= set(zip(words[ii].tolist(), words[jj].tolist()))
    out = np.empty(len(ii), dtype=np.uint64), np.empty(len(ii), dtype=np.uint64)
    assert near_in_runs(words, limit, d, *out) == len(ii)
    assert sorted(zip(out[0].tolist(), out[1].tolist())) == sorted(zip(words[ii].tolist(), words[jj].tolist()))


def test_compiled_loops_import_without_a_writable_cache(monkeypatch):
    """A read-only install with a read-only home leaves numba no cache location, and `cache=True`
    then raises at decoration; the loops must still import and run (compiled per process)."""
    import importlib

    import numba
    import numba.core.caching as caching

    import medmix.mix.word_runs as word_runs

    with monkeypatch.context() as m:
        m.setattr(caching.CacheImpl, "_locator_classes", [])
        with pytest.raises(RuntimeError, match="no locator"):  # what numba does with nowhere to cache
            numba.njit(cache=True)(lambda x: x + 1)
        uncached = importlib.reload(word_runs)
        words = np.array([1, 3, 1 << 50], dtype=np.uint64)
        out = np.empty(4, dtype=np.uint64), np.empty(4, dtype=np.uint64)
        assert uncached.near_in_runs(words, np.uint64(1 << 40), 1, *out) == 1
        assert (out[0][0], out[1][0]) == (1, 3)
    importlib.reload(word_runs)  # cached again for the tests after this one
