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


def test_columns_read_back_from_the_cache_equal_computed_ones_and_keys_change_with_inputs(tmp_path):
    """A rebuild reads each unit's columns from `ColumnCache`; the index must equal the one computed,
    licenses coded in the same first-seen order, and other eval texts must miss the cache."""
    from medmix.mix.decontam import NgramIndex
    from medmix.mix.index_cache import ColumnCache, eval_digest
    from medmix.mix.textsim import lsh_params

    units = [_unit(tmp_path / "u1.parquet", ["a/1", "a/2"], ["MIT", None], ["h1", None]),
             _unit(tmp_path / "u2.parquet", ["a/3", "a/4", "a/5"], ["CC0-1.0", "MIT", "CC-BY-4.0"], [None] * 3)]
    evals = ["q 1"]
    ngrams = NgramIndex(evals, n=2)

    def index(cache):
        return build_index(units, ["a"], bands=True, text_threshold=0.8, ngrams=ngrams, cache=cache,
                           unit_keys=["a/k1", "a/k2"])

    cache = ColumnCache(tmp_path / "cache", bands=lsh_params(0.8), evals=eval_digest(evals, 2))
    computed = index(None)
    first = index(cache)       # computes and writes
    assert sorted(p.name.split(".")[0] for p in (tmp_path / "cache" / "index" / "a").iterdir()) == ["k1", "k2"]
    for u in units:            # the cache alone must be enough now: the unit files are not read
        u.write_bytes(b"not parquet")
    again = index(cache)
    for idx in (first, again):
        for f in dataclasses.fields(Index):
            a, b = getattr(computed, f.name), getattr(idx, f.name)
            assert (a == b if isinstance(a, tuple) else np.array_equal(a, b)), f.name
    assert computed.licenses == ("MIT", None, "CC0-1.0", "CC-BY-4.0")
    assert computed.text_hit.tolist() == [-1, 0, -1, 0, -1]  # each unit's second row asks "q 1"
    # a column file cut short (a full disk, a killed copy) is not trusted: it is computed again
    units = [_unit(tmp_path / "u1.parquet", ["a/1", "a/2"], ["MIT", None], ["h1", None]),
             _unit(tmp_path / "u2.parquet", ["a/3", "a/4", "a/5"], ["CC0-1.0", "MIT", "CC-BY-4.0"], [None] * 3)]
    broken = cache.path("a/k2")
    broken.write_bytes(broken.read_bytes()[:100])
    assert cache.load("a/k2") is None
    again = index(cache)
    assert np.array_equal(again.text_hit, computed.text_hit) and np.array_equal(again.bands, computed.bands)
    assert cache.load("a/k2") is not None  # rewritten whole
    other = ColumnCache(tmp_path / "cache", bands=lsh_params(0.8), evals=eval_digest(["q 9"], 2))
    assert other.path("a/k1") != cache.path("a/k1") and other.load("a/k1") is None


def test_worker_processes_fill_the_column_cache_with_what_the_driver_would_compute(tmp_path):
    """`build_index(executor=...)`: the units the cache lacks are computed by the executor's
    processes, each writing its own file; the index equals the one computed in this process, and
    progress still counts every row once."""
    from medmix.executors import LocalExecutor
    from medmix.mix.decontam import NgramIndex
    from medmix.mix.index_cache import ColumnCache, eval_digest
    from medmix.mix.textsim import lsh_params

    units = [_unit(tmp_path / f"u{k}.parquet", [f"a/{k}-{i}" for i in range(k + 2)], ["MIT"] * (k + 2),
                   [f"h{k}{i}" for i in range(k + 2)]) for k in range(4)]
    ngrams = NgramIndex(["q 1"], n=2)
    keys = [f"a/k{k}" for k in range(4)]
    cache = ColumnCache(tmp_path / "cache", bands=lsh_params(0.8), evals=eval_digest(["q 1"], 2))
    computed = build_index(units, ["a"], bands=True, text_threshold=0.8, ngrams=ngrams)
    seen = []
    with LocalExecutor(2) as ex:
        idx = build_index(units, ["a"], bands=True, text_threshold=0.8, ngrams=ngrams, cache=cache,
                          unit_keys=keys, executor=ex, progress=seen.append)
    for f in dataclasses.fields(Index):
        a, b = getattr(computed, f.name), getattr(idx, f.name)
        assert (a == b if isinstance(a, tuple) else np.array_equal(a, b)), f.name
    assert all(cache.path(k).exists() for k in keys) and sum(seen) == len(computed)
    for u in units:  # now every unit comes from the cache, counted as it is read
        u.write_bytes(b"not parquet")
    seen.clear()
    with LocalExecutor(2) as ex:
        again = build_index(units, ["a"], bands=True, text_threshold=0.8, ngrams=ngrams, cache=cache,
                            unit_keys=keys, executor=ex, progress=seen.append)
    assert np.array_equal(again.bands, computed.bands) and sum(seen) == len(computed)
