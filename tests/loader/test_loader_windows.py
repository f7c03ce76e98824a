"""worker_split="windows": each DataLoader worker reads its own windows of the rank, alone.

What must hold: every row of the rank exactly once per epoch (any world size and worker count),
a batch holds exactly the rows it names (every field as the per-row stream gives them), the
loader's sequence is the round-robin merge of the workers' own batches (torch's actual behaviour,
exhausted workers included), resume is exact (StatefulDataLoader, and `skip` on a plain
DataLoader), and each window is read by exactly one worker.
"""

from __future__ import annotations

from collections import Counter

import pytest
from test_loader import ALL, _as_worker, make_mixture, resumed
from torch.utils.data import DataLoader, get_worker_info

from medmix.core.errors import MedmixError
from medmix.loader import MixtureDataset, partition, pass_batch, reader

BATCH = 4


@pytest.fixture(scope="module")
def mix(tmp_path_factory):
    return make_mixture(tmp_path_factory.mktemp("windows"))


def _make(mix, workers, **kw):
    kw = {"seed": 3, "batch_size": BATCH, "shuffle_window": 10, "decode_images": False, "batched": True,
          "worker_split": "windows", "num_workers": workers, **kw}
    ds = MixtureDataset(mix, **kw)
    ds.set_epoch(1)
    return ds


def _ids(batches) -> list[list[str]]:
    return [batch["id"] for batch in batches]


def _simulated(mix, monkeypatch, workers, **kw) -> list[list[list[str]]]:
    """Each worker's own batches (ids), computed in this process as that worker."""
    out = []
    for w in range(max(workers, 1)):
        if workers:
            _as_worker(monkeypatch, w, workers)
        out.append(_ids(_make(mix, workers, columns=["id"], **kw)))
    monkeypatch.setattr(partition, "get_worker_info", get_worker_info)  # the real one again
    return out


def _loader(ds, workers, cls=DataLoader):
    return cls(ds, batch_size=None, num_workers=workers, collate_fn=pass_batch)


@pytest.mark.parametrize("world", [1, 2, 3])
@pytest.mark.parametrize("workers", [0, 1, 2, 3])
def test_every_row_exactly_once_per_epoch(mix, monkeypatch, world, workers):
    seen, steps = [], []
    for rank in range(world):
        streams = _simulated(mix, monkeypatch, workers, rank=rank, world_size=world)
        for own in streams:
            assert all(len(b) == BATCH for b in own[:-1]) and all(0 < len(b) <= BATCH for b in own)
        seen += [i for own in streams for b in own for i in b]
        steps.append(sum(map(len, streams)))
        assert steps[-1] == len(_make(mix, workers, rank=rank, world_size=world))
    assert Counter(seen) == Counter(ALL)
    # drop: every rank takes the same number of steps (DDP), and no row twice
    dropped = [_simulated(mix, monkeypatch, workers, rank=r, world_size=world, remainder="drop")
               for r in range(world)]
    counts = {sum(map(len, streams)) for streams in dropped}
    assert len(counts) == 1 and counts == {len(_make(mix, workers, rank=0, world_size=world, remainder="drop"))}
    ids = [i for streams in dropped for own in streams for b in own for i in b]
    assert len(ids) == len(set(ids)) and len(ids) >= len(ALL) - world * max(workers, 1) * BATCH


def test_without_workers_it_is_todays_batched_mode(mix):
    today = _ids(_make(mix, 0, worker_split="blocks"))
    assert _ids(_make(mix, 0)) == today
    assert [i for b in today for i in b] == [r["id"] for r in _make(mix, 0, worker_split="blocks", batched=False)]


@pytest.mark.parametrize("workers", [2, 3])
def test_loader_merges_worker_batches_round_robin_and_batches_hold_their_rows(mix, monkeypatch, workers):
    expected = partition.merge_round_robin(_simulated(mix, monkeypatch, workers))
    got = list(_loader(_make(mix, workers), workers))
    assert _ids(got) == expected  # torch: batch k from worker k mod n, then the others in turn
    assert _ids(_loader(_make(mix, workers), workers)) == expected  # deterministic
    by_id = {r["id"]: r for r in _make(mix, 0, worker_split="blocks", batched=False)}
    for batch in got:
        assert list(batch) == list(next(iter(by_id.values())))
        for values in zip(*batch.values()):
            row = dict(zip(batch, values))
            assert row == by_id[row["id"]]  # every field of every row


