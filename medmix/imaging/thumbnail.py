"""Small images from stored image bytes: removed.parquet's audit thumbnails and `medmix view`'s grid.

Why one function: the build stores thumbnails of dropped rows and evaluation items, and the viewer
makes thumbnails of mixture rows on request; both must look alike and both must be cheap. Pillow's
`Image.draft` lets the JPEG decoder skip to 1/2, 1/4 or 1/8 scale before `thumbnail` resamples, so
a 2048-px JPEG thumbnails in a few milliseconds instead of a full decode.
"""

from __future__ import annotations

import io

from PIL import Image

# images are normalized by the build (8-bit L / RGB / RGBA); anything else is brought to RGB here
_MODES = {"RGB", "L"}


def thumbnail(data: bytes, px: int, fmt: str = "JPEG", quality: int = 80) -> bytes:
    """`data` (any format Pillow reads) → at most `px` on the long side, encoded as `fmt` (JPEG/WEBP)."""
    with Image.open(io.BytesIO(data)) as im:
        im.draft("RGB", (px, px))
        if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
            im = im.convert("I").point(lambda v: v / 256).convert("L")
        elif im.mode not in _MODES:
            im = im.convert("RGBA").convert("RGB") if "A" in im.mode or im.mode == "P" else im.convert("RGB")
        else:
            im.load()
        im.thumbnail((px, px))
        buf = io.BytesIO()
        im.save(buf, format=fmt, quality=quality)
        return buf.getvalue()
