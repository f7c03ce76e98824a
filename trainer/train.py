"""The training loop. `python -m trainer.train --config tiny --data MIX --out RUN [key=value ...]`,
or under torchrun for several GPUs (DDP, or FSDP with train.strategy=fsdp).

Why one plain loop (no Trainer/accelerate): every step is visible here — fetch `grad_accum`
micro-batches, count the answer tokens across them and across ranks, backward each micro-batch's
summed loss divided by that global count (so every answer token weighs the same whatever the
padding, accumulation or world size), clip, step, log, checkpoint.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medmix.core.errors import MedmixError
from trainer.checkpoint import (
    CheckpointError,
    load_training_state,
    load_weights,
    resolve_checkpoint,
    save_checkpoint,
    set_rng_state,
)
from trainer.compile import compile_layers
from trainer.config import Config, dump_json, load_config
from trainer.data import SampleEncoder, make_loader
from trainer.language import build_tokenizer
from trainer.model import VLM, build_vlm, mark_trainable
from trainer.packing import round_up
from trainer.prompts import IGNORE_INDEX

log = logging.getLogger("trainer")


# -- distributed helpers -----------------------------------------------------------------------------
def init_distributed() -> tuple[int, int, torch.device]:
    """(rank, world_size, device); starts the process group when launched by torchrun."""
    if "RANK" not in os.environ:
        return 0, 1, torch.device("cuda" if torch.cuda.is_available() else "cpu")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local) if torch.cuda.is_available() else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)  # before NCCL starts, so each rank binds its own GPU
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return torch.distributed.get_rank(), torch.distributed.get_world_size(), device


def all_sum(value: torch.Tensor) -> torch.Tensor:
    if torch.distributed.is_initialized():
        torch.distributed.all_reduce(value)
    return value


def wrap(model: VLM, strategy: str, device: torch.device) -> nn.Module:
    """DDP (replicated, the default: a LoRA step's gradients are small) or FSDP2 (the LLM's
    decoder layers and the rest sharded, for frozen 7B weights that do not fit replicated)."""
    if not torch.distributed.is_initialized():
        return model
    if strategy == "fsdp":
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        # One compute dtype per unit: LoRA (fp32) and frozen (bf16) weights share decoder layers.
        mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) \
            if device.type == "cuda" else MixedPrecisionPolicy()
        for layer in model.llm.get_base_model().get_decoder().layers:
            fully_shard(layer, mp_policy=mp)
        fully_shard(model, mp_policy=mp)
        return model
    return nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


@contextlib.contextmanager
def no_grad_sync(wrapped: nn.Module, skip: bool):
    """Skip the gradient all-reduce on all but the last micro-batch of a step."""
    if not skip:
        yield
    elif isinstance(wrapped, nn.parallel.DistributedDataParallel):
        with wrapped.no_sync():
            yield
    elif hasattr(wrapped, "set_requires_gradient_sync"):  # FSDP2
        wrapped.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            wrapped.set_requires_gradient_sync(True)
    else:
        yield


def compile_model(model: VLM, cfg: Config) -> int:
    """`train.compile`: per-layer torch.compile, static shapes when widths are bucketed and rows fixed."""
    t = cfg.train
    buckets = round_up(t.max_length, t.pad_to_multiple) // t.pad_to_multiple
    return compile_layers(model, static_widths=t.pad_to_multiple > 1 and not t.packing, width_buckets=buckets,
                          backend=t.compile)


# -- optimisation -----------------------------------------------------------------------------------
def make_optimizer(model: VLM, cfg: Config) -> torch.optim.Optimizer:
    """AdamW; the vision encoder may get its own (usually lower) lr; no decay on biases/norms."""
    t = cfg.train
    groups: dict[tuple[float, float], list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        lr = t.vision_lr if name.startswith("vision.") and t.vision_lr is not None else t.lr
        decay = t.weight_decay if param.ndim >= 2 else 0.0
        groups.setdefault((lr, decay), []).append(param)
    params = [{"params": ps, "lr": lr, "weight_decay": wd} for (lr, wd), ps in groups.items()]
    on_gpu = all(p.is_cuda for group in params for p in group["params"])
    return torch.optim.AdamW(params, betas=tuple(t.betas), fused=on_gpu)


def lr_factor(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """Linear warmup to 1, then cosine to min_ratio at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


