"""Packing: a micro-batch's samples laid end to end in rows of `max_length`, attention kept per sample.

Why: real samples vary from ~20 text tokens to 196 visual + several hundred text tokens, so
padding every row to the longest sample wastes a large share of a step on pad tokens (padding is
lost work; effective MFU counts only real tokens). Packing keeps the same samples per step (so
the loader, resume state and loss normalisation are unchanged) and only changes their layout:
first-fit decreasing into rows of `capacity` tokens.

The packed batch carries, besides the usual keys, `position_ids` (restarting at 0 for each
sample, as if it were alone) and `sample_index` (which sample of the micro-batch each position
holds, -1 for padding). `VLM.forward` turns `sample_index` into a block-diagonal causal mask
for SDPA: a token attends only to earlier tokens of its own sample; pad positions attend only to
pad positions (never an empty row, which would give NaN). Each sample's BOS carries no label,
so no loss ever crosses a boundary. Images are stacked in the order their slots appear in the
packed rows, which is the order `VLM.embed` fills them. Packed and unpacked losses per sample
are equal (tests/test_trainer_fast_paths.py).
"""

from __future__ import annotations

from typing import Any

import torch

from trainer.prompts import IGNORE_INDEX


def round_up(width: int, multiple: int) -> int:
    return -(-width // multiple) * multiple


def pack(examples: list[dict[str, Any]], pad_id: int, capacity: int, multiple: int = 1) -> dict[str, torch.Tensor]:
    """Encoded examples (as `data.SampleEncoder` returns them) → one packed batch; width a multiple of `multiple`."""
    order = sorted(range(len(examples)), key=lambda i: -len(examples[i]["input_ids"]))
    rows: list[list[int]] = []
    free: list[int] = []
    for i in order:
        n = len(examples[i]["input_ids"])
        if n > capacity:
            raise ValueError(f"sample {examples[i].get('id')!r} has {n} tokens, more than the row capacity {capacity}")
        slot = next((r for r, space in enumerate(free) if space >= n), None)
        if slot is None:
            rows.append([])
            free.append(capacity)
            slot = len(rows) - 1
        rows[slot].append(i)
        free[slot] -= n
    width = round_up(max(capacity - space for space in free), multiple)
    shape = (len(rows), width)
    input_ids = torch.full(shape, pad_id, dtype=torch.long)
    labels = torch.full(shape, IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros(shape, dtype=torch.long)
    position_ids = torch.zeros(shape, dtype=torch.long)
    sample_index = torch.full(shape, -1, dtype=torch.long)
    pixels = []
    for r, members in enumerate(rows):
        start = 0
        for i in members:
            e = examples[i]
            n = len(e["input_ids"])
            input_ids[r, start:start + n] = torch.tensor(e["input_ids"])
            labels[r, start:start + n] = torch.tensor(e["labels"])
            mask[r, start:start + n] = 1
            position_ids[r, start:start + n] = torch.arange(n)
            sample_index[r, start:start + n] = i
            if e["pixel_values"] is not None:
                pixels.append(e["pixel_values"])
            start += n
        position_ids[r, start:] = torch.arange(width - start)
    return {"input_ids": input_ids, "labels": labels, "attention_mask": mask, "position_ids": position_ids,
            "sample_index": sample_index, "pixel_values": torch.stack(pixels) if pixels else None}


def block_causal_mask(sample_index: torch.Tensor) -> torch.Tensor:
    """[rows, 1, width, width] boolean (True = may attend): causal, and within one sample only."""
    width = sample_index.shape[1]
    causal = torch.ones(width, width, dtype=torch.bool, device=sample_index.device).tril()
    same = sample_index[:, :, None] == sample_index[:, None, :]
    return (same & causal)[:, None]
