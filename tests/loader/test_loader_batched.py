"""Batched mode: a dataset that yields whole batches ({column: list}) for `DataLoader(batch_size=None)`.

What must hold: a batch handed over by a worker holds exactly the rows of the per-row stream at
its place (same ids, same fields, same order), whatever the worker count, and the batched stream
resumes exactly, from its own state or from a per-row state.
"""

from __future__ import annotations

import PIL.Image
import pytest
from test_loader import make_mixture, resumed
from torch.utils.data import DataLoader

from medmix.loader import MixtureDataset, WeightedMixture, pass_batch

BATCH = 4


def _rows(batches) -> list[dict]:
    out = []
    for batch in batches:
        names = list(batch)
        sizes = {len(values) for values in batch.values()}
        assert len(sizes) == 1  # every column holds the same rows
        out += [dict(zip(names, values)) for values in zip(*batch.values())]
    return out


@pytest.fixture(scope="module")
def mix(tmp_path_factory):
    return make_mixture(tmp_path_factory.mktemp("batched"))


def _make(mix, **kw):
    kw = {"seed": 3, "batch_size": BATCH, "shuffle_window": 10, "decode_images": False, **kw}
    ds = MixtureDataset(mix, **kw)
    ds.set_epoch(1)
    return ds


@pytest.mark.parametrize("workers", [0, 2])
def test_a_worker_batch_equals_the_rows_it_contains(mix, workers):
    rows = list(_make(mix))
    batches = list(DataLoader(_make(mix, batched=True), batch_size=None, num_workers=workers, collate_fn=pass_batch))
    assert [len(b["id"]) for b in batches] == [BATCH] * (len(rows) // BATCH) + [len(rows) % BATCH]
    assert len(batches) == len(_make(mix, batched=True))
    assert list(batches[0]) == list(rows[0])  # columns in the per-row key order
    assert _rows(batches) == rows  # ids, every field, order


def test_batches_decode_images_in_the_worker(mix):
    rows = list(_make(mix, decode_images=True))
    loader = DataLoader(_make(mix, batched=True, decode_images=True), batch_size=None, num_workers=2,
                        collate_fn=pass_batch)
    got = _rows(loader)
    assert [r["id"] for r in got] == [r["id"] for r in rows]
    for mine, theirs in zip(got, rows):
        assert (mine["image"] is None) == (theirs["image"] is None)
        if mine["image"] is not None:
            assert isinstance(mine["image"], PIL.Image.Image) and mine["image"].tobytes() == theirs["image"].tobytes()
    sizes = list(_make(mix, batched=True, transform=lambda b: len(b["id"])))
    assert sum(sizes) == len(rows) and max(sizes) == BATCH  # transform sees whole batches


@pytest.mark.parametrize("workers", [0, 2])
def test_batched_stateful_dataloader_resumes_mid_epoch(mix, workers):
    from torchdata.stateful_dataloader import StatefulDataLoader

    def make():
        return StatefulDataLoader(_make(mix, batched=True, columns=["id", "answer"]), batch_size=None,
                                  num_workers=workers, collate_fn=pass_batch)

    reference = _rows(make())
    head, tail = resumed(make, 7)
    assert _rows(head) + _rows(tail) == reference


def test_a_per_row_state_resumes_in_batched_mode(mix):
    rows = list(_make(mix, columns=["id"]))
    per_row = _make(mix, columns=["id"])
    it = iter(per_row)
    for _ in range(10):
        next(it)
    batched = _make(mix, batched=True, columns=["id"])
    batched.load_state_dict(per_row.state_dict())
    batches = list(DataLoader(batched, batch_size=None, num_workers=2, collate_fn=pass_batch))
    assert batches[0]["id"] == [r["id"] for r in rows[10:14]]  # blocks count from the resume point
    assert _rows(batches) == rows[10:]


def test_weighted_batches_equal_the_weighted_rows(tmp_path):
    a = make_mixture(tmp_path / "a", sizes=(40, 33), source="a", image_every=1000)
    b = make_mixture(tmp_path / "b", sizes=(11, 20), source="b", image_every=1000)

    def make(**kw):
        return WeightedMixture({a: 0.6, b: 0.4}, seed=2, num_samples=150, batch_size=BATCH, shuffle_window=8,
                               columns=["id", "source"], **kw)

    rows = list(make())
    batches = list(DataLoader(make(batched=True), batch_size=None, num_workers=2, collate_fn=pass_batch))
    assert _rows(batches) == rows and len(batches) == len(make(batched=True)) == -(-150 // BATCH)


def _weighted(a, b, **kw):
    kw = {"seed": 5, "batch_size": BATCH, "shuffle_window": 10, "decode_images": False, "exhausted": "stop", **kw}
    return WeightedMixture({a: 2, b: 1}, **kw)


@pytest.mark.parametrize("columns", [None, ["image"], ["image", "id"], ["id", "question"]])
def test_every_reader_path_gives_the_same_rows_whatever_the_columns(tmp_path, columns):
    """The ordered path (no workers: the window permuted in Arrow, the image column picked from
    file order), the file-order path (workers in "blocks" mode) and batched mode all hand out
    the rows of the full-column per-row stream, projected to the columns asked for."""
    a, b = make_mixture(tmp_path / "a"), make_mixture(tmp_path / "b", source="other", seed=1)
    full = list(_weighted(a, b))
    names = columns or list(full[0])
    want = [{name: row[name] for name in names} for row in full]
    got = list(_weighted(a, b, columns=columns))
    assert got == want and all(list(row) == names for row in got)  # values, and keys in column order
    assert _rows(_weighted(a, b, columns=columns, batched=True)) == want
    workers = DataLoader(_weighted(a, b, columns=columns), batch_size=BATCH, num_workers=2, collate_fn=list)
    assert [row for rows in workers for row in rows] == want
    one = [{name: row[name] for name in names} for row in _make(a)]
    assert list(_make(a, columns=columns)) == one

