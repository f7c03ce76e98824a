"""`medmix build`: recipe → checks → fetch → normalize (work units) → mix → shards + manifest.

Two stages on purpose: normalize (downloads, decoding, hashing) runs once per source version into
a content-keyed cache any recipe reuses; mix (dedup, decontamination, selection, writing) is cheap
and re-runs when a weight changes, without re-downloading or re-decoding anything.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from medmix import __version__
from medmix.errors import MedmixError
from medmix.imaging import ImagePolicy
from medmix.layout import BUILD_MARKER, QUARANTINE, write_manifest
from medmix.licenses import terms
from medmix.lock import apply_lock, default_lock_path, read_lock
from medmix.normalize import QUARANTINE_SCHEMA, UnitPaths, run_unit
from medmix.planning import BuildOptions, PlannedSource, check_manual_files, plan_sources
from medmix.recipe import Recipe
from medmix.removed import write_removed
from medmix.schema import SCHEMA_VERSION
from medmix.sources.base import Unit
from medmix.writer import atomic_write_json, remove_stale_temps, write_parquet_atomic

Progress = Callable[[str, str, int, int | None], None]  # (stage, label, advance, total)


@dataclass
class UnitJob:
    planned: PlannedSource
    unit: Unit
    key: str
    files: dict[str, Path]


def _run_job(job: UnitJob, policy: ImagePolicy, cache: Path) -> dict:
    return run_unit(job.planned.source, job.unit, job.files, policy, cache, job.key)


def build(recipe: Recipe, opts: BuildOptions, progress: Progress | None = None,
          log: Callable[[str], None] = print) -> dict:
    started = time.time()
    progress = progress or (lambda *a: None)
    # flags are part of the resolution: the manifest (and the row-level license filter) see them
    recipe = dataclasses.replace(recipe, accept=tuple(sorted(set(recipe.accept) | set(opts.accept))),
                                 allow_eval=tuple(sorted(set(recipe.allow_eval) | set(opts.allow_eval))))
    opts.out.mkdir(parents=True, exist_ok=True)
    planned = plan_sources(recipe, opts, log)
    policy = ImagePolicy(max_side=recipe.image.max_side, encode=recipe.image.encode,
                         jpeg_quality=recipe.image.jpeg_quality, frame=recipe.image.frame)
    _claim_output(opts.out, recipe)
    for folder in (opts.out, opts.cache / "normalized"):
        if folder.exists():
            remove_stale_temps(folder)  # litter of a killed earlier run
    lock_file = opts.lock or default_lock_path(recipe.name)
    if opts.lock is not None or lock_file.exists():
        lock = read_lock(lock_file)
        for p in planned:
            apply_lock(p.source, type(p.source).name, lock)

    # fetch (network-bound, one source at a time) and cut into units
    from medmix.fetch import fetch_files
    from medmix.index import build_eval_index, build_index
    from medmix.mixture import mixture_rows
    from medmix.shards import write_shards

    check_manual_files(planned)
    jobs: list[UnitJob] = []
    provenance: dict[str, list[dict]] = {}
    for p in planned:
        progress("fetch", p.name, 0, None)
        res = fetch_files(p.source, p.splits, cache_dir=opts.cache / "downloads", from_dir=p.from_dir,
                          mirror=opts.mirror, hf_endpoint=opts.hf_endpoint, verify=opts.verify)
        provenance[p.name] = res.provenance
        # "inputs" names every byte a unit may read: file sha256s (pinned, computed at download or
        # over a local copy) and hand-placed folders' fingerprints (path, sizes, mtimes, hashes)
        salt = {"adapter": type(p.source).name, "adapter_version": p.source.version, "options": p.source.options,
                "policy": policy.salt(), "schema": SCHEMA_VERSION, "inputs": sorted(res.fingerprints.items())}
        for split in p.splits:
            for unit in p.source.units(split, res.paths):
                jobs.append(UnitJob(p, unit, unit.key(salt), res.paths))
        progress("fetch", p.name, 1, 1)

    # normalize: units are independent; results are keyed by unit, so order never depends on workers
    norm = opts.cache / "normalized"
    summaries: list[dict] = [None] * len(jobs)  # type: ignore[list-item]
    todo = []
    for i, job in enumerate(jobs):
        done = UnitPaths.at(norm, job.planned.name, job.key).summary
        if done.exists():
            summaries[i] = json.loads(done.read_text())
        else:
            todo.append(i)
    progress("normalize", "units", len(jobs) - len(todo), len(jobs))
    if opts.workers > 1 and len(todo) > 1:
        with ProcessPoolExecutor(opts.workers) as pool:
            futures = {pool.submit(_run_job, jobs[i], policy, norm): i for i in todo}
            for fut in as_completed(futures):
                summaries[futures[fut]] = fut.result()
                progress("normalize", "units", 1, len(jobs))
    else:
        for i in todo:
            summaries[i] = _run_job(jobs[i], policy, norm)
            progress("normalize", "units", 1, len(jobs))

    # mix: index → dedup/decontaminate/select → shards
    train = [(j, s) for j, s in zip(jobs, summaries) if not j.planned.evaluation]
    evals = [(j, s) for j, s in zip(jobs, summaries) if j.planned.evaluation]
    eval_index = None
    ngrams = None
    eval_files = [(f"{type(j.planned.source).name}:{j.unit.split}", UnitPaths.at(norm, j.planned.name, j.key).rows)
                  for j, _ in evals]
    if evals:
        from medmix.decontam import NgramIndex
        eval_index = build_eval_index(eval_files, recipe.decontaminate.ngram)
        if eval_index.texts:
            ngrams = NgramIndex(eval_index.texts, n=recipe.decontaminate.ngram)
    unit_files = [UnitPaths.at(norm, j.planned.name, j.key).rows for j, _ in train]
    progress("mix", "index", 0, None)
    idx = build_index(unit_files, [p.name for p in planned if not p.evaluation],
                      bands=recipe.dedup.text_threshold is not None,
                      text_threshold=recipe.dedup.text_threshold, ngrams=ngrams)
    plan = mixture_rows(recipe, idx, eval_index)
    progress("mix", "index", 1, 1)
    shards = write_shards(opts.out, unit_files, plan.unit, plan.row, plan.copy, recipe.shard_rows, opts.workers,
                          progress=lambda stage, n: progress("write", stage, n, None))

    quarantine = _write_quarantine(opts.out, [UnitPaths.at(norm, j.planned.name, j.key).quarantine for j, _ in train])
    removed = write_removed(opts.out, plan.removed, idx, unit_files, eval_index, eval_files,
                            recipe.decontaminate.ngram)
    manifest = _manifest(recipe, planned, provenance, train, plan, shards, quarantine, removed)
    # reuse counts differ between a fresh and a resumed build of the same inputs: build_info, not the rest
    manifest["build_info"] = {"created_unix": round(started), "seconds": round(time.time() - started, 3),
                              "workers": opts.workers,
                              "normalize": {"units": len(jobs), "reused": len(jobs) - len(todo)}}
    return write_manifest(opts.out, manifest)  # exactly what a reader of manifest.json sees


def _claim_output(out: Path, recipe: Recipe) -> None:
    """An output folder belongs to one resolved recipe: resuming into it is safe, mixing two is not."""
    marker = out / BUILD_MARKER
    want = {"recipe_sha256": recipe.sha256(), "schema_version": SCHEMA_VERSION, "medmix_version": __version__}
    if marker.exists():
        have = json.loads(marker.read_text())
        if have != want:
            other = have.get("recipe_sha256", "?")[:12]
            raise MedmixError(f"{out} holds a build of another recipe or version ({other}); "
                              f"choose an empty --out folder or delete it")
    else:
        stray = [p for p in out.iterdir() if not p.name.startswith(".")] if out.exists() else []
        if stray:
            raise MedmixError(f"{out} is not empty and holds no medmix build ({stray[0].name}, ...); choose an empty "
                              f"--out folder")
        atomic_write_json(marker, want)


def _write_quarantine(out: Path, files: list[Path]) -> dict:
    tables = [pq.read_table(f) for f in files if f.exists()]
    table = pa.concat_tables(tables) if tables else QUARANTINE_SCHEMA.empty_table()
    digest, rows = write_parquet_atomic(out / QUARANTINE, table.cast(QUARANTINE_SCHEMA))
    return {"path": QUARANTINE, "rows": rows, "sha256": digest}


def _manifest(recipe, planned, provenance, train, plan, shards, quarantine, removed) -> dict:
    sources: dict[str, Any] = {}
    for p in planned:
        src = type(p.source)
        entry: dict[str, Any] = {
            "adapter": src.name, "adapter_version": p.source.version, "license": p.source.license,
            "license_terms": terms(p.source.license).summary(), "splits": list(p.splits),
            "evaluation_only": p.evaluation, "upstream": provenance.get(p.name, []),
            "pinned": all(d.get("pinned", False) for d in provenance.get(p.name, [])),
        }
        if not p.evaluation:
            read = quarantined = written = 0
            reasons: dict[str, int] = {}
            for j, s in train:
                if j.planned.name == p.name:
                    read += s["read"]
                    written += s["written"]
                    for k, v in s["quarantined"].items():
                        reasons[k] = reasons.get(k, 0) + v
                        quarantined += v
            entry["counts"] = {"read": read, "quarantined": quarantined,
                               "quarantine_reasons": dict(sorted(reasons.items())),
                               **plan.counts[p.name]}
            entry["decontamination"] = plan.decontamination.get(p.name, {})
        sources[p.name] = entry
    return {
        "medmix_version": __version__,
        "schema_version": SCHEMA_VERSION,
        "recipe": recipe.resolved(),
        "recipe_sha256": recipe.sha256(),
        "sources": sources,
        "accepted_licenses": sorted(set(recipe.accept)),
        "unpinned_upstreams": sorted(d["upstream"] for v in provenance.values() for d in v if not d.get("pinned")),
        "shards": shards,
        "total_rows": sum(s["rows"] for s in shards),
        "quarantine": quarantine,
        "removed": removed,
    }
