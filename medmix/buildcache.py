"""The build cache (`--cache`): a local folder, or a URL that every node of a cluster reaches.

Local (the default, `.medmix-cache`): downloads under `downloads/`, normalized units under
`normalized/<source>/<key>.{parquet,quarantine.parquet,json}`, exactly as before.

At a URL (`--cache s3://bucket/medmix-cache`): the bucket holds the normalized units, so a unit
finished by any task on any node is reused by every later build, from any machine, and a killed
driver's rerun redoes nothing that finished. Each unit task normalizes into node-local scratch
and uploads its three files with the summary last (the unit's completion marker, as locally).
Downloads happen on the driver, into node-local scratch; when tasks may run on other machines
(`--executor ray`), the driver also uploads them under `downloads/` and a task on a node without
them pulls the ones its unit reads. `--from` folders are read in place, so on a cluster they must
be on a filesystem every node mounts. The driver pulls the units' rows files back for the mix step
(it reads every selected row once to write the shards).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from medmix.core.errors import MedmixError
from medmix.core.storage import Store, is_remote, local_path, scratch_dir, url_key
from medmix.imaging.canonical import ImagePolicy
from medmix.normalize import UnitPaths, run_unit
from medmix.sources.base import Source, Unit

NORMALIZED = "normalized"
DOWNLOADS = "downloads"


class BuildCache:
    def __init__(self, location: str | os.PathLike[str], storage_options: Mapping[str, Any] | None = None,
                 driver_local: str | None = None) -> None:
        self.location = os.fspath(location)
        self.options = dict(storage_options or {})
        self.store = Store(self.location, self.options) if is_remote(self.location) else None
        # node-local working copy of a remote cache (recomputed on each node a task lands on)
        self.local = (scratch_dir() / f"cache-{url_key(self.store.url)}") if self.store else local_path(self.location)
        self.driver_local = driver_local or str(self.local)
        self._listing: dict[str, set[str]] = {}

    def __reduce__(self) -> tuple:
        return (BuildCache, (self.location, self.options, self.driver_local))

    def _rel(self, source: str, name: str) -> str:
        return f"{NORMALIZED}/{source}/{name}"

    def summary(self, source: str, key: str) -> dict | None:
        """The summary of a finished unit, or None: the unit still has to run.

        On a remote cache the bucket is the truth: a unit finished only in this node's scratch
        (its upload was cut off) is published now instead of being redone.
        """
        paths = UnitPaths.at(self.local / NORMALIZED, source, key)
        if self.store is None:
            return json.loads(paths.summary.read_text()) if paths.summary.exists() else None
        if source not in self._listing:  # one listing per source, not one request per unit
            self._listing[source] = set(self.store.list(f"{NORMALIZED}/{source}"))
        if f"{key}.json" in self._listing[source]:
            if paths.summary.exists():
                return json.loads(paths.summary.read_text())
            return self.store.read_json(self._rel(source, f"{key}.json"))
        if paths.summary.exists():
            self._publish(paths, source)
            return json.loads(paths.summary.read_text())
        return None

    def _publish(self, paths: UnitPaths, source: str) -> None:
        # a unit that quarantined nothing has no quarantine file; the summary goes last: the commit point
        for path in (paths.rows, paths.quarantine, paths.summary):
            if path.exists() or path == paths.summary:
                self.store.put_file(path, self._rel(source, path.name))

    def run_unit(self, source: Source, unit: Unit, files: Mapping[str, Path], policy: ImagePolicy, key: str) -> dict:
        """Normalize one unit (idempotent); on a remote cache, publish it there, summary last."""
        norm = self.local / NORMALIZED
        if self.store is None:
            return run_unit(source, unit, files, policy, norm, key)
        summary = run_unit(source, unit, self._reachable(files), policy, norm, key)
        self._publish(UnitPaths.at(norm, source.name, key), source.name)
        return summary

    def _reachable(self, files: Mapping[str, Path]) -> dict[str, Path]:
        """The unit's input files on this node: pulled from the cache's `downloads/` when missing here."""
        out = {}
        downloads = Path(self.driver_local) / DOWNLOADS
        for name, path in files.items():
            path = Path(path)
            if not path.exists() and self.store is not None and path.is_relative_to(downloads):
                rel = path.relative_to(downloads).as_posix()
                path = self.local / DOWNLOADS / rel
                if not path.exists():
                    self.store.get_file(f"{DOWNLOADS}/{rel}", path)
            elif not path.exists():
                raise MedmixError(f"{path}: input file not found on this node; on a cluster, put --from folders on a "
                                  f"filesystem every node mounts, or pass --cache as a URL (s3://...)")
            out[name] = path
        return out

    def ship_inputs(self, file_maps: Iterable[Mapping[str, Path]], remote: bool) -> None:
        """When tasks may run elsewhere and the cache is a URL, upload the downloads their units read."""
        if self.store is None or not remote:
            return
        downloads = self.local / DOWNLOADS
        wanted = sorted({Path(p) for files in file_maps for p in files.values() if Path(p).is_relative_to(downloads)})
        for path in wanted:
            files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
            for f in files:
                rel = f"{DOWNLOADS}/{f.relative_to(downloads).as_posix()}"
                if not self.store.exists(rel) or self.store.size(rel) != f.stat().st_size:
                    self.store.put_file(f, rel)

    def pull_normalized(self, units: Iterable[tuple[str, str]]) -> Path:
        """The local folder holding every unit's files, pulling from a remote cache what is not here yet."""
        norm = self.local / NORMALIZED
        if self.store is not None:
            for source, key in units:
                paths = UnitPaths.at(norm, source, key)
                if paths.summary.exists():
                    continue
                summary = self.store.read_json(self._rel(source, paths.summary.name))
                wanted = [paths.rows] + ([paths.quarantine] if any(summary.get("quarantined", {}).values()) else [])
                for path in (*wanted, paths.summary):  # the summary last: locally too it marks a complete unit
                    self.store.get_file(self._rel(source, path.name), path)
        return norm
