"""`medmix build`: recipe → checks → fetch → normalize (work units) → mix → shards + manifest.

Two stages on purpose: normalize (downloads, decoding, hashing) runs once per source version into
a content-keyed cache any recipe reuses; mix (dedup, decontamination, selection, writing) is cheap
and re-runs when a weight changes, without re-downloading or re-decoding anything.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from medmix import __version__
from medmix.buildcache import BuildCache
from medmix.core.errors import MedmixError
from medmix.core.layout import BUILD_MARKER, QUARANTINE, REMOVED, write_manifest
from medmix.core.licenses import terms
from medmix.core.schema import SCHEMA_VERSION
from medmix.core.storage import Store, scratch_dir, url_key
from medmix.core.writer import remove_stale_temps, write_parquet_atomic
from medmix.executors import Executor, make_executor
from medmix.fetch.lock import apply_lock, default_lock_path, read_lock
from medmix.imaging.canonical import ImagePolicy
from medmix.mix.removed_cache import write_removed_cached
from medmix.normalize import QUARANTINE_SCHEMA, UnitPaths
from medmix.planning import BuildOptions, PlannedSource, check_manual_files, plan_sources
from medmix.recipe import Recipe
from medmix.sources.base import Unit

Progress = Callable[[str, str, int, int | None], None]  # (stage, label, advance, total)


@dataclass
class UnitJob:
    planned: PlannedSource
    unit: Unit
    key: str
    files: dict[str, Path]
    policy: ImagePolicy


def _run_job(job: UnitJob, cache: BuildCache) -> dict:
    return cache.run_unit(job.planned.source, job.unit, job.files, job.policy, job.key)


def _source_policy(recipe: Recipe, policy: ImagePolicy, p: PlannedSource) -> ImagePolicy:
    """The image policy with this source's identifying-text modes (`Recipe.burned_in_text`); part
    of its unit keys, so changing a mode re-normalizes that source."""
    spec = next((s for s in recipe.sources if s.name == p.name), None)
    if spec is None:
        return policy
    raster, dicom, text = recipe.burned_in_text(spec)
    return dataclasses.replace(policy, burned_in_text=raster, burned_in_text_dicom=dicom, text_identifiers=text)


def build(recipe: Recipe, opts: BuildOptions, progress: Progress | None = None,
          log: Callable[[str], None] = print) -> dict:
    started = time.time()
    progress = progress or (lambda *a: None)
    # flags are part of the resolution: the manifest (and the row-level license filter) see them
    recipe = dataclasses.replace(recipe, accept=tuple(sorted(set(recipe.accept) | set(opts.accept))),
                                 allow_eval=tuple(sorted(set(recipe.allow_eval) | set(opts.allow_eval))))
    out = Store(opts.out, opts.storage_options)
    if out.local:
        out.local.mkdir(parents=True, exist_ok=True)
    cache = BuildCache(opts.cache, opts.storage_options)
    planned = plan_sources(recipe, opts, log)
    policy = ImagePolicy(max_side=recipe.image.max_side, encode=recipe.image.encode,
                         jpeg_quality=recipe.image.jpeg_quality, frame=recipe.image.frame)
    _claim_output(out, recipe)
    out.clear_temps()  # object storage: temporary keys of a killed earlier run
    for folder in (out.local, cache.local / "normalized"):
        if folder is not None and folder.exists():
            remove_stale_temps(folder)  # litter of a killed earlier run
    lock_file = opts.lock or default_lock_path(recipe.name)
    if opts.lock is not None or lock_file.exists():
        lock = read_lock(lock_file)
        for p in planned:
            apply_lock(p.source, type(p.source).name, lock, name=p.name)

    # fetch (network-bound, one source at a time) and cut into units
    from medmix.fetch.download import fetch_files

    check_manual_files(planned)
    jobs: list[UnitJob] = []
    provenance: dict[str, list[dict]] = {}
    for p in planned:
        progress("fetch", p.name, 0, None)
        res = fetch_files(p.source, p.splits, cache_dir=cache.local / "downloads", from_dir=p.from_dir,
                          mirror=opts.mirror, hf_endpoint=opts.hf_endpoint, verify=opts.verify)
        provenance[p.name] = res.provenance
        # "inputs" names every byte a unit may read: file sha256s (pinned, computed at download or
        # over a local copy) and hand-placed folders' fingerprints (path, sizes, mtimes, hashes)
        source_policy = _source_policy(recipe, policy, p)
        salt = {"adapter": type(p.source).name, "adapter_version": p.source.version, "options": p.source.options,
                "policy": source_policy.salt(), "schema": SCHEMA_VERSION, "inputs": sorted(res.fingerprints.items())}
        for split in p.splits:
            for unit in p.source.units(split, res.paths):
                jobs.append(UnitJob(p, unit, unit.key(salt), res.paths, source_policy))
        progress("fetch", p.name, 1, 1)

    with make_executor(opts.executor, opts.workers, opts.address) as executor:
        return _normalize_and_mix(recipe, opts, planned, jobs, provenance, policy, out, cache, executor, progress,
                                  started)


def _normalize_and_mix(recipe: Recipe, opts: BuildOptions, planned: list[PlannedSource], jobs: list[UnitJob],
                       provenance: dict[str, list[dict]], policy: ImagePolicy, out: Store, cache: BuildCache,
                       executor: Executor, progress: Progress, started: float) -> dict:
    from medmix.mix.index import build_eval_index, build_index
    from medmix.mix.index_cache import ColumnCache, eval_digest
    from medmix.mix.select import mixture_rows
    from medmix.mix.shard_writer import write_shards
    from medmix.mix.textsim import lsh_params

    # normalize: units are independent; results are keyed by unit, so order never depends on the
    # executor, its workers or the order units finish in
    summaries: list[dict] = [None] * len(jobs)  # type: ignore[list-item]
    todo = []
    for i, job in enumerate(jobs):
        done = cache.summary(job.planned.name, job.key)
        if done is not None:
            summaries[i] = done
        else:
            todo.append(i)
    progress("normalize", "units", len(jobs) - len(todo), len(jobs))
    cache.ship_inputs([jobs[i].files for i in todo], remote=executor.remote)
    for i, summary in zip(todo, executor.map(_run_job, ((jobs[i], cache) for i in todo),
                                             on_done=lambda i, r: progress("normalize", "units", 1, len(jobs)))):
        summaries[i] = summary
    norm = cache.pull_normalized([(j.planned.name, j.key) for j in jobs])

    # mix: index → dedup/decontaminate/select → shards
    train = [(j, s) for j, s in zip(jobs, summaries) if not j.planned.evaluation]
    evals = [(j, s) for j, s in zip(jobs, summaries) if j.planned.evaluation]
    # the mix stage starts here: the evaluation index is its first step
    progress("mix", "index", 0, sum(s["written"] for _, s in train))
    eval_index = None
    ngrams = None
    eval_files = [(f"{type(j.planned.source).name}:{j.unit.split}", UnitPaths.at(norm, j.planned.name, j.key).rows)
                  for j, _ in evals]
    if evals:
        from medmix.mix.decontam import NgramIndex
        eval_index = build_eval_index(eval_files, recipe.decontaminate.ngram)
        if eval_index.texts:
            ngrams = NgramIndex(eval_index.texts, n=recipe.decontaminate.ngram)
    unit_files = [UnitPaths.at(norm, j.planned.name, j.key).rows for j, _ in train]
    bands = recipe.dedup.text_threshold is not None
    columns = ColumnCache(cache.local, bands=lsh_params(recipe.dedup.text_threshold) if bands else None,
                          evals=eval_digest(eval_index.texts if ngrams is not None else None,
                                            recipe.decontaminate.ngram))
    idx = build_index(unit_files, [p.name for p in planned if not p.evaluation], bands=bands,
                      text_threshold=recipe.dedup.text_threshold, ngrams=ngrams,
                      progress=lambda n: progress("mix", "index", n, None), cache=columns,
                      unit_keys=[f"{j.planned.name}/{j.key}" for j, _ in train], executor=executor)
    confirm = None
    if eval_index is not None and recipe.decontaminate.image_correlation is not None:
        from medmix.mix.image_confirm import PictureCheck
        from medmix.mix.unit_rows import RowPlaces
        confirm = PictureCheck(RowPlaces(idx, unit_files, [p for _, p in eval_files]),
                               recipe.decontaminate.image_correlation)
    from medmix.mix.memo import Memo
    plan = mixture_rows(recipe, idx, eval_index, confirm, Memo(cache.local))
    shards = write_shards(out, unit_files, plan.unit, plan.row, plan.copy, recipe.shard_rows, opts.workers,
                          progress=lambda stage, n, total: progress("write", stage, n, total), executor=executor,
                          spill=None if out.local else cache.local / "spill" / url_key(out.url))
    progress("finish", "removed", 0, None)  # quarantine, removed.parquet, manifest

    quarantine = _write_quarantine(out, [UnitPaths.at(norm, j.planned.name, j.key).quarantine for j, _ in train])
    digest, rows = _publish(out, REMOVED, lambda path: write_removed_cached(
        path, cache.local, plan.removed, idx, unit_files, eval_index, eval_files, recipe.decontaminate.ngram))
    removed = {"path": REMOVED, "rows": rows, "sha256": digest}
    progress("finish", "removed", 1, 1)
    manifest = _manifest(recipe, planned, provenance, train, plan, shards, quarantine, removed)
    # reuse counts differ between a fresh and a resumed build of the same inputs: build_info, not the rest
    manifest["build_info"] = {"created_unix": round(started), "seconds": round(time.time() - started, 3),
                              "workers": opts.workers, "executor": executor.name,
                              "normalize": {"units": len(jobs), "reused": len(jobs) - len(todo)}}
    return write_manifest(out, manifest)  # exactly what a reader of manifest.json sees; written last


def _claim_output(out: Store, recipe: Recipe) -> None:
    """An output folder belongs to one resolved recipe: resuming into it is safe, mixing two is not.
    The same on object storage: the marker is an object beside the shards."""
    want = {"recipe_sha256": recipe.sha256(), "schema_version": SCHEMA_VERSION, "medmix_version": __version__}
    names = out.list()
    if BUILD_MARKER in names:
        have = out.read_json(BUILD_MARKER)
        if have != want:
            raise MedmixError(f"{out.url} holds a build of another recipe or version "
                              f"({have.get('recipe_sha256', '?')[:12]}); choose an empty --out folder or delete it")
    else:
        stray = [n for n in names if not n.startswith(".")]
        if stray:
            raise MedmixError(f"{out.url} is not empty and holds no medmix build ({stray[0]}, ...); choose an empty "
                              f"--out folder")
        out.write_json(BUILD_MARKER, want)


def _publish(out: Store, rel: str, write: Callable[[Path], tuple[str, int]]) -> tuple[str, int]:
    """`write(path)` writes the file; on object storage it goes to a local temp file, then up."""
    if out.local:
        return write(out.local / rel)
    with tempfile.TemporaryDirectory(dir=scratch_dir()) as tmp:
        digest, rows = write(Path(tmp) / rel)
        out.put_file(Path(tmp) / rel, rel)
    return digest, rows


def _publish_table(out: Store, rel: str, table: pa.Table) -> tuple[str, int]:
    return _publish(out, rel, lambda path: write_parquet_atomic(path, table))


def _write_quarantine(out: Store, files: list[Path]) -> dict:
    tables = [pq.read_table(f) for f in files if f.exists()]
    table = pa.concat_tables(tables) if tables else QUARANTINE_SCHEMA.empty_table()
    digest, rows = _publish_table(out, QUARANTINE, table.cast(QUARANTINE_SCHEMA))
    return {"path": QUARANTINE, "rows": rows, "sha256": digest}


def _deid_settings(train, p: PlannedSource) -> dict:
    """The identifying-text settings a source was normalized with and its redaction counts."""
    from medmix.phi import settings

    job = next((j for j, _ in train if j.planned.name == p.name), None)
    if job is None:
        return {}
    pol = job.policy
    out = settings(pol.burned_in_text, pol.burned_in_text_dicom, pol.text_identifiers)
    out["redacted"] = {kind: sum(s.get("redacted", {}).get(kind, 0) for j, s in train if j.planned.name == p.name)
                       for kind in ("images", "texts")}
    return out


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
            entry["images_unconfirmed"] = plan.images_unconfirmed.get(p.name, 0)
            entry["deidentification"] = _deid_settings(train, p)
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
