"""PneumoniaMNIST (MedMNIST v2): paediatric chest X-rays, normal vs pneumonia; a downstream benchmark."""

from __future__ import annotations

from medmix.sources._benchmarks import MedMNISTBenchmark


class PneumoniaMNIST(MedMNISTBenchmark):
    name = "pneumoniamnist"
    flag = "pneumoniamnist"
    title = "PneumoniaMNIST (MedMNIST v2)"
    license = "CC-BY-4.0"
    domain = "radiology"
    modality = "X-ray"
    classes = ("normal", "pneumonia")
    splits = {"train": 4708, "validation": 524, "test": 624}
    citation = MedMNISTBenchmark.citation_medmnist + """
@article{kermany2018identifying,
  title={Identifying Medical Diagnoses and Treatable Diseases by Image-Based Deep Learning},
  author={Kermany, Daniel S and Goldbaum, Michael and others},
  journal={Cell}, volume={172}, number={5}, pages={1122--1131}, year={2018}
}"""
    notes = ("Kermany et al. paediatric CXR, centre-cropped and resized by MedMNIST; MedMNIST's test split is the "
             "source's validation set. Do not also use the Kaggle 'chest-xray-pneumonia' copy: same images. "
             "Upstream MD5 (28 px): 28209eda62fecd6e6a2d98b1501bb15f.")
