"""Proxy runs: the bundled trainer, with one tokenizer and one schedule for every variant.

Losses of two variants are comparable only if they are measured in the same tokens: the random-init
configs train a BPE on the mixture they are given, so the ablation trains it ONCE, on the base
mixture, and places it as `RUN/tokenizer` before each run (`trainer.train.train` uses a run
folder's tokenizer when there is one). Steps, batch, seed and schedule are the same for every
variant; the token budget T sets the steps from the base mixture's mean tokens per row.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from medmix.core.layout import manifest_shards, read_manifest
from trainer.config import Config, load_config

TOKEN_SAMPLE_ROWS = 2000  # rows of the base mixture that set the mean tokens per row


def proxy_config(name: str, *, seed: int, steps: int | None = None, overrides: tuple[str, ...] = ()) -> Config:
    """The preset with the ablation's seed and steps; the user's `--set` overrides come last (they apply to
    every variant alike). A proxy saves at its end only, unless `--set train.save_every=N` asks for more."""
    extra = [f"train.seed={seed}", "train.progress=false"]
    if steps is not None:
        extra += [f"train.steps={steps}", f"train.save_every={steps}"]
    return load_config(name, [*extra, *overrides])


class TokenCounter:
    """Tokens a row costs the trainer: BOS/EOS + text tokens + visual tokens, capped at max_length.

    Text is tokenized the way `SampleEncoder` joins it; the template's few words are left out (a
    constant per row), so the count is an estimate within a handful of tokens, the same for every
    variant, and it never decodes an image.
    """

    def __init__(self, tokenizer: Any, n_visual: int, max_length: int) -> None:
        self.tokenizer, self.n_visual, self.max_length = tokenizer, n_visual, max_length

    def __call__(self, row: dict) -> int:
        text = " ".join(filter(None, [row.get("context"), row.get("question"), *(row.get("options") or []),
                                      row.get("answer")]))
        n = len(self.tokenizer(text, add_special_tokens=False)["input_ids"]) + 2
        if row.get("image_hash"):
            n += self.n_visual
        return min(n, self.max_length)


def make_tokenizer(cfg: Config, base_mixture: Path, out: Path):
    """Train (or load, when `out` exists) the one tokenizer every variant uses."""
    from trainer.language import build_tokenizer

    if not (out / "tokenizer_config.json").is_file():
        tmp = out.with_name(out.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        build_tokenizer(cfg.model, base_mixture).save_pretrained(tmp)
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
    return build_tokenizer(cfg.model, source=out)


def n_visual_tokens(cfg: Config) -> int:
    from trainer.vision import build_vision

    tower, processor = build_vision(cfg.model)
    return tower.num_tokens(processor)


def mean_tokens_per_row(mixture: Path, counter: TokenCounter, exclude: set[str]) -> float:
    seen, total = 0, 0
    for shard in manifest_shards(mixture, read_manifest(mixture)):
        cols = ["id", "question", "options", "answer", "context", "image_hash"]
        for row in pq.read_table(shard.path, columns=cols).to_pylist():
            if row["id"].split("#", 1)[0] in exclude:
                continue
            total += counter(row)
            seen += 1
            if seen >= TOKEN_SAMPLE_ROWS:
                return total / seen
    return total / max(seen, 1)


def steps_for_budget(budget: int, cfg: Config, tokens_per_row: float) -> int:
    rows_per_step = cfg.train.batch_size * cfg.train.grad_accum
    return max(1, math.ceil(budget / (rows_per_step * tokens_per_row)))


def train_proxy(cfg: Config, subset: Path, run: Path, tokenizer_dir: Path) -> dict[str, Any]:
    """Train one proxy; a run killed mid-way resumes from its last checkpoint (the trainer's own resume)."""
    from trainer.train import train

    run.mkdir(parents=True, exist_ok=True)
    if not (run / "tokenizer").is_dir():
        shutil.copytree(tokenizer_dir, run / "tokenizer")
    resume = (run / "checkpoints").is_dir()
    train(cfg, subset, run, resume=resume)
    lines = (run / "metrics.jsonl").read_text().splitlines()
    last = json.loads(lines[-1]) if lines else {}
    return {k: last[k] for k in ("step", "loss", "tokens_seen", "tokens_per_s") if k in last}
