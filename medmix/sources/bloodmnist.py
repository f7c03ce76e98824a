"""BloodMNIST (MedMNIST v2): peripheral blood cell microscopy, 8 cell types; a downstream benchmark."""

from __future__ import annotations

from medmix.sources._classification_sets import MedMNISTBenchmark


class BloodMNIST(MedMNISTBenchmark):
    name = "bloodmnist"
    flag = "bloodmnist"
    title = "BloodMNIST (MedMNIST v2)"
    license = "CC-BY-4.0"
    domain = "microscopy"
    modality = "light microscopy"
    classes = (
        "basophil", "eosinophil", "erythroblast",
        "immature granulocytes (myelocytes, metamyelocytes and promyelocytes)",
        "lymphocyte", "monocyte", "neutrophil", "platelet",
    )
    splits = {"train": 11959, "validation": 1712, "test": 3421}
    citation = MedMNISTBenchmark.citation_medmnist + """
@article{acevedo2020dataset,
  title={A dataset of microscopic peripheral blood cell images for development of automatic recognition systems},
  author={Acevedo, Andrea and Merino, Anna and Alf{\\'e}rez, Santiago and Molina, {\\'A}ngel and Bold{\\'u}, Laura
    and Rodellar, Jos{\\'e}},
  journal={Data in Brief}, volume={30}, pages={105474}, year={2020}
}"""
    notes = ("Acevedo et al. 2020 blood smears (centre-cropped, resized by MedMNIST). The uBench microscopy "
             "benchmark contains the same cell classes: keep it out of pretraining. "
             "Upstream MD5 (28 px): 7053d0359d879ad8a5505303e11de1dc.")
