"""From mixture rows to padded batches: templates, tokenization, label masking, truncation.

Why encode per row in the loader workers and pad per batch in `collate`: image decoding and
resizing are the expensive part and run in parallel with the GPU; padding to the longest row of
the batch (not to max_length) wastes no compute on pad tokens.

Label rule: only answer tokens (and the closing EOS) carry labels; BOS, template text, question,
context, options, visual tokens and padding are IGNORE_INDEX. Truncation cuts text in
`prompts.TRUNCATE_ORDER` from the end of each piece, never the visual tokens; a config whose
max_length cannot hold the visual tokens plus the template is refused at start.

A row that cannot be encoded (an undecodable image) raises `RowError` naming the row id; the
stream logs it and skips it, like the build's quarantine, and counts it.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch.utils.data import IterableDataset

from medmix.core.distributed import is_distributed
from medmix.core.errors import RowError
from medmix.loader import MixtureDataset
from trainer.config import ConfigError
from trainer.packing import pack, round_up
from trainer.prompts import IGNORE_INDEX, IMAGE_PLACEHOLDER, IMAGE_TOKEN_ID, TRUNCATE_ORDER, Piece, render

log = logging.getLogger(__name__)


class SampleEncoder:
    """Row → {"input_ids", "labels", "pixel_values"} (lists/tensor, unpadded). Picklable for workers.

    Named for what it encodes (one training sample), not for a model part: the vision encoders of
    `medmix.evaluation.encoders` are a different thing.
    """

    def __init__(self, tokenizer: Any, processor: Any, n_visual: int, max_length: int) -> None:
        self.tokenizer = tokenizer
        self.processor = processor
        self.n_visual = n_visual
        self.max_length = max_length
        # BOS + visual tokens + "\nAnswer:" + one answer token + EOS must fit, or nothing can train.
        floor = 2 + n_visual + len(self._tokenize("\nAnswer: x")[0])
        if max_length < floor:
            raise ConfigError(f"train.max_length={max_length} cannot hold {n_visual} visual tokens plus the "
                              f"prompt template; use at least {floor + 32}")

    def __call__(self, row: Mapping[str, Any]) -> dict[str, Any]:
        image = load_image(row)
        pixels = self.processor(image) if image is not None else None
        pieces = render(row, has_image=pixels is not None)
        ids, kinds = self.tokens(pieces)
        ids, kinds = self._truncate(ids, kinds)
        if len(ids) + 2 > self.max_length:
            raise RowError(f"template text alone exceeds train.max_length={self.max_length}",
                           file=str(row.get("id")))
        ids = [self.tokenizer.bos_token_id] + ids + [self.tokenizer.eos_token_id]
        kinds = ["fixed"] + kinds + ["answer"]
        labels = [t if k == "answer" else IGNORE_INDEX for t, k in zip(ids, kinds)]
        return {"input_ids": ids, "labels": labels, "pixel_values": pixels, "id": row.get("id")}

    def tokens(self, pieces: list[Piece]) -> tuple[list[int], list[str]]:
        """Token ids and, per token, the kind of piece it came from. Text on each side of the
        image is tokenized in one pass (natural merges), and tokens are attributed by offset."""
        ids: list[int] = []
        kinds: list[str] = []
        run: list[Piece] = []
        for piece in pieces + [Piece("image", "")]:
            if piece.kind != "image":
                run.append(piece)
                continue
            if run:
                text = "".join(p.text for p in run)
                starts, pos = [], 0
                for p in run:
                    starts.append((pos, p.kind))
                    pos += len(p.text)
                run_ids, offsets = self._tokenize(text)
                for tid, (begin, _end) in zip(run_ids, offsets):
                    ids.append(tid)
                    kinds.append(next(k for s, k in reversed(starts) if s <= begin))
                run = []
            if piece.text == IMAGE_PLACEHOLDER:
                ids += [IMAGE_TOKEN_ID] * self.n_visual
                kinds += ["image"] * self.n_visual
        return ids, kinds

    def _tokenize(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        return enc["input_ids"], enc["offset_mapping"]

    def _truncate(self, ids: list[int], kinds: list[str]) -> tuple[list[int], list[str]]:
        excess = len(ids) + 2 - self.max_length  # + BOS + EOS
        for kind in TRUNCATE_ORDER:
            if excess <= 0:
                break
            positions = [i for i, k in enumerate(kinds) if k == kind]
            keep_min = 1 if kind == "answer" else 0  # an answer cut to nothing teaches nothing
            drop = set(positions[max(keep_min, len(positions) - excess):])
            excess -= len(drop)
            ids = [t for i, t in enumerate(ids) if i not in drop]
            kinds = [k for i, k in enumerate(kinds) if i not in drop]
        return ids, kinds


def load_image(row: Mapping[str, Any]) -> Image.Image | None:
    """The row's image as PIL, whether the loader decoded it or passed {bytes, path}."""
    image = row.get("image")
    if image is None or isinstance(image, Image.Image):
        return image
    data = image.get("bytes") if isinstance(image, Mapping) else None
    if not data:
        return None
    try:
        decoded = Image.open(io.BytesIO(data))
        decoded.load()
        return decoded
    except Exception as exc:  # noqa: BLE001 - PIL raises many types for bad bytes; all mean "unreadable"
        raise RowError(f"image cannot be decoded ({exc})", file=str(row.get("id"))) from None


