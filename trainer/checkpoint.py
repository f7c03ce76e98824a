"""Checkpoints that other tools can read, and that resume a run exactly.

Layout of `<out>/checkpoints/step-000120/`:

    config.json              the full trainer config (model + train)
    vision/                  the vision encoder in Hugging Face format + preprocessor_config.json
    projector.safetensors    the MLP projector
    adapter/                 the LoRA adapter in peft format (PeftModel.from_pretrained reads it)
    tokenizer/               the tokenizer (a mixture-trained one cannot be rebuilt elsewhere)
    llm_base/                only for random-init LLMs: their frozen weights, which exist nowhere else
    optimizer.pt             optimizer state keyed by parameter name (DDP/FSDP agnostic)
    trainer_state.json       step, epoch, tokens seen, scheduler state
    rank-00000.pt ...        per rank: RNG states (torch, CUDA, python, numpy) and the loader state

Why this split: evaluation loads `vision/` alone with plain transformers, generation loads the
rest, and nothing needs the 13 GB frozen LLM copied into every checkpoint. A checkpoint is
written to a temporary folder and renamed when complete, then `latest` points at it, so a crash
mid-save never leaves a half checkpoint that resume would pick.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from medmix.core.distributed import is_distributed
from medmix.core.errors import MedmixError
from trainer.config import Config, dump_json

LATEST = "latest"


class CheckpointError(MedmixError):
    """A checkpoint folder is missing, incomplete or does not match the model."""


def _rank() -> int:
    return torch.distributed.get_rank() if is_distributed() else 0


def _barrier() -> None:
    if is_distributed():
        torch.distributed.barrier()


def _full(tensor: torch.Tensor) -> torch.Tensor:
    """A full CPU copy, gathering FSDP shards (DTensor) when needed; collective under FSDP."""
    if hasattr(tensor, "full_tensor"):
        tensor = tensor.full_tensor()
    return tensor.detach().to("cpu", copy=True).contiguous()


def _gather(module: nn.Module, keep=lambda name: True) -> dict[str, torch.Tensor]:
    # Every rank runs the same loop in the same order: under FSDP each full_tensor() is a collective.
    # state_dict (not named_parameters) so non-persistent buffers stay out, as from_pretrained expects.
    return {name: _full(t) for name, t in module.state_dict(keep_vars=True).items() if keep(name)}


def save_checkpoint(out: Path, step: int, *, model: nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: Any, loader: Any, cfg: Config, state: dict[str, Any]) -> Path:
    """Write `<out>/checkpoints/step-<step>` from all ranks; returns its path."""
    from peft import get_peft_model_state_dict
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    root = out / "checkpoints"
    final = root / f"step-{step:06d}"
    tmp = root / f".tmp-step-{step:06d}"
    rank = _rank()
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    _barrier()

    vision = _gather(model.vision.encoder)
    projector = _gather(model.projector)
    lora = _gather(model.llm, lambda n: "lora_" in n)
    base = _gather(model.llm.get_base_model(), lambda n: "lora_" not in n) if cfg.model.random_init else None
    optim = get_optimizer_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True,
                                                                                 cpu_offload=True))
    if rank == 0:
        (tmp / "vision").mkdir()
        model.vision.encoder.config.save_pretrained(tmp / "vision")
        save_file(vision, tmp / "vision" / "model.safetensors", metadata={"format": "pt"})
        model.processor.save(tmp / "vision")
        save_file(projector, tmp / "projector.safetensors")
        (tmp / "adapter").mkdir()
        model.llm.peft_config["default"].save_pretrained(tmp / "adapter")
        save_file(get_peft_model_state_dict(model.llm, state_dict=lora), tmp / "adapter" / "adapter_model.safetensors",
                  metadata={"format": "pt"})
        if base is not None:
            (tmp / "llm_base").mkdir()
            model.llm.get_base_model().config.save_pretrained(tmp / "llm_base")
            plain = {k.replace(".base_layer.", "."): v for k, v in base.items()}
            save_file(plain, tmp / "llm_base" / "model.safetensors", metadata={"format": "pt"})
        model.tokenizer.save_pretrained(tmp / "tokenizer")
        dump_json(cfg, tmp / "config.json")
        torch.save(optim, tmp / "optimizer.pt")
        trainer_state = dict(state, step=step, scheduler=scheduler.state_dict())
        (tmp / "trainer_state.json").write_text(json.dumps(trainer_state, indent=2, sort_keys=True) + "\n")
    torch.save({"rng": _rng_state(), "loader": loader.state_dict()}, tmp / f"rank-{rank:05d}.pt")
    _barrier()
    if rank == 0:
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        (root / (LATEST + ".tmp")).write_text(final.name + "\n")
        (root / (LATEST + ".tmp")).replace(root / LATEST)
        for old in sorted(root.glob("step-*"))[:-max(1, cfg.train.keep_checkpoints)]:
            shutil.rmtree(old, ignore_errors=True)
    _barrier()
    return final


def resolve_checkpoint(path: Path) -> Path:
    """Accept a checkpoint folder, a `checkpoints/` folder, or a run's output folder."""
    path = Path(path)
    for candidate in (path, path / "checkpoints"):
        if (candidate / "config.json").is_file() and (candidate / "adapter").is_dir():
            return candidate
        if (candidate / LATEST).is_file():
            found = candidate / (candidate / LATEST).read_text().strip()
            if not (found / "config.json").is_file():
                raise CheckpointError(f"{candidate / LATEST} points at {found}, which is not a complete checkpoint")
            return found
    raise CheckpointError(f"{path}: no checkpoint here (expected config.json + adapter/, or a 'latest' file)")


