"""LC25000, colon subset: adenocarcinoma vs benign tissue; a downstream benchmark."""

from __future__ import annotations

from medmix.sources._classification_sets import LC25000Benchmark


class LC25000Colon(LC25000Benchmark):
    name = "lc25000_colon"
    title = "LC25000 (colon)"
    organ_dir = "colon_image_sets"
    class_dirs = ("colon_aca", "colon_n")
    classes = ("colon adenocarcinoma", "benign colonic tissue")
    # 10,000 tiles; the per-split counts depend on the near-duplicate groups, so only the total is known.
    splits = {"train": None, "validation": None, "test": None}