def test_stateful_dataloader_resumes_mid_epoch_with_two_workers(mix):
    from torchdata.stateful_dataloader import StatefulDataLoader

    def make():
        return _loader(_make(mix, 2, columns=["id"]), 2, StatefulDataLoader)

    reference = _ids(make())
    for k in (7, len(reference) - 1):  # mid-epoch, and after worker 1 ran out (13 and 12 batches)
        head, tail = resumed(make, k)
        assert _ids(head) + _ids(tail) == reference


@pytest.mark.parametrize("workers", [0, 2, 3])
def test_plain_dataloader_resumes_with_skip(mix, monkeypatch, workers):
    reference = partition.merge_round_robin(_simulated(mix, monkeypatch, workers))
    for steps in range(len(reference) + 1):  # every resume point, simulated workers
        resumed = []
        for w in range(max(workers, 1)):
            if workers:
                _as_worker(monkeypatch, w, workers)
            ds = _make(mix, workers, columns=["id"])
            ds.skip(steps * BATCH if workers > 1 else min(steps * BATCH, ds.total_rows))
            resumed.append(_ids(ds))
        assert partition.merge_round_robin(resumed) == reference[steps:], steps
    monkeypatch.setattr(partition, "get_worker_info", get_worker_info)  # the real one again
    if workers:  # and once through a real DataLoader
        ds = _make(mix, workers, columns=["id"])
        ds.skip(5 * BATCH)
        assert _ids(_loader(ds, workers)) == reference[5:]
        with pytest.raises(ValueError, match="whole batches"):
            ds.skip(BATCH + 1)


def test_each_window_is_read_by_exactly_one_worker(mix, monkeypatch, tmp_path):
    log = tmp_path / "reads.log"
    real = reader.WindowReader._read

    def counted(self, order, window):
        info = get_worker_info()
        with log.open("a") as f:  # one short append per read: whole lines from concurrent workers
            f.write(f"{info.id if info else -1} {window}\n")
        return real(self, order, window)

    monkeypatch.setattr(reader.WindowReader, "_read", counted)
    ds = _make(mix, 3, columns=["id"])
    windows = len(ds._order().windows)
    assert sum(len(b["id"]) for b in _loader(ds, 3)) == len(ALL)
    reads = [tuple(map(int, line.split())) for line in log.read_text().splitlines()]
    assert Counter(w for _, w in reads) == Counter(range(windows))  # each window once
    assert all(worker == window % 3 for worker, window in reads)  # by its own worker, dealt round-robin
    log.unlink()
    list(_loader(_make(mix, 3, columns=["id"], worker_split="blocks"), 3))  # today's default, for contrast
    assert len(log.read_text().splitlines()) == 3 * windows


def test_misuse_is_refused_clearly(mix, monkeypatch):
    with pytest.raises(ValueError, match="batched=True"):
        _make(mix, 2, batched=False)
    with pytest.raises(ValueError, match="remainder='drop'"):
        _make(mix, 2, remainder="pad")
    with pytest.raises(ValueError, match="worker_split"):
        _make(mix, 2, worker_split="rows")
    _as_worker(monkeypatch, 0, 3)
    with pytest.raises(MedmixError, match="num_workers=2.*num_workers=3"):
        next(iter(_make(mix, 2)))
    monkeypatch.setattr(partition, "get_worker_info", get_worker_info)  # the real one again
    blocks = _make(mix, 2, worker_split="blocks")
    with pytest.raises(MedmixError, match="worker_split"):
        _make(mix, 2).load_state_dict(blocks.state_dict())
    with pytest.raises(MedmixError, match="worker_split"):
        blocks.load_state_dict(_make(mix, 2).state_dict())
    with pytest.raises(MedmixError, match="num_workers"):
        _make(mix, 3).load_state_dict(_make(mix, 2).state_dict())
