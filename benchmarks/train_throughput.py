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

This is litgpt's LoRA count (`litgpt/utils.py` `estimate_flops`: trainable parameters 3 x 2N,
"forward + backward + gradients"; frozen ones 2 x 2N, "forward + backward"), and, per issue 16, the
count behind NeMo AutoModel's 40.6% for Llama-3-8B LoRA on one H100 (`docs/performance-summary.mdx`),
so the MFU figures compare directly. (litgpt's attention term, 4·L·d·S² per sequence and pass, is
added per parameter group and assumes every sequence is max_seq_length long; ours is per sample.)

Lengths: `--lengths fixed` (the default) gives every sample the same length; `--lengths real`
samples (has image, text length, answer length) per sample from a mixture's length statistics
(`--lengths-from`: a `medmix stats --json` file, or a mixture folder whose stats are computed on
the fly), collated by the trainer's own `collate` (or `pack` with `train.packing=true`);
`--lengths both` runs both on the same model. **Padded MFU** counts every position of the batch
tensor as a token (pad included: what the GPU computed); **effective MFU** counts real tokens only
(attention per sample: L² each), so padding is lost work. `--profile DIR` profiles two extra
steps after timing and writes the top kernels by time and the share of elementwise kernels.

MFU = those FLOPs / step time / peak dense bf16 FLOP/s (H100 SXM 989 TFLOP/s; `--peak-tflops`
overrides). Gradient checkpointing recomputes the LLM forward (2·N_body·T + 2·N_lora·T + the
attention forward): counted in HFU (hardware FLOPs), not in MFU.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from trainer.config import Config, load_config
from trainer.data import collate
from trainer.language import build_tokenizer, train_bpe
from trainer.model import VLM, build_vlm, mark_trainable
from trainer.packing import pack, round_up
from trainer.prompts import IGNORE_INDEX, IMAGE_TOKEN_ID
from trainer.train import compile_model, init_distributed, lr_factor, make_optimizer, train_step, wrap

CHARS_PER_TOKEN = 4.0  # stats without `--tokenizer` count characters; ~4 per LLaMA token for English text
TEMPLATE_TOKENS = 8  # BOS, "Question: ", "\nAnswer:", EOS and newlines around the fields
IMAGE_TASKS = ("caption", "vqa", "classification")  # tasks whose rows always carry an image
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


class LengthSampler:
    """Per-sample (has_image, text tokens, answer tokens) drawn from `medmix stats --json` figures.

    A task is drawn by its row count; each text field's length from that task's histogram
    (uniform within a bin); token counts come from `text.tokens` when the stats were made with
    `--tokenizer`, else from characters / CHARS_PER_TOKEN. Rows of IMAGE_TASKS carry an image; the
    remaining image rows are spread evenly over the other tasks. Fields are drawn independently
    (the stats keep no joint distribution): an approximation of the mixture, stated as such."""

    def __init__(self, stats: dict[str, Any], seed: int = 0) -> None:
        import numpy as np

        self.rng = np.random.default_rng(seed)
        text = stats["text"]
        self.per_char = "tokens" not in text
        self.fields = text.get("tokens") or text["chars"]
        by_task = {t: n for t, n in stats["rows"]["by_task"].items() if t in self.fields}
        if not by_task:
            raise ValueError("the stats have no text lengths per task; run `medmix stats MIXTURE --json` on a mixture")
        self.tasks = list(by_task)
        total = sum(by_task.values())
        self.task_p = [by_task[t] / total for t in self.tasks]
        image_rows = stats["images"]["rows"] - sum(n for t, n in by_task.items() if t in IMAGE_TASKS)
        other = sum(n for t, n in by_task.items() if t not in IMAGE_TASKS)
        self.other_image_p = min(1.0, max(0.0, image_rows / other)) if other else 0.0

    def _field(self, summary: dict[str, Any]) -> int:
        hist = summary.get("histogram")
        if not hist:
            return 0
        counts = hist["counts"]
        i = self.rng.choice(len(counts), p=[c / sum(counts) for c in counts])
        lo, hi = hist["edges"][i], hist["edges"][i + 1]
        value = int(self.rng.integers(lo, max(hi, lo + 1)))
        return max(1, round(value / CHARS_PER_TOKEN)) if self.per_char and value else value

    def sample(self) -> tuple[bool, int, int]:
        task = self.tasks[self.rng.choice(len(self.tasks), p=self.task_p)]
        fields = self.fields[task]
        lengths = {name: self._field(summary) for name, summary in fields.items()}
        answer = max(1, lengths.get("answer", 1)) + 1  # + EOS, which is labelled too
        text = TEMPLATE_TOKENS + sum(n for name, n in lengths.items() if name != "answer") + answer
        image = task in IMAGE_TASKS or bool(self.rng.random() < self.other_image_p)
        return image, text, answer


