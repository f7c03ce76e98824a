"""The language side: tokenizer and causal LM (LLaMA by default) wrapped with peft LoRA.

Why peft and not hand-written LoRA: adapters saved here load with `PeftModel.from_pretrained`
in any downstream tool. The base LLM is frozen; only LoRA matrices train (decided in
`config.TrainConfig.trainable`). Random init (`model.random_init`) builds the same architecture
from `llm_config` and a BPE tokenizer trained on the mixture's own text, so tests and
benchmarks never download anything.
"""

from __future__ import annotations

import glob
import logging
from collections.abc import Iterable, Iterator
from pathlib import Path

import pyarrow.parquet as pq
import torch
from torch import nn

from trainer.config import ConfigError, ModelConfig

log = logging.getLogger(__name__)

SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<unk>"]
_TEMPLATE_TEXT = ("Question: Answer: Context: Options:\n(A) (B) (C) (D) (E) "
                  "Describe the image. What does this image show?")


def build_tokenizer(cfg: ModelConfig, mixture: Path | None = None, source: str | Path | None = None):
    """The tokenizer: from a checkpoint folder (`source`), by name, or trained on the mixture."""
    from transformers import AutoTokenizer

    name = str(source) if source is not None else cfg.tokenizer
    if name == "auto":
        name = "mixture" if cfg.random_init else str(cfg.llm)
    if name == "mixture":
        if mixture is None:
            raise ConfigError("model.tokenizer=mixture needs a mixture to train the tokenizer on")
        tokenizer = train_bpe(mixture_texts(mixture), cfg.tokenizer_vocab_size)
    else:
        tokenizer = AutoTokenizer.from_pretrained(name)
    if tokenizer.pad_token is None:  # LLaMA ships none; padded positions are masked anyway
        tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
    if tokenizer.bos_token_id is None or tokenizer.eos_token_id is None:
        raise ConfigError(f"tokenizer {name!r} needs both a BOS and an EOS token")
    return tokenizer


def train_bpe(texts: Iterable[str], vocab_size: int):
    """A byte-level BPE (no unknown characters possible) trained on `texts`; deterministic for
    the same texts in the same order."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_with_template_text(texts), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>")


def _with_template_text(texts: Iterable[str]) -> Iterator[str]:
    yield _TEMPLATE_TEXT
    yield from texts


def mixture_texts(mixture: Path, limit: int = 200_000) -> Iterator[str]:
    """Text columns of the first `limit` rows, read column-wise (no image bytes touched)."""
    files = sorted(glob.glob(str(Path(mixture) / "data" / "*.parquet")))
    if not files:
        raise ConfigError(f"{mixture}: no data/*.parquet files; is this a medmix mixture folder?")
    seen = 0
    for file in files:
        for batch in pq.ParquetFile(file).iter_batches(columns=["question", "options", "answer", "context"],
                                                       batch_size=4096):
            for row in batch.to_pylist():
                yield " ".join(filter(None, [row["context"], row["question"], *(row["options"] or []),
                                             row["answer"]]))
                seen += 1
                if seen >= limit:
                    return


def build_llm(cfg: ModelConfig, tokenizer, *, source: str | Path | None = None, gradient_checkpointing: bool = False,
              device: torch.device | str = "cpu") -> nn.Module:
    """The causal LM with LoRA adapters attached (a `peft.PeftModel`); base weights frozen."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    dtype = getattr(torch, cfg.llm_dtype)
    if source is None and cfg.random_init:
        kwargs = dict(cfg.llm_config)
        vocab = kwargs.setdefault("vocab_size", len(tokenizer))
        if vocab < len(tokenizer):
            raise ConfigError(f"model.llm_config.vocab_size={vocab} is smaller than the tokenizer ({len(tokenizer)})")
        kwargs.update(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                      pad_token_id=tokenizer.pad_token_id)
        with torch.device(device):
            base = LlamaForCausalLM._from_config(LlamaConfig(**kwargs), dtype=dtype,
                                                 attn_implementation=cfg.attn_implementation)
    else:
        base = AutoModelForCausalLM.from_pretrained(str(source or cfg.llm), dtype=dtype,
                                                    attn_implementation=cfg.attn_implementation).to(device)
        if base.get_input_embeddings().num_embeddings < len(tokenizer):
            raise ConfigError(f"tokenizer has {len(tokenizer)} tokens but the LLM only "
                              f"{base.get_input_embeddings().num_embeddings} embeddings")
    base.config.use_cache = False
    if gradient_checkpointing:
        # Non-reentrant checkpointing works with frozen embeddings and keeps dropout RNG exact.
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=list(cfg.lora_target_modules), bias="none", task_type="CAUSAL_LM")
    return get_peft_model(base, lora)
