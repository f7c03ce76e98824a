"""Exact and near-duplicate detection: images by 64-bit perceptual hash, anything by exact key.

Everything here is a pure function over arrays, so the pipeline can feed it columns read from the
normalized Parquet cache (27 MB for 3.35M hashes) and apply its own policy to the result.

Near-duplicate images
---------------------
Two images are near-duplicates when the Hamming distance of their 64-bit pHashes is at most
`max_distance`. Answers are EXACT (no pair within the distance is ever missed, none beyond it is
ever returned), and they scale: an all-pairs comparison of 3.35M hashes would be 5.6e12
popcounts, so the search uses multi-index hashing, a pigeonhole argument made exhaustive:

* split the hash into 16 nibbles; a pair within distance d differs in at most d nibbles, so at
  least 16 - d nibbles agree exactly;
* pick a family of k-nibble subsets (a covering design) such that every set of 16 - d nibbles
  contains one of them. For each subset ("table"), rows whose k nibbles are equal land next to each
  other after one numpy sort; only those neighbours are compared, first on an XOR-folded copy of
  the hash carried in the sort key (a lower bound of the distance, free to test), then exactly.
  Every true pair agrees on all nibbles of some table, so none is missed; each is reported by the
  first such table only.

The plain pigeonhole ("split into d + 1 blocks, one block agrees") gives 7-bit keys for d = 8,
i.e. buckets of ~26,000 random hashes and ~10^10 comparisons at 3.35M rows. Requiring k = 5
agreeing nibbles (20-bit keys) keeps buckets at ~3 rows; a greedy covering design needs 210 such
tables for d = 8 (k is chosen by a cost model; `_design` builds and checks the design). At 3.35M
random hashes and d = 8 this takes ~22-25 s of one core and ~0.5 GiB peak (benchmarks/dedup_scale.py),
against ~8 core-hours for all pairs. Identical hashes (blank or re-encoded images) are collapsed
first, so a thousand copies of one black frame cost one row, not half a million pairs.

Wide keys at large N
--------------------
At a fixed key width buckets grow with N: at 30M hashes a 20-bit key holds ~29 random rows, and
the ~4e8 in-bucket comparisons per table (x210 tables) are what kept 30M from finishing in 20
minutes. So `_plan` also prices designs over 2-bit blocks ("crumbs"; a pair within d <= 8 differs
in at most 8 of the 32): 342 tables of 11 crumbs (22-bit keys) or 542 of 12 (24-bit). They are
stored (`_CRUMB_DESIGNS`, from a seeded randomized greedy search) and checked exhaustively over all
C(32, 8) = 10.5M sets of differing crumbs before use (`_crumb_design`, ~1 s). Their tables are
arbitrary bit masks, so they run on a second engine, `_mask_self_pairs`: per table the whole hash
is permuted through 16-bit lookup tables so the key bits are on top, the words are sorted, and
one pass along each run of equal keys gives exact distances (no index, no gather); the
permutation and the run scan are compiled loops (`medmix.mix.word_runs`, numba) and tables run on
a thread pool. The cost model picks the nibble engine below ~1M distinct hashes (it has no
once-per-process setup), 22-bit crumb keys above, 24-bit past ~60M.

Measured 2026-12-07, `/usr/bin/time -v python benchmarks/dedup_scale.py --part images --scale 9
--pairs-only` (30.15M random hashes, 90,000 planted pairs at distance 1..8, d = 8; 2 quiet
cores): 342 tables of 22-bit keys, near_pairs 141 s wall / 239 s CPU, peak RSS 2.1 GiB, recall
1.0 (90,000/90,000), all 216,905 pairs within distance found and verified. Per table: permutation
0.15 s, sort 0.37 s, run scan 0.28 s (1.07e8 comparisons). The same tables in numpy (four `take`s,
a gather per step along the runs) took 671 s wall on 2026-12-06 (2.3 s per table on one core, 1.5
of it the run scan); the 20-bit nibble plan before that did not finish in 20 minutes. At 3.35M the
crumb engine takes 16.6 s wall against the nibble engine's 29.4 s in the same run
(`benchmarks/dedup_scale.py --part images`; `near_pairs`' plan moved there).
What is left is the number of tables: the greedy designs are ~6.5x the counting bound (52 tables
of 22 bits); the sort (0.37 s of each table) is the floor of this engine.

Default distance
----------------
`DEFAULT_IMAGE_DISTANCE = 8`, measured with medmix's stored pHash (`medmix.imaging.phash.phash64`, within
4 bits of `imagehash.phash`, 0.56 on average) on 57 distinct real images (pydicom's DICOM test
images, tiles of larger ones, scikit-learn's sample photos; see `tests/mix/test_dedup.py` and
`python benchmarks/dedup_scale.py --part thresholds`; re-measured for schema 2.1's pHash, same
margins as before):

* planted copies (half size, JPEG q70, 2 % crop, +3 % brightness) lie at distance <= 6 for every
  single edit (margin 2 below the default) and <= 8 with all four edits at once (on the default);
* distinct images lie at >= 16 (margin 8 above the default), most at 24-40;
* at 3.35M uniformly random hashes d = 8 yields ~1.5k chance pairs, d = 10 ~56k (and 6x the
  search work); chance merges chain through `image_clusters`, so the default stays at 8.

Known limit: near-blank images and synthetic test patterns (colour bars, symmetric checkerboards)
have DCT coefficients tied at the median, so their pHash flips under tiny edits (distances 12-20
in the same measurement). Exact duplicates of them are still caught by `image_hash`.
"""

from __future__ import annotations

import functools
import itertools
import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from medmix.core.errors import MedmixError

DEFAULT_IMAGE_DISTANCE = 8

