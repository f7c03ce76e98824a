"""Batches from DataLoader workers through shared-memory rings (`medmix.loader.handoff`).

What must hold: a batch read back from a ring equals the batch written; a ring never overwrites
a batch the trainer has not read, and a batch that does not fit goes through the pipe instead
(never a wait); nothing is left in /dev/shm after a run, and files of killed runs are removed;
a `collate_fn` in the worker still gets a dict, and copies of it never touch a ring.
"""

from __future__ import annotations

import copy
import errno
import os
import pickle
import signal
import subprocess
import sys
import time

import pytest
import torch
from test_loader import make_mixture
from torch.utils.data import DataLoader

from medmix.core.errors import MedmixError
from medmix.loader import MixtureDataset, WeightedMixture, handoff, pass_batch


@pytest.fixture
def shm(tmp_path, monkeypatch):
    """Rings in a private folder, and a fresh per-process ring and mapping state."""
    monkeypatch.setattr(handoff, "SHM_DIR", tmp_path)
    monkeypatch.setattr(handoff, "_ring", None)
    monkeypatch.setattr(handoff, "_maps", {})
    return tmp_path


def _batch(i: int, size: int = 1000) -> dict:
    return {"id": [f"row{i}-{k}" for k in range(4)], "image": [{"bytes": bytes([i % 256]) * size, "path": None}] * 4}


def _send(ring: handoff.Ring, batch: dict):
    """What a worker's queue does with a result: pickle it, as the trainer will unpickle it."""
    where = ring.put(pickle.dumps(batch, protocol=pickle.HIGHEST_PROTOCOL))
    return None if where is None else (ring.name, *where, ring.capacity, os.getpid())


def test_a_batch_read_back_from_a_ring_equals_the_batch_written(shm):
    ring = handoff.Ring(1 << 16)
    assert (shm / ring.name).exists()
    handle = _send(ring, _batch(1))
    assert handoff.receive(*handle) == _batch(1)
    assert not (shm / ring.name).exists()  # the trainer unlinks it at first sight: nothing to leak
    for i in range(2, 40):  # many times round the ring, each read before the next write
        assert handoff.receive(*_send(ring, _batch(i))) == _batch(i)


def test_a_ring_never_overwrites_an_unread_batch(shm):
    ring = handoff.Ring(1 << 16)
    sent = []
    while (handle := _send(ring, _batch(len(sent), 4000))) is not None:
        sent.append(handle)
    assert 3 <= len(sent) <= 16  # full: the next batch must take the pipe
    assert _send(ring, _batch(0, 4000)) is None  # still full: nothing was read
    assert handoff.receive(*sent[0]) == _batch(0, 4000)  # reading frees room at the ring's start
    assert handoff.receive(*sent[1]) == _batch(1, 4000)
    handle = _send(ring, _batch(99, 4000))
    assert handle is not None and handle[1] % ring.capacity == 0  # never split: written from the start
    assert [handoff.receive(*h) for h in sent[2:]] == [_batch(i, 4000) for i in range(2, len(sent))]
    assert handoff.receive(*handle) == _batch(99, 4000)


def test_a_batch_larger_than_a_quarter_of_the_ring_is_not_put_in_it(shm):
    ring = handoff.Ring(1 << 16)
    assert ring.put(b"x" * ((1 << 14) + 1)) is None
    assert ring.put(b"x" * (1 << 14)) is not None


def test_without_shared_memory_batches_go_through_the_pipe(tmp_path, monkeypatch):
    monkeypatch.setattr(handoff, "SHM_DIR", tmp_path / "missing")  # no /dev/shm (not Linux): quietly
    monkeypatch.setattr(handoff, "_ring", None)
    batch = handoff.SharedBatch(_batch(5))
    back = pickle.loads(pickle.dumps(batch))
    assert back == _batch(5) and type(back) is dict
    assert handoff._ring is False


def test_a_full_shm_warns_once_and_batches_go_through_the_pipe(shm, monkeypatch):
    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full)
    batch = handoff.SharedBatch(_batch(6))
    with pytest.warns(UserWarning, match="no batch ring.*No space left"):
        blob = pickle.dumps(batch)
    assert pickle.loads(blob) == _batch(6)
    assert pickle.loads(pickle.dumps(batch)) == _batch(6)  # no second warning (the filter would raise)
    assert list(shm.iterdir()) == []  # the half-made ring file was removed