def encode_prompt(model: Any, image: Image.Image | None, prompt: str | Mapping[str, Any]) -> tuple[list[int], Any]:
    """A generation prompt: same template and tokenization as training, without the answer."""
    row = dict(prompt) if isinstance(prompt, Mapping) else {
        "task": "vqa" if image is not None else "qa", "question": prompt}
    encoder = SampleEncoder(model.tokenizer, model.processor, model.n_visual, max_length=10**9)
    pixels = model.processor(image) if image is not None else None
    ids, _ = encoder.tokens(render(row, has_image=pixels is not None, with_answer=False))
    return [model.tokenizer.bos_token_id] + ids, pixels


def collate(examples: list[dict[str, Any]], pad_id: int, multiple: int = 1) -> dict[str, torch.Tensor]:
    """Pad to the longest example rounded up to `multiple` (right padding); images stacked in row order."""
    width = round_up(max(len(e["input_ids"]) for e in examples), multiple)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for i, e in enumerate(examples):
        n = len(e["input_ids"])
        input_ids[i, :n] = torch.tensor(e["input_ids"])
        labels[i, :n] = torch.tensor(e["labels"])
        mask[i, :n] = 1
    pixels = [e["pixel_values"] for e in examples if e["pixel_values"] is not None]
    return {"input_ids": input_ids, "labels": labels, "attention_mask": mask,
            "pixel_values": torch.stack(pixels) if pixels else None}


class EncodedStream(IterableDataset):
    """Encodes a row stream, skipping rows that raise `RowError`. Forwards the inner dataset's
    `state_dict`/`load_state_dict`/`set_epoch`, so a stateful loader resumes it exactly."""

    def __init__(self, rows: Any, encoder: SampleEncoder) -> None:
        self.rows = rows
        self.encoder = encoder
        self.skipped = 0

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for row in self.rows:
            try:
                yield self.encoder(row)
            except RowError as exc:
                self.skipped += 1
                log.warning("skipping row: %s", exc)

    def state_dict(self) -> dict[str, Any]:
        return self.rows.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rows.load_state_dict(state)

    def set_epoch(self, epoch: int) -> None:
        self.rows.set_epoch(epoch)


class _Collate:
    def __init__(self, pad_id: int, packing: bool = False, capacity: int = 0, multiple: int = 1) -> None:
        self.pad_id = pad_id
        self.packing = packing
        self.capacity = capacity
        self.multiple = multiple

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if self.packing:
            return pack(examples, self.pad_id, self.capacity, self.multiple)
        return collate(examples, self.pad_id, self.multiple)


def make_loader(mixture: Path, encoder: SampleEncoder, *, batch_size: int, num_workers: int, seed: int,
                shuffle: bool = True, packing: bool = False, pad_to_multiple: int = 1):
    """A resumable loader (torchdata's StatefulDataLoader) over the mixture; returns (loader, stream)."""
    from torchdata.stateful_dataloader import StatefulDataLoader

    distributed = is_distributed()
    # batch_size sets the loader's worker blocks (same order for any num_workers); under DDP every
    # rank must run the same number of steps, so the epoch's remainder is dropped.
    rows = MixtureDataset(mixture, seed=seed, shuffle=shuffle, decode_images=False, batch_size=batch_size,
                          remainder="drop" if distributed else None)
    stream = EncodedStream(rows, encoder)
    # packed rows hold up to max_length tokens (rounded up to the multiple, so a full row is one bucket)
    collate_fn = _Collate(encoder.tokenizer.pad_token_id, packing, round_up(encoder.max_length, pad_to_multiple),
                          pad_to_multiple)
    loader = StatefulDataLoader(
        stream, batch_size=batch_size, num_workers=num_workers, collate_fn=collate_fn,
        drop_last=True, pin_memory=torch.cuda.is_available(), persistent_workers=False,
        # The loader's own generator: creating an iterator must not consume the global RNG that
        # dropout uses, or a resumed run would diverge from an uninterrupted one.
        generator=torch.Generator().manual_seed(seed),
        **({"prefetch_factor": 4} if num_workers else {}))
    return loader, stream