def load_length_stats(source: Path) -> dict[str, Any]:
    """A `medmix stats --json` file, or a mixture folder (its stats computed here)."""
    if source.is_dir():
        from medmix.publish.stats import compute_stats

        return compute_stats(source)
    return json.loads(source.read_text())


def real_batch(sampler: LengthSampler, batch_size: int, n_visual: int, vocab: int, image_size: tuple[int, int],
               max_length: int, pad_id: int, packing: bool, multiple: int,
               generator: torch.Generator) -> dict[str, Any]:
    """A micro-batch of sampled lengths, encoded like `data.SampleEncoder` output and collated (or packed)
    by the trainer's own functions. Text beyond max_length is cut (the trainer does the same)."""
    examples = []
    for _ in range(batch_size):
        image, text, answer = sampler.sample()
        visual = n_visual if image else 0
        text = min(text, max_length - 1 - visual)
        answer = min(answer, text)
        ids = [1] + [IMAGE_TOKEN_ID] * visual + torch.randint(4, vocab, (text,), generator=generator).tolist()
        labels = [IGNORE_INDEX] * (len(ids) - answer) + ids[-answer:]
        examples.append({"input_ids": ids, "labels": labels, "id": None,
                         "pixel_values": torch.randn(3, *image_size, generator=generator) if image else None})
    if packing:
        return pack(examples, pad_id, round_up(max_length, multiple), multiple)
    return collate(examples, pad_id, multiple)


def sample_lengths(batch: dict[str, Any]) -> torch.Tensor:
    """Real tokens per sample (packed rows hold several samples)."""
    if "sample_index" in batch:
        index = batch["sample_index"][batch["sample_index"] >= 0]
        return torch.bincount(index).double()
    return batch["attention_mask"].sum(1).double()


def step_flops(model: VLM, batch: dict[str, Any], gradient_checkpointing: bool,
               padded: bool = False) -> tuple[float, float]:
    """(model FLOPs, hardware FLOPs) of one optimizer step on `batch`: the formula in the module doc.
    `padded`: count every position of the batch tensor (each row one sequence of its full width)."""
    llm = model.llm.get_base_model()
    cfg = llm.config
    body = llm.get_decoder()
    n_body = sum(p.numel() for n, p in body.named_parameters() if "lora_" not in n and "embed_tokens" not in n)
    n_lora = sum(p.numel() for n, p in model.llm.named_parameters() if "lora_" in n)
    d, vocab, layers = cfg.hidden_size, cfg.vocab_size, cfg.num_hidden_layers
    rows, width = batch["attention_mask"].shape
    lengths = torch.full((rows,), float(width), dtype=torch.float64) if padded else sample_lengths(batch)
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
        peak: float | None, lengths: str = "fixed", lengths_from: Path | None = None,
        profile: Path | None = None) -> dict[str, Any]:
    """Build once, then time each lengths mode ("fixed", "real" or "both"); one result per mode
    under "modes", the fixed-length one's figures also at the top level (the original report)."""
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
    if t.compile != "off":
        compile_model(model, cfg)
    build_s = time.perf_counter() - t0
    wrapped = wrap(model, t.strategy, device)
    optimizer = make_optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, t.warmup_steps, t.steps,
                                                                                 t.min_lr_ratio))
    params = [p for p in model.parameters() if p.requires_grad]
    bf16 = t.precision == "bf16" or (t.precision == "auto" and device.type == "cuda")
    vocab = model.llm.get_input_embeddings().num_embeddings
    size = (model.processor.height, model.processor.width)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    modes = ["fixed", "real"] if lengths == "both" else [lengths]
    sampler = LengthSampler(load_length_stats(lengths_from), seed=t.seed + rank) if "real" in modes else None
    common = {
        "config": cfg.name, "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "world_size": world, "precision": "bf16 autocast" if bf16 else "fp32",
        "gradient_checkpointing": t.gradient_checkpointing, "batch_size": t.batch_size, "grad_accum": t.grad_accum,
        "visual_tokens": model.n_visual, "answer_len": answer_len, "trainable": counts,
        "fast_paths": {"lora_cast_input": cfg.model.lora_cast_input, "lora_fused_add": cfg.model.lora_fused_add,
                       "liger": cfg.model.liger, "compile": t.compile, "packing": t.packing,
                       "pad_to_multiple": t.pad_to_multiple, "lora_dropout": cfg.model.lora_dropout},
        "build_s": round(build_s, 2), "steps": steps, "peak_tflops_per_device": peak,
    }
    results = {}
    for mode in modes:
        gen = torch.Generator().manual_seed(t.seed + rank)
        if mode == "fixed":
            batches = [[synthetic_batch(t.batch_size, text_len, answer_len, image_frac, model.n_visual, vocab, size,
                                        gen) for _ in range(t.grad_accum)] for _ in range(2)]
        else:
            batches = [[real_batch(sampler, t.batch_size, model.n_visual, vocab, size, t.max_length,
                                   tokenizer.pad_token_id, t.packing, t.pad_to_multiple, gen)
                        for _ in range(t.grad_accum)] for _ in range(2)]
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)

        def step(i: int, batches=batches) -> torch.Tensor:
            loss, _, _ = train_step(wrapped, batches[i % 2], optimizer=optimizer, scheduler=scheduler,
                                    params=params, device=device, bf16=bf16, world=world, grad_clip=t.grad_clip)
            return loss

        first = 0.0
        began = time.perf_counter()
        for i in range(warmup):
            step(i)
            if i == 0:
                sync()
                first = time.perf_counter() - began  # includes compile's cold start when train.compile is on
        sync()
        start = time.perf_counter()
        for i in range(steps):
            loss = step(i)
        final_loss = float(loss)
        sync()
        step_s = (time.perf_counter() - start) / steps
        # the two batches alternate, so both count (their lengths differ in "real" mode)
        micros = [m for b in batches for m in b]
        tokens = sum(int(m["attention_mask"].sum()) for m in micros) / 2 * world
        padded_tokens = sum(m["attention_mask"].numel() for m in micros) / 2 * world
        eff_flops, hw_flops = (sum(step_flops(model, m, t.gradient_checkpointing)[k] for m in micros) / 2 * world
                               for k in (0, 1))
        pad_flops = sum(step_flops(model, m, False, padded=True)[0] for m in micros) / 2 * world
        peak_flops = peak * 1e12 * world if peak else None
        frac = functools.partial(_fraction, step_s=step_s, peak_flops=peak_flops)
        results[mode] = {
            "lengths": mode, "seq_len": int(batches[0][0]["attention_mask"].shape[1]),
            "rows_per_micro_batch": int(batches[0][0]["attention_mask"].shape[0]),
            "first_step_s": round(first, 2), "step_s": step_s, "tokens_per_s": tokens / step_s,
            "padding_share": 1 - tokens / padded_tokens, "samples_per_s": t.batch_size * t.grad_accum * world / step_s,
            "peak_gpu_mem_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
            "model_tflop_per_step": eff_flops / 1e12, "padded_tflop_per_step": pad_flops / 1e12,
            "mfu": frac(pad_flops), "effective_mfu": frac(eff_flops), "hfu": frac(hw_flops + pad_flops - eff_flops),
            "final_loss": final_loss,
        }
        if profile is not None and mode == modes[0]:
            results[mode]["profile"] = profile_steps(step, sync, device, profile)
    top = dict(results[modes[0]])
    if "fixed" in results:  # the original single-mode report: fixed lengths, no padding, mfu == effective
        top = dict(results["fixed"])
    return {**common, **top, "image_frac": image_frac, "modes": results}