# -- the loop ----------------------------------------------------------------------------------------
def train_step(wrapped: nn.Module, micro: list[dict[str, Any]], *, optimizer: torch.optim.Optimizer, scheduler: Any,
               params: list[nn.Parameter], device: torch.device, bf16: bool, world: int,
               grad_clip: float) -> tuple[torch.Tensor, torch.Tensor, int]:
    """One optimizer step over the micro-batches: (global mean answer-token loss, grad norm, tokens).

    Counts come from the CPU copies, so the only host syncs are the ones the caller asks for.
    """
    n_labels = all_sum(torch.tensor(sum(int((b["labels"][:, 1:] != IGNORE_INDEX).sum()) for b in micro),
                                    device=device, dtype=torch.float64))
    tokens = sum(int(b["attention_mask"].sum()) for b in micro) * world
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    for i, batch in enumerate(micro):
        batch = {k: v.to(device, non_blocking=True) if v is not None else None for k, v in batch.items()}
        with no_grad_sync(wrapped, skip=i < len(micro) - 1), \
                torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = wrapped(**batch)
        # DDP/FSDP average gradients over ranks; * world turns that back into a global token mean.
        (loss * world / n_labels).backward()
        loss_sum += loss.detach()
    norm = torch.nn.utils.clip_grad_norm_(params, grad_clip)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return all_sum(loss_sum) / n_labels, norm, tokens


def train(cfg: Config, data: Path, out: Path, *, resume: bool = False,
          stop_after: int | None = None) -> dict[str, Any]:
    """Train `cfg` on the mixture at `data`, writing checkpoints and metrics.jsonl under `out`.

    `resume` continues from `out`'s latest checkpoint (exactly: same losses as never stopping).
    `stop_after` ends this run after that global step (a checkpoint is written there), without
    changing the schedule, which always spans `train.steps`.
    """
    t = cfg.train
    rank, world, device = init_distributed()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt = resolve_checkpoint(out) if resume else None
    if not resume and (out / "checkpoints").is_dir():
        raise CheckpointError(f"{out} already holds checkpoints: pass --resume to continue, or use a new folder")
    torch.manual_seed(t.seed)  # identical initial weights on every rank

    tok_source = ckpt / "tokenizer" if ckpt else (out / "tokenizer" if (out / "tokenizer").is_dir() else None)
    if tok_source is None and rank == 0:
        build_tokenizer(cfg.model, data).save_pretrained(out / "tokenizer")
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
    tokenizer = build_tokenizer(cfg.model, data, source=tok_source or out / "tokenizer")
    base = ckpt / "llm_base" if ckpt and (ckpt / "llm_base").is_dir() else None
    model = build_vlm(cfg.model, tokenizer, vision_source=ckpt / "vision" if ckpt else None, llm_source=base,
                      gradient_checkpointing=t.gradient_checkpointing, device=device)
    if ckpt:
        load_weights(model, ckpt)
        _warn_changed(cfg, ckpt)
    counts = mark_trainable(model, t.trainable)
    if t.compile != "off":
        compile_model(model, cfg)
    wrapped = wrap(model, t.strategy, device)
    optimizer = make_optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, t.warmup_steps, t.steps, t.min_lr_ratio))
    encoder = SampleEncoder(tokenizer, model.processor, model.n_visual, t.max_length)
    loader, stream = make_loader(data, encoder, batch_size=t.batch_size, num_workers=t.num_workers,
                                 seed=t.seed, shuffle=t.shuffle, packing=t.packing,
                                 pad_to_multiple=t.pad_to_multiple)
    state: dict[str, Any] = {"epoch": 0, "tokens_seen": 0}
    rank_state = None
    if ckpt:
        state, rank_state = load_training_state(ckpt, model=model, optimizer=optimizer, scheduler=scheduler)
        loader.load_state_dict(rank_state["loader"])
    stream.set_epoch(state["epoch"])
    batches = iter(loader)
    if rank_state:
        set_rng_state(rank_state["rng"])  # after iter(): nothing below may draw before step 1
    else:
        torch.manual_seed(t.seed + rank)
    start = state.get("step", 0)
    end = min(t.steps, stop_after or t.steps)
    bf16 = t.precision == "bf16" or (t.precision == "auto" and device.type == "cuda")
    if rank == 0:
        dump_json(cfg, out / "config.json")
        _drop_metrics_after(out / "metrics.jsonl", start)
        log.info("trainable parameters (train.trainable=%s): %s", t.trainable,
                 ", ".join(f"{k} {v:,}" for k, v in counts.items()))
        log.info("world %d, device %s, %s, %d visual tokens/image, steps %d→%d of %d", world, device,
                 "bf16 autocast" if bf16 else "fp32", model.n_visual, start, end, t.steps)

    def next_batch() -> dict[str, torch.Tensor]:
        nonlocal batches
        for _ in range(2):
            try:
                return next(batches)
            except StopIteration:
                state["epoch"] += 1
                stream.set_epoch(state["epoch"])
                batches = iter(loader)
        raise MedmixError(f"{data}: the mixture yields less than one batch of {t.batch_size} rows per rank")

    params = [p for p in model.parameters() if p.requires_grad]
    window: dict[str, Any] = {"loss": 0.0, "steps": 0, "tokens": 0, "data": 0.0, "t0": time.perf_counter()}
    metrics = (out / "metrics.jsonl").open("a") if rank == 0 else None
    last: dict[str, Any] = {}
    with _progress(rank == 0 and t.progress, start, end) as progress:
        for step in range(start + 1, end + 1):
            t_data = time.perf_counter()
            micro = [next_batch() for _ in range(t.grad_accum)]
            window["data"] += time.perf_counter() - t_data
            loss, norm, tokens = train_step(wrapped, micro, optimizer=optimizer, scheduler=scheduler, params=params,
                                            device=device, bf16=bf16, world=world, grad_clip=t.grad_clip)
            state["tokens_seen"] += tokens
            window["tokens"] += tokens
            window["loss"] += loss  # a device tensor: no host sync until the log line
            window["steps"] += 1
            if step % t.log_every == 0 or step == end:
                elapsed = time.perf_counter() - window["t0"]
                last = {"step": step, "loss": float(window["loss"]) / window["steps"],
                        "lr": scheduler.get_last_lr()[0],
                        "grad_norm": float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm),
                        "tokens_per_s": window["tokens"] / elapsed, "data_wait": window["data"] / elapsed,
                        "epoch": state["epoch"], "tokens_seen": state["tokens_seen"]}
                if metrics:
                    metrics.write(json.dumps(last) + "\n")
                    metrics.flush()
                window = {"loss": 0.0, "steps": 0, "tokens": 0, "data": 0.0, "t0": time.perf_counter()}
            if progress:
                progress.update(progress.task_ids[0], completed=step - start, **_fields(last))
            if step % t.save_every == 0 or step == end:
                save_checkpoint(out, step, model=model, optimizer=optimizer, scheduler=scheduler, loader=loader,
                                cfg=cfg, state=state)
    if metrics:
        metrics.close()
    if stream.skipped:
        log.warning("rank %d skipped %d unreadable rows", rank, stream.skipped)
    return last


