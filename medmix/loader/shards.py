"""The shard index of one mixture split, and the one place a shard file is opened.

Every local shard the loader touches (the footer reads here, the row-group reads of `reader`) goes
through `open_shard(path)`, with paths kept as str; a mixture at a URL (s3://, gs://, any fsspec
URL) goes through `ShardIndex.open`, which hands out shards from `medmix.loader.shardcache`'s bounded
local row-group cache instead.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from medmix.core.errors import MedmixError
from medmix.core.layout import mixture_files
from medmix.core.schema import ARROW_SCHEMA
from medmix.core.storage import is_remote

__all__ = ["ShardIndex", "open_shard"]


def open_shard(path: str) -> pq.ParquetFile:
    """An open Parquet shard, or an error naming the file.

    `pre_buffer=False`: pyarrow's default coalesces a row group's column reads into one big read,
    which pays off on object stores (the remote path goes through `medmix.loader.shardcache`), but on a
    local file it only adds a copy: row groups decoded 20% faster without it (353k against 294k
    rows/s on one thread, benchmarks/loader_throughput.py data)."""
    try:
        return pq.ParquetFile(path, pre_buffer=False)
    except FileNotFoundError:
        raise MedmixError(f"{path}: shard listed in the manifest is missing") from None
    except (OSError, pa.ArrowException) as exc:
        raise MedmixError(f"{path}: not a readable Parquet file: {exc}") from None


class ShardIndex:
    """Shards and row groups of one mixture split, read from Parquet footers only (cheap).

    Checks here catch a damaged or mismatched mixture before training starts, naming the file.
    Row group g (global, manifest order) is row group `group_local[g]` of shard `group_shard[g]`.
    """

    def __init__(self, root: Path | str, split: str, columns: Sequence[str],
                 remote: Mapping[str, Any] | None = None) -> None:
        self.root = root
        self.paths: list[str] = []
        shard_of: list[int] = []
        local: list[int] = []
        rows: list[int] = []
        # a mixture at a URL: shards listed by its manifest, footers read remotely, row groups served
        # by medmix.loader.shardcache's bounded local cache; `remote` holds its options
        self.remote = None
        if is_remote(root):
            from medmix.loader.shardcache import RemoteMixture

            self.remote = RemoteMixture(str(root), split, **(remote or {}))
            listing = zip(self.remote.paths, self.remote.expected, strict=True)
        else:
            listing = mixture_files(root, split)
        for shard_id, (path, expected) in enumerate(listing):
            path = str(path)
            if self.remote is not None:
                meta = self.remote.metas[shard_id]
                schema = meta.schema.to_arrow_schema()
            else:
                handle = open_shard(path)
                try:
                    meta = handle.metadata
                    schema = handle.schema_arrow
                finally:
                    handle.close()
            if expected is not None and meta.num_rows != expected:
                raise MedmixError(f"{path}: manifest says {expected} rows, the file has {meta.num_rows}")
            _check_schema(path, schema, columns)
            self.paths.append(path)
            for g in range(meta.num_row_groups):
                n = meta.row_group(g).num_rows
                if n:
                    shard_of.append(shard_id)
                    local.append(g)
                    rows.append(n)
        self.group_shard = np.asarray(shard_of, dtype=np.int64)
        self.group_local = np.asarray(local, dtype=np.int64)
        self.group_rows = np.asarray(rows, dtype=np.int64)
        self.total = int(self.group_rows.sum())
        if self.total == 0:
            raise MedmixError(f"{root}: split {split!r} has no rows")
        # part of every state_dict: a resume on other data is refused (format fixed by STATE_FORMAT)
        blob = json.dumps([[os.path.relpath(p, root) for p in self.paths], rows, local, shard_of])
        self.fingerprint = hashlib.sha256(blob.encode()).hexdigest()[:16]

    def open(self, shard: int) -> pq.ParquetFile:
        if self.remote is not None:  # remote shards come through the row-group cache
            try:
                return self.remote.open(shard)
            except (OSError, pa.ArrowException) as exc:
                raise MedmixError(f"{self.paths[shard]}: cannot open: {exc}") from None
        return open_shard(self.paths[shard])


def _check_schema(path: str, schema: pa.Schema, columns: Sequence[str]) -> None:
    for name in columns:
        idx = schema.get_field_index(name)
        if idx < 0:
            raise MedmixError(f"{path}: column {name!r} is missing")
        want = ARROW_SCHEMA.field(name).type
        if not schema.field(idx).type.equals(want):
            raise MedmixError(f"{path}: column {name!r} is {schema.field(idx).type}, expected {want}")
