"""Trainer throughput: tokens/s, peak GPU memory and MFU of the real training step on synthetic batches.

    python benchmarks/train_throughput.py --config openmedq-7b --random-init          # one H100, bf16
    python benchmarks/train_throughput.py --config openmedq-7b --random-init --grad-ckpt off
    python benchmarks/train_throughput.py --config tiny                               # CPU, seconds

`--random-init` builds ViT-B/16 + LLaMA-2-7B from their configs (no download); the step is the
trainer's own `train_step` (same autocast, loss, clipping, AdamW), so the numbers are the trainer's.
Batches are synthetic: per sample BOS + 196 visual tokens (when it has an image) + `--text-len`
text tokens, of which the last `--answer-len` carry labels. No data loading is timed.

FLOPs per optimizer step (what MFU counts; multiply-add = 2 FLOPs). "6 N per token" is wrong here:
it assumes every weight gets a weight gradient, but the 7B base is frozen. With T tokens in the
step, A answer tokens, B samples of length S, I images of P ViT tokens (patches + CLS):

    LLM linear layers, frozen (N_body params)   forward 2·N_body·T + input-grad backward 2·N_body·T
    LoRA adapters (N_lora)                      forward 2·N_lora·T + backward 4·N_lora·T
    LLM attention, causal (L layers, width d)   forward 2·L·d·S²·B + backward 4·L·d·S²·B
    LM head (d·V), answer positions only        forward 2·d·V·A + input-grad backward 2·d·V·A
    ViT, fully trained (N_vit)                  6·N_vit·P·I + attention 12·L_v·d_v·P²·I
    projector (N_proj), per visual token        6·N_proj·I·n_visual

MFU = those FLOPs / step time / peak dense bf16 FLOP/s (H100 SXM 989 TFLOP/s; `--peak-tflops`
overrides). Gradient checkpointing recomputes the LLM forward (2·N_body·T + 2·N_lora·T + the
attention forward): counted in HFU (hardware FLOPs), not in MFU.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from trainer.config import Config, load_config
from trainer.language import build_tokenizer, train_bpe
from trainer.model import VLM, build_vlm, mark_trainable
from trainer.prompts import IGNORE_INDEX, IMAGE_TOKEN_ID
from trainer.train import init_distributed, lr_factor, make_optimizer, train_step, wrap

PEAK_BF16_TFLOPS = {"H100 PCIe": 756.0, "H100": 989.4, "H200": 989.4, "A100": 312.0, "L40S": 362.0, "A10": 125.0}


def synthetic_batch(batch_size: int, text_len: int, answer_len: int, image_frac: float, n_visual: int,
                    vocab: int, image_size: tuple[int, int], generator: torch.Generator) -> dict[str, Any]:
    """A collated batch shaped like real ones: the first round(B·image_frac) samples carry an image."""
    n_images = round(batch_size * image_frac)
    width = 1 + n_visual + text_len
    input_ids = torch.zeros(batch_size, width, dtype=torch.long)
    labels = torch.full_like(input_ids, IGNORE_INDEX)
    mask = torch.zeros_like(input_ids)
    for i in range(batch_size):
        visual = [IMAGE_TOKEN_ID] * n_visual if i < n_images else []
        text = torch.randint(4, vocab, (text_len,), generator=generator).tolist()
        ids = [1] + visual + text
        input_ids[i, :len(ids)] = torch.tensor(ids)
        labels[i, len(ids) - answer_len:len(ids)] = torch.tensor(ids[-answer_len:])
        mask[i, :len(ids)] = 1
    pixels = torch.randn(n_images, 3, *image_size, generator=generator) if n_images else None
    return {"input_ids": input_ids, "labels": labels, "attention_mask": mask, "pixel_values": pixels}


def step_flops(model: VLM, batch: dict[str, Any], gradient_checkpointing: bool) -> tuple[float, float]:
    """(model FLOPs, hardware FLOPs) of one optimizer step on `batch`: the formula in the module doc."""
    llm = model.llm.get_base_model()
    cfg = llm.config
    body = llm.get_decoder()
    n_body = sum(p.numel() for n, p in body.named_parameters() if "lora_" not in n and "embed_tokens" not in n)
    n_lora = sum(p.numel() for n, p in model.llm.named_parameters() if "lora_" in n)
    d, vocab, layers = cfg.hidden_size, cfg.vocab_size, cfg.num_hidden_layers
    lengths = batch["attention_mask"].sum(1).double()
    tokens = float(lengths.sum())
    answers = float((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
    attn_fwd = 2 * layers * d * float((lengths ** 2).sum())
    llm_flops = 4 * n_body * tokens + 6 * n_lora * tokens + 3 * attn_fwd + 4 * d * vocab * answers
    images = 0 if batch["pixel_values"] is None else batch["pixel_values"].shape[0]
    vcfg = model.vision.encoder.config
    n_vit = sum(p.numel() for p in model.vision.parameters())
    patches = (vcfg.image_size // vcfg.patch_size) ** 2 + 1
    vit_flops = images * (6 * n_vit * patches + 12 * vcfg.num_hidden_layers * vcfg.hidden_size * patches ** 2)
    proj_flops = 6 * sum(p.numel() for p in model.projector.parameters()) * images * model.n_visual
    model_flops = llm_flops + vit_flops + proj_flops
    recompute = (2 * n_body * tokens + 2 * n_lora * tokens + attn_fwd) if gradient_checkpointing else 0.0
    return model_flops, model_flops + recompute


def peak_tflops(device: torch.device, override: float | None) -> float | None:
    if override:
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


def run(cfg: Config, *, steps: int, warmup: int, text_len: int, answer_len: int, image_frac: float,
        peak: float | None) -> dict[str, Any]:
    rank, world, device = init_distributed()
    peak = peak_tflops(device, peak)  # by GPU name unless --peak-tflops overrides
    t = cfg.train
    torch.manual_seed(t.seed)
    if cfg.model.random_init:  # synthetic ids need no real vocabulary, only the LLM's vocab_size
        cfg.model.llm_config.setdefault("vocab_size", cfg.model.tokenizer_vocab_size)
        tokenizer = train_bpe(["synthetic benchmark text"], 300)
    else:
        tokenizer = build_tokenizer(cfg.model)
    t0 = time.perf_counter()
    model = build_vlm(cfg.model, tokenizer, gradient_checkpointing=t.gradient_checkpointing, device=device)
    counts = mark_trainable(model, t.trainable)
    build_s = time.perf_counter() - t0
    wrapped = wrap(model, t.strategy, device)
    optimizer = make_optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, t.warmup_steps, t.steps,
                                                                                 t.min_lr_ratio))
    params = [p for p in model.parameters() if p.requires_grad]
    bf16 = t.precision == "bf16" or (t.precision == "auto" and device.type == "cuda")
    vocab = model.llm.get_input_embeddings().num_embeddings
    gen = torch.Generator().manual_seed(t.seed + rank)
    size = (model.processor.height, model.processor.width)
    batches = [[synthetic_batch(t.batch_size, text_len, answer_len, image_frac, model.n_visual, vocab, size, gen)
                for _ in range(t.grad_accum)] for _ in range(2)]
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def step(i: int) -> torch.Tensor:
        loss, _, _ = train_step(wrapped, batches[i % 2], optimizer=optimizer, scheduler=scheduler, params=params,
                                device=device, bf16=bf16, world=world, grad_clip=t.grad_clip)
        return loss

    for i in range(warmup):
        step(i)
    sync()
    start = time.perf_counter()
    for i in range(steps):
        loss = step(i)
    final_loss = float(loss)
    sync()
    elapsed = time.perf_counter() - start
    step_s = elapsed / steps
    tokens = sum(int(b["attention_mask"].sum()) for b in batches[0]) * world
    model_flops, hw_flops = (f * world for f in step_flops(model, _merge(batches[0]), t.gradient_checkpointing))
    peak_flops = peak * 1e12 * world if peak else None
    return {
        "config": cfg.name, "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "world_size": world, "precision": "bf16 autocast" if bf16 else "fp32",
        "gradient_checkpointing": t.gradient_checkpointing, "batch_size": t.batch_size, "grad_accum": t.grad_accum,
        "seq_len": int(batches[0][0]["attention_mask"].shape[1]), "visual_tokens": model.n_visual,
        "image_frac": image_frac, "answer_len": answer_len, "trainable": counts,
        "build_s": round(build_s, 2), "steps": steps, "step_s": step_s, "tokens_per_s": tokens / step_s,
        "samples_per_s": t.batch_size * t.grad_accum * world / step_s,
        "peak_gpu_mem_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
        "model_tflop_per_step": model_flops / 1e12, "mfu": model_flops / step_s / peak_flops if peak_flops else None,
        "hfu": hw_flops / step_s / peak_flops if peak_flops else None, "peak_tflops_per_device": peak,
        "final_loss": final_loss,
    }


def _merge(micro: list[dict[str, Any]]) -> dict[str, Any]:
    pixels = [b["pixel_values"] for b in micro if b["pixel_values"] is not None]
    return {"attention_mask": torch.cat([b["attention_mask"] for b in micro]),
            "labels": torch.cat([b["labels"] for b in micro]),
            "pixel_values": torch.cat(pixels) if pixels else None}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="tiny", help="preset (tiny, openmedq-7b) or YAML file")
    parser.add_argument("--random-init", action="store_true", help="build from configs only: no download")
    parser.add_argument("--steps", type=int, default=10, help="timed optimizer steps")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (allocator, kernels)")
    parser.add_argument("--batch-size", type=int, default=None, help="per-device micro-batch (train.batch_size)")
    parser.add_argument("--grad-accum", type=int, default=None)
    parser.add_argument("--grad-ckpt", choices=["on", "off"], default=None, help="gradient checkpointing on the LLM")
    parser.add_argument("--text-len", type=int, default=128, help="text tokens per sample (prompt + answer)")
    parser.add_argument("--answer-len", type=int, default=32, help="labelled tokens per sample")
    parser.add_argument("--image-frac", type=float, default=1.0, help="share of samples with an image")
    parser.add_argument("--peak-tflops", type=float, default=None, help="device peak for MFU (default: by GPU name)")
    parser.add_argument("--json", type=Path, default=None, help="also write the result here")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (CPU runs on shared machines)")
    parser.add_argument("overrides", nargs="*", help="trainer config key=value overrides")
    args = parser.parse_args(argv)
    overrides = list(args.overrides)
    if args.random_init:
        overrides.append("model.random_init=true")
    for key, value in (("train.batch_size", args.batch_size), ("train.grad_accum", args.grad_accum)):
        if value is not None:
            overrides.append(f"{key}={value}")
    if args.grad_ckpt:
        overrides.append(f"train.gradient_checkpointing={'true' if args.grad_ckpt == 'on' else 'false'}")
    if not 0 < args.answer_len <= args.text_len:
        parser.error("--answer-len must be between 1 and --text-len")
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_config(args.config, overrides)
    result = run(cfg, steps=args.steps, warmup=args.warmup, text_len=args.text_len, answer_len=args.answer_len,
                 image_frac=args.image_frac, peak=args.peak_tflops)
    if not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0:
        _report(result)
        if args.json:
            args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


def _report(r: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"trainer throughput: {r['config']} on {r['device']} x{r['world_size']}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    pct = lambda v: "n/a (no peak FLOP/s for this device)" if v is None else f"{100 * v:.1f}%"
    rows = [("precision", r["precision"]), ("gradient checkpointing", str(r["gradient_checkpointing"])),
            ("batch x accum, seq len", f"{r['batch_size']} x {r['grad_accum']}, {r['seq_len']}"),
            ("trainable params", ", ".join(f"{k} {v:,}" for k, v in r["trainable"].items())),
            ("step time", f"{r['step_s'] * 1000:.1f} ms"), ("tokens/s", f"{r['tokens_per_s']:,.0f}"),
            ("samples/s", f"{r['samples_per_s']:,.2f}"),
            ("peak GPU memory", "n/a (CPU)" if r["peak_gpu_mem_gib"] is None else f"{r['peak_gpu_mem_gib']:.1f} GiB"),
            ("model TFLOP / step", f"{r['model_tflop_per_step']:.4g}"), ("MFU", pct(r["mfu"])), ("HFU", pct(r["hfu"]))]
    for name, value in rows:
        table.add_row(name, value)
    Console().print(table)


if __name__ == "__main__":
    main()
