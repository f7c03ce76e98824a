"""LC25000, lung subset: adenocarcinoma, benign tissue, squamous cell carcinoma; a downstream benchmark."""

from __future__ import annotations

from medmix.sources._classification_sets import LC25000Benchmark


class LC25000Lung(LC25000Benchmark):
    name = "lc25000_lung"
    title = "LC25000 (lung)"
    organ_dir = "lung_image_sets"
    class_dirs = ("lung_aca", "lung_n", "lung_scc")
    classes = ("lung adenocarcinoma", "benign lung tissue", "lung squamous cell carcinoma")
    # 15,000 tiles; the per-split counts depend on the near-duplicate groups, so only the total is known.
    splits = {"train": None, "validation": None, "test": None}
