"""`medmix build`: recipe → checks → fetch → normalize (work units) → mix → shards + manifest.

Two stages on purpose: normalize (downloads, decoding, hashing) runs once per source version into
a content-keyed cache any recipe reuses; mix (dedup, decontamination, selection, writing) is cheap
and re-runs when a weight changes, without re-downloading or re-decoding anything.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pyarrow as pa
import pyarrow.parquet as pq

from medmix import __version__
from medmix.buildcache import BuildCache
from medmix.errors import LicenseRefused, ManualFilesMissing, MedmixError, RecipeError
from medmix.executors import Executor, make_executor
from medmix.imaging import ImagePolicy
from medmix.layout import BUILD_MARKER, QUARANTINE, REMOVED, write_manifest
from medmix.licenses import terms
from medmix.lock import apply_lock, default_lock_path, read_lock
from medmix.normalize import QUARANTINE_SCHEMA, UnitPaths
from medmix.recipe import Recipe
from medmix.schema import SCHEMA_VERSION
from medmix.sources import get_source
from medmix.sources.base import Source, Unit
from medmix.storage import Store, scratch_dir, url_key
from medmix.writer import remove_stale_temps, write_parquet_atomic

Progress = Callable[[str, str, int, int | None], None]  # (stage, label, advance, total)


@dataclass
class BuildOptions:
    out: Path | str                 # a folder or any fsspec URL (s3://bucket/mix)
    cache: Path | str               # likewise; see medmix.buildcache
    workers: int = 1                # local: processes; ray: most tasks in flight (0 = as many as the cluster takes)
    from_dirs: dict[str, Path] = field(default_factory=dict)
    accept: tuple[str, ...] = ()
    allow_eval: tuple[str, ...] = ()
    mirror: str | None = None
    hf_endpoint: str | None = None
    lock: Path | None = None        # default: the recipe's lock in manifests/, when there is one
    executor: str = "local"         # "local" (process pool) or "ray" (medmix.executors)
    address: str | None = None      # Ray cluster address for executor="ray" ("auto", "ray://host:10001")
    storage_options: dict[str, Any] = field(default_factory=dict)  # fsspec options for URL --out/--cache


@dataclass
class PlannedSource:
    name: str
    source: Source
    splits: tuple[str, ...]
    from_dir: Path | None
    evaluation: bool = False   # only used as a decontamination reference


def instantiate(adapter: str, name: str, options: dict[str, Any]) -> Source:
    cls = get_source(adapter)
    try:
        src = cls(**options)
    except TypeError as exc:
        raise RecipeError(f"source {name!r}: {exc}") from None
    if name != cls.name:
        src.name = name  # type: ignore[misc]  # a renamed or local source: rows carry the recipe's name
    return src


def plan_sources(recipe: Recipe, opts: BuildOptions,
                 log: Callable[[str], None] = lambda m: None) -> list[PlannedSource]:
    """Resolve and check everything that can be checked before a single byte is downloaded;
    warnings (explicitly allowed benchmark splits, per-row license filtering) go to `log`."""
    planned: list[PlannedSource] = []
    for spec in recipe.sources:
        src = instantiate(spec.adapter, spec.name, spec.options)
        known = set(src.splits)
        for split in spec.splits:
            if known and split not in known:
                raise RecipeError(f"{recipe.path}:{spec.line}: sources.{spec.name}.splits: {split!r} is not a split of "
                                  f"{spec.adapter} (it has {sorted(known)})")
        from_dir = opts.from_dirs.get(spec.name)
        if from_dir is None and spec.from_dir is not None:
            from_dir = _resolve_from(recipe, spec.from_dir)
        planned.append(PlannedSource(spec.name, src, spec.splits, from_dir))
    for warning in check_licenses(recipe, planned, opts):
        log(warning)
    seen = {p.name for p in planned}
    eval_splits: dict[str, list[str]] = {}
    for item in recipe.decontaminate["against"]:
        name, split = item.split(":", 1)
        eval_splits.setdefault(name, []).append(split)
    for name, splits in eval_splits.items():
        try:
            cls = get_source(name)
        except MedmixError as exc:
            raise RecipeError(f"{recipe.path}: decontaminate.against: {exc}") from None
        for split in splits:
            if cls.splits and split not in cls.splits:
                raise RecipeError(f"{recipe.path}: decontaminate.against: {name}:{split}: {name} has no split "
                                  f"{split!r} (it has {sorted(cls.splits)})")
        src = instantiate(name, name + "@eval" if name in seen else name, {})
        # the same local files serve the training and the evaluation splits of one source
        from_dir = opts.from_dirs.get(name) or next((p.from_dir for p in planned if p.name == name), None)
        planned.append(PlannedSource(src.name, src, tuple(splits), from_dir, evaluation=True))
    return planned


def _resolve_from(recipe: Recipe, value: str) -> Path:
    if value.startswith("package:"):
        from importlib import resources
        return Path(str(resources.files("medmix") / value[len("package:"):]))
    path = Path(value).expanduser()
    return path if path.is_absolute() else recipe.base_dir() / path


def check_licenses(recipe: Recipe, planned: list[PlannedSource], opts: BuildOptions) -> list[str]:
    """Refuse unaccepted licenses and benchmark splits before any download; return warnings."""
    accepted = set(recipe.accept) | set(opts.accept)
    allowed_eval = set(recipe.allow_eval) | set(opts.allow_eval)
    warnings = []
    for p in planned:
        t = terms(p.source.license)
        if p.source.per_row_license:
            warnings.append(f"note: {p.name} rows carry their own licenses; rows under a license the recipe does not "
                            f"accept are dropped and counted (license_filtered)")
        elif t.needs_acceptance and p.source.license not in accepted:
            raise LicenseRefused(
                f"source {p.name!r} is licensed {p.source.license} ({t.summary()}); it is refused unless accepted "
                f"by name: add `{p.source.license}` to `licenses.accept` in the recipe, or pass "
                f"`--accept-license {p.source.license}`")
        for split in p.splits:
            is_eval = p.source.benchmark or split in p.source.eval_splits
            if is_eval and f"{p.name}:{split}" not in allowed_eval and p.name not in allowed_eval:
                raise LicenseRefused(
                    f"source {p.name!r} split {split!r} is an evaluation benchmark; training on it contaminates that "
                    f"benchmark. Remove it, or override with `licenses.allow_eval: [{p.name}:{split}]` in the recipe "
                    f"or `--allow-eval {p.name}:{split}`")
            if is_eval:
                warnings.append(f"WARNING: training on evaluation benchmark {p.name}:{split} (explicitly allowed)")
    return warnings


@dataclass
class UnitJob:
    planned: PlannedSource
    unit: Unit
    key: str
    files: dict[str, Path]


def _run_job(job: UnitJob, policy: ImagePolicy, cache: BuildCache) -> dict:
    return cache.run_unit(job.planned.source, job.unit, job.files, policy, job.key)


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
    policy = ImagePolicy(**recipe.image)
    _claim_output(out, recipe)
    out.clear_temps()  # object storage: temporary keys of a killed earlier run
    for folder in (out.local, cache.local / "normalized"):
        if folder is not None and folder.exists():
            remove_stale_temps(folder)  # litter of a killed earlier run
    lock_file = opts.lock or default_lock_path(recipe.name)
    if opts.lock is not None or lock_file.exists():
        lock = read_lock(lock_file)
        for p in planned:
            apply_lock(p.source, type(p.source).name, lock)

    # fetch (network-bound, one source at a time) and cut into units
    from medmix.fetch import fetch_files

    _check_manual_files(planned)
    jobs: list[UnitJob] = []
    provenance: dict[str, list[dict]] = {}
    for p in planned:
        progress("fetch", p.name, 0, None)
        res = fetch_files(p.source, p.splits, cache_dir=cache.local / "downloads", from_dir=p.from_dir,
                          mirror=opts.mirror, hf_endpoint=opts.hf_endpoint)
        provenance[p.name] = res.provenance
        salt = {"adapter": type(p.source).name, "adapter_version": p.source.version, "options": p.source.options,
                "policy": policy.salt(), "schema": SCHEMA_VERSION,
                "files": sorted((d["name"], d.get("sha256")) for d in res.provenance)}
        for split in p.splits:
            for unit in p.source.units(split, res.paths):
                jobs.append(UnitJob(p, unit, unit.key(salt), res.paths))
        progress("fetch", p.name, 1, 1)

    with make_executor(opts.executor, opts.workers, opts.address) as executor:
        return _normalize_and_mix(recipe, opts, planned, jobs, provenance, policy, out, cache, executor, progress,
                                  started)


def _normalize_and_mix(recipe: Recipe, opts: BuildOptions, planned: list[PlannedSource], jobs: list[UnitJob],
                       provenance: dict[str, list[dict]], policy: ImagePolicy, out: Store, cache: BuildCache,
                       executor: Executor, progress: Progress, started: float) -> dict:
    from medmix.index import build_eval_index, build_index
    from medmix.mixture import plan_mixture
    from medmix.shards import write_shards

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
    for i, summary in zip(todo, executor.map(_run_job, ((jobs[i], policy, cache) for i in todo),
                                             on_done=lambda i, r: progress("normalize", "units", 1, len(jobs)))):
        summaries[i] = summary
    norm = cache.pull_normalized([(j.planned.name, j.key) for j in jobs])

    # mix: index → dedup/decontaminate/select → shards
    train = [(j, s) for j, s in zip(jobs, summaries) if not j.planned.evaluation]
    evals = [(j, s) for j, s in zip(jobs, summaries) if j.planned.evaluation]
    eval_index = None
    ngrams = None
    if evals:
        from medmix.decontam import NgramIndex
        eval_index = build_eval_index([(f"{type(j.planned.source).name}:{j.unit.split}",
                                        UnitPaths.at(norm, j.planned.name, j.key).rows) for j, _ in evals],
                                      recipe.decontaminate["ngram"])
        if eval_index.texts:
            ngrams = NgramIndex(eval_index.texts, n=recipe.decontaminate["ngram"])
    unit_files = [UnitPaths.at(norm, j.planned.name, j.key).rows for j, _ in train]
    progress("mix", "index", 0, None)
    idx = build_index(unit_files, [p.name for p in planned if not p.evaluation],
                      bands=recipe.dedup["text_threshold"] is not None,
                      text_threshold=recipe.dedup["text_threshold"], ngrams=ngrams)
    plan = plan_mixture(recipe, idx, eval_index)
    progress("mix", "index", 1, 1)
    shards = write_shards(out, unit_files, plan.unit, plan.row, plan.copy, recipe.shard_rows, opts.workers,
                          progress=lambda stage, n: progress("write", stage, n, None), executor=executor,
                          spill=None if out.local else cache.local / "spill" / url_key(out.url))

    quarantine = _write_quarantine(out, [UnitPaths.at(norm, j.planned.name, j.key).quarantine for j, _ in train])
    removed = _write_removed(out, plan.removed)
    manifest = _manifest(recipe, planned, provenance, train, plan, shards, quarantine, removed)
    manifest["build_info"] = {"created_unix": round(started), "seconds": round(time.time() - started, 3),
                              "workers": opts.workers, "executor": executor.name}
    return write_manifest(out, manifest)  # exactly what a reader of manifest.json sees; written last


def _check_manual_files(planned: list[PlannedSource]) -> None:
    """Every hand-placed file of every source, checked before the first download: a user learns all
    the files to place in one message, not one source per hours-long attempt."""
    from medmix.fetch import missing_manual
    from medmix.sources.base import Manual

    lines = []
    for p in planned:
        manuals = [f for f in p.source.files_for(p.splits) if isinstance(f, Manual)]
        problems = missing_manual(manuals, p.from_dir)
        if problems:
            lines.append(f"{p.name} (pass --from {p.name}=DIR):\n" + "\n".join(problems))
    if lines:
        raise ManualFilesMissing("some sources need files that must be obtained by hand; nothing was downloaded:\n"
                                 + "\n".join(lines))


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


def _publish_table(out: Store, rel: str, table: pa.Table) -> tuple[str, int]:
    if out.local:
        return write_parquet_atomic(out.local / rel, table)
    with tempfile.TemporaryDirectory(dir=scratch_dir()) as tmp:
        digest, rows = write_parquet_atomic(Path(tmp) / rel, table)
        out.put_file(Path(tmp) / rel, rel)
    return digest, rows


def _write_quarantine(out: Store, files: list[Path]) -> dict:
    tables = [pq.read_table(f) for f in files if f.exists()]
    table = pa.concat_tables(tables) if tables else QUARANTINE_SCHEMA.empty_table()
    digest, rows = _publish_table(out, QUARANTINE, table.cast(QUARANTINE_SCHEMA))
    return {"path": QUARANTINE, "rows": rows, "sha256": digest}


REMOVED_SCHEMA = pa.schema([("id", pa.string()), ("reason", pa.string()), ("other", pa.string())])


def _write_removed(out: Store, removed: list[tuple[str, str, str]]) -> dict:
    removed = sorted(removed)
    table = pa.Table.from_pylist([{"id": a, "reason": b, "other": c} for a, b, c in removed], schema=REMOVED_SCHEMA)
    digest, rows = _publish_table(out, REMOVED, table)
    return {"path": REMOVED, "rows": rows, "sha256": digest}


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
            entry["counts"] = {"read": read, "quarantined": quarantined, "quarantine_reasons": dict(sorted(reasons.items())),
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
