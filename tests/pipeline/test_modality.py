"""One modality vocabulary: every source's label becomes a DICOM Modality code, the label stays in meta."""

from __future__ import annotations

import pytest

from medmix.core.modality import CODES, canonical
from medmix.core.schema import SchemaError, validate_row
from medmix.sources import registry


@pytest.mark.parametrize(("label", "code"), [
    # the same modality as three upstreams write it
    ("MR", "MR"), ("MRI", "MR"), ("Magnetic Resonance Imaging", "MR"), ("mr - t2 weighted", "MR"),
    ("X-Ray", "DX"), ("x-ray", "DX"), ("CR", "DX"), ("DX", "DX"), ("Chest radiograph", "DX"), ("plain film", "DX"),
    ("CT", "CT"), ("Computed Tomography", "CT"), ("CT angiography", "CT"),  # CT first: a CTA is a CT
    ("PET-CT", "PT"), ("PET", "PT"), ("angiography", "XA"), ("Ultrasound", "US"), ("US", "US"),
    ("H&E", "SM"), ("histopathology", "SM"), ("Microscopy Images", "GM"), ("light microscopy", "GM"),
    ("dermoscopy", "DMS"), ("Fundus Photography", "OP"), ("OCT", "OPT"), ("Endoscopy", "ES"),
    ("Digital Photography", "XC"), ("mammography", "MG"), ("RTDOSE", "RTDOSE"), ("OT", "OT"), ("SC", "OT"),
    ("a label nobody maps", "OT"), (None, None), ("  ", None),
])
def test_upstream_labels_map_to_one_code(label, code):
    assert canonical(label) == code
    assert code is None or code in CODES


def test_every_adapter_declaration_is_a_known_modality():
    """A declared modality that fell to OT would hide a mapping gap behind "other"."""
    for name, cls in registry().items():
        if cls.modality is not None:
            assert canonical(cls.modality) not in (None, "OT"), (name, cls.modality)
            assert cls.describe()["modality"] in CODES


def test_a_row_outside_the_vocabulary_is_refused():
    row = {"id": "s/1", "source": "s", "split": "train", "domain": "radiology", "task": "caption", "answer": "a",
           "license": "CC0-1.0", "modality": "MRI"}
    with pytest.raises(SchemaError, match="modality 'MRI'"):
        validate_row(row)
    validate_row(row | {"modality": "MR"})
