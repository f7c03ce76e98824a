"""WebDataset: POSIX tar shards, one sample = consecutive members sharing a key (open_clip, BIOMEDICA).

A sample is `<key>.json` (the row's provenance, license, fields and conversation), `<key>.txt` (one
line of text for CLIP-style trainers: the caption/label for caption and classification rows, the
question and answer otherwise) and, for image rows, `<key>.<jpg|png|...>`: the stored bytes, not
re-encoded. Keys are the row's global index in the export (`000000042`): unique, dot-free (a dot
would split the key), sortable. Text-only rows are samples without an image member; a CLIP trainer
that needs images filters on `"jpg" in sample` (or exports an image-only recipe).

Why the image is inside every sample and not a shared file: a tar sample must be self-contained
for the streaming readers, so a picture two rows share is stored in both samples. The JSON formats
store it once.

Tar members are built by hand from `tarfile.TarInfo` (ustar, mtime 0, uid/gid 0, mode 0644): a
member's bytes depend only on its name and content, so samples are encoded in any process and
concatenated, and the same mixture gives the same tar bytes.
"""

from __future__ import annotations

import tarfile
from collections.abc import Mapping
from typing import Any

from medmix.export.engine import Context, Format, Sample, ShardSize, ShardWriter, dumps

BLOCK = 512
END = b"\0" * (2 * BLOCK)  # end-of-archive: two zero blocks


def member(name: str, data: bytes) -> bytes:
    """One tar member: ustar header + data padded to 512 bytes; position-independent."""
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    pad = -len(data) % BLOCK
    return info.tobuf(format=tarfile.USTAR_FORMAT, encoding="utf-8", errors="strict") + data + b"\0" * pad


def caption(sample: Sample) -> str:
    r = sample.row
    if r["task"] in ("caption", "classification"):
        return r["answer"]
    return f"{r['question'] or ''} {sample.gpt}".strip()


class TarWriter(ShardWriter):
    footer = END


class WebDataset(Format):
    name = "webdataset"
    ext = "tar"
    default_shard = ShardSize(bytes=512 * 10**6)
    writer = TarWriter

    def encode(self, sample: Sample, ctx: Context) -> bytes:
        key = sample.key
        record = sample.record()
        if sample.image is not None:
            record["image"] = f"{key}.{sample.image_ext}"
        record["conversations"] = sample.conversation()
        parts = [member(f"{key}.json", dumps(record)), member(f"{key}.txt", caption(sample).encode("utf-8"))]
        if sample.image is not None:
            parts.append(member(f"{key}.{sample.image_ext}", sample.image))
        return b"".join(parts)

    def usage(self, index: Mapping[str, Any]) -> str:
        shards = index["shards"]
        pattern = (f"{index['split']}-{{00000..{len(shards) - 1:05d}}}.tar" if shards else "(no shards)")
        return "\n".join([
            "```python", "import webdataset as wds", "",
            f'ds = wds.WebDataset("{pattern}", shardshuffle=False).decode("pil")',
            'for sample in ds:  # sample["json"]: provenance, license, row fields, conversation',
            '    image = sample.get("jpg") or sample.get("png")  # absent on text-only rows',
            "```", "",
            (f"open_clip: `--train-data '{pattern}' --dataset-type webdataset --csv-img-key jpg "
             f"--csv-caption-key txt` (image rows only carry a `jpg`/`png` member)."),
        ])
