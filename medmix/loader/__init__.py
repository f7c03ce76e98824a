"""Load a built mixture: as a `datasets.Dataset`, or as a sharded, resumable torch stream.

Why two ways: `load()` is the no-surprise path (memory-mapped Arrow, random access, the HF
ecosystem), while `MixtureDataset` is what a multi-GPU trainer needs: every sample exactly once
per epoch across ranks and DataLoader workers, deterministic shuffles, bounded memory and O(1)
mid-epoch resume. `MixtureDataset.from_sources` adds load-time weights over several mixtures.

The package follows the stream's layers, one module each:

    order      the epoch order from (seed, epoch): the determinism contract, spelled out there
    shards     the shard index (Parquet footers, via `medmix.core.layout`) and `open_shard`, the one
               place a shard file is opened
    reader     the window reader: rows at epoch positions, as Python columns, one window in memory
    partition  ranks (remainder policies) and DataLoader workers (blocks of `batch_size`, or windows)
    cursor     the epoch position (consumed samples, worker share), its one reset and its state
    stream     what both datasets share: epochs, state_dict, per-row or batched hand-out
    handoff    batches from DataLoader workers to the trainer through shared memory, not the pipe
    mixture, weighted, hf   the public `MixtureDataset`, `WeightedMixture` and `load`

Resume: `state_dict()` holds (seed, epoch, samples consumed by this rank), plus for weighted
mixtures each source's position. `load_state_dict()` jumps straight to the window holding the
next sample; no earlier window is read. With a plain DataLoader, after `steps` batches of this
epoch: `ds.set_epoch(epoch); ds.skip(steps * batch_size)` (any `num_workers`). With
`torchdata.stateful_dataloader.StatefulDataLoader` the per-worker states are saved and restored
for you (same `num_workers` and `batch_size` on resume). Batched mode with
`worker_split="windows", num_workers=N` lets each worker read only its own windows (workers scale;
the order depends on N; `skip` then takes whole loader steps). Workers get a copy of the dataset at each
`iter(loader)`, so call `set_epoch` before it and do not use `persistent_workers=True`.
"""

from __future__ import annotations

from medmix.core.layout import mixture_files
from medmix.loader.hf import load
from medmix.loader.mixture import MixtureDataset
from medmix.loader.stream import STATE_FORMAT, pass_batch
from medmix.loader.weighted import WeightedMixture

__all__ = ["STATE_FORMAT", "MixtureDataset", "WeightedMixture", "load", "mixture_files", "pass_batch"]
