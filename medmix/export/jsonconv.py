"""LLaVA and ShareGPT conversation JSON, with the images beside it (LLaVA-Med, LLaMA-Factory, ms-swift,
Qwen-VL fine-tuning scripts).

LLaVA:    {"id", "image": "images/<sha256>.jpg", "conversations": [{"from": "human", "value":
           "<image>\\n..."}, {"from": "gpt", "value": "..."}], provenance...}
ShareGPT: {"id", "messages": [{"role": "user", "content": "<image>..."}, {"role": "assistant",
           "content": "..."}], "images": ["images/<sha256>.jpg"], provenance...}

Text-only rows have no `image` key (LLaVA's loader tests `"image" in sample`) and an empty
`images` list (ShareGPT). Beside the conversation every record carries `source`, `native_id`,
`license`, `upstream_revision`, `adapter`, `split` (the source's own split), `task` and `domain`.

Images are written once, under the sha256 of their stored bytes (`images/<sha256>.<ext>`,
the extension from the bytes' magic number), never re-encoded: a picture shared by two rows, or by
two sources, is one file. Paths are relative to the export root, LLaVA's `--image_folder`.

Each shard is a JSON array, one record per line (`json.load` and `datasets.load_dataset("json")`
both read it); `--shard-size` splits it, and by default the split is one file, as LLaVA expects.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from medmix.export.engine import Context, Format, Sample, ShardWriter, dumps, queue_image


class ArrayWriter(ShardWriter):
    header = b"[\n"
    sep = b",\n"
    footer = b"\n]\n"


class _Conversations(Format):
    ext = "json"
    writes_images = True
    # what the records and the templates read; the hashes, sizes, modality and meta stay in the Parquet
    columns = ("id", "source", "split", "domain", "task", "image", "question", "options", "answer", "context",
               "license")
    writer = ArrayWriter

    def image(self, sample: Sample, ctx: Context) -> str | None:
        if sample.image is None:
            return None
        assert sample.image_sha256 is not None and sample.image_ext is not None
        return queue_image(ctx.staging, sample.image_sha256, sample.image_ext, sample.image)


class LLaVA(_Conversations):
    name = "llava"

    def encode(self, sample: Sample, ctx: Context) -> bytes:
        r = sample.row
        rec: dict[str, Any] = {"id": r["id"]}
        path = self.image(sample, ctx)
        if path is not None:
            rec["image"] = path
        rec["conversations"] = sample.conversation()
        rec.update(source=r["source"], native_id=sample.native_id, license=r["license"],
                   upstream_revision=sample.upstream_revision, adapter=sample.adapter, split=r["split"],
                   task=r["task"], domain=r["domain"])
        return dumps(rec)

    def usage(self, index: Mapping[str, Any]) -> str:
        shards = index["shards"]
        files = ", ".join(f"`{s['path']}`" for s in shards[:3]) + (", ..." if len(shards) > 3 else "")
        return "\n".join([
            f"LLaVA-style conversation JSON: {files}, with images under `images/` (paths relative to this folder).",
            "", "LLaVA / LLaVA-Med: `--data_path <file>.json --image_folder <this folder>`.", "",
            "```python", "from datasets import load_dataset", "",
            f'ds = load_dataset("json", data_files="{index["split"]}-*.json", split="train")', "```",
        ])


class ShareGPT(_Conversations):
    name = "sharegpt"

    def encode(self, sample: Sample, ctx: Context) -> bytes:
        path = self.image(sample, ctx)
        r = sample.row
        return dumps({"id": r["id"],
                      "messages": [{"role": "user", "content": sample.human},
                                   {"role": "assistant", "content": sample.gpt}],
                      "images": [path] if path is not None else [],
                      "source": r["source"], "native_id": sample.native_id, "license": r["license"],
                      "upstream_revision": sample.upstream_revision, "adapter": sample.adapter, "split": r["split"],
                      "task": r["task"], "domain": r["domain"]})

    def usage(self, index: Mapping[str, Any]) -> str:
        return "\n".join([
            "ShareGPT-style `messages`/`images` JSON (LLaMA-Factory, ms-swift), images under `images/`.", "",
            "LLaMA-Factory `dataset_info.json` entry:", "", "```json",
            '{"medmix": {"file_name": "' + (index["shards"][0]["path"] if index["shards"] else "") + '", '
            '"formatting": "sharegpt", "columns": {"messages": "messages", "images": "images"}, '
            '"tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", '
            '"assistant_tag": "assistant"}}}',
            "```",
        ])
