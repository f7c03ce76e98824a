"""Confirming a perceptual-hash match against an evaluation image with the pictures themselves.

Why: a 64-bit pHash within `decontaminate.image_distance` (10 bits by default, chosen for recall)
is necessary for a copy but, across millions of rows, not sufficient. The full 3.35M rehearsal
(benchmarks/rehearsal.py, 2026-12-06) removed 480 rows as evaluation images: the 414 planted
copies and 66 distinct pictures whose hashes fell 8-10 bits from one of 451 evaluation images by
chance. So each match is confirmed on the 32x32 luma thumbnails the hash itself is computed from
(`medmix.imaging.phash.thumbnail`): their Pearson correlation must reach
`decontaminate.image_correlation` (default 0.8). The threshold is measured, not guessed:

* real images (tests/mix/test_dedup.py's 57, pydicom and scikit-learn) against their edited
  copies: >= 0.995 for half size, JPEG q70 and +3 % brightness, >= 0.932 for a 2 % crop, >= 0.956
  with all four edits at once;
* the rehearsal's 414 planted copies: >= 0.982; its 66 chance matches: <= 0.33;
* distinct real images correlate up to 0.905 (two tiles of one DICOM series), but those lie
  16+ bits apart, so the hash never asks.

A threshold of 0.8 leaves 0.13 below the worst real copy. Two distinct pictures that match on the
hash and correlate >= 0.8 (two chest films of the same view, say) are still removed: recall first,
as the hash distance was chosen.

Cost: one decoded picture per candidate side, read row group by row group (`unit_rows`); the
evaluation side is decoded once, the training side streamed, so memory is one row group plus a
4 KB thumbnail per evaluation image involved.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from PIL import Image

from medmix.imaging.phash import pixels_of, thumbnail
from medmix.mix.unit_rows import RowPlaces, Side, group_by_file, read_rows

DEFAULT_CORRELATION = 0.8


def picture_thumb(data: bytes | None) -> np.ndarray | None:
    """The 32x32 luma thumbnail pHash is computed from, as float32; None when nothing decodes."""
    if not data:
        return None
    try:
        with Image.open(io.BytesIO(data)) as im:
            return thumbnail(pixels_of(im)).astype(np.float32)
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two thumbnails: 1.0 for two flat pictures, 0.0 for one flat one
    (a blank frame is not a copy of a picture, nor is a picture of a blank frame)."""
    a = a.astype(np.float64).ravel() - a.mean()
    b = b.astype(np.float64).ravel() - b.mean()
    na, nb = float(a @ a), float(b @ b)
    if na < 1e-9 or nb < 1e-9:
        return 1.0 if na < 1e-9 and nb < 1e-9 else 0.0
    return float(a @ b) / np.sqrt(na * nb)


def confirm_pairs(pairs: Sequence[tuple[Side, Side]], threshold: float) -> np.ndarray:
    """For each (training side, evaluation side): do the pictures correlate >= `threshold`?

    A side whose image cannot be read counts as confirmed: the hash matched, and the pixels are
    no evidence against it."""
    out = np.zeros(len(pairs), bool)
    if not pairs:
        return out
    eval_thumbs = {side: picture_thumb((row["image"] or {}).get("bytes"))
                   for side, row in read_rows(group_by_file(e for _, e in pairs), ["image"])}
    by_train: dict[Side, list[int]] = {}
    for k, (t, _) in enumerate(pairs):
        by_train.setdefault(t, []).append(k)
    for side, row in read_rows(group_by_file(by_train), ["image"]):
        mine = picture_thumb((row["image"] or {}).get("bytes"))
        for k in by_train[side]:
            theirs = eval_thumbs.get(pairs[k][1])
            out[k] = mine is None or theirs is None or correlation(mine, theirs) >= threshold
    return out


class PictureCheck:
    """`confirm(train_positions, eval_positions) -> bool per pair`, over the build's cache files:
    what `medmix.mix.select.decontaminate_step` calls for each hash match."""

    def __init__(self, places: RowPlaces, threshold: float) -> None:
        self.places, self.threshold = places, threshold

    def __call__(self, rows: np.ndarray, eval_rows: np.ndarray) -> np.ndarray:
        pairs = [(self.places.train(int(r)), self.places.eval(int(e))) for r, e in zip(rows, eval_rows)]
        return confirm_pairs(pairs, self.threshold)
