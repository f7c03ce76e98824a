"""Where a build's independent tasks run: a local process pool, or a Ray cluster.

The seam: `build` hands a list of calls (work units to normalize, shards to gather) to an
executor's `map`, and gets the results back *in the order it gave them*, whatever order they
finished in. Every task is idempotent and commits its output atomically under a content key
(see `medmix.normalize`, `medmix.mix.shard_writer`), so any executor may run it anywhere, run it twice, or
skip it because its output already exists: output bytes never depend on the executor, the
worker count or the finishing order.

`LocalExecutor` is the process pool `medmix build` always had. `RayExecutor` runs one Ray task
per call, with Ray's retries for system failures (a worker process killed mid-unit is simply run
again; the atomic commit means its half-written file never became visible). Application errors
(a `MedmixError` such as a corrupt upstream archive) are not retried: they would fail again.

What stays on the driver, and its memory model. The mix step (index, dedup, decontamination,
selection) runs on the driver: `medmix.mix.index.build_index` holds per row fixed-width NumPy
columns only (id bytes, a 17-byte image hash key, int32/uint64 codes and keys): 100 bytes per
row at 1M rows with adapter-shaped ids, measured with tracemalloc by
`benchmarks/index_memory.py` (238 bytes per row when ids and hashes were Python strings). With
text near-duplicate bands on (`dedup.text_threshold`) add 8 bytes per band and a 64-byte sketch
per row. 3.35M rows ≈ 320 MiB without bands. By that arithmetic alone (the index under half the
driver's RAM; removals and the evaluation index come on top and are not measured at scale), it
stops holding at about 80M rows on a 16 GiB driver without bands; past that, give the driver a
bigger machine (the index is the only part that grows with the mixture; shard writing is bounded by one
shard, on whichever node runs it).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any

from medmix.core.errors import MedmixError
from medmix.core.extras import install_command

EXECUTORS = ("local", "ray")
RAY_EXTRA_HINT = f"install it with `{install_command('ray')}` (on every node of the cluster)"
# Ray retries a task whose worker died (killed, OOM, node lost) this many times.
RAY_TASK_RETRIES = 3

OnDone = Callable[[int, Any], None]


class Executor:
    """Runs `fn(*args)` for each args tuple; results come back in input order."""

    name = "?"
    # True when a task may run on another machine: callers ship bytes, not driver-local paths
    remote = False

    def map(self, fn: Callable[..., Any], calls: Iterable[tuple], on_done: OnDone | None = None) -> list[Any]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LocalExecutor(Executor):
    """A process pool on this machine (`--workers N`); one worker runs in this process."""

    name = "local"

    def __init__(self, workers: int = 1) -> None:
        self.workers = max(1, workers)

    def map(self, fn: Callable[..., Any], calls: Iterable[tuple], on_done: OnDone | None = None) -> list[Any]:
        calls = list(calls)
        results: list[Any] = [None] * len(calls)
        if self.workers > 1 and len(calls) > 1:
            with ProcessPoolExecutor(min(self.workers, len(calls))) as pool:
                futures = {pool.submit(fn, *args): i for i, args in enumerate(calls)}
                for fut in as_completed(futures):
                    i = futures[fut]
                    results[i] = fut.result()
                    if on_done:
                        on_done(i, results[i])
        else:
            for i, args in enumerate(calls):
                results[i] = fn(*args)
                if on_done:
                    on_done(i, results[i])
        return results


class RayExecutor(Executor):
    """One Ray task per call on a Ray cluster (`--executor ray [--address ADDR]`).

    `address`: None starts (or reuses) a cluster on this machine; "auto" joins the cluster that
    `ray start` runs here; "ray://host:10001" goes through Ray Client. A cluster this executor
    started is shut down by `close()`; one it joined is left running.
    `max_in_flight`: at most this many tasks submitted at once (`--workers`; 0 = as many as the
    cluster takes). It also bounds what the driver ships at once (the gather step sends each
    shard's rows through Ray's object store).
    """

    name = "ray"
    remote = True

    def __init__(self, address: str | None = None, max_in_flight: int = 0, retries: int = RAY_TASK_RETRIES) -> None:
        self.ray = require_ray()
        self.max_in_flight = max_in_flight
        self.retries = retries
        self._owns = False
        if not self.ray.is_initialized():
            import logging
            self.ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING,
                          log_to_driver=True)
            self._owns = address is None and not os.environ.get("RAY_ADDRESS")

    def map(self, fn: Callable[..., Any], calls: Iterable[tuple], on_done: OnDone | None = None) -> list[Any]:
        ray = self.ray
        task = ray.remote(max_retries=self.retries, retry_exceptions=False)(fn)
        results: dict[int, Any] = {}
        pending: dict[Any, int] = {}

        def collect(block: bool) -> None:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=None if block else 0)
            for ref in ready:
                i = pending.pop(ref)
                results[i] = _ray_get(ray, ref)
                if on_done:
                    on_done(i, results[i])

        n = 0
        try:
            for args in calls:
                while self.max_in_flight and len(pending) >= self.max_in_flight:
                    collect(block=True)
                pending[task.remote(*args)] = n
                n += 1
            while pending:
                collect(block=True)
        except BaseException:
            for ref in pending:
                ray.cancel(ref, force=True)
            raise
        return [results[i] for i in range(n)]

    def close(self) -> None:
        if self._owns and self.ray.is_initialized():
            self.ray.shutdown()


def _ray_get(ray: Any, ref: Any) -> Any:
    from ray.exceptions import RayTaskError

    try:
        return ray.get(ref)
    except RayTaskError as exc:  # the task's own exception, with the message a user acts on
        cause = exc.cause
        if isinstance(cause, MedmixError):
            raise cause from None
        raise


def require_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise MedmixError(f"--executor ray needs Ray, which is not installed; {RAY_EXTRA_HINT}") from None
    return ray


def make_executor(name: str, workers: int = 1, address: str | None = None) -> Executor:
    """The executor a build asked for by name (`--executor`)."""
    if name == "local":
        if address:
            raise MedmixError("--address only applies to --executor ray")
        return LocalExecutor(workers)
    if name == "ray":
        return RayExecutor(address=address, max_in_flight=workers)
    raise MedmixError(f"--executor {name!r}: choose one of {', '.join(EXECUTORS)}")