_NIBBLES = 16
_U64 = np.uint64
# Work-size knobs (elements per vectorized step): they bound peak memory, not results.
_CHUNK_ELEMS = 1 << 22
# Relative costs, in units of one brute-force comparison (~5 ns here), used only to choose brute
# force or tables and the key size; measured on the 2-core dev machine: a table costs ~9 units
# per row plus ~2e5 of fixed per-lane numpy overhead.
_COST_PAIR = 1.0
_COST_ROW = 9.0
_COST_TABLE = 2e5
# An in-bucket comparison in a nibble table is dearer than a brute-force one (gathers).
_COST_BUCKET_PAIR = 2.0
# The crumb engine (`_mask_self_pairs`, compiled loops in word_runs, tables on two threads), wall
# time on the 2-core machine, 2026-12-07: ~12 ns per row per table, ~1.3 ns per in-bucket
# comparison, ~0.5 ms per table, and ~2.4 s once per process (checking the stored design, loading
# the compiled loops). Measured crossings: 300k distinct hashes 1.8 s nibble (210 tables) vs 1.2 s
# crumb once set up; 1M 5.8 vs 3.8 s; 3.35M 29.4 vs 16.6 s and 30M >20 min vs 141 s
# (benchmarks/dedup_scale.py).
_WIDE_ROW = 2.4
_WIDE_BUCKET_PAIR = 0.26
_WIDE_TABLE = 1e5
_WIDE_SETUP = 4.8e8
_MAX_THREADS = 8
# Pairs one lane's run scan writes before it must be run again with larger buffers (random hashes
# give a few dozen per lane; thousands of near copies of one image give more).
_RUN_PAIRS = 1 << 12
# Covering designs of k-crumb tables (32-bit masks over the 2-bit blocks) for d <= 8; see
# `_crumb_design`, which checks them exhaustively before use.
_CRUMB_DESIGNS = {
    11: """
        1ce40309 04363434 6a0e8013 0351d980 8490468b b1a91404 c304095c 290d60e0 b600c22c 00b14875 705238c0 9004d552
        488a0aaa c582a340 25428c19 02c9a498 1a502626 dc380901 c2250623 51a0701a 24580b16 082b9168 a04245cc 89d4a021
        4a485285 33141063 06636842 26a811d0 0124ab85 3c0380c6 aa831a10 6c15300c d06160b0 550ccc20 139a0541 0133c606
        68c50d02 541d02d0 8048382f 60007731 b8364210 52208ec8 8f00318a 128701a5 0d48047a ca98d400 110b6b08 c0c080d7
        04eee004 20741aa8 09a61c82 2009be41 63320528 2489c123 19459214 8c1248e1 83684251 0a30a11d 5791000e a6842c44
        801f2132 505e400b 0586124d 446095a4 b1410383 1e006c91 a03ca04a 38202b62 98118c38 63c64030 c12a1294 18c0d84c
        92e28822 4007f089 029443c6 8e2b0504 49712441 b08c0899 06d23700 6c20445c 03085c36 2590a2b0 d6491060 85255908
        5002b916 e0a2202d 884e2e80 6d109203 19986184 0053165a 306c0487 6a40e160 0b0102f9 061e8a28 41e90b20 98836043
        86319092 d0901364 6f600884 3235c500 440425e3 0984c718 e1194805 28d2019a 340a5688 132ab021 80621d51 811584e4
        04857a12 0645411d 70892158 48ac9242 2a8094a9 d2022e05 9550e048 1d4601b0 234a3046 14f09811 a1e0260a 423c6c08
        8824c0ae cc43c300 35012d24 2002ca73 08180f4d 0add08c0 29225107 142822e5 c1188592 64930491 f2045282 0d815660
        3a292212 42542259 e221a980 8190389c 51678048 948a4870 4210592b a0dc9104 9a461428 4188c8c3 10488735 02878c0e
        a4670260 04a1033e 8c0430d5 287844b0 9f0c8802 1b320854 59011591 04112dca 4549a206 ed883020 22b34209 48066626
        103a51a2 10e57401 600e8964 83800fe0 0c60a88b a7006413 4019d03c 54c40e14 4ea2c090 88707340 3112a08d 0c531027
        3a0c3908 e201144b 85fa0088 31a4a450 022c139a a9404856 a4289e02 17019341 509483a8 46a80469 01c246a5 4a843870
        41272813 98a14a84 270d0780 821ae2c0 45744142 20c130b6 6a129244 d848a508 9416090e 3260491a 890b003d 02a1a546
        3c94006a 26445825 44491989 c7132820 b81890a1 c3c43101 0706d4c0 5a114330 10251ccc 089aac11 e0854648 a1209178
        70986406 23418a2c 0d3c1211 120a20de 2413e150 00728783 91204c2b fa800194 0bc80147 91c29212 2444b22a d4a68401
        2ca86a01 400b4d94 2919580a 921d2205 1844c9c1 46c06a0c 512050ec 00d42578 e2500c70 0b3520a2 1c032629 80948b13
        16c84642 515b1c00 2806239c 8e009634 60b18285 80a931c1 5422034b 006dd850 71141505 c862501a 94d028a2 3bc33000
        8082ed28 272a08a2 a6584019 c8048a2d c9094446 49421b48 74248036 c5042698 38e28460 027014c7 0488d11d 8a53808c
        02ae1324 89164d01 7141c482 8429a854 700e0271 23303b10 348219a1 4e096182 47108127 1cb03508 418d10aa ab980248
        15554091 ab20c0c1 41926252 204e7501 80406bb4 10039ea2 52365804 116c420e 2814b492 82032179 d401341a 681108e6
        21f0890c 0ae58411 e4805982 87500594 10789298 844e8542 49a701c0 1644aa41 724a0829 8108f229 0cba2444 1a80a133
        82bc0432 11a30615 0e01d258 4d184168 021660e3 0a091ea1 3007f024 a9952104 b11036c0 25c048d8 0861950b e06a4c40
        c8b20858 63422690 12a80c8d d4c10065 0614b0c9 4d05c910 a0114ab2 d34882a0 a6371100 58071702 816c4095 004e09ce
        c020e287 642d1805 62089ca8 a4c0c425 390ac045 0f140d28 a2554a04 018381b3 13b04321 3e500053 10c01e59 70c8c308
        008832fc 5b4c2014 141baa80 6b818403 82a1b242 c4224265 822281c7 54612298 a185c094 2ef82800 603005b6 41845c45
        126da022 4982b007 31152a03 9402f070 9b8440a8 60e1380a
    """,
    12: """
        b022d251 d209a8a2 2519a889 114507c3 ef518400 503ca107 64921c58 086e0574 26062633 6a105923 d990430c 030ecac4
        14e1312c 214894ec a0426f0a 99f60090 43395290 0c9dc150 0a811a76 1a10709e 40a0ce8b 3f2c0828 8ca36241 ea8a1085
        c144095d 853a0163 564b011a f5844421 18879d04 e0a59b00 c4d032b0 8c01913d 307068e4 846d7802 784dc201 0760e416
        b28145d0 0916b42a 50122f70 a8e802ca 23b2a224 164299a1 03c83c43 003f44a9 9614924a 0a5c2b88 68218672 990acc12
        7c4200c7 4b2461c1 90283e0d 462107cc 01c6501f 24705711 35981186 310f7300 58e0a838 c0950ca6 6187a04a 0dd30a06
        0289e435 8d003dd0 4543c864 e2222916 32bc1412 0e06c2b8 96d66800 0133839c 22d0a169 8981d0a3 88484ab5 a2644326
        4c8a5720 a81d5444 4c18644b 0a271859 390126a9 548c0ad1 d3601225 93aa8508 84a48de0 3427a094 2a431c8a b0593051
        474cb600 c24270e8 0e3a9844 86b0481d 40d0d346 3500c95a 618c21b4 4bf1000b 50559498 e05e0a60 dc0601aa 79320c05
        91152274 41037929 23c90f10 8e88a20e a204a4cd 29eaf000 4c609992 d4215446 1a9286c1 81188793 8b504178 05345a2a
        a7010a87 3489426c 10aa60f2 48666684 2c65a023 1a190d25 38843319 a54a210d 07964584 105b9322 e9086c88 80738c43
        3b302342 6204dc34 60ab0991 132011bb c28c9071 50cc0c4e 1478e680 e813e180 08d48a2d cd043216 000b235f 26d510c1
        c42a843c 836dc018 9b852860 9141ba48 47a32422 20165ac3 b4c08e14 2ca5450a c13c1548 98b07501 5600f145 2e5840b2
        65621258 29209b45 b09a082b 528b128c ca452511 856710a4 0295a992 516949a0 04a63383 183c4a16 0de804c5 02316e68
        a51300f8 b044b582 76404b88 710296a2 5611c231 ae293120 1640047f 220bc543 6019303e 0f828313 1d1e3011 10e6c149
        8018d9ac 7aa080d4 83721c30 1b845e80 e070808f 24142d65 044b2cd4 49991660 d1832415 8c4f0609 0980e566 c1a06a52
        9a481943 7236c408 458c8929 082cb2e8 64c86223 20c1789c c212460f b60c0354 3c90b822 415460b3 435aa0d0 11b0d8c1
        42f70144 80c5463a 9823406e 2ac2252c 25352e10 0f4351c0 5908901f 040e5c9a 4a2e8a03 cc312885 3346280e 212d0873
        80dad405 32e106a1 c8098bc8 9c321688 a3a1510c aa10ea11 59415514 dc608560 808239e6 a8968056 56a87048 01980fb8
        9705c106 970826c2 6c1403a5 8026e931 4405ae0d 66ccc082 18d34819 0a51b614 05a19453 78445870 64a86d04 a18246e1
        98c9a184 55b400ca 69161988 5f18802c 8aa0249b 360b1c60 030c5729 243aa318 580530e6 a1510536 e8e41428 90254395
        15220f07 06f80235 829b4b02 0a548ce2 233c3085 4455234a c482f089 4042b7c1 fb020330 3261c80e d211350a 342894b1
        d7071801 85cc9910 3cce2440 6b00465c 0a23eca0 315ec024 10c70ab2 09b8285c 8560c269 026813d6 11118d59 50a63a24
        e40d40d2 048149eb 8b4a2027 60d24592 a02b9606 0ec45a44 c170ab20 4c091e13 0086f658 b2640c91 4cb35030 a29d02a8
        71916203 8510e0ce 180cc58d 3f032051 6228896a 3012136d 941474a4 81829a9a 2c74910c c914cc41 902f2948 55a1a380
        ce820d42 2d2268a2 12c0f330 1968262a 6a439209 0bad8086 20f95160 46581c85 b1438981 064d20b9 d25a4250 78192582
        03079172 43c02acc 07803d1c 087109f1 80b42647 680a4179 0a6a4d0c 6e056818 11775440 b8211a94 84178724 8630d582
        cd2682c0 b088e845 080caf32 9cc8501a e4c38013 83123b81 404d5907 ad901609 0043e2ae 73840163 214ca255 21f42419
        caa044b4 71998844 1c540d0b d0001cfa 150a623c e02832a3 0686106f 2601b1d8 457a088a c0d8a518 2c40de60 1e294283
        da32b040 16b18a42 0c1284b7 008f3ca1 b5a06130 921e009d 6086ca94 c2696045 ddc80301 ab261442 43c28c31 4a84632a
        22987e04 602470d9 19c5c0c8 2c80079e 492015ad 091b6942 93d010e4 1070b817 67189910 126226d8 607d060c f4514828
        07254f01 c89f3008 8c047362 320cf02a 0ef40170 111904de 54466914 9ea888a0 20917385 4121f41a ab05882c 7d2d0044
        b124c28a 80a91a39 640a9346 a8c40987 14da05e0 63037444 09be4301 22b208ae 60e12d41 ad025035 381ad098 8c42a85a
        5008c667 8a472292 53240d94 55c05489 585012e9 24acac42 5237a021 02d9942a 0d29c314 2952e501 ce1d0414 1a026b85
        d4900936 674411a2 824183ad 31d21642 86086c69 07107272 a1e85890 0415d8cc 816e2582 36613007 f284a608 b021852b
        54470274 2ca38c88 88a6115c 2d4922e0 91649074 2b18025b c0055fc0 5a3cd100 918aa0e1 0595f005 4232c057 a23887c0
        8960384e 58d1e402 410baa34 b0151913 c86a4318 1a234e12 22a72a48 52a09e28 119561a8 6a8028f1 25cd8222 63008597
        e4423c24 18044cfc 09e13590 1506ec48 e3324109 244445d5 462e1491 9248630b fa580a04 48ce3043 a58c420e 286350a3
        063416a6 4891a299 968291c4 4117031d 9509a528 17884893 508a1533 ca44d00e 903483d8 8661e070 0b504ec2 280ca9e4
        461e6062 38f19202 c38b4124 841949c5 14a98744 15441e38 2033dc28 d4409293 0b29390a 01e0a1ae 1c9c8630 70323a09
        b0082d4e 4f209c41 bec14005 b4934282 249a1139 5952206c 2245db10 21684c27 808d0f0d 81ae6414 ec342038 8355d401
        c98c11c2 30930077 0e28e0c9 404704ed 1d13248c 274a8a90 045a1ad2 c3202366 6405c3e0 2ba48115 790a2494 72413d20
        9a045227 28d0ca58 49e1034a 922c188e 831424d9 a8260ea1 c4ed8081 c1318872 ea80c909 1c0bb821 1e146151 0149768a
        46c23314 e8123125 24a45c64 2025475a 16510b68 984d4c24 59c28a44 433290aa b28098c3 8c304d26 270027a6 e440545a
        10a25a59 66965c00 10dd2243 1aee8088 42423857 61a812b8 9468e888 8742c581 e3b92100 587148c4 71a41229 510e8e42
        346b0107 8459914c b2554032 5a0380f8 4c770051 21865c32 b020e64c a510a247 0a644275 129e2c09 511079c4 a6496444
        85b0f00a 2906223e
    """,
}
_CRUMB_TABLES = {k: len(v.split()) for k, v in _CRUMB_DESIGNS.items()}