def load_weights(model: nn.Module, ckpt: Path) -> None:
    """Load the trained parts (vision, projector, LoRA) into an unwrapped model, strictly."""
    from peft import set_peft_model_state_dict

    try:
        model.vision.encoder.load_state_dict(load_file(ckpt / "vision" / "model.safetensors"), strict=True)
        model.projector.load_state_dict(load_file(ckpt / "projector.safetensors"), strict=True)
        adapter = load_file(ckpt / "adapter" / "adapter_model.safetensors")
    except (FileNotFoundError, RuntimeError) as exc:
        raise CheckpointError(f"{ckpt}: cannot load weights: {exc}") from None
    result = set_peft_model_state_dict(model.llm, adapter)
    missing = [k for k in result.missing_keys if "lora_" in k]
    if missing or result.unexpected_keys:
        raise CheckpointError(f"{ckpt}/adapter does not match the model: missing {missing[:3]}, "
                              f"unexpected {list(result.unexpected_keys)[:3]}")


def load_training_state(ckpt: Path, *, model: nn.Module, optimizer: torch.optim.Optimizer,
                        scheduler: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Restore optimizer and scheduler; return (trainer_state, this rank's {rng, loader})."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    rank_file = ckpt / f"rank-{_rank():05d}.pt"
    if not rank_file.is_file():
        raise CheckpointError(f"{ckpt} has no {rank_file.name}: was it written with a different number of ranks?")
    optim = torch.load(ckpt / "optimizer.pt", map_location="cpu", weights_only=False)
    set_optimizer_state_dict(model, optimizer, optim_state_dict=optim,
                             options=StateDictOptions(full_state_dict=True))
    state = json.loads((ckpt / "trainer_state.json").read_text())
    scheduler.load_state_dict(state.pop("scheduler"))
    return state, torch.load(rank_file, map_location="cpu", weights_only=False)


def load_vision_encoder(ckpt_dir: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """The trained vision encoder alone (a transformers model) and its preprocessor config dict
    (Hugging Face image-processor layout: size, image_mean, image_std, ...)."""
    from trainer.vision import PREPROCESSOR_FILE, build_vision

    ckpt = resolve_checkpoint(Path(ckpt_dir))
    cfg = Config.from_dict(json.loads((ckpt / "config.json").read_text()))
    tower, _ = build_vision(cfg.model, ckpt / "vision")
    return tower.encoder.eval(), json.loads((ckpt / "vision" / PREPROCESSOR_FILE).read_text())


def _rng_state() -> dict[str, Any]:
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    return {"torch": torch.get_rng_state(), "cuda": cuda,
            "python": random.getstate(), "numpy": np.random.get_state()}


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