def test_rings_take_at_most_a_share_of_the_free_space(shm, monkeypatch):
    class Tiny:
        f_bavail, f_frsize = 20, 1 << 20  # 20 MiB free

    monkeypatch.setattr(os, "statvfs", lambda path: Tiny)
    pickle.dumps(handoff.SharedBatch(_batch(7)))
    assert handoff._ring.capacity == 5 << 20  # a quarter of the free space, one worker (not in a loader)


def test_copies_of_a_shared_batch_are_plain_dicts_and_make_no_ring(shm):
    batch = handoff.SharedBatch(_batch(3))
    for made in (copy.copy(batch), copy.deepcopy(batch)):
        assert made == _batch(3) and type(made) is dict
    assert handoff._ring is None and list(shm.iterdir()) == []


def test_rings_of_runs_whose_processes_are_gone_are_removed(shm):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    stale = shm / f"{handoff.PREFIX}-{dead}-{dead}-0badc0de"
    live = shm / f"{handoff.PREFIX}-{os.getpid()}-{dead}-0badc0de"  # its trainer still runs: kept
    other = shm / "not-ours"
    for path in (stale, live, other):
        path.write_bytes(b"")
    handoff._remove_stale()
    assert not stale.exists() and live.exists() and other.exists()


@pytest.fixture(scope="module")
def mix(tmp_path_factory):
    return make_mixture(tmp_path_factory.mktemp("handoff"))


def _mine() -> list[str]:
    return [p.name for p in handoff.SHM_DIR.glob(f"{handoff.PREFIX}-{os.getpid()}-*")]


@pytest.mark.skipif(not handoff.SHM_DIR.is_dir(), reason="needs /dev/shm (Linux)")
@pytest.mark.parametrize("shared", [True, False])
def test_worker_batches_cross_through_rings_and_leave_nothing_behind(mix, shared, monkeypatch):
    monkeypatch.setattr(handoff, "_maps", {})
    kw = {"seed": 3, "batch_size": 4, "shuffle_window": 10, "decode_images": False, "batched": True}
    want = list(MixtureDataset(mix, **kw))
    loader = DataLoader(MixtureDataset(mix, shared_memory=shared, **kw), batch_size=None, num_workers=2,
                        collate_fn=pass_batch)
    got, mapped = [], 0
    for batch in loader:
        assert type(batch) is dict
        got.append(batch)
        mapped = max(mapped, len(handoff._maps))
    assert got == want
    assert mapped == (2 if shared else 0)  # one ring per worker, mapped by this process
    del loader
    assert _mine() == []


@pytest.mark.skipif(not handoff.SHM_DIR.is_dir(), reason="needs /dev/shm (Linux)")
def test_a_collate_fn_in_the_worker_still_gets_a_dict(tmp_path):
    a, b = make_mixture(tmp_path / "a"), make_mixture(tmp_path / "b")
    ds = WeightedMixture({a: 1, b: 1}, batch_size=4, batched=True, decode_images=False, exhausted="stop")
    seen = list(DataLoader(ds, batch_size=None, num_workers=2,
                           collate_fn=lambda batch: (isinstance(batch, dict), len(batch["id"]))))
    assert seen and all(is_dict for is_dict, _ in seen)
    assert sum(n for _, n in seen) == len(list(WeightedMixture({a: 1, b: 1}, decode_images=False,
                                                               exhausted="stop")))


def _with_tensor(batch: dict) -> dict:
    return {"id": batch["id"], "x": torch.arange(len(batch["id"])) + len(batch["id"][0])}