class DedupInputError(MedmixError, ValueError):
    """An input array cannot be a column of 64-bit hashes (wrong dtype, shape, or values)."""


# ---------------------------------------------------------------------------------------------
# input handling and small helpers


def as_hashes(values: Iterable[int] | np.ndarray, *, name: str = "hashes") -> np.ndarray:
    """Return `values` as a 1-D uint64 array, refusing anything that is not a 64-bit hash column.

    int64 input is reinterpreted bit for bit (stores without unsigned types keep pHashes as
    int64). Floats, negative narrower ints or 2-D arrays are refused with the reason, because a
    silently rounded hash would silently change which images count as duplicates.
    """
    if isinstance(values, np.ndarray):
        arr = values
    else:
        seq = list(values)
        try:
            if seq and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in seq):
                arr = np.asarray(seq, dtype=np.int64 if min(seq) < 0 else np.uint64)
            else:
                arr = np.asarray(seq)
        except OverflowError:
            raise DedupInputError(f"{name} holds integers outside the 64-bit range") from None
    if arr.ndim != 1:
        raise DedupInputError(f"{name} must be a 1-D array of 64-bit hashes, got shape {arr.shape}")
    if arr.dtype == np.uint64:
        return arr
    if arr.dtype == np.int64:
        return arr.view(np.uint64)
    if arr.size == 0:
        return np.zeros(0, dtype=np.uint64)
    if arr.dtype.kind == "u":
        return arr.astype(np.uint64)
    if arr.dtype.kind == "i":
        if (arr < 0).any():
            raise DedupInputError(f"{name} holds negative values in a {arr.dtype} array; pass uint64 or int64")
        return arr.astype(np.uint64)
    raise DedupInputError(f"{name} must hold 64-bit integer hashes, got dtype {arr.dtype}")


