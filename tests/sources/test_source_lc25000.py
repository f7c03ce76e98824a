"""LC25000 lung and colon adapters, and the leakage-aware split medmix defines for them."""

from __future__ import annotations

from collections import Counter, defaultdict

import pytest
from adapter_harness import run_adapter
from fixtures import lc25000 as fx
from fixtures import read_split

from medmix.core.errors import ManualFilesMissing, MedmixError
from medmix.fetch.download import fetch_files
from medmix.sources import get_source
from medmix.sources._lc25000_split import (
    SPLIT_EDGES,
    dihedral_hashes,
    near_duplicate_groups,
    split_class_folder,
    split_of_key,
)
from medmix.sources.lc25000_colon import LC25000Colon
from medmix.sources.lc25000_lung import LC25000Lung

SPLITS = ("train", "validation", "test")


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return fx.write(tmp_path_factory.mktemp("lc25000"))


def _all(src, root):
    files = {"lung_colon_image_set": root / "lung_colon_image_set"}
    return {split: read_split(src, split, files) for split in SPLITS}


def test_declared_as_manual_benchmark():
    for cls, n in ((LC25000Lung, 3), (LC25000Colon, 2)):
        assert get_source(cls.name) is cls
        assert cls.benchmark and cls.eval_splits == {"test"} and len(cls.classes) == n
        assert not cls.redistributable and cls.license.startswith("LicenseRef-")
        assert set(cls.splits) == set(SPLITS)


def test_missing_folder_names_what_to_place(tmp_path):
    with pytest.raises(ManualFilesMissing, match=r"(?s)lung_colon_image_set.*LC25000\.zip.*--from lc25000_lung=DIR"):
        fetch_files(LC25000Lung(), ("test",), cache_dir=tmp_path / "c", from_dir=tmp_path)


def test_splits_partition_each_organ_and_keep_augmented_copies_together(tree):
    root, groups = tree
    for cls in (LC25000Lung, LC25000Colon):
        by_split = _all(cls(), root)
        assert all(bads == [] for _, bads in by_split.values())
        seen: dict[str, str] = {}
        for split, (records, _) in by_split.items():
            assert records, f"{cls.name} {split} is empty"
            for r in records:
                key = r.native_id + ".jpeg"
                assert key not in seen
                seen[key] = split
                assert r.answer == cls.classes[r.meta["label"]]
                assert r.native_id.split("/")[0] == cls.class_dirs[r.meta["label"]]
        expected = {k for k in groups if k.split("/")[0] in cls.class_dirs}
        assert set(seen) == expected  # every tile of the organ in exactly one split, no other organ's
        splits_of_original: dict[int, set[str]] = defaultdict(set)
        for key, split in seen.items():
            splits_of_original[groups[key]].add(split)
        assert all(len(s) == 1 for s in splits_of_original.values()), "augmentations of one original were split"


def test_split_is_stable_across_runs_and_copies(tree, tmp_path):
    root, _ = tree
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    folder = "lung_colon_image_set/lung_image_sets/lung_scc"
    assert split_class_folder(root / folder) == split_class_folder(copy / folder)


def test_flipped_and_turned_copies_are_near_duplicates_and_other_pictures_are_not(tmp_path):
    from fixtures.medmnist import class_image
    from PIL import Image

    paths = []
    for picture in range(8):
        img = Image.fromarray(class_image(picture, 1, 64))
        for k, op in enumerate([None, Image.Transpose.FLIP_LEFT_RIGHT, Image.Transpose.ROTATE_90,
                                Image.Transpose.ROTATE_180, Image.Transpose.TRANSPOSE]):
            paths.append(tmp_path / f"{picture}-{k}.jpeg")
            (img if op is None else img.transpose(op)).save(paths[-1], quality=90)
    groups = near_duplicate_groups([dihedral_hashes(p) for p in paths])
    assert groups == [5 * (i // 5) for i in range(len(paths))]  # one group per picture, nothing more
    (tmp_path / "broken.jpeg").write_bytes(b"\xff\xd8\xff garbage")
    with pytest.raises(MedmixError, match=r"broken\.jpeg: cannot decode"):
        dihedral_hashes(tmp_path / "broken.jpeg")


def test_near_duplicate_groups_join_within_threshold_transitively():
    sigs = [[0b0], [0b111], [0xFFFF_0000_0000_0000], [0b111111], [0xFFFF_0000_0000_0001]]
    # 0 ~ 0b111 (3 bits) ~ 0b111111 (3 bits): one chain; the two high ones differ by 1 bit
    assert near_duplicate_groups(sigs, max_hamming=3) == [0, 0, 2, 0, 2]
    assert near_duplicate_groups(sigs, max_hamming=0) == [0, 1, 2, 3, 4]
    # a variant (second column) close to another item's own hash joins them
    assert near_duplicate_groups([[0b0, 0xFF], [0xFF, 0b0]], max_hamming=0) == [0, 0]


def test_group_keys_spread_over_splits_in_the_documented_proportions():
    counts = Counter(split_of_key(f"lung_aca/lungaca{i}.jpeg") for i in range(20000))
    edges = dict(SPLIT_EDGES)
    assert abs(counts["train"] / 20000 - edges["train"]) < 0.02
    assert abs(counts["validation"] / 20000 - (edges["validation"] - edges["train"])) < 0.02
    assert split_of_key("x", seed=0) == split_of_key("x", seed=0)
    assert {split_of_key(f"k{i}", seed=1) for i in range(50)} == set(SPLITS)


def test_end_to_end_through_normalize(tree, tmp_path):
    root, _ = tree
    rows, bad = run_adapter(LC25000Colon(), ("test",), cache_dir=tmp_path, from_dir=root)
    assert bad == [] and rows and {r["split"] for r in rows} == {"test"}
    assert all(r["license"] == LC25000Colon.license and r["task"] == "classification" for r in rows)