def _drop_metrics_after(path: Path, step: int) -> None:
    """After a crash, steps past the resumed checkpoint were logged once already and will be again."""
    if not path.is_file():
        return
    lines = path.read_text().splitlines()
    kept = [line for line in lines if line.strip() and json.loads(line)["step"] <= step]
    if len(kept) != len(lines):
        path.write_text("".join(line + "\n" for line in kept))


def _warn_changed(cfg: Config, ckpt: Path) -> None:
    """Resuming with other settings is allowed (a longer schedule, a new lr) but never silent."""
    saved = json.loads((ckpt / "config.json").read_text())
    now = cfg.to_dict()
    changed = [f"{section}.{key}: {saved[section].get(key)!r} -> {value!r}"
               for section in ("model", "train") for key, value in now[section].items()
               if saved.get(section, {}).get(key) != value]
    if changed:
        log.warning("resuming %s with changed settings: %s", ckpt, "; ".join(changed))


def _fields(m: dict[str, Any]) -> dict[str, str]:
    if not m:
        return {"info": ""}
    return {"info": f"loss {m['loss']:.4f}  lr {m['lr']:.2e}  {m['tokens_per_s']:,.0f} tok/s  "
                    f"data {100 * m['data_wait']:.0f}%"}


@contextlib.contextmanager
def _progress(enabled: bool, start: int, end: int):
    if not enabled:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("train"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  TextColumn("{task.fields[info]}")) as progress:
        progress.add_task("train", total=end - start, info="")
        yield progress


# -- entry point (torchrun / python -m trainer) ----------------------------------------------------
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m trainer", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="tiny", help="preset (tiny, openmedq-7b) or YAML file")
    parser.add_argument("--data", type=Path, required=True, help="mixture folder (manifest.json + data/)")
    parser.add_argument("--out", type=Path, required=True, help="run folder: checkpoints, metrics.jsonl")
    parser.add_argument("--steps", type=int, default=None, help="total optimizer steps (train.steps)")
    parser.add_argument("--resume", action="store_true", help="continue from the run folder's latest checkpoint")
    parser.add_argument("--stop-after", type=int, default=None, help="end this run after this global step")
    parser.add_argument("overrides", nargs="*", help="key=value, e.g. train.lr=1e-4 model.lora_r=16")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    overrides = list(args.overrides) + ([f"train.steps={args.steps}"] if args.steps else [])
    try:
        cfg = load_config(args.config, overrides)
        train(cfg, args.data, args.out, resume=args.resume, stop_after=args.stop_after)
    except MedmixError as exc:  # a user-fixable problem: its message, not a traceback
        log.error("%s", exc)
        raise SystemExit(2) from None
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
