"""A mixture with every kind of removal and hostile captions, for `medmix view` tests and screenshots.

The demo recipe already plants exact duplicates (a DICOM stored twice), evaluation-image matches
(VQA-RAD test images inside SLAKE/VQA-RAD training) and an n-gram match (a PubMedQA labeled
abstract inside the unlabeled split). An extra local folder adds the rest:
  near.png      the same picture as base.png with a small blob: a near-duplicate image (Hamming > 0)
  copy.png      base.png again, captioned with one word changed: a text near-duplicate (Jaccard < 1)
  hostile.png   captions that are HTML and script
"""

from __future__ import annotations

import csv
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image

CAPTION = ("Axial contrast enhanced computed tomography of the upper abdomen showing a well defined hypodense "
           "lesion in the right hepatic lobe with peripheral nodular enhancement typical of a hemangioma")
HOSTILE = '<script>alert(1)</script><img src=x onerror="alert(2)"> & "quotes" </textarea>'


def _base(seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (8, 8), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((128, 128), Image.BICUBIC).convert("RGB"))


def write_audit_folder(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    base = _base()
    near = base.copy()
    near[100:112, 100:112] = 255  # a small blob in one corner moves 4 of the 64 perceptual-hash bits
    other = _base(seed=11)
    Image.fromarray(base).save(root / "base.png")
    Image.fromarray(near).save(root / "near.png")
    Image.fromarray(base).save(root / "copy.png")
    Image.fromarray(other).save(root / "hostile.png")
    rows = [("base.png", CAPTION), ("near.png", CAPTION),
            ("copy.png", CAPTION.replace("hemangioma", "haemangioma")),
            ("hostile.png", HOSTILE)]
    with open(root / "metadata.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file_name", "answer", "modality"])
        for name, caption in rows:
            w.writerow([name, caption, "CT"])
    return root


def audit_recipe(tmp: Path) -> Path:
    """The demo recipe plus the audit folder, written to `tmp/audit.yaml`."""
    folder = write_audit_folder(tmp / "audit-images")
    text = (resources.files("medmix") / "recipes" / "demo.yaml").read_text()
    text = text.replace("name: demo", "name: audit", 1)
    text += (f"  audit:\n    adapter: local\n    from: {folder}\n"
             "    options: {domain: radiology, task: caption, license: CC-BY-4.0, modality: CT}\n")
    path = tmp / "audit.yaml"
    path.write_text(text)
    return path
