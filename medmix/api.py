"""The Python build API: `medmix.build(recipe, out=...) -> BuildResult`.

`medmix build` is a thin shell over this function, so a notebook, a pipeline scheduler or a test
builds exactly what the command line builds: same recipe resolution, same options, same manifest.
The arguments mirror the command's flags one to one (`--accept-license` is `accept=`, `--from
NAME=DIR` is `from_dirs={"NAME": DIR}`); the result is typed rather than the manifest's raw dict,
because the three questions asked after every build — where is it, how many rows, what was dropped
— should not need the manifest's layout in the caller's head.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from medmix.core.storage import is_remote, local_path
from medmix.recipe import Recipe, load_recipe

if TYPE_CHECKING:
    import datasets

    from medmix.pipeline import Progress


@dataclass(frozen=True)
class BuildResult:
    """What a build wrote, read from its manifest.

    `manifest` is the full manifest as written to `<out>/manifest.json`; the other fields are the
    figures people look up first, named.
    """

    out: str
    manifest: dict[str, Any]

    @property
    def total_rows(self) -> int:
        """Rows in the mixture's shards."""
        return int(self.manifest["total_rows"])

    @property
    def rows_per_source(self) -> dict[str, int]:
        """Selected rows per training source (evaluation-only references are left out)."""
        return {name: int(s["counts"]["selected"]) for name, s in self.manifest["sources"].items()
                if not s.get("evaluation_only")}

    @property
    def removed_rows(self) -> int:
        """Rows dedup or decontamination dropped (listed in removed.parquet)."""
        return int((self.manifest.get("removed") or {}).get("rows", 0))

    @property
    def quarantined_rows(self) -> int:
        """Rows that could not be read or were refused (listed with reasons in quarantine.parquet)."""
        return int((self.manifest.get("quarantine") or {}).get("rows", 0))

    @property
    def shards(self) -> list[str]:
        """Shard paths relative to `out`, in the mixture's order."""
        return [s["path"] for s in self.manifest["shards"]]

    @property
    def recipe_sha256(self) -> str:
        """The resolved recipe's hash: two builds with the same hash and inputs are byte-identical."""
        return str(self.manifest["recipe_sha256"])

    def load(self, split: str = "train", **kwargs: Any) -> datasets.Dataset | datasets.IterableDataset:
        """The mixture as a `datasets.Dataset` (see `medmix.load`)."""
        from medmix.loader.hf import load

        return load(self.out, split, **kwargs)


def build(recipe: str | Path | Recipe = "demo", out: str | Path = "mixture", *,
          cache: str | Path = ".medmix-cache", workers: int | None = None,
          executor: Literal["local", "ray"] = "local", address: str | None = None,
          from_dirs: Mapping[str, str | Path] | None = None, accept: tuple[str, ...] | list[str] = (),
          allow_eval: tuple[str, ...] | list[str] = (), mirror: str | None = None, hf_endpoint: str | None = None,
          lock: str | Path | None = None, verify: bool = False,
          storage_options: Mapping[str, Any] | None = None, progress: Progress | None = None,
          log: Callable[[str], None] = print) -> BuildResult:
    """Build a mixture: fetch, license-check, normalize, dedup, decontaminate, mix, write.

    recipe: a built-in recipe name (`medmix.recipe.list_recipes`), a YAML path, or a `Recipe`.
    out / cache: folders or fsspec URLs (`s3://bucket/mix`); `storage_options` reach fsspec.
    workers: local processes (default 1), or for `executor="ray"` the most tasks in flight
        (default: as many as the cluster takes).
    from_dirs: source name → a folder holding its upstream files (offline builds, manual sources).
    accept / allow_eval: license ids accepted beyond the recipe's, and `SOURCE:SPLIT` evaluation
        splits allowed into training; both become part of the resolved recipe in the manifest.
    mirror / hf_endpoint: where downloads go instead of the upstream hosts.
    lock: a lock file pinning every upstream (default: `manifests/<recipe>.lock.json` if present).
    verify: hash every file of hand-placed folders, not only sizes and mtimes, for the cache keys.
    progress: called as `progress(stage, item, done, total)`; `log` receives warnings.

    Raises `medmix.core.errors.MedmixError` (a `RecipeError`, `LicenseError`, ...) naming the file
    and the fix; rows that cannot be read are quarantined, not raised.
    """
    from medmix.pipeline import build as run_build
    from medmix.planning import BuildOptions

    r = recipe if isinstance(recipe, Recipe) else load_recipe(str(recipe))
    out_s, cache_s = str(out), str(cache)
    opts = BuildOptions(out=out_s if is_remote(out_s) else local_path(out_s),
                        cache=cache_s if is_remote(cache_s) else local_path(cache_s),
                        workers=workers if workers is not None else (1 if executor == "local" else 0),
                        from_dirs={k: Path(v) for k, v in (from_dirs or {}).items()}, accept=tuple(accept),
                        allow_eval=tuple(allow_eval), mirror=mirror, hf_endpoint=hf_endpoint,
                        lock=Path(lock) if lock is not None else None, verify=verify, executor=executor,
                        address=address, storage_options=dict(storage_options or {}))
    manifest = run_build(r, opts, progress=progress, log=log)
    return BuildResult(out=str(opts.out), manifest=manifest)
