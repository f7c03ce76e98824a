"""NCT-CRC-HE-100K (train) and CRC-VAL-HE-7K (test): colorectal H&E tissue tiles, 9 classes; a benchmark.

Upstream: two Zenodo zips, each a folder per class (`ADI`, `BACK`, ... `TUM`) of 224x224 TIFF tiles.
The test set comes from a different clinical centre than the training set, as the authors
intended, so there is no patient overlap between the two splits.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

from medmix.core.errors import MedmixError
from medmix.sources._classification_sets import ClassificationBenchmark
from medmix.sources._native import find_class_root, list_images
from medmix.sources.base import Bad, Record, Remote, Unit

# Upstream folder → class index; names as in MedMNIST's PathMNIST, which is built from these images.
CLASS_DIRS = ("ADI", "BACK", "DEB", "LYM", "MUC", "MUS", "NORM", "STR", "TUM")
_ARCHIVES = {"train": "NCT-CRC-HE-100K.zip", "test": "CRC-VAL-HE-7K.zip"}


class NctCrcHe(ClassificationBenchmark):
    name = "nct_crc_he"
    title = "NCT-CRC-HE-100K / CRC-VAL-HE-7K"
    homepage = "https://zenodo.org/records/1214456"
    citation = """
@dataset{kather_jakob_nikolas_2018_1214456,
  author={Kather, Jakob Nikolas and Halama, Niels and Marx, Alexander},
  title={100,000 histological images of human colorectal cancer and healthy tissue},
  publisher={Zenodo}, year={2018}, doi={10.5281/zenodo.1214456}
}"""
    license = "CC-BY-4.0"
    domain = "pathology"
    modality = "H&E"
    classes = (
        "adipose", "background", "debris", "lymphocytes", "mucus", "smooth muscle",
        "normal colon mucosa", "cancer-associated stroma", "colorectal adenocarcinoma epithelium",
    )
    splits = {"train": 100000, "test": 7180}
    native_size = 224
    files = tuple(
        Remote(name=archive, url=f"https://zenodo.org/records/1214456/files/{archive}?download=1", extract=True,
               splits=(split,))
        for split, archive in _ARCHIVES.items()
    )
    notes = ("Macenko colour-normalised tiles (the NONORM variant is not used). PathMNIST is built from the same "
             "images: never evaluate on both, and keep uBench (which contains these classes) out of pretraining.")

    def units(self, split: str, files: Mapping[str, Path]) -> list[Unit]:
        """One unit per class folder: 100,000 TIFFs are worth spreading over a process pool."""
        return [Unit(self.name, split, part=folder, args={"class_dir": folder}) for folder in CLASS_DIRS]

    def read(self, unit: Unit, files: Mapping[str, Path]) -> Iterator[Record | Bad]:
        archive = _ARCHIVES.get(unit.split)
        if archive is None:
            raise MedmixError(f"source 'nct_crc_he': unknown split {unit.split!r}; splits: {list(_ARCHIVES)}")
        if archive not in files:
            raise MedmixError(f"source 'nct_crc_he': no local path for {archive!r}")
        root = find_class_root(Path(files[archive]), CLASS_DIRS)
        folders = [unit.args["class_dir"]] if "class_dir" in unit.args else list(CLASS_DIRS)
        for folder in folders:
            if not (root / folder).is_dir():
                raise MedmixError(f"{root}: class folder {folder!r} is missing; expected {list(CLASS_DIRS)}")
            label = CLASS_DIRS.index(folder)
            for path in list_images(root / folder):
                native_id = f"{unit.split}/{folder}/{path.stem}"
                yield self.labelled(native_id, label, path, image_name=f"{folder}/{path.name}",
                                    file=f"{archive}/{folder}/{path.name}")
