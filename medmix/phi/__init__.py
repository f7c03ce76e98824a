"""Identifiers burned into pixels or written in the text of user-brought data: found, then
quarantined or redacted.

medmix drops every header and metadata value, but text drawn into the pixels (ultrasound and
secondary-capture overlays: name, id, birth date, study date) survives any header scrub, and
captions of a local folder can hold the same. Three modes, chosen per source by the recipe's
`image.burned_in_text` (see `medmix.recipe`):

* ``quarantine`` — a row with identifying text is not written; its quarantine reason names the
  *kinds* found (``burned-in identifying text (date, id)``), never the text;
* ``redact`` — the identifying words are blacked out (images) or replaced by ``[REDACTED]``
  (text), and the row's ``meta.deid`` records that and the method;
* ``off`` — nothing is checked.

DICOM files declare burned-in text themselves: ``BurnedInAnnotation`` (0028,0301) or
``RecognizableVisualFeatures`` (0028,0302) = YES is quarantined under ``quarantine`` ("burned-in
annotation declared"), and allowed under ``redact`` (OCR then blacks out what it reads).

Nothing here returns, logs or raises with an identifier in it: findings leave as kind names and
counts only (`identifiers.kinds_label`).
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from medmix.core.errors import MedmixError, RowError
from medmix.phi import identifiers, ocr, redact

MODES = ("quarantine", "redact", "off")
TEXT_REDACTION = "[REDACTED]"
TEXT_METHOD = "regex+lexicon"
TEXT_FIELDS = ("question", "answer", "context")

# the header values whose words count as identifying when they are read back from the pixels
HEADER_KEYWORDS = ("PatientName", "PatientID", "OtherPatientIDs", "InstitutionName", "ReferringPhysicianName")
_FLAGS = (("BurnedInAnnotation", "burned-in annotation declared"),
          ("RecognizableVisualFeatures", "recognizable visual features declared"))

# Tokens that make a non-identifying line "figure text": left alone even in a redacted image.
_BENIGN_UNITS = frozenset({"mm", "cm", "um", "µm", "nm", "m", "s", "ms", "hz", "khz", "mhz", "db", "x", "%",
                           "kv", "mas", "ma", "hu", "bpm", "fps", "sec", "min"})


@dataclass(frozen=True)
class DicomHeader:
    """What the PHI check needs from a DICOM header, read before the header is dropped."""

    declared: tuple[str, ...]             # reasons for flags set to YES
    values: identifiers.HeaderValues


def read_dicom_header(data: bytes) -> DicomHeader | None:
    """The burned-in flags and identifying values of a DICOM file; None when the header does not
    parse (the decoder then quarantines the row with its own reason)."""
    from pydicom import dcmread

    try:  # force: pydicom still reads a Part 10 preamble when there is one, and a bare dataset when not
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = dcmread(io.BytesIO(data), force=True, stop_before_pixels=True)
            declared = tuple(why for key, why in _FLAGS if str(ds.get(key, "") or "").strip().upper() == "YES")
            values: list[str] = []
            for key in HEADER_KEYWORDS:
                value = ds.get(key)
                if value is None:
                    continue
                items = list(value) if value.__class__.__name__ == "MultiValue" or isinstance(value, list) else [value]
                values.extend(str(v) for v in items if v)
    except Exception:  # noqa: BLE001 - a header pydicom cannot read is the decoder's to report
        return None
    return DicomHeader(declared, identifiers.HeaderValues(values))


@dataclass(frozen=True)
class ImageCheck:
    """The outcome for one image: its (possibly redacted) pixels and what goes into `meta.deid`."""

    pixels: np.ndarray
    meta: dict[str, Any] | None = None

    @property
    def changed(self) -> bool:
        return self.meta is not None and self.meta.get("boxes", 0) > 0


def refuse_declared(header: DicomHeader | None, mode: str, *, name: str) -> None:
    """Quarantine, before any pixel is decoded, a DICOM whose header declares burned-in PHI."""
    if header is not None and header.declared and mode == "quarantine":
        raise RowError(f"{header.declared[0]}: the DICOM header says the pixels carry identifying text or "
                       f"features; set `image.burned_in_text: redact` to admit it with OCR redaction", file=name)


def check_image(pixels: np.ndarray, mode: str, header: DicomHeader | None = None, *, name: str) -> ImageCheck:
    """Apply `mode` to one decoded image; RowError (kinds only) when it is to be quarantined."""
    if mode == "off":
        return ImageCheck(pixels)
    if mode not in MODES:
        raise ValueError(f"burned-in text mode must be one of {MODES}, got {mode!r}")
    refuse_declared(header, mode, name=name)
    found = find_identifying_text(pixels, header.values if header else None)
    kinds = sorted(set().union(*(f[0] for f in found)) if found else ())
    if mode == "quarantine":
        if found:
            raise RowError(f"burned-in identifying text ({identifiers.kinds_label(kinds)}): found by OCR in "
                           f"{sum(1 for k, _ in found if k)} text line(s); set `image.burned_in_text: redact` to "
                           f"black it out instead", file=name)
        return ImageCheck(pixels)
    if not found and not (header and header.declared):
        return ImageCheck(pixels)
    boxes = [box for _, line_boxes in found for box in line_boxes]
    meta: dict[str, Any] = {"method": redact.METHOD, "engine": ocr.engine_version(), "boxes": len(boxes),
                            "kinds": list(identifiers.kinds_label(kinds).split(", ")) if kinds else []}
    if header and header.declared:
        meta["declared"] = [key for key, why in _FLAGS if why in header.declared]
    return ImageCheck(redact.black_boxes(pixels, boxes) if boxes else pixels, meta)


def find_identifying_text(pixels: np.ndarray, header: identifiers.HeaderValues | None = None,
                          words: list[ocr.Word] | None = None
                          ) -> list[tuple[frozenset[str], list[tuple[int, int, int, int]]]]:
    """(kinds, boxes to black out) per OCR line that identifies someone.

    When any line identifies someone, the other confidently read lines that are not plain figure
    text (a panel letter, an orientation marker, a number with a unit) are blacked out too: an
    overlay that holds an id also holds the name beside it, and a name the lexicon does not know
    must not survive because its neighbour was caught. `words`: OCR output already at hand.
    """
    lines = ocr.lines(ocr.read_words(pixels) if words is None else words)
    hits = []
    rest = []
    for line in lines:
        finding = identifiers.classify([w.text for w in line], header)
        if finding:
            hits.append((finding.kinds, [w.box for w in line]))
        elif not _figure_text(line):
            rest.append(line)
    if hits:
        for line in rest:
            hits.append((frozenset(), [w.box for w in line]))
    return [h for h in hits if h[0]] + [h for h in hits if not h[0]]


def _figure_text(line: list[ocr.Word]) -> bool:
    """A line of panel letters, orientation markers, numbers and units, or one OCR read poorly."""
    if sum(w.conf for w in line) / len(line) < 50:
        return True
    for w in line:
        t = w.text.strip(".,;:()[]")
        if len(t) <= 1 or t.lower() in _BENIGN_UNITS:
            continue
        if any(c.isdigit() for c in t) and len(t) <= 6:
            continue
        return False
    return True


def check_text(fields: Mapping[str, str | None], mode: str) -> tuple[dict[str, str | None], dict[str, Any] | None]:
    """Apply `mode` to a row's text fields; RowError naming fields and kinds when quarantined."""
    if mode == "off":
        return dict(fields), None
    out: dict[str, str | None] = dict(fields)
    kinds: set[str] = set()
    where: list[str] = []
    for field, text in fields.items():
        if not text:
            continue
        found, spans = identifiers.scan_text(text)
        if found:
            kinds |= found
            where.append(field)
            if mode == "redact":
                out[field] = identifiers.redact_text(text, spans, TEXT_REDACTION)
    if not where:
        return out, None
    if mode == "quarantine":
        raise RowError(f"identifying text ({identifiers.kinds_label(kinds)}): in {', '.join(where)}; set "
                       f"`image.burned_in_text: redact` to replace it with {TEXT_REDACTION}")
    return out, {"method": TEXT_METHOD, "fields": where, "kinds": identifiers.kinds_label(kinds).split(", ")}


