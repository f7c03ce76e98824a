"""The mix index as named fixed-width columns (medmix.mix.index.Index)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from medmix.mix.index import Index, build_index, fixed_width, hash_key, hash_keys


def _unit(path, ids, licenses, hashes):
    n = len(ids)
    pq.write_table(pa.table({
        "id": ids, "source": ["a"] * n, "task": ["vqa"] * n, "license": licenses,
        "image_hash": pa.array(hashes, pa.string()),
        "image_phash": pa.array([7 if h else None for h in hashes], pa.uint64()),
        "question": [f"q {i}" for i in range(n)], "options": pa.array([None] * n, pa.list_(pa.string())),
        "answer": ["x"] * n, "context": pa.array([None] * n, pa.string()),
    }), path)
    return path


def test_build_index_holds_named_fixed_width_columns(tmp_path):
    ids = ["a/é-1", "a/z", "a/ab", "a/abc"]
    hashes = ["35fb90b51db27c9acb1c76d3250a882e", None, "h1", "35fb90b51db27c9acb1c76d3250a882e"]
    idx = build_index([_unit(tmp_path / "u.parquet", ids, ["MIT", "CC0-1.0", "MIT", None], hashes)], ["a"],
                      bands=False, text_threshold=None)
    assert idx.ids.dtype.kind == "S" and idx.sha.dtype.kind == "S"
    assert [idx.id_at(i) for i in range(len(idx))] == ids
    # sorting the bytes column sorts like Python sorts the strings (the survivor rank depends on it)
    assert [ids[i] for i in np.argsort(idx.ids, kind="stable")] == sorted(ids)
    assert [idx.licenses[c] for c in idx.license] == ["MIT", "CC0-1.0", "MIT", None]
    assert idx.has_image.tolist() == [True, False, True, True]
    assert idx.sha[0] == idx.sha[3] != idx.sha[2] and idx.sha[1] == b""


def test_an_index_refuses_a_column_of_the_wrong_kind_or_length():
    n = 2
    cols = dict(unit=np.zeros(n, np.int32), row=np.arange(n, dtype=np.int32), ids=fixed_width(["a", "b"]),
                source=np.zeros(n, np.int32), sources=("s",), license=np.zeros(n, np.int32), licenses=("MIT",),
                has_image=np.zeros(n, bool), sha=np.zeros(n, "S17"), phash=np.zeros(n, np.uint64),
                text=np.zeros(n, np.uint64))
    idx = Index(**cols)
    assert len(idx) == 2
    with pytest.raises(dataclasses.FrozenInstanceError):
        idx.phash = idx.text
    with pytest.raises(TypeError, match="Index.phash"):
        Index(**{**cols, "phash": np.zeros(n, np.int64)})
    with pytest.raises(TypeError, match="Index.row"):
        Index(**{**cols, "row": np.zeros(n + 1, np.int32)})
    with pytest.raises(TypeError):
        Index(*cols.values())  # positional construction is what let two columns swap silently


def test_hash_keys_agree_with_hash_key_and_keep_distinct_hashes_apart():
    vals = ["35fb90b51db27c9acb1c76d3250a882e", None, "h1", "35FB90B51DB27C9ACB1C76D3250A882E",
            "00" * 16, "zz" * 16, "x" * 40]
    keys = hash_keys(pa.array(vals, pa.string()))
    assert list(keys) == [np.array([hash_key(v)], keys.dtype)[0] for v in vals]
    present = [k for k, v in zip(keys, vals) if v is not None]
    assert len(set(present)) == len(present) and b"" not in present
