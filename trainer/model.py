"""The VLM: vision tower → projector → visual tokens spliced into the LLM's input embeddings.

Images enter where the prompt has `<image>`: collation writes `n_visual` copies of the sentinel id
`IMAGE_TOKEN_ID` there (LLaVA's trick: a negative id, so the LLM's vocabulary and embedding matrix
are never resized and stay frozen), and `embed` overwrites those positions with projected patch
features, in batch order. Text-only rows carry no sentinel and cost no vision compute.

The loss is computed only where labels are set (answer tokens), and the LM head runs only on
those positions: for a 32k vocabulary that avoids materialising [batch, seq, vocab] logits.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from medmix.core.distributed import is_distributed
from trainer.config import TRAINABLE_PARTS, Config, ConfigError, ModelConfig
from trainer.data import encode_prompt
from trainer.language import build_llm, build_tokenizer
from trainer.liger import apply_liger
from trainer.lora_fast import install as install_lora_fast
from trainer.packing import block_causal_mask
from trainer.projector import Projector
from trainer.prompts import IGNORE_INDEX, IMAGE_TOKEN_ID
from trainer.vision import ImageProcessor, VisionTower, build_vision

log = logging.getLogger(__name__)


class VLM(nn.Module):
    def __init__(self, vision: VisionTower, projector: Projector, llm: nn.Module, tokenizer: Any,
                 processor: ImageProcessor, cfg: ModelConfig) -> None:
        super().__init__()
        self.vision = vision
        self.projector = projector
        self.llm = llm  # a peft.PeftModel around the causal LM
        self.tokenizer = tokenizer
        self.processor = processor
        self.cfg = cfg
        self.n_visual = vision.num_tokens(processor)

    # -- training ---------------------------------------------------------------------------------
    def embed(self, input_ids: torch.Tensor, pixel_values: torch.Tensor | None) -> torch.Tensor:
        is_image = input_ids == IMAGE_TOKEN_ID
        embeds = self.llm.get_input_embeddings()(input_ids.masked_fill(is_image, 0))
        n_slots = int(is_image.sum())
        if pixel_values is None or pixel_values.shape[0] == 0:
            if n_slots:
                raise ValueError(f"batch has {n_slots} image slots but no images")
            return embeds
        visual = self.projector(self.vision(pixel_values.to(self.projector.fc1.weight.dtype)))
        if visual.shape[0] * visual.shape[1] != n_slots:
            raise ValueError(f"batch has {n_slots} image slots for {visual.shape[0]} images of "
                             f"{visual.shape[1]} tokens")
        return embeds.masked_scatter(is_image.unsqueeze(-1), visual.to(embeds.dtype))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor,
                pixel_values: torch.Tensor | None = None, position_ids: torch.Tensor | None = None,
                sample_index: torch.Tensor | None = None, reduction: str = "sum") -> torch.Tensor:
        """Sum of the answer tokens' cross-entropy (the caller divides by the global token count,
        so gradient accumulation and data parallelism weight every answer token equally).

        A packed batch (`trainer.packing`) brings `position_ids` and `sample_index`; attention is
        then block-diagonal per sample. `reduction="none"` gives the per-token losses, in row-major
        order of the labelled positions (tests compare them per sample)."""
        embeds = self.embed(input_ids, pixel_values)
        if (pixel_values is None or pixel_values.shape[0] == 0) and is_distributed():
            # Every rank must touch the same parameters each step (DDP/FSDP reducers expect it):
            # a text-only micro-batch runs one blank image through vision+projector at zero weight.
            blank = torch.zeros(1, 3, self.processor.height, self.processor.width, device=embeds.device)
            embeds = embeds + 0.0 * self.projector(self.vision(blank)).sum().to(embeds.dtype)
        if sample_index is not None:
            attention_mask = block_causal_mask(sample_index)
        causal_lm = self.llm.get_base_model()
        hidden = causal_lm.get_decoder()(inputs_embeds=embeds, attention_mask=attention_mask,
                                         position_ids=position_ids, use_cache=False).last_hidden_state
        targets = labels[:, 1:]
        keep = targets != IGNORE_INDEX
        logits = causal_lm.get_output_embeddings()(hidden[:, :-1][keep])
        return F.cross_entropy(logits.float(), targets[keep], reduction=reduction)

    # -- inference --------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, images: Sequence[Image.Image | None], prompts: Sequence[str | Mapping[str, Any]],
                 max_new_tokens: int = 32, streamer: Any = None) -> list[str]:
        """Greedy answers, one per (image, prompt). A prompt is a question string (rendered as a
        `vqa` row, or `qa` when its image is None) or a schema-like row dict (task, question,
        options, context), rendered with the same templates as training. `streamer` (a transformers
        streamer, batch of one) hears each token as it is decoded: `medmix demo` shows the answer
        growing, and its final text is still this return value, so it equals `medmix eval vqa`'s."""
        if len(images) != len(prompts):
            raise ValueError(f"{len(images)} images for {len(prompts)} prompts")
        device = self.projector.fc1.weight.device
        was_training = self.training
        self.eval()
        try:
            encoded = [encode_prompt(self, image, prompt) for image, prompt in zip(images, prompts)]
            width = max(len(ids) for ids, _ in encoded)
            pad = self.tokenizer.pad_token_id
            # Left padding: every prompt ends at the same position, where generation starts.
            input_ids = torch.tensor([[pad] * (width - len(ids)) + ids for ids, _ in encoded], device=device)
            mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids, _ in encoded], device=device)
            pixels = [p for _, p in encoded if p is not None]
            pixel_values = torch.stack(pixels).to(device) if pixels else None
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                embeds = self.embed(input_ids, pixel_values)
                out = self.llm.generate(inputs_embeds=embeds, attention_mask=mask, max_new_tokens=max_new_tokens,
                                        do_sample=False, num_beams=1, pad_token_id=pad, use_cache=True,
                                        eos_token_id=self.tokenizer.eos_token_id, streamer=streamer)
        finally:
            self.train(was_training)
        return [text.strip() for text in self.tokenizer.batch_decode(out, skip_special_tokens=True)]


