"""The mix stage's stored search results (medmix.mix.memo): same inputs, same result, no search."""

from __future__ import annotations

import numpy as np

import medmix.mix.select as select_mod
from medmix.mix.memo import Memo
from tests.mix.test_mixture_steps import _index, _recipe


def test_memo_returns_the_stored_result_for_the_same_bytes_only(tmp_path):
    memo = Memo(tmp_path)
    calls = []

    def compute():
        calls.append(1)
        return np.arange(5) * len(calls)

    a = np.array([1, 2, 3], np.uint64)
    first = memo("f", [a, 8], compute)
    assert np.array_equal(memo("f", [a.copy(), 8], compute), first) and len(calls) == 1
    memo("f", [a, 9], compute)                          # another parameter
    memo("f", [a.astype(np.int64), 8], compute)         # same values, another dtype
    memo("g", [a, 8], compute)                          # another search
    assert len(calls) == 4
    (stored,) = [p for p in (tmp_path / "mix-memo").iterdir() if p.name.startswith("f-") and
                 p.name == f"f-{memo.key('f', [a, 8])}.npy"]
    stored.write_bytes(stored.read_bytes()[:20])        # cut short: computed again, rewritten
    assert np.array_equal(memo("f", [a, 8], compute), np.arange(5) * 5) and len(calls) == 5
    assert not [p for p in (tmp_path / "mix-memo").iterdir() if p.name.startswith(".")]


def test_a_second_mixture_over_the_same_rows_runs_no_search(tmp_path, monkeypatch):
    h = "35fb90b51db27c9acb1c76d3250a882e"
    idx = _index(["a/1", "a/2", "b/1", "b/2"], ["a", "a", "b", "b"], ["CC-BY-4.0"] * 4, [h, "x", "y", None],
                 [7, 7, 8, 9], phash=[0xFF, 0xFE, 0xF0F0, 0])
    plain = select_mod.mixture_rows(_recipe(), idx, None)
    first = select_mod.mixture_rows(_recipe(), idx, None, memo=Memo(tmp_path))
    monkeypatch.setattr(select_mod, "image_clusters", lambda *a: (_ for _ in ()).throw(AssertionError("searched")))
    again = select_mod.mixture_rows(_recipe(), idx, None, memo=Memo(tmp_path))
    for m in (first, again):
        assert np.array_equal(m.row, plain.row) and m.removed == plain.removed and m.counts == plain.counts
    assert [r.kind for r in plain.removed] == ["duplicate"]  # a/2 is a near copy of a/1 with its text
