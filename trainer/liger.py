"""Liger kernels for the LLM: fused Triton RMSNorm, RoPE and SwiGLU, through Liger's own patch function.

Why Liger and why only these three: they are the memory-bound elementwise chains of a LLaMA layer
(norm: ~5 passes, RoPE: ~6, SwiGLU: 3) that Liger runs as one kernel each (`liger-kernel`,
supports transformers 5). Its fused linear cross-entropy stays off: our LM head already runs on
answer tokens only (`VLM.forward`), so there is no [batch, seq, vocab] tensor for it to save.
LoRA keeps working: Liger's SwiGLU forward calls the layer's own `gate_proj`/`up_proj`/`down_proj`,
which are peft's LoRA modules.

Liger is Triton, which has no CPU backend, so `model.liger=true` on a CPU is refused at build time
rather than failing inside the first forward. Note the patch is partly process-wide: RoPE is
replaced in `transformers.models.llama.modeling_llama`, so every LLaMA built afterwards in the
process uses it too.
"""

from __future__ import annotations

import torch
from torch import nn

from medmix.core.extras import install_command
from trainer.config import ConfigError


def apply_liger(causal_lm: nn.Module, device: torch.device | str) -> None:
    """Patch `causal_lm` (a transformers LlamaForCausalLM) in place; refuses anything but CUDA."""
    device = torch.device(device)
    if device.type != "cuda":
        raise ConfigError(f"model.liger=true needs a CUDA GPU (Liger's kernels are Triton), but the model is on "
                          f"{device.type}; set model.liger=false")
    patch(causal_lm)


def patch(causal_lm: nn.Module) -> None:
    """The patch itself, device-agnostic (split out so a CPU test can check what it replaces)."""
    if getattr(causal_lm.config, "model_type", None) != "llama":
        raise ConfigError(f"model.liger=true is wired for LLaMA only, not {causal_lm.config.model_type!r}; "
                          "set model.liger=false")
    try:
        from liger_kernel.transformers import apply_liger_kernel_to_llama
    except ImportError:
        raise ConfigError(f"model.liger=true needs liger-kernel: {install_command('train')}") from None
    apply_liger_kernel_to_llama(rope=True, rms_norm=True, swiglu=True, cross_entropy=False,
                                fused_linear_cross_entropy=False, model=causal_lm)
