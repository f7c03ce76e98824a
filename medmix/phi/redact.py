"""Black boxes over burned-in identifiers.

A box is padded by a third of its height on every side (at least 3 px): OCR boxes hug the glyphs,
and anti-aliased edges or a descender left outside a tight box stayed readable in testing.
The pixels are changed in a copy; the caller's array is left alone.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

METHOD = "ocr-black-box"


def pad(box: tuple[int, int, int, int], shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = box
    p = max(3, (y1 - y0) // 3)
    return max(0, x0 - p), max(0, y0 - p), min(shape[1], x1 + p), min(shape[0], y1 + p)


def black_boxes(pixels: np.ndarray, boxes: Iterable[tuple[int, int, int, int]]) -> np.ndarray:
    """A copy of `pixels` with each (padded) box filled with 0."""
    out = np.array(pixels, copy=True)
    for box in boxes:
        x0, y0, x1, y1 = pad(box, out.shape)
        out[y0:y1, x0:x1] = 0
    return out
