"""PCam adapter against gzipped-HDF5 fixtures in the real Zenodo layout, through the real fetch
(which inflates each `.h5.gz`) and normalize path."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from adapter_harness import run_adapter
from fixtures import assert_matches_remotes, decodes, read_split, run_twice, write_tree
from fixtures import pcam as fx
from PIL import Image

from medmix.core.errors import MedmixError
from medmix.fetch.download import fetch_files
from medmix.sources import get_source
from medmix.sources.pcam import PCam


def _files(tmp_path, upstream, splits):
    raw = write_tree(tmp_path / "raw", upstream)
    return fetch_files(PCam(), splits, cache_dir=tmp_path / "cache", from_dir=raw).paths


def test_declared_as_benchmark_with_pcam_layout():
    assert get_source("pcam") is PCam
    assert PCam.benchmark and PCam.eval_splits == {"test"} and len(PCam.classes) == 2
    assert PCam.splits == {"train": 262144, "validation": 32768, "test": 32768}
    assert_matches_remotes(PCam, fx.build())
    assert all(f.extract for f in PCam.files)  # HDF5 needs random access: inflated by fetch, not streamed
    assert sorted(f.name for f in PCam().files_for(("test",))) == [fx.name("test", "x"), fx.name("test", "y")]


def test_rows_carry_upstream_pixels_and_labels(tmp_path):
    files = _files(tmp_path, fx.build(), ("train", "validation", "test"))
    for split, n in {"train": 8, "validation": 4, "test": 6}.items():
        records, bads = read_split(PCam(), split, files)
        assert bads == [] and len(records) == n
        assert [r.meta["label"] for r in records] == [i % 2 for i in range(n)]
        assert [r.native_id for r in records][:2] == [f"{split}/000000", f"{split}/000001"]
    pixels = np.asarray(Image.open(io.BytesIO(records[0].image)))
    assert pixels.shape == (96, 96, 3) and pixels.dtype == np.uint8


def test_bad_label_is_a_bad_row_named_by_upstream_file(tmp_path):
    records, bads = read_split(PCam(), "train", _files(tmp_path, fx.build(bad_label=True), ("train",)))
    assert len(records) == 7
    assert [(b.native_id, b.file) for b in bads] == [("train/000002", f"{fx.name('train', 'x')}[2]")]


def test_label_count_mismatch_stops_the_unit(tmp_path):
    files = _files(tmp_path, fx.build(short_labels=True), ("test",))
    with pytest.raises(MedmixError, match=r"split_test_x\.h5\.gz: dataset 'x' has shape \(6, 96, 96, 3\).*5 labels"):
        read_split(PCam(), "test", files)


def test_not_hdf5_inside_the_gzip_is_a_clear_error(tmp_path):
    import gzip

    upstream = fx.build()
    name = fx.name("test", "y")
    upstream[name] = fx.Served(name, gzip.compress(b"plain text, not HDF5", mtime=0), url=fx.URL.format(file=name))
    with pytest.raises(MedmixError, match="not a readable HDF5 file"):
        read_split(PCam(), "test", _files(tmp_path, upstream, ("test",)))


def test_end_to_end_through_fetch_and_normalize(http_server, tmp_path):
    rows, bad = run_twice(PCam, ("train", "test"), fx.build(bad_label=True), http_server, tmp_path)
    assert len(rows) == 7 + 6 and [b["id"] for b in bad] == ["pcam/train/000002"]
    assert all(decodes(r) == (96, 96) for r in rows)
    assert all(r["answer"] == PCam.classes[json.loads(r["meta"])["label"]] for r in rows)
    assert all(r["license"] == "CC0-1.0" and r["split"] in ("train", "test") for r in rows)


def test_from_dir_copy_builds_offline(tmp_path):
    raw = write_tree(tmp_path / "raw", fx.build())
    rows, bad = run_adapter(PCam(), ("validation",), cache_dir=tmp_path / "c", from_dir=raw)
    assert bad == [] and len(rows) == 4 and {r["split"] for r in rows} == {"validation"}
