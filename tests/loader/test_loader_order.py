"""The epoch order is a contract: these orders were captured from the loader before its split
into a package (commit 3299517), and must never change for the same seed and arguments.

A change here means every resumed run and every published "same seed, same order" claim breaks;
if it is ever intended, it needs a new STATE_FORMAT and a note in the changelog, not a new golden.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from test_loader import _as_worker, make_mixture

from medmix.loader import MixtureDataset, WeightedMixture

GOLDEN = {
    'mix_r0_w0': [73, 9, 70, 74, 11, 8, 72, 71, 86, 29, 24, 82, 36, 20, 46, 21, 23, 62, 18, 47, 12, 38, 15, 13],
    'mix_r0_w1': [7, 10, 6, 69, 84, 26, 81, 25, 83, 85, 28, 27, 43, 44, 19, 22, 48, 45, 17, 39, 14, 40, 41, 42],
    'mix_r1_w0': [37, 16, 30, 34, 61, 64, 63, 35, 77, 60, 80, 58, 59, 76, 78, 0, 92, 89, 4, 1, 52, 53, 94, 54, 51],
    'mix_r1_w1': [65, 33, 31, 68, 67, 66, 32, 75, 56, 79, 57, 55, 90, 91, 88, 87, 2, 3, 5, 49, 50, 96, 95, 93],
    'mix_e2': [88, 33, 30, 25, 26, 89, 32, 91, 31, 28, 92, 34, 35, 90, 87, 27, 29, 24, 95, 18, 16, 21, 93, 22, 13, 17, 19, 14, 23, 12, 96, 94, 15, 20, 63, 8, 64, 6, 11, 79, 75, 9, 68, 78, 80, 76, 10, 62, 65, 77, 67, 66, 7, 74, 70, 37, 50, 73, 54, 42, 53, 40, 49, 39, 69, 52, 41, 51, 72, 71, 38, 44, 46, 58, 5, 1, 57, 60, 45, 59, 56, 4, 43, 2, 61, 3, 55, 36, 47, 48, 0, 83, 86, 84, 85, 81, 82],
    'mix_pad_r2': [96, 65, 32, 31, 34, 76, 45, 26, 0, 74, 93, 51, 20, 80, 52, 23, 89, 56, 61, 58, 28, 36, 72, 42, 78, 82, 27, 54, 1, 3, 64, 33, 40],
    'weighted': ['a/14', 'a/64', 'a/15', 'b/6', 'a/13', 'b/9', 'a/12', 'a/17', 'a/16', 'a/65', 'a/69', 'a/67', 'a/54', 'a/11', 'b/28', 'a/57', 'b/25', 'a/55', 'b/27', 'b/24', 'a/56', 'a/10', 'a/6', 'a/7', 'a/52', 'b/7', 'a/8', 'b/10', 'a/53', 'b/21', 'b/19', 'a/9', 'b/30', 'b/22', 'a/30', 'a/23', 'a/31', 'b/29', 'b/18', 'a/33', 'b/20', 'b/17', 'b/21', 'b/18', 'a/21', 'a/20', 'a/35', 'a/22', 'a/32', 'a/18', 'a/34', 'a/19', 'b/2', 'b/3', 'a/71', 'a/72', 'b/19', 'b/20', 'b/17', 'a/70'],
    'weighted_stop': ['b/25', 'a/12', 'b/18', 'b/6', 'b/0', 'b/22', 'b/11', 'b/4', 'b/30', 'b/17', 'b/15', 'b/7', 'a/9', 'b/26', 'b/21', 'b/1', 'b/9', 'b/19', 'a/2', 'b/23', 'b/13', 'b/8', 'a/1', 'a/50', 'b/28', 'b/10', 'b/29', 'b/3', 'b/16', 'b/20', 'b/2', 'a/30', 'b/12', 'b/24', 'b/5', 'a/54', 'b/14', 'b/27'],
}


@pytest.fixture(scope="module")
def mixes(tmp_path_factory) -> tuple[Path, Path, Path]:
    base = tmp_path_factory.mktemp("golden")
    return (make_mixture(base / "mix"),
            make_mixture(base / "a", sizes=(40, 33), source="a", image_every=1000),
            make_mixture(base / "b", sizes=(11, 20), source="b", image_every=1000))


def _num(rows) -> list[int]:
    return [int(row["id"].split("/")[1]) for row in rows]


@pytest.mark.parametrize("rank", [0, 1])
@pytest.mark.parametrize("worker", [0, 1])
def test_world_2_workers_2_order_is_unchanged(mixes, monkeypatch, rank, worker):
    _as_worker(monkeypatch, worker, 2)
    ds = MixtureDataset(mixes[0], seed=3, rank=rank, world_size=2, batch_size=4, shuffle_window=10, columns=["id"])
    assert _num(ds) == GOLDEN[f"mix_r{rank}_w{worker}"]


def test_other_epochs_and_policies_are_unchanged(mixes):
    mix = mixes[0]
    ds = MixtureDataset(mix, seed=3, shuffle_window=16, columns=["id"])
    ds.set_epoch(2)
    assert _num(ds) == GOLDEN["mix_e2"]
    ds = MixtureDataset(mix, seed=5, remainder="pad", rank=2, world_size=3, columns=["id"])
    assert _num(ds) == GOLDEN["mix_pad_r2"]


def test_weighted_orders_are_unchanged(mixes):
    _, a, b = mixes
    ds = WeightedMixture({a: 0.6, b: 0.4}, seed=3, num_samples=120, rank=1, world_size=2, shuffle_window=8,
                         columns=["id"])
    ds.set_epoch(1)
    assert [row["id"] for row in ds] == GOLDEN["weighted"]
    ds = WeightedMixture({a: 1, b: 3}, seed=7, exhausted="stop", columns=["id"])
    assert [row["id"] for row in ds] == GOLDEN["weighted_stop"]
