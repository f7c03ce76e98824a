"""The four MedMNIST v2 benchmark adapters against `.npz` fixtures in the real Zenodo layout."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fixtures import assert_matches_remotes, decodes, local_files, read_split, run_twice
from fixtures import medmnist as fx

from medmix.core.errors import MedmixError
from medmix.sources import get_source
from medmix.sources._native import iter_npz_rows
from medmix.sources.bloodmnist import BloodMNIST
from medmix.sources.breastmnist import BreastMNIST
from medmix.sources.dermamnist import DermaMNIST
from medmix.sources.pneumoniamnist import PneumoniaMNIST

# (adapter, classes, grayscale upstream) — class counts from MedMNIST's INFO registry.
SUBSETS = [(PneumoniaMNIST, 2, True), (BreastMNIST, 2, True), (DermaMNIST, 7, False), (BloodMNIST, 8, False)]


def _read(tmp_path, src, upstream, split):
    return read_split(src, split, local_files(tmp_path, src, upstream, (split,)))


@pytest.mark.parametrize("cls,n_classes,gray", SUBSETS)
def test_declared_as_benchmark_with_medmnist_layout(cls, n_classes, gray):
    assert get_source(cls.name) is cls
    assert cls.benchmark and cls.tasks == ("classification",) and cls.eval_splits == {"test"}
    assert len(cls.classes) == n_classes == len(set(cls.classes))
    assert set(cls.splits) == {"train", "validation", "test"}
    assert_matches_remotes(cls, fx.build(cls.flag, n_classes, gray=gray, counts={"train": 1}))


@pytest.mark.parametrize("cls,n_classes,gray", SUBSETS)
def test_every_split_reads_images_and_labels_in_upstream_order(tmp_path, cls, n_classes, gray):
    counts = {"train": n_classes + 3, "validation": 2, "test": n_classes}
    upstream = fx.build(cls.flag, n_classes, gray=gray, counts=counts)
    arrays = fx.arrays(n_classes, counts=counts, size=28, gray=gray, bad_label=False)
    for split, key in fx.SPLIT_KEYS.items():
        records, bads = _read(tmp_path / split, cls(), upstream, split)
        assert bads == [] and len(records) == counts[split]
        assert [r.native_id for r in records] == [f"{split}/{i:06d}" for i in range(counts[split])]
        labels = arrays[f"{key}_labels"][:, 0]
        assert [r.meta["label"] for r in records] == labels.tolist()
        assert [r.answer for r in records] == [cls.classes[i] for i in labels]
        import io

        from PIL import Image
        pixels = np.asarray(Image.open(io.BytesIO(records[-1].image)))
        assert np.array_equal(pixels, arrays[f"{key}_images"][-1])  # lossless: the upstream pixels, exactly


def test_out_of_range_label_is_a_bad_row_naming_file_and_index(tmp_path):
    upstream = fx.build("pneumoniamnist", 2, gray=True, bad_label=True)
    records, bads = _read(tmp_path, PneumoniaMNIST(), upstream, "train")
    assert len(bads) == 1
    assert bads[0].reason == "label 2 is not a class index 0..1"
    assert bads[0].file == "pneumoniamnist.npz:train_images[1]"
    assert len(records) == 2 * 2 + 2 - 1


def test_missing_array_stops_the_unit_naming_file_and_key(tmp_path):
    upstream = fx.build("bloodmnist", 8, gray=False, drop=("test_labels",))
    with pytest.raises(MedmixError, match=r"bloodmnist\.npz: has no array 'test_labels'.*'test_images'"):
        _read(tmp_path, BloodMNIST(), upstream, "test")


def test_images_and_labels_of_different_length_stop_the_unit(tmp_path):
    data = fx.arrays(2, counts={"train": 4, "validation": 1, "test": 2}, size=28, gray=True, bad_label=False)
    data["test_labels"] = data["test_labels"][:1]
    upstream = {"breastmnist.npz": fx.Served("breastmnist.npz", fx.npz_bytes(data),
                                             url=fx.URL.format(file="breastmnist.npz"))}
    with pytest.raises(MedmixError, match=r"test_images has 2 rows but test_labels has 1"):
        _read(tmp_path, BreastMNIST(), upstream, "test")


def test_size_option_picks_the_medmnist_plus_file(tmp_path):
    src = DermaMNIST(size=64)
    assert [f.name for f in src.files_for(("test",))] == ["dermamnist_64.npz"]
    upstream = fx.build("dermamnist", 7, gray=False, size=64, counts={"train": 1, "validation": 1, "test": 3})
    records, _ = _read(tmp_path, src, upstream, "test")
    assert [decodes({"image": {"bytes": r.image}}) for r in records] == [(64, 64)] * 3
    with pytest.raises(MedmixError, match="size must be one of"):
        DermaMNIST(size=32)
    with pytest.raises(TypeError, match="takes no option"):
        DermaMNIST(resolution=64)


def test_npz_rows_stream_in_chunks(tmp_path):
    path = tmp_path / "a.npz"
    data = np.arange(10 * 3 * 2, dtype=np.uint8).reshape(10, 3, 2)
    np.savez_compressed(path, train_images=data)
    chunks = list(iter_npz_rows(path, "train_images", chunk=4))
    assert [len(c) for c in chunks] == [4, 4, 2]
    assert np.array_equal(np.concatenate(chunks), data)
    (tmp_path / "b.npz").write_bytes(b"not a zip")
    with pytest.raises(MedmixError, match=r"b\.npz: not a readable \.npz"):
        list(iter_npz_rows(tmp_path / "b.npz", "x"))


def test_end_to_end_through_fetch_and_normalize(http_server, tmp_path):
    upstream = fx.build("dermamnist", 7, gray=False, bad_label=True, counts={"train": 9, "validation": 2, "test": 7})
    rows, bad = run_twice(DermaMNIST, ("train", "test"), upstream, http_server, tmp_path)
    assert len(rows) == 8 + 7 and [b["id"] for b in bad] == ["dermamnist/train/000001"]
    assert all(r["task"] == "classification" and r["license"] == "CC-BY-NC-4.0" and r["domain"] == "dermatology"
               for r in rows)
    assert all(DermaMNIST.classes[json.loads(r["meta"])["label"]] == r["answer"] for r in rows)
    assert all(decodes(r) == (28, 28) for r in rows)
