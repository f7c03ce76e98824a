"""BreastMNIST (MedMNIST v2): breast ultrasound (BUSI), malignant vs normal/benign; a downstream benchmark."""

from __future__ import annotations

from medmix.sources._classification_sets import MedMNISTBenchmark


class BreastMNIST(MedMNISTBenchmark):
    name = "breastmnist"
    flag = "breastmnist"
    title = "BreastMNIST (MedMNIST v2)"
    license = "CC-BY-4.0"
    domain = "radiology"
    modality = "ultrasound"
    classes = ("malignant", "normal, benign")
    splits = {"train": 546, "validation": 78, "test": 156}
    citation = MedMNISTBenchmark.citation_medmnist + """
@article{aldhabyani2020dataset,
  title={Dataset of breast ultrasound images},
  author={Al-Dhabyani, Walid and Gomaa, Mohammed and Khaled, Hussien and Fahmy, Aly},
  journal={Data in Brief}, volume={28}, pages={104863}, year={2020}
}"""
    notes = ("BUSI's three classes folded into two by MedMNIST (normal and benign are one class). "
             "Upstream MD5 (28 px): 750601b1f35ba3300ea97c75c52ff8f6.")
