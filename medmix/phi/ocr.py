"""OCR of burned-in text: Tesseract (Debian `tesseract-ocr`, LSTM engine) through `pytesseract`.

Why Tesseract: it installs from Debian with its English model (no download at run time), is
maintained, and reads the sparse, small, often light-on-dark text of ultrasound and
secondary-capture overlays well once the image is enlarged. Measured on this machine's canary set
(docs/phi.md): about 0.6 s per 512x512 image at 2x, recall 0.97+ of identifying images. Why
`pytesseract` rather than `tesserocr`: `tesserocr` builds against libtesseract-dev with a C++
compiler at install time (no wheel for this platform), while pytesseract is pure Python around the
`tesseract` binary; its per-image process start measured ~25 ms, under 5% of the OCR time itself.

Settings: page segmentation mode 11 ("sparse text": overlays are scattered words in corners, not
paragraphs) and the image enlarged 2x when its long side is at most 1024 px (10-12 px overlay text
was misread at 1x: "DOB" → "Dos"). Words come back with their boxes in the caller's pixel grid.
"""

from __future__ import annotations

import functools
import shutil
from dataclasses import dataclass

import numpy as np
from PIL import Image

from medmix.errors import MedmixError

PSM = 11
UPSCALE_MAX_SIDE = 1024
BRIGHT = 200
INSTALL_HINT = "install it with `apt-get install tesseract-ocr` (Debian/Ubuntu) and `pip install medmix[phi]`"


@dataclass(frozen=True)
class Word:
    text: str
    conf: float
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in the input's pixels
    line: tuple[int, int, int, int]  # (pass, then Tesseract's block, paragraph, line)


@functools.lru_cache(maxsize=1)
def engine_version() -> str:
    """"tesseract 5.3.0"; MedmixError naming the install command when it is missing."""
    try:
        import pytesseract
    except ImportError:
        raise MedmixError(f"burned-in text detection needs pytesseract, which is not installed; {INSTALL_HINT}, "
                          f"or set `image.burned_in_text: off` in the recipe") from None
    if shutil.which(pytesseract.pytesseract.tesseract_cmd) is None:
        raise MedmixError(f"burned-in text detection needs the Tesseract OCR engine, and `tesseract` is not on "
                          f"PATH; {INSTALL_HINT}, or set `image.burned_in_text: off` in the recipe")
    try:
        return f"tesseract {pytesseract.get_tesseract_version()}"
    except Exception as exc:  # noqa: BLE001 - a broken install: say what it said
        raise MedmixError(f"the Tesseract OCR engine does not run ({type(exc).__name__}: {exc}); "
                          f"{INSTALL_HINT}") from None


def read_words(pixels: np.ndarray) -> list[Word]:
    """Every word Tesseract reads in an (H, W) or (H, W, 3) uint8 array, boxes in its pixels.

    Two passes: the grey image, and a mask of its brightest pixels (any channel >= BRIGHT) drawn
    black on white. Overlays are drawn in white or a saturated colour; on a mid-grey, textured
    background (ultrasound speckle, the lunar surface of the canary set) Tesseract's global
    threshold lost white 12 px text entirely, and the mask pass read it back whole.
    """
    engine_version()
    grey = np.asarray(Image.fromarray(pixels).convert("L"))
    bright = pixels.max(axis=2) if pixels.ndim == 3 else pixels
    mask = np.where(bright >= BRIGHT, 0, 255).astype(np.uint8)
    words = _tesseract(grey, 0)
    if (mask == 0).any():
        words += _tesseract(mask, 1)
    return words


def _tesseract(grey: np.ndarray, pass_no: int) -> list[Word]:
    import pytesseract

    img = Image.fromarray(grey)
    scale = 2 if max(img.size) <= UPSCALE_MAX_SIDE else 1
    if scale != 1:
        img = img.resize((img.width * scale, img.height * scale), Image.Resampling.LANCZOS)
    data = pytesseract.image_to_data(img, lang="eng", config=f"--psm {PSM}", output_type=pytesseract.Output.DICT)
    words = []
    for i, text in enumerate(data["text"]):
        text = (text or "").strip()
        if not text:
            continue
        x, y, w, h = (int(data[k][i]) for k in ("left", "top", "width", "height"))
        box = (x // scale, y // scale, -(-(x + w) // scale), -(-(y + h) // scale))
        words.append(Word(text, float(data["conf"][i]), box,
                          (pass_no, int(data["block_num"][i]), int(data["par_num"][i]), int(data["line_num"][i]))))
    return words


def lines(words: list[Word]) -> list[list[Word]]:
    """Words grouped into Tesseract's text lines, in reading order."""
    out: dict[tuple[int, int, int, int], list[Word]] = {}
    for w in words:
        out.setdefault(w.line, []).append(w)
    return [sorted(ws, key=lambda w: w.box[0]) for _, ws in sorted(out.items())]
