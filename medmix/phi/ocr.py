"""OCR of burned-in text: Tesseract 5 (LSTM) in process through `tesserocr`, with Debian's
`tesseract-ocr` English model; `pytesseract` (the `tesseract` command) where tesserocr is absent.

Why Tesseract: its English model installs from Debian (`apt-get install tesseract-ocr`; nothing
is downloaded at run time), it is maintained, and it reads the sparse, small, often light-on-dark
text of ultrasound and secondary-capture overlays once the image is enlarged. Why `tesserocr`:
it ships a manylinux wheel and keeps the model loaded in the process, while `pytesseract` starts
a `tesseract` process (and loads the model) per call. Measured on this machine, same image, same
settings, under the same load: 0.3-0.7 s per 512x512 image through tesserocr against 1.3-1.5 s
through pytesseract, whose bare per-call cost on a 16x16 blank was 0.5-0.6 s (tesserocr: < 0.01 s).
Figures of the whole canary set are in docs/phi.md.

Settings: page segmentation mode 11 ("sparse text": overlays are scattered words in corners, not
paragraphs), the image enlarged 2x when its long side is at most 1024 px (10-12 px overlay text
was misread at 1x: "DOB" → "Dos"), three whole-image passes and six passes over each of the top and
bottom bands where overlays sit (see `read_words`, `read_bands`). Words come back with their
boxes in the caller's pixel grid.
"""

from __future__ import annotations

import functools
import os
import shutil
import threading
from dataclasses import dataclass

import numpy as np
from PIL import Image

from medmix.core.errors import MedmixError

PSM = 11
UPSCALE_MAX_SIDE = 1024
BRIGHT = 200
UPSCALE = 2
FINE = 160  # the third pass: the brightest channel enlarged 3x first, then thresholded
INSTALL_HINT = "install it with `apt-get install tesseract-ocr` (Debian/Ubuntu) and `pip install medmix[phi]`"


@dataclass(frozen=True)
class Word:
    text: str
    conf: float
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in the input's pixels
    line: tuple[int, int, int, int]  # (pass, then Tesseract's block, paragraph, line)


TESSDATA_DIRS = ("/usr/share/tesseract-ocr/5/tessdata", "/usr/share/tesseract-ocr/4.00/tessdata",
                 "/usr/share/tessdata", "/usr/local/share/tessdata")
_local = threading.local()  # one Tesseract instance per thread: an instance is not thread-safe


def _tessdata() -> str:
    """The folder holding Tesseract's English model (TESSDATA_PREFIX, else Debian's)."""
    for folder in (os.environ.get("TESSDATA_PREFIX"), *TESSDATA_DIRS):
        if folder and os.path.isfile(os.path.join(folder, "eng.traineddata")):
            return folder
    raise MedmixError(f"burned-in text detection needs the Tesseract OCR engine's English model, and no "
                      f"eng.traineddata is in TESSDATA_PREFIX or {', '.join(TESSDATA_DIRS)}; {INSTALL_HINT}, or set "
                      f"`image.burned_in_text: off` in the recipe")


@functools.lru_cache(maxsize=1)
def engine_version() -> str:
    """"tesseract 5.5.1 (tesserocr)"; MedmixError naming the install command when it is missing."""
    _tessdata()
    try:
        import tesserocr
    except ImportError:
        tesserocr = None
    if tesserocr is not None:
        return f"tesseract {tesserocr.tesseract_version().split()[1]} (tesserocr)"
    try:
        import pytesseract
    except ImportError:
        raise MedmixError(f"burned-in text detection needs tesserocr or pytesseract, and neither is installed; "
                          f"{INSTALL_HINT}, or set `image.burned_in_text: off` in the recipe") from None
    if shutil.which(pytesseract.pytesseract.tesseract_cmd) is None:
        raise MedmixError(f"burned-in text detection needs the Tesseract OCR engine, and `tesseract` is not on "
                          f"PATH; {INSTALL_HINT}, or set `image.burned_in_text: off` in the recipe")
    try:
        return f"tesseract {pytesseract.get_tesseract_version()} (pytesseract)"
    except Exception as exc:  # noqa: BLE001 - a broken install: say what it said
        raise MedmixError(f"the Tesseract OCR engine does not run ({type(exc).__name__}: {exc}); "
                          f"{INSTALL_HINT}") from None


