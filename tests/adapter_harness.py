"""Run one adapter through the real shared path — fetch (HTTP or Hub against the local test server),
units, read, normalize, validate, quarantine, Parquet — and return what a build would write."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

from medmix.core.schema import SCHEMA_VERSION
from medmix.fetch.download import fetch_files
from medmix.imaging.canonical import ImagePolicy
from medmix.normalize import UnitPaths, run_unit
from medmix.sources.base import Source


def run_adapter(source: Source, splits: tuple[str, ...], *, server=None, cache_dir: Path,
                from_dir: Path | None = None, policy: ImagePolicy | None = None) -> tuple[list[dict], list[dict]]:
    """Returns (rows, quarantined) exactly as the normalize stage writes them, in unit order."""
    policy = policy or ImagePolicy()
    res = fetch_files(source, splits, cache_dir=cache_dir / "downloads", from_dir=from_dir,
                      mirror=server.url if server else None, hf_endpoint=server.hf_endpoint if server else None)
    salt = {"schema": SCHEMA_VERSION, "policy": policy.salt(), "files": sorted((d["name"], d.get("sha256"))
                                                                              for d in res.provenance)}
    rows: list[dict] = []
    bad: list[dict] = []
    for split in splits:
        for unit in source.units(split, res.paths):
            key = unit.key(salt)
            run_unit(source, unit, res.paths, policy, cache_dir / "normalized", key)
            paths = UnitPaths.at(cache_dir / "normalized", source.name, key)
            rows.extend(pq.read_table(paths.rows).to_pylist())
            if paths.quarantine.exists():  # written only when the unit quarantined something
                bad.extend(pq.read_table(paths.quarantine).to_pylist())
    return rows, bad
