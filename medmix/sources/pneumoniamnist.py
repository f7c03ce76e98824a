"""PneumoniaMNIST (MedMNIST v2): paediatric chest X-rays, normal vs pneumonia; a downstream benchmark."""

from __future__ import annotations

from medmix.sources._classification_sets import MedMNISTBenchmark
from medmix.sources.base import RealBytes


class PneumoniaMNIST(MedMNISTBenchmark):
    name = "pneumoniamnist"
    flag = "pneumoniamnist"
    title = "PneumoniaMNIST (MedMNIST v2)"
    license = "CC-BY-4.0"
    domain = "radiology"
    modality = "X-ray"
    classes = ("normal", "pneumonia")
    splits = {"train": 4708, "validation": 524, "test": 624}
    # A subset copy of the npz (not the Zenodo file: its MD5 differs and it has 2,428 / 270 / 468 rows):
    # it shows the layout (six arrays, uint8 N×28×28 images, N×1 labels), not the counts.
    real_bytes = (RealBytes("aksufatih/snn-medmnist", "59a75490493d7eeeccf796b961bac15689286e3c",
                            ("pneumoniamnist.npz",), note="layout only: a subset copy, not the Zenodo file"),)
    citation = MedMNISTBenchmark.citation_medmnist + """
@article{kermany2018identifying,
  title={Identifying Medical Diagnoses and Treatable Diseases by Image-Based Deep Learning},
  author={Kermany, Daniel S and Goldbaum, Michael and others},
  journal={Cell}, volume={172}, number={5}, pages={1122--1131}, year={2018}
}"""
    notes = ("Kermany et al. paediatric CXR, centre-cropped and resized by MedMNIST; MedMNIST's test split is the "
             "source's validation set. Do not also use the Kaggle 'chest-xray-pneumonia' copy: same images. "
             "Upstream MD5 (28 px): 28209eda62fecd6e6a2d98b1501bb15f.")