def _fraction(flops: float, *, step_s: float, peak_flops: float | None) -> float | None:
    return flops / step_s / peak_flops if peak_flops else None


ELEMENTWISE = ("elementwise", "triton_poi", "copy", "fill", "cast", "where", "mul", "add", "silu", "neg", "cat")
GEMM = ("gemm", "cutlass", "nvjet", "sm90", "sm80", "cublas", "matmul", "addmm", "aten::mm", "aten::bmm",
        "aten::linear")
ATTENTION = ("fmha", "flash", "attention", "efficient")


def kernel_kind(name: str) -> str:
    lower = name.lower()
    for kind, keys in (("attention", ATTENTION), ("gemm", GEMM), ("elementwise", ELEMENTWISE)):
        if any(k in lower for k in keys):
            return kind
    return "other"


def profile_steps(step, sync, device: torch.device, out: Path, n: int = 2) -> dict[str, Any]:
    """Profile `n` more steps; write `profile.txt` (top kernels by time) and return the summary.

    On CUDA the device kernels are ranked by their own time; on CPU, the aten ops by self CPU time.
    "elementwise share" is the time of kernels whose name marks them as pointwise (PyTorch's
    elementwise kernels, inductor's `triton_poi_*`, copies/casts/adds): the memory-bound work
    issue 16 sets out to remove."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for i in range(n):
            step(i)
        sync()
    on_gpu = device.type == "cuda"
    events = prof.key_averages()
    time_of = (lambda e: e.self_device_time_total) if on_gpu else (lambda e: e.self_cpu_time_total)
    rows = [(e.key, time_of(e), e.count) for e in events
            if time_of(e) > 0 and (not on_gpu or e.device_type.name == "CUDA")]
    if on_gpu and not rows:  # a profiler that does not tag kernels by device: every op with device time
        rows = [(e.key, time_of(e), e.count) for e in events if time_of(e) > 0]
    rows.sort(key=lambda r: -r[1])
    total = sum(us for _, us, _ in rows) or 1.0
    by_kind: dict[str, float] = {}
    for name, us, _ in rows:
        by_kind[kernel_kind(name)] = by_kind.get(kernel_kind(name), 0.0) + us
    summary = {"device_time": on_gpu, "steps": n, "total_ms_per_step": total / 1000 / n,
               "share_by_kind": {k: v / total for k, v in sorted(by_kind.items(), key=lambda kv: -kv[1])},
               "top": [{"name": name[:120], "ms_per_step": us / 1000 / n, "share": us / total, "calls": calls,
                        "kind": kernel_kind(name)} for name, us, calls in rows[:25]]}
    out.mkdir(parents=True, exist_ok=True)
    lines = [f"{'device' if on_gpu else 'CPU'} time per step: {summary['total_ms_per_step']:.1f} ms; by kind: "
             + ", ".join(f"{k} {100 * v:.1f}%" for k, v in summary["share_by_kind"].items()), "",
             f"{'share':>6} {'ms/step':>9} {'calls':>6} {'kind':<11} kernel"]
    lines += [f"{100 * r['share']:5.1f}% {r['ms_per_step']:9.2f} {r['calls']:6d} {r['kind']:<11} {r['name']}"
              for r in summary["top"]]
    (out / "profile.txt").write_text("\n".join(lines) + "\n")
    (out / "profile.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


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
    parser.add_argument("--lengths", choices=["fixed", "real", "both"], default="fixed",
                        help="fixed: all samples --text-len; real: drawn from --lengths-from; both: each in turn")
    parser.add_argument("--lengths-from", type=Path, default=None,
                        help="`medmix stats --json` output, or a mixture folder (needed by --lengths real/both)")
    parser.add_argument("--profile", type=Path, default=None, help="profile 2 more steps; write profile.txt/json here")
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
    if args.lengths != "fixed" and args.lengths_from is None:
        parser.error("--lengths real/both needs --lengths-from (a `medmix stats --json` file or a mixture folder)")
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_config(args.config, overrides)
    result = run(cfg, steps=args.steps, warmup=args.warmup, text_len=args.text_len, answer_len=args.answer_len,
                 image_frac=args.image_frac, peak=args.peak_tflops, lengths=args.lengths,
                 lengths_from=args.lengths_from, profile=args.profile)
    if not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0:
        _report(result)
        if args.json:
            args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


def _report(r: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    modes = list(r["modes"].values())
    table = Table(title=f"trainer throughput: {r['config']} on {r['device']} x{r['world_size']}")
    table.add_column("metric")
    for m in modes:
        table.add_column(f"{m['lengths']} lengths", justify="right")

    def pct(v: float | None) -> str:
        return "n/a (no peak FLOP/s)" if v is None else f"{100 * v:.1f}%"

    def mem(v: float | None) -> str:
        return "n/a (CPU)" if v is None else f"{v:.1f} GiB"

    fast = ", ".join(f"{k}={v}" for k, v in r["fast_paths"].items())
    table.add_row("precision, checkpointing", *[f"{r['precision']}, {r['gradient_checkpointing']}"] * len(modes))
    table.add_row("fast paths", *[fast] * len(modes))
    table.add_row("trainable params", *[", ".join(f"{k} {v:,}" for k, v in r["trainable"].items())] * len(modes))
    rows = [("samples x accum", lambda m: f"{r['batch_size']} x {r['grad_accum']}"),
            ("rows x width (first micro-batch)", lambda m: f"{m['rows_per_micro_batch']} x {m['seq_len']}"),
            ("padding share", lambda m: f"{100 * m['padding_share']:.1f}%"),
            ("first step (incl. compile)", lambda m: f"{m['first_step_s']:.1f} s"),
            ("step time", lambda m: f"{m['step_s'] * 1000:.1f} ms"),
            ("tokens/s (real)", lambda m: f"{m['tokens_per_s']:,.0f}"),
            ("samples/s", lambda m: f"{m['samples_per_s']:,.2f}"),
            ("peak GPU memory", lambda m: mem(m["peak_gpu_mem_gib"])),
            ("model TFLOP / step (real)", lambda m: f"{m['model_tflop_per_step']:.4g}"),
            ("MFU (padded)", lambda m: pct(m["mfu"])),
            ("effective MFU (real tokens)", lambda m: pct(m["effective_mfu"])),
            ("HFU", lambda m: pct(m["hfu"]))]
    for name, fn in rows:
        table.add_row(name, *[fn(m) for m in modes])
    Console().print(table)
    for m in modes:
        if "profile" in m:
            shares = ", ".join(f"{k} {100 * v:.1f}%" for k, v in m["profile"]["share_by_kind"].items())
            Console().print(f"profile ({m['lengths']} lengths): {shares}")


if __name__ == "__main__":
    main()
