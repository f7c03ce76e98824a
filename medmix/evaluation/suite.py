"""The downstream classification suite: which 8 benchmarks it runs, and the paper's numbers to compare with.

The benchmark adapters themselves are sources (`medmix/sources/_classification_sets.py` and one module per
benchmark), so the source registry never depends on this package.
"""

from __future__ import annotations

# Our reconstruction of the paper's 8 "unseen" benchmarks: its abstract counts 8 but its list was not
# available, so this is BiomedCLIP's open suite plus PMC-CLIP's MedMNIST subsets (see DATASETS.md).
BENCHMARKS: tuple[str, ...] = (
    "pcam", "lc25000_lung", "lc25000_colon", "nct_crc_he",
    "pneumoniamnist", "breastmnist", "dermamnist", "bloodmnist",
)

# Mean macro-F1 over the 8 benchmarks as reported in the OpenMedQ abstract (no per-benchmark
# numbers are public), shown as reference rows next to our own runs.
PAPER_MEAN_MACRO_F1: dict[str, float] = {
    "OpenMedQ (paper)": 0.757,
    "BiomedCLIP (paper)": 0.745,
    "PMC-CLIP (paper)": 0.745,
    "PubMedCLIP (paper)": 0.746,
    "scratch (paper)": 0.616,
}