def _tsv(img: Image.Image) -> str:
    """Tesseract's TSV for one image: in process through tesserocr (the model loaded once per
    thread), else through the `tesseract` command (a process and a model load per call)."""
    if engine_version().endswith("(tesserocr)"):
        import tesserocr

        api = getattr(_local, "api", None)
        if api is None:
            api = _local.api = tesserocr.PyTessBaseAPI(path=_tessdata(), lang="eng", psm=PSM)
        api.SetImage(img)
        return api.GetTSVText(0)
    import pytesseract

    return pytesseract.image_to_data(img, lang="eng", config=f"--psm {PSM}")


def read_words(pixels: np.ndarray, bands: bool = True) -> list[Word]:
    """Every word Tesseract reads in an (H, W) or (H, W, 3) uint8 array, boxes in its pixels.

    Three passes over the whole image: the grey image; a mask of its brightest pixels (any
    channel >= BRIGHT) drawn black on white; and the brightest channel enlarged 3x *before*
    thresholding at FINE (images up to 1024 px). Overlays are drawn in white or a saturated
    colour; on a mid-grey, textured background (ultrasound speckle, the lunar surface of the
    canary set) Tesseract's global threshold lost white 12 px text entirely, and the mask pass
    read it back whole; small anti-aliased light-grey text falls apart in that mask and survives
    enlarging first. On the canary set (docs/phi.md): recall 0.714 grey only, 0.819 with the
    mask, 0.857 with all three, at 2x the OCR time of two passes and false flags 0 → 0.019.

    Then, with `bands`, the passes of `read_bands` over the top and bottom bands, where
    ultrasound and secondary-capture screens put their overlays.
    """
    engine_version()
    grey = np.asarray(Image.fromarray(pixels).convert("L"))
    bright = pixels.max(axis=2) if pixels.ndim == 3 else pixels
    mask = np.where(bright >= BRIGHT, 0, 255).astype(np.uint8)
    words = _tesseract(grey, 0)
    if (mask == 0).any():
        words += _tesseract(mask, 1)
    if max(grey.shape) <= UPSCALE_MAX_SIDE:
        big = Image.fromarray(bright).resize((bright.shape[1] * 3, bright.shape[0] * 3), Image.Resampling.LANCZOS)
        fine = np.where(np.asarray(big) >= FINE, 0, 255).astype(np.uint8)
        if (fine == 0).any():
            words += _tesseract(fine, 2, scale=3, prescaled=True)
    if bands:
        words += read_bands(pixels)
    return words


MERGE_CONF = 50  # only words read this confidently are joined across Tesseract's lines ...
MERGE_MIN_PX = 5  # ... and only words at least this tall in the caller's pixels
BAND = 8            # a band is the top or bottom 1/BAND of the image ...
BAND_MIN = 40       # ... and at least this many pixels high
BAND_SCALE = 3
BAND_PAD = 12       # blank pixels around a band: Tesseract drops glyphs that touch the edge
LIGHT_LEVELS = (128, 200)   # light text: grey >= level is ink
DARK_LEVELS = (64, 128)     # dark text: grey <= level is ink
COLOURFUL = 100     # coloured text on a grey picture: max - min channel >= this is ink


