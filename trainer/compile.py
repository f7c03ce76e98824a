"""torch.compile per LLM decoder layer and per ViT block (torchtune's and torchtitan's pattern).

Why per layer, not the whole model: every decoder layer runs the same code, so with
`inline_inbuilt_nn_modules` (torch's default) one compiled graph serves all 32 layers and cold
start is the cost of one layer, not 32; graph breaks in the glue (image splicing, masks, the
answer-only LM head) stay outside compiled code. The gain is fusing each layer's elementwise
chains (norms, RoPE, SwiGLU, residual adds, LoRA glue) into a few kernels: torchtune reports +27%,
torchtitan +15.7% for LLaMA training.

Shapes: a recompile happens for each new input shape that is not marked dynamic. The LLM layers
compile static (`dynamic=False`) when every batch width comes from a few buckets
(`train.pad_to_multiple`, e.g. 128) and the row count is fixed (no packing); otherwise, and for
the ViT (whose batch is the number of images in a micro-batch, which varies), torch's automatic
dynamic mode is used: the first shape compiles static, a second marks the changed dimension
dynamic. The recompile limit is raised to cover the width buckets.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

log = logging.getLogger(__name__)


def vision_blocks(tower: nn.Module) -> nn.ModuleList:
    """The encoder's block list (ViT: `encoder.layer`, CLIP/SigLIP: `encoder.layers`), found by shape."""
    depth = tower.encoder.config.num_hidden_layers
    for module in tower.modules():
        if isinstance(module, nn.ModuleList) and len(module) == depth:
            return module
    raise ValueError(f"no list of {depth} blocks in the vision encoder {type(tower.encoder).__name__}")


def compile_layers(model: nn.Module, *, static_widths: bool, width_buckets: int = 8, backend: str = "inductor",
                   llm_layers: int | None = None) -> int:
    """Compile each decoder layer of `model.llm` and each block of `model.vision` in place.

    `static_widths`: batches come in at most `width_buckets` shapes (pad_to_multiple set, no
    packing), so the LLM layers compile with `dynamic=False`. `llm_layers` limits how many decoder
    layers are compiled (tests). Returns the number of modules compiled; compilation itself happens
    lazily at the first forward (the benchmark reports that cold start)."""
    dynamo = torch._dynamo.config
    # named *_cache_size_limit before torch 2.6
    per_code = "recompile_limit" if hasattr(dynamo, "recompile_limit") else "cache_size_limit"
    total = "accumulated_recompile_limit" if hasattr(dynamo, "accumulated_recompile_limit") \
        else "accumulated_cache_size_limit"
    limit = max(getattr(dynamo, per_code), width_buckets + 4)
    setattr(dynamo, per_code, limit)
    setattr(dynamo, total, max(getattr(dynamo, total), 4 * limit))
    layers = list(model.llm.get_base_model().get_decoder().layers)[:llm_layers]
    for layer in layers:
        layer.compile(backend=backend, dynamic=False if static_widths else None)
    blocks = list(vision_blocks(model.vision))
    for block in blocks:
        block.compile(backend=backend, dynamic=None)
    log.info("torch.compile (%s) on %d decoder layers (%s shapes) and %d vision blocks", backend, len(layers),
             "static" if static_widths else "automatic-dynamic", len(blocks))
    return len(layers) + len(blocks)

