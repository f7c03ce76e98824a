"""Per-row answer-token loss of a trained proxy on the held-out rows.

Rows are encoded by `trainer.data.SampleEncoder` exactly as in training (same template, truncation
and labels), and the model's own loss (`reduction="none"`) is split back into rows by their
labelled-token counts. The result keeps the held-out file's row order, so two variants' losses
are paired row by row (the bootstrap in `analyze` relies on it).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from medmix.core.writer import write_parquet_atomic

EVAL_SCHEMA = pa.schema([("id", pa.string()), ("source", pa.string()), ("domain", pa.string()),
                         ("tokens", pa.int32()), ("loss", pa.float64())])


@torch.no_grad()
def heldout_losses(run: Path, heldout: Path, out: Path, batch_size: int = 32) -> pa.Table:
    from trainer.data import SampleEncoder, collate
    from trainer.model import load_vlm
    from trainer.prompts import IGNORE_INDEX

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = load_vlm(run, device=device)
    max_length = _max_length(run)
    encoder = SampleEncoder(model.tokenizer, model.processor, model.n_visual, max_length)
    table = pq.read_table(heldout, columns=["id", "source", "domain"])
    losses = np.zeros(table.num_rows)
    counts = np.zeros(table.num_rows, np.int32)
    pad = model.tokenizer.pad_token_id
    start = 0
    # one batch of rows (with their images) in memory at a time
    for batch_rows in pq.ParquetFile(heldout).iter_batches(batch_size=batch_size):
        chunk = [encoder(r) for r in batch_rows.to_pylist()]
        batch = collate(chunk, pad)
        n = (batch["labels"][:, 1:] != IGNORE_INDEX).sum(dim=1).tolist()
        batch = {k: v.to(device) if v is not None else None for k, v in batch.items()}
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            per_token = model(**batch, reduction="none").float().cpu().numpy()
        offsets = np.cumsum([0, *n])
        for i, (a, b) in enumerate(zip(offsets[:-1], offsets[1:])):
            losses[start + i] = per_token[a:b].mean()
            counts[start + i] = b - a
        start += len(chunk)
    result = pa.table({"id": table.column("id"), "source": table.column("source"), "domain": table.column("domain"),
                       "tokens": pa.array(counts, pa.int32()), "loss": pa.array(losses, pa.float64())},
                      schema=EVAL_SCHEMA)
    write_parquet_atomic(out, result)
    return result


def _max_length(run: Path) -> int:
    import json

    from trainer.checkpoint import resolve_checkpoint

    return int(json.loads((resolve_checkpoint(run) / "config.json").read_text())["train"]["max_length"])
