"""One modality vocabulary across sources: DICOM's Modality (0008,0060) defined terms.

Why DICOM's codes: they are the one controlled list every imaging system already writes, so a
hospital folder of `.dcm` files and a published dataset meet on the same value without a table of
our own invention (PS3.3 C.7.3.1.1.1, the acquisition terms of PS3.16 CID 29). Upstream labels
differ for the same thing: SLAKE says "MRI", DICOM headers "MR", PubMedVision "Magnetic Resonance
Imaging"; before this module `medmix view` listed them as three modalities.

Two choices beyond the standard, both for what a mixture is used for (selecting pictures of a
kind), not for what the device was:
* **DX** stands for every projection radiograph: "X-ray", "CR", "DX", "RG", "plain film". DICOM
  tells computed from digital radiography by the detector, which no caption or label knows.
* **SM** (slide microscopy) is histopathology: H&E, IHC, whole-slide patches; **GM** (general
  microscopy) the rest of light/fluorescence/electron microscopy.

A value the table does not know becomes **OT** ("other"), and every source's own label, known or
not, stays in the row's `meta` as `modality_upstream` where it differs from the code, so nothing
upstream said is lost and a wrong mapping can be fixed in the next schema version.
"""

from __future__ import annotations

import re

# code → what it means, as DICOM names it (shown by `medmix stats` / the viewer's legend)
CODES: dict[str, str] = {
    "CT": "Computed Tomography",
    "MR": "Magnetic Resonance",
    "DX": "Projection radiography (X-ray; DICOM CR, DX, RG)",
    "MG": "Mammography",
    "XA": "X-Ray Angiography",
    "RF": "Radio Fluoroscopy",
    "US": "Ultrasound",
    "NM": "Nuclear Medicine",
    "PT": "Positron Emission Tomography (PET)",
    "SM": "Slide Microscopy (histopathology)",
    "GM": "General Microscopy",
    "XC": "External-camera Photography",
    "DMS": "Dermoscopy",
    "ES": "Endoscopy",
    "OP": "Ophthalmic Photography (fundus)",
    "OPT": "Ophthalmic Tomography (OCT)",
    "IO": "Intra-oral Radiography",
    "PX": "Panoramic X-Ray",
    "BMD": "Bone Mineral Densitometry",
    "RTIMAGE": "Radiotherapy Image",
    "RTDOSE": "Radiotherapy Dose",
    "OT": "Other",
}

# DICOM terms that fold into a code above (retired or same-kind terms)
_FOLDED = {"CR": "DX", "RG": "DX", "DF": "RF", "DS": "XA", "SC": "OT", "DM": "GM", "FS": "OP", "EC": "US",
           "CD": "US", "DD": "US", "LP": "ES", "CS": "ES", "CP": "ES", "OCT": "OPT", "IVUS": "US", "MA": "MR"}

# free-text labels (lower case, punctuation folded to single spaces) → code; the first pattern
# that matches wins, so the more specific ones come first (PET-CT is PET, CT angiography is CT)
_PATTERNS: tuple[tuple[str, str], ...] = (
    (r"\bpet\b|positron", "PT"),
    (r"\bspect\b|scintigra|nuclear medicine|\bbone scan", "NM"),
    (r"mammogra", "MG"),
    (r"fluorosc", "RF"),
    (r"\bcta\b|\bct\b|computed tomograph|\bcat scan", "CT"),
    (r"\bmra\b|\bmri?\b|magnetic resonance|\bt1\b|\bt2\b|\bflair\b|\bdwi\b", "MR"),
    (r"angiogra|\bdsa\b", "XA"),
    (r"ultraso|sonogra|\bus\b|echocardio|doppler", "US"),
    (r"\boct\b|optical coherence", "OPT"),
    (r"fundus|ophthalmic photo|retina", "OP"),
    (r"dermoscop|dermatoscop", "DMS"),
    (r"endoscop|colonoscop|gastroscop|laparoscop|bronchoscop", "ES"),
    (r"\bh e\b|\bhe\b|hematoxylin|haematoxylin|histopatholog|histolog|whole slide|\bwsi\b|immunohisto|\bihc\b"
     r"|patholog", "SM"),
    (r"microscop|cytolog|smear", "GM"),
    (r"x ?ray|radiograph|plain film|\bxr\b|\bcxr\b", "DX"),
    (r"photo|gross|clinical image|camera", "XC"),
)
_COMPILED = tuple((re.compile(p), code) for p, code in _PATTERNS)


def canonical(label: str | None) -> str | None:
    """The vocabulary code for an upstream modality label; None stays None (unknown is not "other")."""
    if label is None:
        return None
    text = label.strip()
    if not text:
        return None
    upper = text.upper()
    if upper in CODES:
        return upper
    if upper in _FOLDED:
        return _FOLDED[upper]
    folded = " ".join(re.sub(r"[^a-z0-9]+", " ", text.lower()).split())
    for pattern, code in _COMPILED:
        if pattern.search(folded):
            return code
    return "OT"
