"""64-bit DCT perceptual hash, for near-duplicate images across sources.

The algorithm is the classic pHash (the one `imagehash.phash` implements): grayscale, shrink to
32x32, 2-D DCT, keep the 8x8 lowest frequencies, set a bit where a coefficient is above their
median. medmix computes it on the decoded pixel array itself, in three steps:

1. Box pre-reduce: a large image is averaged over f x f blocks, f = short side // 64 (when >= 2),
   leaving 64-127 px on the short side; the last row and column of blocks take what is left
   (< f px), as Pillow's `reduce` does. Exact integer sums: one pass over the pixels, no copy
   of them. (Leaving the remainder out instead moved one real image 12 bits from its 2%-cropped
   copy: its bottom edge carries detail.)
2. Luma (ITU-R 601-2: 0.299 R + 0.587 G + 0.114 B, Pillow's "L") of the reduced image, then a
   Lanczos-3 resample to 32x32 as two matrix products (antialiased: the kernel widens with the
   scale, as in Pillow), all in float: no rounding to 8 bits between the steps.
3. The 8x8 low DCT block of that 32x32 thumbnail with a precomputed 8x32 cosine basis and the
   median test (`dct_bits`, bit-for-bit imagehash's on the same 32x32 input; tests check it).

Why this shape (schema 2.1): the previous definition ran Pillow's reduce, L conversion and
Lanczos resize on a Pillow image, 0.23 ms per 384 px RGB picture, a fifth of the whole normalize
cost of a JPEG; this one is 0.09 ms and needs no Pillow image, so the JPEG fast path
(`medmix.imaging.jpeg`) never builds one. It differs from imagehash only by rounding and the box step:
on the real-image corpus of tests/mix/test_dedup.py at most a few bits of 64, far inside the
dedup distance (benchmarks/dedup_scale.py --part thresholds re-measures the distributions).
Bit order matches imagehash's hex string (first coefficient = most significant bit).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image

HASH_SIDE = 8
THUMB_SIDE = 32
# Short side the box pre-reduce aims for: 2x the thumbnail keeps the Lanczos step's anti-aliasing honest.
_REDUCE_TARGET = 2 * THUMB_SIDE
_LUMA = np.array([0.299, 0.587, 0.114])

_n = np.arange(THUMB_SIDE)
_k = np.arange(HASH_SIDE)[:, None]
# DCT-II basis rows 0..7 (unnormalized; scale is irrelevant to a median threshold).
_BASIS = np.cos(np.pi * _k * (2 * _n + 1) / (2 * THUMB_SIDE))  # shape (8, 32)


def dct_bits(thumb: np.ndarray) -> int:
    """The 64-bit hash of a 32x32 grayscale array (the part that is pure arithmetic)."""
    # Rounded to 1e-6: float sums may differ in the last bits between BLAS kernels (CPUs of one
    # cluster), and an exact tie with the median (flat or symmetric pictures) must fall the same
    # way on every machine, or the stored hash, and so the mixture's bytes, would depend on it.
    low = np.round(_BASIS @ thumb.astype(np.float64) @ _BASIS.T, 6).reshape(-1)
    # the median of 64 values, as np.median computes it (mean of the two middle ones), without
    # np.median's generic-axis overhead (a third of this function's time)
    ordered = np.sort(low)
    bits = low > (ordered[31] + ordered[32]) / 2
    return int.from_bytes(np.packbits(bits).tobytes(), "big")


@lru_cache(maxsize=512)
def _lanczos(size: int) -> np.ndarray:
    """(32, size) matrix resampling `size` samples to 32 with an antialiased Lanczos-3 kernel.

    Cached per size: a mixture's images come in few distinct reduced sizes (the short side is
    always 64-127 after the box step)."""
    scale = size / THUMB_SIDE
    stretch = max(scale, 1.0)  # downscaling widens the kernel (antialiasing), as Pillow does
    centers = (np.arange(THUMB_SIDE) + 0.5) * scale
    x = (np.arange(size)[None, :] + 0.5 - centers[:, None]) / stretch
    weights = np.where(np.abs(x) < 3.0, np.sinc(x) * np.sinc(x / 3.0), 0.0)
    return weights / weights.sum(axis=1, keepdims=True)


def pixels_of(img: Image.Image) -> np.ndarray:
    """An L/RGB Pillow image as its (H, W) / (H, W, 3) uint8 array; other modes become RGB
    (with alpha: only the colour channels, as `convert("RGB")` does)."""
    if img.mode not in ("L", "RGB"):
        img = img.convert("RGB")
    return np.asarray(img)


def thumbnail(pixels: np.ndarray) -> np.ndarray:
    """Steps 1-2: the 32x32 float luma thumbnail of (H, W) or (H, W, 3) uint8 pixels.

    The box sums are exact integers, however they are added up: f rows are summed in uint16
    (contiguous slices, 0.04 ms for 384 px RGB), then f columns by a float32 matrix product with
    a 0/1 matrix, exact because every partial sum stays below 2**24 (f <= 256; float64 past
    that). A direct strided sum over the columns cost 0.10 ms, numpy's sum(axis=...) 0.44.
    Only then float: luma and the Lanczos steps on the small block array.
    """
    height, width = pixels.shape[:2]
    f = min(height, width) // _REDUCE_TARGET
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    channels = pixels.shape[2]
    if f < 2:
        blocks = pixels.astype(np.float64)
    else:
        h, w = height // f, width // f
        rows = pixels[: h * f].reshape(h, f, width, channels)
        acc = rows[:, 0].astype(np.uint16 if f <= 257 else np.uint32)  # 255 * f fits 16 bits up to f = 257
        for k in range(1, f):
            acc += rows[:, k]
        if height > h * f:  # the last, partial block of rows (Pillow's reduce keeps it too)
            acc = np.concatenate([acc, pixels[h * f:].sum(axis=0, dtype=acc.dtype)[None]])
        exact = np.float32 if f <= 256 else np.float64  # 255 * f * f < 2**24
        sums = (acc[:, : w * f].reshape(-1, f * channels).astype(exact) @ _block_sum(f, channels, exact))
        sums = sums.reshape(len(acc), w, channels)
        if width > w * f:  # the last, partial block of columns
            sums = np.concatenate([sums, acc[:, w * f:].sum(axis=1, dtype=np.float64)[:, None]], axis=1)
        counts = _block_counts(height, f)[:, None] * _block_counts(width, f)[None, :]
        blocks = sums / counts[:, :, None]
    gray = blocks @ _LUMA if channels == 3 else blocks[:, :, 0]
    return _lanczos(gray.shape[0]) @ gray @ _lanczos(gray.shape[1]).T


def _block_counts(size: int, f: int) -> np.ndarray:
    """Pixels in each box along one axis: f, ..., f, then the remainder if any."""
    counts = [f] * (size // f) + ([size % f] if size % f else [])
    return np.asarray(counts, dtype=np.float64)


@lru_cache(maxsize=64)
def _block_sum(f: int, channels: int, dtype: type) -> np.ndarray:
    """(f * channels, channels) 0/1 matrix: summing f consecutive pixels, channel by channel."""
    return np.tile(np.eye(channels, dtype=dtype), (f, 1))


def phash64(pixels: np.ndarray | Image.Image) -> int:
    """64-bit perceptual hash (0 <= h < 2**64) of decoded pixels: an (H, W) / (H, W, 3) uint8
    array, or a Pillow image of any mode."""
    if isinstance(pixels, Image.Image):
        pixels = pixels_of(pixels)
    return dct_bits(thumbnail(pixels))
