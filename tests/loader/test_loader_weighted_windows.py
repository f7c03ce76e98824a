"""Weighted mixtures with worker_split="windows": DataLoader worker j of n reads as rank
`rank * n + j` of `world_size * n` (its own span of every source), and the loader interleaves
the workers' batches.

What must hold: the loader's sequence is exactly the round-robin merge of those virtual ranks'
batched streams (so every row at most once, and "cycle" caps split evenly); `len()` counts what
the loader gives; `skip(steps * batch_size)` and a StatefulDataLoader state resume exactly where
the uninterrupted epoch goes on; a DataLoader with another num_workers is refused.
"""

from __future__ import annotations

import pytest
from test_loader import make_mixture
from torch.utils.data import DataLoader

from medmix.core.errors import MedmixError
from medmix.loader import WeightedMixture, pass_batch
from medmix.loader.partition import merge_round_robin

BATCH = 4


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("wwin")
    return (make_mixture(root / "a", sizes=(30, 25)), make_mixture(root / "b", sizes=(20,), source="other", seed=1))


def _make(sources, workers, **kw):
    a, b = sources
    kw = {"seed": 4, "batch_size": BATCH, "shuffle_window": 8, "decode_images": False, "batched": True,
          "exhausted": "stop", **kw}
    ds = WeightedMixture({a: 3, b: 2}, worker_split="windows", num_workers=workers, **kw)
    ds.set_epoch(2)
    return ds


def _virtual(sources, rank, world, **kw):
    return list(_weighted_view(sources, rank, world, **kw))


def _loader(ds, workers):
    return DataLoader(ds, batch_size=None, num_workers=workers, collate_fn=pass_batch)


@pytest.mark.parametrize(("workers", "kw"), [(2, {}), (3, {}), (2, {"exhausted": "cycle", "num_samples": 50})])
def test_the_loader_interleaves_the_workers_virtual_rank_streams(sources, workers, kw):
    want = merge_round_robin([_virtual(sources, j, workers, **kw) for j in range(workers)])
    got = list(_loader(_make(sources, workers, **kw), workers))
    assert [b["id"] for b in got] == [b["id"] for b in want]
    assert got == want
    assert len(_make(sources, workers, **kw)) == len(got)
    ids = [i for b in got for i in b["id"]]
    if kw.get("exhausted", "stop") == "stop":
        assert len(ids) == len(set(ids))  # every row at most once per epoch
    else:
        assert len(ids) == workers * -(-50 // workers)  # the cap, split evenly over the workers


def test_zero_workers_is_the_plain_stream(sources):
    assert list(_make(sources, 0)) == _virtual(sources, 0, 1)


@pytest.mark.parametrize("steps", [0, 1, 3, 6])
def test_skip_whole_steps_goes_on_where_the_epoch_would(sources, steps):
    full = list(_loader(_make(sources, 2), 2))
    ds = _make(sources, 2)
    ds.skip(steps * BATCH)
    assert list(_loader(ds, 2)) == full[steps:]
    with pytest.raises(ValueError, match="whole batches"):
        ds.skip(BATCH + 1)


def test_a_stateful_dataloader_resumes_mid_epoch(sources):
    from torchdata.stateful_dataloader import StatefulDataLoader

    full = list(_loader(_make(sources, 2), 2))
    loader = StatefulDataLoader(_make(sources, 2), batch_size=None, num_workers=2, collate_fn=pass_batch)
    it, head = iter(loader), []
    for _ in range(5):
        head.append(next(it))
    state = loader.state_dict()
    del it
    again = StatefulDataLoader(_make(sources, 2), batch_size=None, num_workers=2, collate_fn=pass_batch)
    again.load_state_dict(state)
    assert head + list(again) == full


def test_another_num_workers_is_refused(sources):
    with pytest.raises(MedmixError, match="num_workers=2"):
        list(_loader(_make(sources, 2), 3))
    with pytest.raises(ValueError, match="batched=True"):
        WeightedMixture({sources[0]: 1}, worker_split="windows", num_workers=2)


def _rows_read(batch):
    from torch.utils.data import get_worker_info

    info = get_worker_info()
    return {"id": batch["id"], "worker": info.id, "read": info.dataset.io.rows}


@pytest.fixture(scope="module")
def larger(tmp_path_factory):
    root = tmp_path_factory.mktemp("wwin-larger")
    return (make_mixture(root / "a", sizes=(300, 250)), make_mixture(root / "b", sizes=(200,), source="other", seed=1))


@pytest.mark.parametrize("split", ["blocks", "windows"])
def test_each_worker_reads_only_its_share(larger, split):
    a, b = larger
    ds = WeightedMixture({a: 3, b: 2}, batch_size=BATCH, shuffle_window=8, decode_images=False, batched=True,
                         exhausted="stop", worker_split=split, num_workers=2, transform=_rows_read)
    read, given = {}, 0
    for batch in _loader(ds, 2):
        read[batch["worker"]] = batch["read"]
        given += len(batch["id"])
    if split == "blocks":
        assert sum(read.values()) >= 1.7 * given  # every worker reads every window it needs rows of
    else:
        assert sum(read.values()) <= 1.35 * given  # own spans: only windows at a span's edge twice


def test_too_many_workers_for_a_source_is_an_error_naming_the_fix(tmp_path):
    a, b = make_mixture(tmp_path / "a", sizes=(40,)), make_mixture(tmp_path / "b", sizes=(3,), source="b")
    with pytest.raises(MedmixError, match="each DataLoader worker reads as a rank.*fewer workers"):
        WeightedMixture({a: 1, b: 1}, batched=True, worker_split="windows", num_workers=4)


def test_an_endless_stream_splits_and_skips_the_same_way(sources):
    from itertools import islice

    kw = {"exhausted": "cycle"}  # no num_samples: endless, no len()
    views = [list(islice(iter(_weighted_view(sources, j, 2, **kw)), 6)) for j in range(2)]
    want = merge_round_robin(views)
    got = list(islice(iter(_loader(_make(sources, 2, **kw), 2)), 12))
    assert got == want
    ds = _make(sources, 2, **kw)
    ds.skip(5 * BATCH)
    assert list(islice(iter(_loader(ds, 2)), 7)) == want[5:]
    with pytest.raises(TypeError, match="no length"):
        len(_make(sources, 2, **kw))


def _weighted_view(sources, rank, world, **kw):
    a, b = sources
    kw = {"seed": 4, "batch_size": BATCH, "shuffle_window": 8, "decode_images": False, "batched": True,
          "exhausted": "stop", **kw}
    ds = WeightedMixture({a: 3, b: 2}, rank=rank, world_size=world, **kw)
    ds.set_epoch(2)
    return ds