@pytest.mark.skipif(not handoff.SHM_DIR.is_dir(), reason="needs /dev/shm (Linux)")
def test_tensors_in_a_batch_cross_as_torch_shares_them(mix):
    kw = {"seed": 3, "batch_size": 4, "shuffle_window": 10, "decode_images": False, "batched": True,
          "transform": _with_tensor}
    want = list(MixtureDataset(mix, **kw))
    got = list(DataLoader(MixtureDataset(mix, **kw), batch_size=None, num_workers=2, collate_fn=pass_batch))
    assert [b["id"] for b in got] == [b["id"] for b in want]
    assert all(torch.equal(g["x"], w["x"]) for g, w in zip(got, want))
    assert all(g["x"].is_shared() for g in got)  # torch's shared-memory handles, not pickled bytes


@pytest.mark.skipif(not handoff.SHM_DIR.is_dir(), reason="needs /dev/shm (Linux)")
def test_rings_of_a_dropped_loader_are_unmapped_by_the_next_one(mix, monkeypatch):
    monkeypatch.setattr(handoff, "_maps", {})
    kw = {"seed": 3, "batch_size": 4, "shuffle_window": 10, "decode_images": False, "batched": True}
    first = iter(DataLoader(MixtureDataset(mix, **kw), batch_size=None, num_workers=2, collate_fn=pass_batch))
    next(first), next(first)  # one batch from each worker, the rest never read
    dropped = set(handoff._maps)
    assert len(dropped) == 2
    del first  # shuts the workers down
    rest = list(DataLoader(MixtureDataset(mix, **kw), batch_size=None, num_workers=2, collate_fn=pass_batch))
    assert rest == list(MixtureDataset(mix, **kw))
    assert not dropped & set(handoff._maps) and len(handoff._maps) == 2
    assert _mine() == []


KILLED_RUN = """
import sys, time
from torch.utils.data import DataLoader
from medmix.loader import MixtureDataset, pass_batch
ds = MixtureDataset(sys.argv[1], batch_size=2, batched=True, decode_images=False, shuffle_window=10)
it = iter(DataLoader(ds, batch_size=None, num_workers=2, collate_fn=pass_batch))  # workers start, nothing read
print("ready", flush=True)
time.sleep(600)
"""


@pytest.mark.skipif(not handoff.SHM_DIR.is_dir(), reason="needs /dev/shm (Linux)")
def test_rings_left_by_a_killed_run_are_removed_by_the_next_ring(mix):
    run = subprocess.Popen([sys.executable, "-c", KILLED_RUN, str(mix)], stdout=subprocess.PIPE, text=True,
                           start_new_session=True)  # its own process group: the kill takes its workers too
    pattern = f"{handoff.PREFIX}-{run.pid}-*"
    try:
        assert run.stdout.readline().strip() == "ready"
        deadline = time.monotonic() + 30
        while len(list(handoff.SHM_DIR.glob(pattern))) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(list(handoff.SHM_DIR.glob(pattern))) == 2  # both workers' rings, never mapped by the trainer
    finally:
        os.killpg(run.pid, signal.SIGKILL)
        run.wait()
    deadline = time.monotonic() + 30
    while list(handoff.SHM_DIR.glob(pattern)) and time.monotonic() < deadline:
        handoff._remove_stale()  # what a new ring does first
        time.sleep(0.05)
    assert list(handoff.SHM_DIR.glob(pattern)) == []


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="reads /proc (Linux)")
def test_a_zombie_counts_as_gone():
    """Killed helpers of a SIGKILLed run stay zombies where no init reaps them (containers)."""
    from medmix.core.writer import pid_alive

    pid = os.fork()
    if pid == 0:
        os._exit(0)
    try:
        deadline = time.monotonic() + 10
        while open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert not pid_alive(pid)
    finally:
        os.waitpid(pid, 0)
    assert pid_alive(os.getpid()) and not pid_alive(pid)


def test_a_ring_that_is_gone_is_an_error_naming_it(shm):
    ring = handoff.Ring(1 << 16)
    handle = _send(ring, _batch(8))
    later = _send(ring, _batch(9))
    (shm / ring.name).unlink()  # someone cleaned /dev/shm before the trainer mapped it
    with pytest.raises(MedmixError, match=f"{ring.name}: a DataLoader worker's batch ring is gone"):
        handoff.receive(*handle)
    assert handoff._maps == {}  # nothing half-mapped is kept
    assert later is not None and ring.written > 0  # the worker's side is untouched
