"""`medmix export`: a mixture in the formats other trainers read, with every row's provenance and license.

    webdataset  tar shards of samples (open_clip and CLIP-style trainers)   medmix.export.webdataset
    llava       LLaVA conversation JSON + images/ (LLaVA-Med, Qwen-VL)       medmix.export.jsonconv
    sharegpt    ShareGPT messages/images JSON + images/ (LLaMA-Factory)      medmix.export.jsonconv
    mds         mosaicml-streaming MDS shards (llm-foundry, Composer)        medmix.export.mds

The shared streaming / sharding / parallel core is `medmix.export.engine`; the conversation text is
the bundled trainer's (`medmix.export.conversation` over `trainer.prompts`); the README is the
card `medmix push` writes (`medmix.export.readme` over `medmix.publish.card`).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from medmix.core.errors import MedmixError
from medmix.core.layout import DEFAULT_SPLIT
from medmix.export.conversation import load_templates
from medmix.export.engine import ExportResult, Format, Log, Progress, ShardSize, parse_shard_size, run
from medmix.export.jsonconv import LLaVA, ShareGPT
from medmix.export.mds import MDS
from medmix.export.webdataset import WebDataset

FORMATS: dict[str, Format] = {f.name: f for f in (WebDataset(), LLaVA(), ShareGPT(), MDS())}

__all__ = ["FORMATS", "ExportResult", "ShardSize", "export", "parse_shard_size"]


def export(mixture: str | Path, out: str | Path, fmt: str, *, split: str = DEFAULT_SPLIT,
           shard_size: str | int | ShardSize | None = None, workers: int = 1, template: str | Path | None = None,
           allow_nonredistributable: bool = False, log: Log = print, progress: Progress | None = None) -> ExportResult:
    """Export one split of a built mixture to `out` in format `fmt` (one of FORMATS)."""
    if fmt not in FORMATS:
        raise MedmixError(f"--format {fmt!r}: use one of {', '.join(FORMATS)}")
    size = shard_size if isinstance(shard_size, ShardSize) or shard_size is None else parse_shard_size(shard_size)
    templates = load_templates(template)
    digest = hashlib.sha256(Path(template).read_bytes()).hexdigest() if template is not None else None
    return run(Path(mixture), Path(out), FORMATS[fmt], split=split, size=size, workers=workers, templates=templates,
               template_sha256=digest, allow_nonredistributable=allow_nonredistributable, log=log, progress=progress)