def _check_distance(max_distance: int) -> int:
    if isinstance(max_distance, bool) or not isinstance(max_distance, (int, np.integer)):
        raise DedupInputError(f"max_distance must be an integer, got {max_distance!r}")
    d = int(max_distance)
    if not 0 <= d <= 64:
        raise DedupInputError(f"max_distance must be between 0 and 64 bits, got {d}")
    return d


def hamming(a: np.ndarray | int, b: np.ndarray | int) -> np.ndarray:
    """Element-wise Hamming distance of 64-bit hashes (uint64 arrays or ints, broadcasting), as int64.

    The one definition: dedup, decontamination, the removed-rows audit and the tests all count bits here.
    """
    return np.bitwise_count(np.bitwise_xor(np.asarray(a, np.uint64), np.asarray(b, np.uint64))).astype(np.int64)


def components(n: int, pairs: np.ndarray) -> np.ndarray:
    """Connected components of `n` nodes joined by `pairs`; label = smallest node index in the component.

    Labelling by the smallest member (not by scipy's arbitrary component number) makes labels a
    function of the partition and the row order only, so equal inputs give equal labels anywhere.
    """
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if pairs.size == 0:
        return np.arange(n, dtype=np.int64)
    graph = coo_matrix((np.ones(len(pairs), dtype=np.int8), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    _, comp = connected_components(graph, directed=False)
    smallest = np.full(comp.max() + 1, n, dtype=np.int64)
    np.minimum.at(smallest, comp, np.arange(n, dtype=np.int64))
    return smallest[comp]


def exact_clusters(keys: Sequence[str | bytes | None] | pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Label rows with equal keys (e.g. `image_hash`, `text_key`) by their smallest row index.

    Null keys never match anything (a row without an image is not a duplicate of another row
    without an image). Uses Arrow's hash-based dictionary encoding: O(n), exact, no Python loop.
    """
    arr = keys if isinstance(keys, (pa.Array, pa.ChunkedArray)) else pa.array(list(keys))
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    n = len(arr)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type) or pa.types.is_binary(arr.type)
            or pa.types.is_large_binary(arr.type) or pa.types.is_null(arr.type)):
        raise DedupInputError(f"exact keys must be strings or bytes, got Arrow type {arr.type}")
    rows = np.arange(n, dtype=np.int64)
    if pa.types.is_null(arr.type):
        return rows
    encoded = pc.dictionary_encode(arr)
    valid = np.asarray(encoded.indices.is_valid())
    codes = np.asarray(encoded.indices.fill_null(0)).astype(np.int64)
    first = np.full(max(1, len(encoded.dictionary)), n, dtype=np.int64)
    np.minimum.at(first, codes[valid], rows[valid])
    return np.where(valid, first[codes], rows)


# ---------------------------------------------------------------------------------------------
# the covering design


def _masks(m: int, r: int) -> np.ndarray:
    combos = np.array(list(itertools.combinations(range(m), r)), dtype=np.int64).reshape(-1, r)
    return (np.int64(1) << combos).sum(axis=1) if r else np.zeros(1, dtype=np.int64)


@functools.lru_cache(maxsize=64)
def _design(max_distance: int, k: int) -> tuple[tuple[int, ...], ...]:
    """k-nibble subsets such that every set of 16 - d nibbles contains at least one.

    Greedy set cover (always take the subset covering most uncovered (16-d)-sets; ties go to the
    first in lexicographic order, so the design is deterministic). Greedy is not optimal (the
    counting bound for d=8, k=5 is 78 tables; greedy finds 210) but it is exhaustively checked,
    which is what exactness rests on.
    """
    d = max_distance
    if not 1 <= k <= _NIBBLES - d:
        raise ValueError(f"no {k}-nibble design for distance {d}")
    agree_sets = _masks(_NIBBLES, _NIBBLES - d)
    subsets = _masks(_NIBBLES, k)
    chosen: list[int] = []
    alive = np.ones(len(agree_sets), dtype=bool)
    # covers[i, j]: subset j lies inside agree-set i. At most 12870 x 4368 booleans (d=8, k=5),
    # built in row blocks so the int temporaries stay small.
    agree16, sub16 = agree_sets.astype(np.uint16), subsets.astype(np.uint16)
    covers = np.empty((len(agree16), len(sub16)), dtype=bool)
    for r0 in range(0, len(agree16), 512):
        block = agree16[r0:r0 + 512, None] & sub16[None, :]
        np.equal(block, sub16[None, :], out=covers[r0:r0 + 512])
    gains = covers.sum(axis=0).astype(np.int64)
    while alive.any():
        j = int(np.argmax(gains))
        chosen.append(j)
        newly = alive & covers[:, j]
        gains -= covers[newly].sum(axis=0)
        alive &= ~newly
    if not covers[:, chosen].any(axis=1).all():  # pragma: no cover - the loop above guarantees it
        raise AssertionError("covering design is incomplete")
    return tuple(tuple(b for b in range(_NIBBLES) if subsets[j] >> b & 1) for j in chosen)


def _nibble_mask(subset: Sequence[int]) -> int:
    return sum(1 << b for b in subset)


@functools.lru_cache(maxsize=64)
def _first_table(design: tuple[tuple[int, ...], ...]) -> np.ndarray:
    """For every 16-bit set of agreeing nibbles, the first table whose key those nibbles contain.

    A true pair collides in every table whose nibbles it agrees on; keeping it only in the first
    such table means each pair is reported exactly once, however many tables it shows up in.
    """
    masks = np.arange(1 << _NIBBLES, dtype=np.int64)
    first = np.full(1 << _NIBBLES, len(design), dtype=np.int32)
    for t in range(len(design) - 1, -1, -1):
        s = _nibble_mask(design[t])
        first[(masks & s) == s] = t
    return first


def _agree_nibbles(x: np.ndarray) -> np.ndarray:
    """16-bit mask of the nibbles where the XOR `x` of two hashes is zero."""
    x = x | (x >> _U64(1))
    x |= x >> _U64(2)
    x &= _U64(0x1111111111111111)  # bit 4j set <=> nibble j differs
    differ = np.zeros(len(x), dtype=np.int64)
    for j in range(_NIBBLES):
        differ |= ((x >> _U64(4 * j)) & _U64(1)).astype(np.int64) << j
    return differ ^ 0xFFFF


def _nibbles(hashes: np.ndarray) -> list[np.ndarray]:
    return [((hashes >> _U64(4 * j)) & _U64(15)).astype(np.uint8) for j in range(_NIBBLES)]


def _key(nibbles: list[np.ndarray], subset: Sequence[int], shift: int, out: np.ndarray, tmp: np.ndarray) -> None:
    """out |= the subset's nibbles packed into consecutive bits starting at `shift`."""
    for p, j in enumerate(subset):
        np.left_shift(nibbles[j], _U64(shift + 4 * p), out=tmp, dtype=np.uint64)
        np.bitwise_or(out, tmp, out=out)


def _plan(d: int, rows: int, pairs: float, method: str, *, wide: bool = True) -> tuple[str, tuple[str, int]]:
    """Pick brute force or multi-index tables, and the design: block kind and key size k in blocks.

    Cost = tables x (fixed + row work + expected in-bucket comparisons of random hashes) against
    one comparison per pair for brute force. The in-bucket term grows with N at a fixed key width
    (rows x rows / 2**bits), which is why large inputs go to wider keys ("crumb" designs: 22 or
    24 bits, more tables) and smaller ones to the nibble designs (<= 20 bits, fewer tables).
    `wide=False` keeps to nibble designs (`_table_match` builds its keys from nibbles). Small
    inputs (a few thousand hashes) go brute force without building any design.
    """
    if method not in ("auto", "tables", "brute"):
        raise DedupInputError(f"method must be 'auto', 'tables' or 'brute', got {method!r}")
    if method == "brute" or (method == "auto" and (d >= _NIBBLES or pairs <= 2_000_000)):
        return "brute", ("", 0)
    if d >= _NIBBLES:
        raise DedupInputError(f"max_distance {d} leaves no nibble guaranteed to agree; use method='brute'")
    options = [("nibble", k, len(_design(d, k)), 4 * k) for k in range(1, min(5, _NIBBLES - d) + 1)]
    if wide and d <= 8:
        options += [("crumb", k, _CRUMB_TABLES[k], 2 * k) for k in sorted(_CRUMB_DESIGNS)]
    best, best_cost = ("nibble", 1), float("inf")
    for kind, k, tables, bits in options:
        in_bucket = pairs / float(1 << bits)
        if kind == "nibble":
            cost = tables * (_COST_TABLE + _COST_ROW * rows + _COST_BUCKET_PAIR * in_bucket)
        else:
            cost = _WIDE_SETUP + tables * (_WIDE_TABLE + _WIDE_ROW * rows + _WIDE_BUCKET_PAIR * in_bucket)
        if cost < best_cost:
            best, best_cost = (kind, k), cost
    if method == "auto" and pairs * _COST_PAIR <= best_cost:
        return "brute", ("", 0)
    return "tables", best


# ---------------------------------------------------------------------------------------------
# wide keys: covering designs over 2-bit blocks, tables as 64-bit masks

_CRUMBS = 32
_LANE_BITS = 4  # rows are split into 2**4 lanes by an anchor of two crumbs every table of a group holds


def _crumb_masks(crumb_sets: Iterable[int]) -> tuple[int, ...]:
    """32-bit crumb masks -> 64-bit bit masks (crumb j is bits 2j and 2j+1)."""
    out = []
    for cm in crumb_sets:
        out.append(sum(3 << (2 * j) for j in range(_CRUMBS) if cm >> j & 1))
    return tuple(out)


def _dirty_sets(m: int, d: int) -> np.ndarray:
    """Every d-subset of m <= 32 blocks as a uint32 mask (C(32, 8) = 10.5M for the crumb designs)."""
    lo_bits = min(16, m)
    hi_bits = m - lo_bits
    count_lo = np.bitwise_count(np.arange(1 << lo_bits, dtype=np.uint32))
    count_hi = np.bitwise_count(np.arange(1 << hi_bits, dtype=np.uint32))
    parts = []
    for i in range(max(0, d - hi_bits), min(d, lo_bits) + 1):
        lo = np.flatnonzero(count_lo == i).astype(np.uint32)
        hi = np.flatnonzero(count_hi == d - i).astype(np.uint32)
        parts.append(((hi[:, None] << np.uint32(lo_bits)) | lo[None, :]).ravel())
    return np.concatenate(parts)


@functools.lru_cache(maxsize=8)
def _crumb_design(max_distance: int, k: int) -> tuple[int, ...]:
    """A stored covering design of k-crumb tables (2k-bit keys) for distances up to 8, checked here.

    A pair within distance d <= 8 differs in at most 8 of the 32 crumbs (2-bit blocks); a table
    is usable for it when none of its crumbs differs. The stored designs (`_CRUMB_DESIGNS`, found
    offline by a seeded randomized greedy search) leave, for EVERY set of 8 crumbs, a table that
    avoids all of them; smaller sets are subsets of such a set, so any d <= 8 is covered. That
    claim is what exactness rests on, so it is re-checked exhaustively over all C(32, 8) = 10.5M
    sets on first use (~1 s), not trusted.
    """
    if max_distance > 8 or k not in _CRUMB_DESIGNS:
        raise ValueError(f"no stored {k}-crumb design for distance {max_distance}")
    crumb_sets = tuple(int(x, 16) for x in _CRUMB_DESIGNS[k].split())
    left = _dirty_sets(_CRUMBS, 8)
    for cm in crumb_sets:
        left = left[(left & np.uint32(cm)) != 0]
    if left.size or any(bin(cm).count("1") != k for cm in crumb_sets):
        raise AssertionError(f"stored {k}-crumb design is not a covering design")  # pragma: no cover
    return _crumb_masks(crumb_sets)


def _design_masks(d: int, kind: str, k: int) -> tuple[int, ...]:
    if kind == "nibble":
        return tuple(sum(15 << (4 * j) for j in subset) for subset in _design(d, k))
    return _crumb_design(d, k)


def _perm_luts(mask: int) -> tuple[np.ndarray, np.ndarray]:
    """16-bit lookup tables of the bit permutation that moves `mask`'s bits to the top of the word.

    Built per table (~2 ms), not cached: the two tables are 4 MiB, and an lru_cache over 342
    masks held 1.3 GiB, which put the 3.35M rehearsal's driver at 3,490 MiB (2026-12-07).

    fwd[c][v] is where the 16 bits v of chunk c land (key bits in order at the top, the others in
    order below them); inv undoes it. The permuted word holds the whole hash, so sorting it groups
    equal keys AND keeps the exact Hamming distance (a permutation of bits changes no popcount).
    """
    dest = np.empty(64, dtype=np.int64)
    top, low = 64 - bin(mask).count("1"), 0
    for b in range(64):
        if mask >> b & 1:
            dest[b], top = top, top + 1
        else:
            dest[b], low = low, low + 1
    src = np.argsort(dest)
    v8 = np.arange(256, dtype=np.uint64)
    fwd, inv = np.zeros((4, 1 << 16), dtype=np.uint64), np.zeros((4, 1 << 16), dtype=np.uint64)
    for table, to in ((fwd, dest), (inv, src)):
        for c in range(4):
            halves = []
            for half in range(2):
                t8 = np.zeros(256, dtype=np.uint64)
                for j in range(8):
                    t8 |= ((v8 >> _U64(j)) & _U64(1)) << _U64(int(to[16 * c + 8 * half + j]))
                halves.append(t8)
            table[c] = (halves[1][:, None] | halves[0][None, :]).ravel()
    return fwd, inv


def _unpermute(words: np.ndarray, inv: np.ndarray) -> np.ndarray:
    out = np.zeros(len(words), dtype=np.uint64)
    for c in range(4):
        out |= inv[c][((words >> _U64(16 * c)) & _U64(0xFFFF)).astype(np.intp)]
    return out


def _mask_groups(masks: Sequence[int]) -> list[tuple[int, list[int]]]:
    """Group tables under a shared anchor of two crumbs (greedy: the pair in most ungrouped tables)."""
    crumbs = [{j for j in range(_CRUMBS) if m >> (2 * j) & 3 == 3} for m in masks]
    todo = set(range(len(masks)))
    groups = []
    while todo:
        counts: dict[tuple[int, int], int] = {}
        for t in todo:
            for pair in itertools.combinations(sorted(crumbs[t]), 2):
                counts[pair] = counts.get(pair, 0) + 1
        a, b = max(counts, key=lambda p: (counts[p], -p[0], -p[1]))
        tables = sorted(t for t in todo if a in crumbs[t] and b in crumbs[t])
        groups.append(((3 << (2 * a)) | (3 << (2 * b)), tables))
        todo -= set(tables)
    return groups


def _first_in_design(z: np.ndarray, masks: np.ndarray, t: int) -> np.ndarray:
    """True where no table before t has all its key bits agreeing for XOR `z` (report a pair once)."""
    keep = np.ones(len(z), dtype=bool)
    if t == 0 or z.size == 0:
        return keep
    step = max(1, _CHUNK_ELEMS // t)
    for i in range(0, len(z), step):
        keep[i:i + step] = ((z[i:i + step, None] & masks[None, :t]) != 0).all(axis=1)
    return keep


def _mask_table(u: np.ndarray, cols: list[np.ndarray], bounds: np.ndarray, marr: np.ndarray, d: int,
                t: int) -> np.ndarray | None:
    """Near pairs (positions in `u`) first found by table t, over the lanes of one group."""
    from medmix.mix.word_runs import near_in_runs, permute_words

    lane_max = int(np.diff(bounds).max())
    fwd, inv = _perm_luts(int(marr[t]))
    limit = _U64(1 << (64 - bin(int(marr[t])).count("1")))  # words XOR below this: same key
    w = np.empty(lane_max, dtype=np.uint64)
    out_a, out_b = np.empty(_RUN_PAIRS, dtype=np.uint64), np.empty(_RUN_PAIRS, dtype=np.uint64)
    hits_a: list[np.ndarray] = []
    hits_b: list[np.ndarray] = []
    for lo, hi in itertools.pairwise(bounds):
        if hi - lo < 2:
            continue
        c = w[:hi - lo]
        permute_words(cols[0][lo:hi], cols[1][lo:hi], cols[2][lo:hi], cols[3][lo:hi], fwd, c)
        c.sort()
        found = near_in_runs(c, limit, d, out_a, out_b)
        if found > len(out_a):  # more than the buffers hold (many near copies): again, with room
            out_a, out_b = np.empty(found, dtype=np.uint64), np.empty(found, dtype=np.uint64)
            found = near_in_runs(c, limit, d, out_a, out_b)
        if found:
            hits_a.append(out_a[:found].copy())
            hits_b.append(out_b[:found].copy())
    if not hits_a:
        return None
    wa, wb = np.concatenate(hits_a), np.concatenate(hits_b)
    keep = _first_in_design(_unpermute(wa ^ wb, inv), marr, t)
    if not keep.any():
        return None
    ia = np.searchsorted(u, _unpermute(wa[keep], inv))
    ib = np.searchsorted(u, _unpermute(wb[keep], inv))
    return np.stack([np.minimum(ia, ib), np.maximum(ia, ib)], axis=1)


def _mask_self_pairs(u: np.ndarray, d: int, masks: Sequence[int], threads: int | None = None) -> np.ndarray:
    """Exact near pairs among distinct sorted hashes `u`, one sort per table of the design `masks`.

    Per table, every hash is permuted so the table's key bits are the top of the word (16-bit
    lookup tables, `_perm_luts`) and the words are sorted: rows sharing the key are adjacent, and
    the XOR of two words has the exact distance as its popcount, so no row index, gather or
    second check is needed. Rows are first split into 16 lanes by two crumbs that every table of
    a group holds (`_mask_groups`), which keeps a lane's sort and passes in cache. Tables run on
    a thread pool (numpy's sort and element-wise loops release the GIL). A pair within d is found
    in every table whose key bits all agree; it is kept only in the first (`_first_in_design`).
    """
    n = len(u)
    marr = np.array(masks, dtype=np.uint64)
    if threads is None:
        threads = max(1, min(_MAX_THREADS, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                             else (os.cpu_count() or 1)))
    found: list[np.ndarray] = []
    for anchor, tables in _mask_groups(masks):
        lane = np.zeros(n, dtype=np.uint8)
        for i, b in enumerate(b for b in range(64) if anchor >> b & 1):
            lane |= ((u >> _U64(b)) & _U64(1)).astype(np.uint8) << np.uint8(i)
        order = np.argsort(lane, kind="stable")
        bounds = np.searchsorted(lane[order], np.arange((1 << _LANE_BITS) + 1))
        del lane
        ua = u[order]
        del order
        cols = [((ua >> _U64(16 * c)) & _U64(0xFFFF)).astype(np.uint16) for c in range(4)]
        del ua
        one_table = functools.partial(_mask_table, u, cols, bounds, marr, d)
        if threads > 1 and len(tables) > 1:
            with ThreadPoolExecutor(max_workers=threads) as pool:
                results = list(pool.map(one_table, tables))
        else:
            results = [one_table(t) for t in tables]
        found.extend(r for r in results if r is not None)
        del cols
    return np.concatenate(found).astype(np.int64) if found else np.zeros((0, 2), dtype=np.int64)


# ---------------------------------------------------------------------------------------------
# near pairs among distinct hashes


def _brute_self_pairs(u: np.ndarray, d: int) -> np.ndarray:
    n = len(u)
    out: list[np.ndarray] = []
    step = max(1, _CHUNK_ELEMS // max(n, 1))
    for i0 in range(0, n, step):
        i1 = min(n, i0 + step)
        dist = np.bitwise_count(u[i0:i1, None] ^ u[None, i0:])
        ii, jj = np.nonzero(dist <= d)
        ii = ii + i0
        jj = jj + i0
        keep = jj > ii
        out.append(np.stack([ii[keep], jj[keep]], axis=1))
    return np.concatenate(out).astype(np.int64) if out else np.zeros((0, 2), dtype=np.int64)


def _fold(u: np.ndarray, bits: int) -> np.ndarray:
    """XOR-fold 64-bit hashes to `bits` bits: hamming(fold(x), fold(y)) <= hamming(x, y) always.

    Each input bit feeds exactly one output bit, so the folded distance never exceeds the true
    one; that makes it a free, exact filter that rides along in the sort key (see below).
    """
    out = np.zeros(len(u), dtype=np.uint64)
    if bits <= 0:
        return out
    mask = _U64((1 << bits) - 1)
    for off in range(0, 64, bits):
        out ^= (u >> _U64(off)) & mask
    return out


def _anchors(design: tuple[tuple[int, ...], ...]) -> list[tuple[int, list[int]]]:
    """Group tables under a shared "anchor" nibble (greedy: the nibble in most unassigned tables)."""
    todo = set(range(len(design)))
    groups = []
    while todo:
        anchor = max(range(_NIBBLES), key=lambda j: (sum(j in design[t] for t in todo), -j))
        tables = sorted(t for t in todo if anchor in design[t])
        groups.append((anchor, tables))
        todo -= set(tables)
    return groups


def _table_self_pairs(u: np.ndarray, d: int, k: int) -> np.ndarray:
    """Exact near pairs among distinct sorted hashes via one sort per covering-design table.

    Rows are split into 16 lanes by the value of one key nibble (the table's anchor); pairs that
    share the key share the lane, and a lane (~1/16 of the rows) fits in cache, which makes the
    sorts and passes below about twice as fast as on the whole array. In a lane, each table sorts
    a packed uint64 word [other k-1 key nibbles | folded hash | row index in lane]. Rows sharing
    the key are adjacent. For two rows of one run, the XOR of their words has zero key bits and
    the folded distance in the middle bits: a lower bound of the true distance (see `_fold`)
    that rejects ~99 % of random pairs before the real hashes are gathered. Offset-1 pairs are
    checked on contiguous slices, larger offsets only inside runs of 3 or more rows.
    """
    design = _design(d, k)
    first = _first_table(design)
    nib = _nibbles(u)
    found: list[np.ndarray] = []
    for anchor, tables in _anchors(design):
        order = np.argsort(nib[anchor], kind="stable")
        bounds = np.searchsorted(nib[anchor][order], np.arange(_NIBBLES + 1))
        lane_max = int(np.diff(bounds).max())
        ib = max(1, (lane_max - 1).bit_length())
        key_shift = 64 - 4 * (k - 1)
        if ib > key_shift:
            raise DedupInputError(f"too many distinct hashes ({len(u):,}) for one call")
        ua = u[order]
        local = np.arange(len(u), dtype=np.uint64) - np.repeat(bounds[:-1], np.diff(bounds)).astype(np.uint64)
        base = (_fold(ua, key_shift - ib) << _U64(ib)) | local
        used = sorted({j for t in tables for j in design[t]} - {anchor})
        nib_a = {j: nib[j][order] for j in used}
        idx_mask, ibits = _U64((1 << ib) - 1), _U64(ib)
        fold_limit = _U64(1 << (key_shift - ib))  # words XOR below this: same key
        keyed = key_shift < 64  # k = 1: the anchor is the whole key, a lane is one run
        key32, tmp32 = np.empty(lane_max, dtype=np.uint32), np.empty(lane_max, dtype=np.uint32)
        comp = np.empty(lane_max, dtype=np.uint64)
        xor1 = np.empty(lane_max, dtype=np.uint64)
        same = np.zeros(lane_max + 1, dtype=bool)
        for t in tables:
            others = [j for j in design[t] if j != anchor]
            for lo, hi in itertools.pairwise(bounds):
                m = int(hi - lo)
                if m < 2:
                    continue
                key, tmp, c, x, sm = key32[:m], tmp32[:m], comp[:m], xor1[:m - 1], same[:m]
                key.fill(0)
                for p, j in enumerate(others):
                    np.left_shift(nib_a[j][lo:hi], np.uint32(4 * p), out=tmp, dtype=np.uint32)
                    np.bitwise_or(key, tmp, out=key)
                if keyed:
                    np.left_shift(key, _U64(key_shift), out=c, dtype=np.uint64)
                    np.bitwise_or(c, base[lo:hi], out=c)
                else:
                    c[:] = base[lo:hi]
                c.sort()
                np.bitwise_xor(c[1:], c[:-1], out=x)
                np.right_shift(x, ibits, out=x)
                np.less(x, fold_limit, out=sm[:-1])  # sm[p]: rows p and p+1 share the key
                sm[-1] = False  # a run never extends past the lane
                left = [np.flatnonzero((x < fold_limit) & (np.bitwise_count(x) <= d))]
                right = [left[0] + 1]
                # (p, p+s+1) share the key iff (p, p+s) do and sm[p+s]
                pos = np.flatnonzero(sm[:-2] & sm[1:-1])
                step = 2
                while pos.size:
                    hit = pos[np.bitwise_count((c[pos] ^ c[pos + step]) >> ibits) <= d]
                    left.append(hit)
                    right.append(hit + step)
                    pos = pos[sm[pos + step]]
                    step += 1
                pa, pb = np.concatenate(left), np.concatenate(right)
                if pa.size == 0:
                    continue
                ra = (c[pa] & idx_mask).astype(np.int64) + lo
                rb = (c[pb] & idx_mask).astype(np.int64) + lo
                xor = ua[ra] ^ ua[rb]
                close = np.bitwise_count(xor) <= d
                close[close] = first[_agree_nibbles(xor[close])] == t  # each pair in one table only
                if close.any():
                    ga, gb = order[ra[close]], order[rb[close]]
                    found.append(np.stack([np.minimum(ga, gb), np.maximum(ga, gb)], axis=1))
    return np.concatenate(found).astype(np.int64) if found else np.zeros((0, 2), dtype=np.int64)


def _unique_pairs(u: np.ndarray, d: int, method: str) -> np.ndarray:
    """Pairs (i < j) of positions in the sorted distinct hashes `u` within distance d, sorted."""
    n = len(u)
    if d == 0 or n < 2:
        return np.zeros((0, 2), dtype=np.int64)
    plan, (kind, k) = _plan(d, n, n * (n - 1) / 2, method)
    if plan == "brute":
        pairs = _brute_self_pairs(u, d)
    elif kind == "nibble":  # nibble keys pack from per-nibble arrays, cheaper than the lookup tables
        pairs = _table_self_pairs(u, d, k)
    else:
        pairs = _mask_self_pairs(u, d, _design_masks(d, kind, k))
    return _sort_pairs(pairs, n)


def _sort_pairs(pairs: np.ndarray, n: int) -> np.ndarray:
    if len(pairs) == 0:
        return np.zeros((0, 2), dtype=np.int64)
    code = np.unique(pairs[:, 0] * np.int64(n) + pairs[:, 1])
    return np.stack([code // n, code % n], axis=1)


def _group_rows(inverse: np.ndarray, groups: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows ordered by distinct hash, with each distinct hash's start offset and row count."""
    order = np.argsort(inverse, kind="stable").astype(np.int64)
    counts = np.bincount(inverse, minlength=groups).astype(np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    return order, starts, counts


def _expand(order: np.ndarray, starts: np.ndarray, counts: np.ndarray, upairs: np.ndarray) -> np.ndarray:
    """Row pairs: all pairs inside each group of identical hashes, and group x group for near pairs."""
    parts: list[np.ndarray] = []
    multi = np.flatnonzero(counts > 1)
    if multi.size:  # within identical hashes: every pair of the group's rows
        c = counts[multi]
        for size in np.unique(c):  # few distinct group sizes; one triangle per size
            a, b = np.triu_indices(int(size), 1)
            s = starts[multi[c == size]][:, None]
            parts.append(np.stack([order[(s + a).ravel()], order[(s + b).ravel()]], axis=1))
    if len(upairs):
        ca, cb = counts[upairs[:, 0]], counts[upairs[:, 1]]
        per = ca * cb
        p = np.repeat(np.arange(len(upairs)), per)
        r = np.arange(per.sum()) - np.repeat(np.cumsum(per) - per, per)
        a = starts[upairs[p, 0]] + r // cb[p]
        b = starts[upairs[p, 1]] + r % cb[p]
        parts.append(np.stack([order[a], order[b]], axis=1))
    if not parts:
        return np.zeros((0, 2), dtype=np.int64)
    rows = np.concatenate(parts)
    rows.sort(axis=1)
    return _sort_pairs(rows, len(order))


# ---------------------------------------------------------------------------------------------
# public API


def near_pairs(hashes: np.ndarray, max_distance: int = DEFAULT_IMAGE_DISTANCE, *, method: str = "auto",
               max_pairs: int = 50_000_000) -> np.ndarray:
    """All row pairs (i < j) with hamming(hashes[i], hashes[j]) <= max_distance, exact, sorted.

    Returns an (k, 2) int64 array in lexicographic order. Identical hashes are pairs too (distance
    0). `method` is "auto" (brute force when it is cheaper, i.e. a few thousand hashes; multi-index
    tables otherwise), "tables" or "brute"; all give the same answer. A column where thousands of
    rows share one hash has millions of row pairs: past `max_pairs` this raises instead of
    exhausting memory; `image_clusters` gives the grouping without listing pairs.
    """
    h = as_hashes(hashes)
    d = _check_distance(max_distance)
    if h.size < 2:
        return np.zeros((0, 2), dtype=np.int64)
    u, inverse = np.unique(h, return_inverse=True)
    upairs = _unique_pairs(u, d, method)
    order, starts, counts = _group_rows(inverse.ravel(), len(u))
    total = int((counts * (counts - 1) // 2).sum())
    if len(upairs):
        total += int((counts[upairs[:, 0]] * counts[upairs[:, 1]]).sum())
    if total > max_pairs:
        raise DedupInputError(
            f"near_pairs would return {total:,} row pairs (more than max_pairs={max_pairs:,}); "
            f"{int((counts > 1).sum()):,} hashes are shared by several rows, the largest by {int(counts.max()):,}. "
            "Use image_clusters() for the grouping.")
    return _expand(order, starts, counts, upairs)


def image_clusters(hashes: np.ndarray, max_distance: int = DEFAULT_IMAGE_DISTANCE, *,
                   method: str = "auto") -> np.ndarray:
    """Label each row with the smallest row index of its near-duplicate cluster.

    Clusters are connected components of the "within max_distance" graph (single linkage), so
    A~B and B~C put A and C together even if they are farther apart; the pipeline keeps one row
    per label. Computed over distinct hashes, so repeated hashes cost nothing extra.
    """
    h = as_hashes(hashes)
    d = _check_distance(max_distance)
    if h.size == 0:
        return np.zeros(0, dtype=np.int64)
    u, first_row, inverse = np.unique(h, return_index=True, return_inverse=True)
    comp = components(len(u), _unique_pairs(u, d, method))  # label = smallest distinct-hash position
    smallest_row = np.full(len(u), len(h), dtype=np.int64)
    np.minimum.at(smallest_row, comp, first_row.astype(np.int64))
    return smallest_row[comp][inverse.ravel()]


def near_match(index_hashes: np.ndarray, query_hashes: np.ndarray,
               max_distance: int = DEFAULT_IMAGE_DISTANCE, *, method: str = "auto") -> np.ndarray:
    """For each query row, the smallest index row within max_distance, or -1 when there is none.

    Built for decontamination: the index is the evaluation images (thousands), the queries are
    training images, fed in batches of any size (results do not depend on batching). Exact.
    """
    ih = as_hashes(index_hashes, name="index_hashes")
    qh = as_hashes(query_hashes, name="query_hashes")
    d = _check_distance(max_distance)
    result = np.full(qh.size, -1, dtype=np.int64)
    if ih.size == 0 or qh.size == 0:
        return result
    iu, ifirst = np.unique(ih, return_index=True)
    ifirst = ifirst.astype(np.int64)
    qu, qinv = np.unique(qh, return_inverse=True)
    plan, (_, k) = _plan(d, len(iu) + len(qu), float(len(iu)) * float(len(qu)), method, wide=False)
    best = _brute_match(iu, ifirst, qu, d) if plan == "brute" else _table_match(iu, ifirst, qu, d, k)
    return best[qinv.ravel()]


def near_any(index_hashes: np.ndarray, query_hashes: np.ndarray,
             max_distance: int = DEFAULT_IMAGE_DISTANCE, *, method: str = "auto") -> np.ndarray:
    """Boolean per query row: is it within max_distance of any index hash? (see `near_match`)"""
    return near_match(index_hashes, query_hashes, max_distance, method=method) >= 0


def _brute_match(iu: np.ndarray, ifirst: np.ndarray, qu: np.ndarray, d: int) -> np.ndarray:
    best = np.full(len(qu), -1, dtype=np.int64)
    # index rows sorted by first row, so the first hit along a row is the smallest index row
    by_row = np.argsort(ifirst, kind="stable")
    iu_sorted, rows_sorted = iu[by_row], ifirst[by_row]
    step = max(1, _CHUNK_ELEMS // len(iu))
    for q0 in range(0, len(qu), step):
        hit = np.bitwise_count(qu[q0:q0 + step, None] ^ iu_sorted[None, :]) <= d
        anyhit = hit.any(axis=1)
        pos = hit.argmax(axis=1)
        best[q0:q0 + step] = np.where(anyhit, rows_sorted[pos], -1)
    return best


def _table_match(iu: np.ndarray, ifirst: np.ndarray, qu: np.ndarray, d: int, k: int) -> np.ndarray:
    """Multi-index lookup: per table, a dense bucket array over the index keys (2**(4k) slots)."""
    design = _design(d, k)
    n_i, n_q = len(iu), len(qu)
    best = np.full(n_q, np.iinfo(np.int64).max, dtype=np.int64)
    inib, qnib = _nibbles(iu), _nibbles(qu)
    ikey, itmp = np.empty(n_i, dtype=np.uint64), np.empty(n_i, dtype=np.uint64)
    qkey, qtmp = np.empty(n_q, dtype=np.uint64), np.empty(n_q, dtype=np.uint64)
    slots = 1 << (4 * k)
    for subset in design:
        ikey.fill(0)
        _key(inib, subset, 0, ikey, itmp)
        qkey.fill(0)
        _key(qnib, subset, 0, qkey, qtmp)
        order = np.argsort(ikey, kind="stable")
        counts = np.bincount(ikey.astype(np.int64), minlength=slots)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        qc = counts[qkey.astype(np.int64)]
        for q0 in range(0, n_q, _CHUNK_ELEMS):  # expansion is chunked to bound memory
            sl = slice(q0, q0 + _CHUNK_ELEMS)
            c = qc[sl]
            hitq = np.flatnonzero(c) + q0
            if hitq.size == 0:
                continue
            per = qc[hitq]
            qrep = np.repeat(hitq, per)
            r = np.arange(per.sum()) - np.repeat(np.cumsum(per) - per, per)
            cand = order[starts[qkey[qrep].astype(np.int64)] + r]
            ok = np.bitwise_count(qu[qrep] ^ iu[cand]) <= d
            np.minimum.at(best, qrep[ok], ifirst[cand[ok]])
    best[best == np.iinfo(np.int64).max] = -1
    return best
