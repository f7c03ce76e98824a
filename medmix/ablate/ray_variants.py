"""`--executor ray`: each variant's four units as one Ray task, one GPU each when the cluster has GPUs.

The units' markers live in the ablation folder, which every worker must see (a shared filesystem,
as for a build's cache): a task that dies is re-run by Ray and skips the units it finished. The
driver logs the plan's progress as variants finish. Variant builds inside a task use the local
executor: the normalize units are already in the shared cache, so a variant's build is the mix
stage only and needs no cluster of its own.
"""

from __future__ import annotations

from typing import Any

from medmix.executors import RAY_TASK_RETRIES, require_ray


def _variant_task(run_one: Any, ctx: Any, variant: Any) -> dict[str, Any]:
    return run_one(ctx, variant)


def run_on_ray(ctx: Any, units: Any, variants: list[Any], log: Any, run_one: Any) -> dict[str, dict[str, Any]]:
    """`run_one(ctx, variant)` runs one variant's units on a worker (the runner passes it in, so this
    module needs nothing from the runner and the two stay out of an import cycle)."""
    import logging

    ray = require_ray()
    owns = False
    if not ray.is_initialized():
        ray.init(address=ctx.opts.address, include_dashboard=False, logging_level=logging.WARNING)
        owns = ctx.opts.address is None
    try:
        gpus = ray.cluster_resources().get("GPU", 0)
        task = ray.remote(num_gpus=1 if gpus else 0, max_retries=RAY_TASK_RETRIES)(_variant_task)
        pending = {task.remote(run_one, ctx, v): v for v in variants}
        log(f"ray: {len(pending)} variant task(s), {'one GPU each' if gpus else 'CPU only'}")
        results = {}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                v = pending.pop(ref)
                results[v.name] = ray.get(ref)
                units.done += sum(1 for stage in ("build", "subset", "train", "eval")
                                  if units.marker(f"{v.name}.{stage}").is_file())
                log(f"[{units.done}/{units.total}] variant {v.name} finished on ray ({len(pending)} running)")
        return results
    finally:
        if owns:
            ray.shutdown()