def settings(mode_raster: str, mode_dicom: str, mode_text: str) -> dict[str, Any]:
    """What the manifest records for a source (like DICOM's De-identification Method)."""
    out: dict[str, Any] = {"images": mode_raster, "dicom": mode_dicom, "text": mode_text,
                           "dicom_flags": [k for k, _ in _FLAGS], "header_values_matched": list(HEADER_KEYWORDS)}
    if {mode_raster, mode_dicom, mode_text} != {"off"}:
        out["method"] = (f"OCR ({_engine_or_missing()}, psm {ocr.PSM}) + identifier detectors (names, header "
                         f"values, dates, ids, age/sex); redaction: {redact.METHOD}, text {TEXT_REDACTION}")
        out["lexicon"] = _lexicon_or_missing()
    return out


def _lexicon_or_missing() -> str:
    """The lexicon's source, or that it is absent: a build that needed it has already stopped with
    the install hint, so a manifest that says "not installed" says no input was checked by name."""
    try:
        return identifiers.lexicon_source()
    except MedmixError:
        return "faker and wordfreq (one not installed; no input of this build needed them)"


def _engine_or_missing() -> str:
    try:
        return ocr.engine_version()
    except Exception:  # noqa: BLE001 - the settings are recorded even where the engine is absent
        return "tesseract (not installed)"
