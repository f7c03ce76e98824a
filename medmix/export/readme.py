"""The export's README.md: the card `medmix push` writes (medmix.publish.card), with the export's own loading text.

One definition of the card, so an export and a Hub push of the same mixture state the same
composition, per-source licenses, restrictions and BibTeX. The card is a pure function of the
rows and the manifest, so the README adds nothing that differs between runs (no dates, paths).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from medmix.publish.card import CardInputs, render_card


def card_text(fmt: Any, index: Mapping[str, Any], manifest: Mapping[str, Any], manifest_sha256: str,
              stats: Mapping[str, Any], forced: Mapping[str, int]) -> str:
    from medmix.publish.hub import source_info

    shards = index["shards"]
    usage = "\n".join([
        (f"This folder is a `medmix export --format {fmt.name}` of split `{index['split']}`: {index['rows']:,} rows "
         f"in {len(shards)} shard(s), in the mixture's order. Every row carries `source`, `native_id`, `license`, "
         f"`adapter` and `upstream_revision` beside its conversation; `export.json` lists the shards with their "
         f"sha256, and `manifest.json` is the build's manifest."), "",
        fmt.usage(index),
    ])
    inputs = CardInputs(repo_id=f"medmix-export-{fmt.name}", manifest=manifest, manifest_sha256=manifest_sha256,
                        stats=stats, sources={n: source_info(n, e) for n, e in manifest["sources"].items()},
                        configs={}, forced=forced, usage=usage, force_flag="--allow-nonredistributable",
                        action="exported")
    return render_card(inputs)
