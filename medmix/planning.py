"""Planning a build: a recipe resolved into sources, and everything that can be checked before a
single byte is downloaded (splits, licenses, benchmark splits, hand-placed files).

`medmix build`, `medmix build --plan` and `medmix lock` all start here, so a recipe is refused for
the same reasons, with the same message, whichever command reads it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from medmix.core.errors import LicenseRefused, ManualFilesMissing, MedmixError, RecipeError
from medmix.core.licenses import terms
from medmix.fetch.download import missing_manual
from medmix.recipe import Recipe
from medmix.sources import get_source
from medmix.sources.base import Derived, Manual, Remote, Source


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
    verify: bool = False            # hash every file of hand-placed folders for the unit keys (medmix.fetch.fileid)
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
                raise RecipeError(f"{recipe.path}:{spec.line}: sources.{spec.name}.splits: {split!r} is not a "
                                  f"split of {spec.adapter} (it has {sorted(known)})")
        from_dir = opts.from_dirs.get(spec.name)
        if from_dir is None and spec.from_dir is not None:
            from_dir = _resolve_from(recipe, spec.from_dir)
        planned.append(PlannedSource(spec.name, src, spec.splits, from_dir))
    for warning in check_licenses(recipe, planned, opts):
        log(warning)
    seen = {p.name for p in planned}
    eval_splits: dict[str, list[str]] = {}
    for name, split in recipe.decontaminate.splits():
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


def check_manual_files(planned: list[PlannedSource]) -> None:
    """Every hand-placed file of every source, checked before the first download: a user learns all
    the files to place in one message, not one source per hours-long attempt."""
    lines = []
    for p in planned:
        manuals = [f for f in p.source.files_for(p.splits) if isinstance(f, Manual)]
        problems = missing_manual(manuals, p.from_dir)
        if problems:
            lines.append(f"{p.name} (pass --from {p.name}=DIR):\n" + "\n".join(problems))
    if lines:
        raise ManualFilesMissing("some sources need files that must be obtained by hand; nothing was downloaded:\n"
                                 + "\n".join(lines))


def lock_recipe(recipe: Recipe, opts: BuildOptions, *, offline: bool) -> dict:
    """Resolve every upstream of a recipe (training and decontamination sources) into a lock.

    Online, each file is fetched (Hub files resolve to their commit; URLs are hashed as they
    stream into the cache, which a following build reuses). A hand-placed folder that is there is
    pinned by its content (`folder_entry`), online or not; one that is not there is left out, as
    are hand-placed files. Offline, the adapters' own pins are written and the rest stays null.
    """
    from medmix.fetch.download import fetch_files
    from medmix.fetch.lock import derived_entry, entry_for, folder_entry, make_lock

    per_source: dict[str, dict[str, dict[str, Any]]] = {}
    for p in plan_sources(recipe, opts):
        adapter = type(p.source).name
        for item in p.source.files_for(p.splits):
            if isinstance(item, Manual) and item.is_dir and p.from_dir and (Path(p.from_dir) / item.name).is_dir():
                per_source.setdefault(p.name, {})[item.name] = folder_entry(Path(p.from_dir) / item.name)
        remotes = [f for f in p.source.files_for(p.splits) if isinstance(f, (Remote, Derived))]
        if not remotes:
            continue
        records: dict[str, dict] = {}
        paths: dict[str, Path] = {}
        if not offline:
            res = fetch_files(p.source, p.splits, cache_dir=opts.cache / "downloads", from_dir=p.from_dir,
                              mirror=opts.mirror, hf_endpoint=opts.hf_endpoint)
            records = {r["name"]: r for r in res.provenance}
            paths = res.paths
        entries = per_source.setdefault(adapter, {})
        for item in remotes:
            if isinstance(item, Derived):
                entries[item.name] = derived_entry(item, records.get(item.name), paths.get(item.name))
            else:
                entries[item.name] = entry_for(item, records.get(item.name))
    return make_lock(recipe.name, recipe.sha256(), per_source)
