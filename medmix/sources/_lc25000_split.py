"""The fixed, seeded, leakage-aware train/validation/test split medmix defines for LC25000.

LC25000 ships no split, and its 25,000 tiles were made from only 1,250 originals (250 per class)
by Augmentor: a random rotation of up to 25 degrees (cropped and resized back) and random
horizontal/vertical flips. A random split therefore puts augmentations of one original on both
sides, and scores measure memory as much as transfer. The release does not say which original
each tile came from, so no split can be proven leak-free. What this split does:

1. Group near-duplicates within each class: two tiles are joined (union-find, so chains join) when
   one's 64-bit pHash is within `MAX_HAMMING` bits of the pHash of any of the other's 8
   flips/quarter-turns. This catches flips, quarter turns and small rotations; it does not catch
   every large-angle, zoomed augmentation, so some leakage remains and LC25000 numbers should be
   read as optimistic (ours and published ones alike).
2. Put each whole group in one split, chosen by a hash of (seed, class folder, the group's first
   file name) mapped to [0, 1): < 0.7 train, < 0.8 validation, else test. A group's split depends
   only on its own key, so a tile whose grouping changes (another JPEG decoder rounding one hash
   bit differently) moves only its own group, never cascading into the rest of the split.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

from medmix.core.errors import MedmixError
from medmix.sources._native import list_images

SPLIT_EDGES: tuple[tuple[str, float], ...] = (("train", 0.7), ("validation", 0.8), ("test", 1.0))
MAX_HAMMING = 8
SEED = 0


def dihedral_hashes(path: Path) -> tuple[int, ...]:
    """pHashes of the image's 8 flips/quarter-turns (the first is the image as is).

    The 32x32 thumbnail is turned, not the image, so the 8 hashes cost one decode; the DCT is
    the project's pHash (`medmix.imaging.phash.dct_bits`), the same one dedup uses. Comparing one tile's
    hash with all 8 of another's is what makes a mirrored or turned copy match: a single
    "canonical" hash (say the smallest of the 8) is not stable, because one flipped bit near the
    median can make a different variant the smallest.
    """
    from PIL import Image

    from medmix.imaging.phash import THUMB_SIDE, dct_bits

    try:
        with Image.open(path) as img:
            img.draft("L", (4 * THUMB_SIDE, 4 * THUMB_SIDE))  # JPEG DCT scaling: decode at >= 1/8 size
            thumb = np.asarray(img.convert("L").resize((THUMB_SIDE, THUMB_SIDE), Image.Resampling.LANCZOS))
    except OSError as exc:
        raise MedmixError(f"{path}: cannot decode image for the LC25000 split ({exc})") from None
    return tuple(dct_bits(np.ascontiguousarray(np.rot90(t, k))) for t in (thumb, thumb[:, ::-1]) for k in range(4))


def _popcount(x: np.ndarray) -> np.ndarray:
    if hasattr(np, "bitwise_count"):  # numpy >= 2.0
        return np.bitwise_count(x)
    return np.unpackbits(x[..., None].view(np.uint8), axis=-1).sum(axis=-1)


def near_duplicate_groups(hashes: Sequence[Sequence[int]], max_hamming: int = MAX_HAMMING) -> list[int]:
    """Group index (the smallest member index) per item, joining items within `max_hamming` bits.

    `hashes[i]` holds item i's hash as is, then any variants (its flips and turns); items i and j
    are near-duplicates when i's own hash is close to any variant of j. Joins are transitive
    (union-find), so a chain of near-duplicates is one group.
    """
    table = np.array([list(h) for h in hashes], dtype=np.uint64).reshape(len(hashes), -1)
    n = len(table)
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    own = table[:, 0]
    block = 256
    for start in range(0, n, block):
        rows = own[start:start + block]
        # (rows, all items, variants) → closest variant per pair, in bounded blocks of memory.
        dist = _popcount(rows[:, None, None] ^ table[None, :, :]).min(axis=2)
        for i, j in zip(*np.nonzero(dist <= max_hamming)):
            a, b = find(start + int(i)), find(int(j))
            if a != b:
                parent[max(a, b)] = min(a, b)
    return [find(i) for i in range(n)]


def split_of_key(key: str, seed: int = SEED) -> str:
    """The split a group lands in: a stable hash of its key, cut at the split fractions."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    return next(name for name, edge in SPLIT_EDGES if u < edge)


def _folder_fingerprint(folder: Path) -> tuple[tuple[str, int], ...]:
    return tuple((p.name, p.stat().st_size) for p in list_images(folder))


@lru_cache(maxsize=8)
def _split_cached(folder: str, fingerprint: tuple[tuple[str, int], ...], seed: int) -> dict[str, str]:
    root = Path(folder)
    names = [name for name, _ in fingerprint]
    groups = near_duplicate_groups([dihedral_hashes(root / name) for name in names])
    return {name: split_of_key(f"{root.name}/{names[g]}", seed) for name, g in zip(names, groups)}


def split_class_folder(folder: Path, seed: int = SEED) -> dict[str, str]:
    """File name → split for every image of one LC25000 class folder (cached per process)."""
    folder = Path(folder)
    return _split_cached(str(folder.resolve()), _folder_fingerprint(folder), seed)