def read_bands(pixels: np.ndarray) -> list[Word]:
    """Words in the top and bottom bands, each band OCR'd on its own, enlarged 3x and padded.

    Why: on the whole image, Tesseract's global (Otsu) threshold and its page layout analysis
    are set by the picture, not the overlay. In the canary misses of the three whole-image
    passes (docs/phi.md) clearly readable text was lost: light-grey "Acc: A4273852" above a
    retina (the retina and the text fell on the same side of the threshold and merged), black
    text on a white band over brick, yellow on gravel, a 25Y F label in green in a black frame.
    Cut to its band, the same text is read, because the threshold and the layout are the
    band's own; and fixed ink levels (light text at grey >= 128 or >= 200, dark at <= 64 or
    <= 128, and a colourfulness mask for yellow, green and cyan on grey pictures) separate text
    from what is behind it where even the band's Otsu threshold does not. A band is small
    (1/8 of the image), so the twelve band passes cost about what one whole-image pass costs.
    Text elsewhere in the picture gets the whole-image passes only.
    """
    h = pixels.shape[0]
    size = min(h, max(BAND_MIN, h // BAND))
    spans = [(0, size)] if size >= h else [(0, size), (h - size, h)]
    words: list[Word] = []
    for b, (y0, y1) in enumerate(spans):
        part = pixels[y0:y1]
        rgb = part if part.ndim == 3 else np.stack([part] * 3, axis=2)
        big = Image.fromarray(rgb).resize((rgb.shape[1] * BAND_SCALE, rgb.shape[0] * BAND_SCALE),
                                          Image.Resampling.LANCZOS)
        grey = np.asarray(big.convert("L"))
        arr = np.asarray(big).astype(np.int16)
        chroma = (arr.max(axis=2) - arr.min(axis=2)).astype(np.uint8)
        variants = [grey]
        variants += [np.where(grey >= lv, 0, 255).astype(np.uint8) for lv in LIGHT_LEVELS]
        variants += [np.where(grey <= lv, 0, 255).astype(np.uint8) for lv in DARK_LEVELS]
        variants.append(np.where(chroma >= COLOURFUL, 0, 255).astype(np.uint8))
        for v, img in enumerate(variants):
            if v and not 0 < (img == 0).mean() < 0.5:
                continue  # nothing, or more ink than paper: not text on a background
            fill = int(np.median(img))
            padded = np.pad(img, BAND_PAD * BAND_SCALE, constant_values=fill)
            for w in _tesseract(padded, 3 + b * 8 + v, scale=BAND_SCALE, prescaled=True):
                p = BAND_PAD
                x0, wy0, x1, wy1 = w.box
                box = (max(0, x0 - p), max(0, wy0 - p) + y0, max(0, x1 - p), min(y1 - y0, max(0, wy1 - p)) + y0)
                words.append(Word(w.text, w.conf, box, w.line))
    return words


def _tesseract(grey: np.ndarray, pass_no: int, scale: int | None = None, prescaled: bool = False) -> list[Word]:
    img = Image.fromarray(grey)
    if scale is None:
        scale = UPSCALE if max(img.size) <= UPSCALE_MAX_SIDE else 1
    if scale != 1 and not prescaled:
        img = img.resize((img.width * scale, img.height * scale), Image.Resampling.LANCZOS)
    words = []
    for row in _tsv(img).splitlines():
        cells = row.split("\t")
        if len(cells) < 12 or not cells[0].isdigit() or int(cells[0]) != 5 or not cells[11].strip():
            continue  # level 5 = a word
        block, par, line = int(cells[2]), int(cells[3]), int(cells[4])
        x, y, w, h = (int(c) for c in cells[6:10])
        box = (x // scale, y // scale, -(-(x + w) // scale), -(-(y + h) // scale))
        words.append(Word(cells[11].strip(), float(cells[10]), box, (pass_no, block, par, line)))
    return words


def lines(words: list[Word]) -> list[list[Word]]:
    """Words grouped into visual text lines, per pass, in reading order.

    Tesseract's own (block, paragraph, line) is not used to group: in sparse-text mode it often
    puts each word of one overlay in a block of its own, and a name read as two words in two
    blocks ("Seth" | "Porter", a canary miss) never met the first + last name rule. Two words of
    one pass share a line when they overlap vertically by half the smaller height and the gap
    between them is at most 1.5x the taller one's height (a word space in letter-spaced text),
    and both are read with confidence >= MERGE_CONF: merging every word let OCR noise on
    textured pictures (gravel, IHC) join into long lines where the name rules fired, false
    flags 0.019 → 0.105 on the canary set; with the floor, see docs/phi.md. Words under
    MERGE_MIN_PX tall are not joined either: no legible glyph is 4 px tall, and on a 63 px
    random-noise PNG Tesseract read "Ms" (4 px, conf 61) and "TAG" (conf 50) in two blocks,
    which joined into a title + name.
    """
    parent = list(range(len(words)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first: dict[tuple[int, int, int, int], int] = {}
    for i, w in enumerate(words):  # Tesseract's own line, as before
        parent[i] = first.setdefault(w.line, i)
    order = sorted((i for i in range(len(words))
                    if words[i].conf >= MERGE_CONF and words[i].box[3] - words[i].box[1] >= MERGE_MIN_PX),
                   key=lambda i: (words[i].line[0], words[i].box[0]))
    for a_pos, a in enumerate(order):
        wa = words[a]
        ha = wa.box[3] - wa.box[1]
        for b in order[a_pos + 1:]:
            wb = words[b]
            if wb.line[0] != wa.line[0]:
                break
            hb = wb.box[3] - wb.box[1]
            overlap = min(wa.box[3], wb.box[3]) - max(wa.box[1], wb.box[1])
            gap = wb.box[0] - wa.box[2]
            if overlap >= 0.5 * max(1, min(ha, hb)) and gap <= 1.5 * max(ha, hb):
                parent[root(b)] = root(a)
    out: dict[int, list[Word]] = {}
    for i in range(len(words)):
        out.setdefault(root(i), []).append(words[i])
    groups = [sorted(ws, key=lambda w: w.box[0]) for ws in out.values()]
    return sorted(groups, key=lambda ws: (ws[0].line[0], min(w.box[1] for w in ws), ws[0].box[0]))
