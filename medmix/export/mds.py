"""MDS, the shard format of mosaicml-streaming (`StreamingDataset`; llm-foundry, Composer), written
without the package.

Why not `streaming.MDSWriter`: mosaicml-streaming 0.13 pins numpy<2.2 and transformers<5 and
needs torchvision, so it cannot be installed beside medmix. The format is small and documented by
its source (`streaming/base/format/mds/writer.py`, `base/writer.py`), and is reproduced here
byte for byte; `tests/export/test_export_mds.py` reads the result back with the real
`StreamingDataset` in an isolated virtual environment.

A shard file (`<split>-NNNNN.mds`, listed in `index.json`):

    uint32 n                       number of samples (little-endian, as numpy writes it)
    uint32 offsets[n + 1]          byte offset of each sample from the file start, then the end
    config                         the shard's JSON config (sort_keys), as MDSWriter embeds it
    samples                        each: uint32 size per variable-size column, then the column bytes

Columns, in MDS's sorted order: `id` (str), `image` (bytes: the stored image, not re-encoded; empty
on text-only rows) and `record` (json: provenance, license, row fields and the conversation; its
`image_ext` names the image's format). Byte-size shards are cut as MDSWriter cuts them: the file
size (8 + config + Σ(sample + 4)) stays within `--shard-size`. Uncompressed, no hashes: the
defaults of MDSWriter. Offsets are uint32, so a shard must stay under 4 GiB.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from medmix.core.errors import MedmixError
from medmix.core.writer import atomic_write_json
from medmix.export.engine import Context, Format, Sample, ShardSize, ShardWriter, dumps

COLUMNS = {"id": "str", "image": "bytes", "record": "json"}
NAMES = sorted(COLUMNS)
MAX_SHARD = 2**32 - 1


def config(size_limit: int | None) -> dict[str, Any]:
    """What MDSWriter.get_config() returns for our columns (embedded in each shard, merged into index.json)."""
    return {"version": 2, "format": "mds", "compression": None, "hashes": [], "size_limit": size_limit,
            "column_names": NAMES, "column_encodings": [COLUMNS[n] for n in NAMES],
            "column_sizes": [None] * len(NAMES)}


def config_bytes(size_limit: int | None) -> bytes:
    return json.dumps(config(size_limit), sort_keys=True).encode("utf-8")


def writer_for(size_limit: int | None) -> type[ShardWriter]:
    data = config_bytes(size_limit)

    class MDSShardWriter(ShardWriter):
        """Holds one shard's samples (the header lists their offsets first), then writes the file."""

        @classmethod
        def per_sample(cls) -> int:
            return 4  # the sample's offset entry

        @classmethod
        def per_shard(cls) -> int:
            return 4 + 4 + len(data)  # n and the closing offset, the config

        def __init__(self, path: Path) -> None:
            self.path, self.rows, self.samples = path, 0, []

        def add(self, blob: bytes) -> None:
            self.samples.append(blob)
            self.rows += 1

        def finish(self) -> tuple[int, str]:
            import hashlib

            n = len(self.samples)
            start = 4 + 4 * (n + 1) + len(data)
            offsets, pos = [], start
            for s in self.samples:
                offsets.append(pos)
                pos += len(s)
            offsets.append(pos)
            if pos > MAX_SHARD:
                raise MedmixError(f"{self.path}: an MDS shard must stay under 4 GiB (uint32 offsets); give a "
                                  f"smaller --shard-size")
            h = hashlib.sha256()
            with open(self.path, "wb") as f:
                for part in (struct.pack(f"<I{n + 1}I", n, *offsets), data, *self.samples):
                    f.write(part)
                    h.update(part)
            self.samples = []
            return pos, h.hexdigest()

        def abort(self) -> None:
            self.samples = []

    return MDSShardWriter


class MDS(Format):
    name = "mds"
    ext = "mds"
    default_shard = ShardSize(bytes=1 << 26)  # MDSWriter's default size_limit

    def writer_for(self, size: ShardSize) -> type[ShardWriter]:
        if size.bytes is not None and size.bytes > MAX_SHARD:
            raise MedmixError(f"--shard-size {size.bytes} bytes: an MDS shard must stay under 4 GiB (uint32 offsets)")
        return writer_for(size.bytes)

    def encode(self, sample: Sample, ctx: Context) -> bytes:
        record = sample.record()
        record["image_ext"] = sample.image_ext
        record["conversations"] = sample.conversation()
        values = {"id": sample.row["id"].encode("utf-8"), "image": sample.image or b"", "record": dumps(record)}
        parts = [values[n] for n in NAMES]
        return struct.pack(f"<{len(parts)}I", *map(len, parts)) + b"".join(parts)

    def finish(self, staging: Path, shards: list[dict[str, Any]], size: ShardSize) -> None:
        entries = []
        for s in shards:
            entry = {"samples": s["rows"], "raw_data": {"basename": s["path"], "bytes": s["bytes"], "hashes": {}},
                     "zip_data": None}
            entry.update(config(size.bytes))
            entries.append(entry)
        atomic_write_json(staging / "index.json", {"version": 2, "shards": entries})

    def usage(self, index: Mapping[str, Any]) -> str:
        return "\n".join([
            "```python", "from streaming import StreamingDataset  # pip install mosaicml-streaming", "",
            'ds = StreamingDataset(local="<this folder>", shuffle=False, batch_size=1)',
            'sample = ds[0]  # {"id": str, "image": bytes (empty on text rows), "record": dict}', "```",
        ])
