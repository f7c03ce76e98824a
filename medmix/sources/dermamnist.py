"""DermaMNIST (MedMNIST v2): HAM10000 dermatoscopy, 7 diagnoses; a downstream benchmark."""

from __future__ import annotations

from medmix.sources._classification_sets import MedMNISTBenchmark


class DermaMNIST(MedMNISTBenchmark):
    name = "dermamnist"
    flag = "dermamnist"
    title = "DermaMNIST (MedMNIST v2)"
    # MedMNIST ships DermaMNIST as CC BY-NC 4.0 (its images are HAM10000's, released CC BY-NC 4.0),
    # so a recipe has to accept non-commercial use to touch it.
    license = "CC-BY-NC-4.0"
    domain = "dermatology"
    modality = "dermoscopy"
    classes = (
        "actinic keratoses and intraepithelial carcinoma", "basal cell carcinoma",
        "benign keratosis-like lesions", "dermatofibroma", "melanoma", "melanocytic nevi", "vascular lesions",
    )
    splits = {"train": 7007, "validation": 1003, "test": 2005}
    citation = MedMNISTBenchmark.citation_medmnist + """
@article{tschandl2018ham10000,
  title={The HAM10000 dataset, a large collection of multi-source dermatoscopic images of common pigmented skin
    lesions},
  author={Tschandl, Philipp and Rosendahl, Cliff and Kittler, Harald},
  journal={Scientific Data}, volume={5}, pages={180161}, year={2018}
}"""
    notes = ("HAM10000 has several images per lesion and MedMNIST split by image, so near-duplicate lesions can "
             "sit on both sides of the split (as in every published DermaMNIST number). ISIC 2019 contains "
             "HAM10000: keep it out of pretraining. Upstream MD5 (28 px): 0744692d530f8e62ec473284d019b0c7.")
