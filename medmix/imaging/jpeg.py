"""JPEG in and out through libjpeg-turbo directly (simplejpeg), as NumPy pixel arrays.

Why not Pillow for the common JPEG: Pillow decodes into its own 4-byte-per-pixel layout one
scanline call at a time, and the pixel hash and pHash then need `tobytes()` / `np.asarray` to
copy it out again. simplejpeg runs the same libjpeg-turbo with the same settings (accurate
integer IDCT, fancy upsampling) into one contiguous H x W x 3 array. Measured on the 384 px
photo-like JPEGs of benchmarks/build_throughput.py: decode 0.45 ms against Pillow's 0.50-0.72,
plus the 0.08 ms copy saved; encode at quality 90, 4:2:0, 0.40 ms against 0.48.

The pixels are Pillow's, bit for bit (tests/imaging/test_jpeg.py checks real JPEGs and every
common kind: baseline, progressive, 4:4:4/4:2:2/4:2:0, grey, restart markers, odd sizes), so
which path decoded a picture never changes its identity. Only that plain case is taken here
(`decode` returns None otherwise: CMYK/YCCK, unusual sampling, any decoder warning) and
`medmix.imaging.canonical` then decodes with Pillow, whose error messages and tolerance apply.

Every JPEG medmix writes comes from `encode`, whichever path decoded the input, so one picture
and one policy give the same bytes.
"""

from __future__ import annotations

import numpy as np
import simplejpeg

__all__ = ["decode", "encode", "plain_header"]

# turbojpeg's names for the colour spaces we decode straight to medmix's two modes
_MODES = {"YCbCr": "RGB", "Gray": "L"}


def plain_header(data: bytes) -> tuple[int, int, str] | None:
    """(width, height, "RGB" | "L") of a JPEG this module decodes; None for anything else."""
    try:
        height, width, colorspace, _ = simplejpeg.decode_jpeg_header(data)
    except ValueError:  # unusual sampling, not a JPEG, a broken header: Pillow's to judge
        return None
    mode = _MODES.get(colorspace)
    return None if mode is None else (width, height, mode)


def decode(data: bytes, mode: str) -> np.ndarray | None:
    """Pixels as (H, W, 3) for "RGB" or (H, W) for "L", C-contiguous uint8; None when libjpeg
    reports anything, even a recoverable warning (Pillow then decides what the file is worth)."""
    try:
        pixels = simplejpeg.decode_jpeg(data, colorspace="RGB" if mode == "RGB" else "GRAY", strict=True)
    except ValueError:
        return None
    return pixels if mode == "RGB" else pixels[:, :, 0]


def encode(pixels: np.ndarray, quality: int) -> bytes:
    """Baseline JPEG of (H, W) grey or (H, W, 3) RGB pixels: 4:2:0 chroma (Pillow's default),
    accurate DCT. The output holds JFIF and the image, no other segment."""
    pixels = np.ascontiguousarray(pixels)
    if pixels.ndim == 2:
        return simplejpeg.encode_jpeg(pixels[:, :, None], quality=quality, colorspace="GRAY",
                                      colorsubsampling="Gray", fastdct=False)
    return simplejpeg.encode_jpeg(pixels, quality=quality, colorspace="RGB", colorsubsampling="420",
                                  fastdct=False)
