"""A leaner forward for peft's LoRA Linear layers: no input cast under autocast, scale-and-add fused.

Why: peft keeps LoRA weights in fp32 and, before `lora_A`, casts every layer input to fp32
(`_cast_input_dtype`, peft `tuners/lora/layer.py`); under bf16 autocast `lora_A` casts it straight
back to bf16. Over the 224 LoRA layers of a 7B LLaMA that is two full-size elementwise passes
per layer and an fp32 copy of every input kept alive for backward (~18 GB at batch 24 x 325,
issue 16). Then `result + lora_B(lora_A(x)) * scaling` is two more full-size passes (a multiply,
an add) and one more allocation.

What this does instead, per layer:
- **cast off** (`model.lora_cast_input=false`): the input reaches `lora_A` in the autocast dtype.
  This is peft's own switch, `cast_input_dtype_enabled` (what `peft.helpers.disable_input_dtype_casting`
  flips inside a `with`); it is set once for the model's life, so the forward recomputed by
  gradient checkpointing in backward sees the same setting. Without autocast the cast is kept (an
  fp32 LoRA weight cannot multiply a bf16 input), so fp32 CPU training and `generate` are unaffected.
  Numerically nothing changes: bf16 → fp32 → bf16 is exact, so gradients are bitwise the same
  (tested; with `lora_dropout` > 0 the dropout scale is applied in bf16 instead of fp32).
- **fused add** (`model.lora_fused_add=true`): `lora_B`'s matmul writes into the base output in
  place, `result.addmm_(h, B^T, alpha=scaling)`: one GEMM with cuBLAS's beta=1 epilogue, so the
  [tokens, out] LoRA product is never materialised and there is no separate scale or add kernel.
  Autograd allows it: the base linear does not save its output for backward. The only new cast
  is of `lora_B`'s weight (r x out, tiny) to the compute dtype.

Anything this path does not cover (merged or disabled adapters, several active adapters, DoRA
and other variants, `adapter_names` batches) falls through to peft's own forward.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import nn


@functools.cache
def _fast_class() -> type:
    from peft.tuners.lora import Linear as LoraLinear

    class FastLoraLinear(LoraLinear):
        """peft's `lora.Linear` with `forward` replaced; state dict, saving and merging unchanged."""

        fused_add: bool = True

        def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
            active = [a for a in self.active_adapters if a in self.lora_A]
            if (self.disable_adapters or self.merged or args or kwargs or len(active) != 1
                    or active[0] in self.lora_variant):
                return super().forward(x, *args, **kwargs)
            name = active[0]
            lora_a, lora_b = self.lora_A[name], self.lora_B[name]
            result = self.base_layer(x)
            out_dtype = result.dtype
            h = x
            if x.dtype != lora_a.weight.dtype and (self.cast_input_dtype_enabled
                                                  or not torch.is_autocast_enabled(x.device.type)):
                h = x.to(lora_a.weight.dtype)
            h = lora_a(self.lora_dropout[name](h))
            scaling = self.scaling[name]
            if self.fused_add and result.is_contiguous() and h.dtype == result.dtype:
                flat = result.view(-1, result.shape[-1])
                flat.addmm_(h.reshape(-1, h.shape[-1]), lora_b.weight.to(result.dtype).t(), alpha=scaling)
                return result
            return (result + lora_b(h) * scaling).to(out_dtype)

    return FastLoraLinear


def install(model: nn.Module, *, cast_input: bool, fused_add: bool) -> int:
    """Give every peft LoRA Linear in `model` the fast forward; returns how many were changed.

    With both switches at peft's behaviour (`cast_input=True, fused_add=False`) nothing is
    installed, so peft's forward runs untouched (the A/B baseline)."""
    from peft.tuners.lora import Linear as LoraLinear

    if cast_input and not fused_add:
        return 0
    fast = _fast_class()
    changed = 0
    for module in model.modules():
        if type(module) is LoraLinear or type(module) is fast:
            module.__class__ = fast
            module.cast_input_dtype_enabled = cast_input
            module.fused_add = fused_add
            changed += 1
    return changed