def build_vlm(cfg: ModelConfig, tokenizer: Any, *, vision_source: Path | None = None,
              llm_source: Path | None = None, gradient_checkpointing: bool = False,
              device: torch.device | str = "cpu") -> VLM:
    """Assemble the model (fresh, or from a checkpoint's `vision/` and `llm_base/` folders)."""
    vision, processor = build_vision(cfg, vision_source)
    llm = build_llm(cfg, tokenizer, source=llm_source, gradient_checkpointing=gradient_checkpointing, device=device)
    changed = install_lora_fast(llm, cast_input=cfg.lora_cast_input, fused_add=cfg.lora_fused_add)
    if changed:
        log.debug("fast LoRA forward on %d layers (cast_input=%s, fused_add=%s)", changed, cfg.lora_cast_input,
                  cfg.lora_fused_add)
    if cfg.liger:
        apply_liger(llm.get_base_model(), device)
    llm_dim = llm.get_input_embeddings().embedding_dim
    projector = Projector(vision.hidden_size, llm_dim, cfg.projector_hidden)
    vision.to(device)
    projector.to(device)
    return VLM(vision, projector, llm, tokenizer, processor, cfg)


def mark_trainable(model: VLM, parts: Sequence[str]) -> dict[str, int]:
    """Apply `train.trainable` — the one switch for what trains — and return counts per part.

    Vision parameters that cannot get a gradient (a pooler or a final norm that the chosen
    feature layer skips) are left frozen: found by one probe backward pass, so it works for any
    encoder without a list of names.
    """
    unknown = set(parts) - set(TRAINABLE_PARTS)
    if unknown:
        raise ConfigError(f"unknown trainable part(s) {sorted(unknown)}")
    for param in model.parameters():
        param.requires_grad_(False)
    for param in model.projector.parameters():
        param.requires_grad_("projector" in parts)
    for name, param in model.llm.named_parameters():
        param.requires_grad_("lora" in parts and "lora_" in name)
    if "vision" in parts:
        for param in model.vision.parameters():
            param.requires_grad_(True)
        unused = _unused_vision_params(model)
        for name in unused:
            model.vision.get_parameter(name).requires_grad_(False)
        if unused:
            log.info("vision parameters outside the feature path stay frozen: %s", ", ".join(unused))
    counts = {
        "vision": sum(p.numel() for p in model.vision.parameters() if p.requires_grad),
        "projector": sum(p.numel() for p in model.projector.parameters() if p.requires_grad),
        "lora": sum(p.numel() for p in model.llm.parameters() if p.requires_grad),
        "frozen": sum(p.numel() for p in model.parameters() if not p.requires_grad),
    }
    return counts


def _unused_vision_params(model: VLM) -> list[str]:
    tower = model.vision
    device = next(tower.parameters()).device
    probe = torch.zeros(1, 3, model.processor.height, model.processor.width, device=device)
    was_training = tower.training
    tower.eval()
    tower.zero_grad(set_to_none=True)
    tower(probe).float().pow(2).sum().backward()
    tower.train(was_training)
    unused = [name for name, p in tower.named_parameters() if p.requires_grad and p.grad is None]
    tower.zero_grad(set_to_none=True)
    return unused


def load_vlm(ckpt_dir: str | Path, device: torch.device | str = "cpu") -> VLM:
    """The full trained VLM from a checkpoint folder, in eval mode, ready for `generate`."""
    from trainer.checkpoint import load_weights, resolve_checkpoint

    ckpt = resolve_checkpoint(Path(ckpt_dir))
    cfg = Config.from_dict(json.loads((ckpt / "config.json").read_text()))
    tokenizer = build_tokenizer(cfg.model, source=ckpt / "tokenizer")
    llm_base = ckpt / "llm_base"
    model = build_vlm(cfg.model, tokenizer, vision_source=ckpt / "vision",
                      llm_source=llm_base if llm_base.is_dir() else None, device=device)
    load_weights(model, ckpt)
    return model.eval()
