"""The trainer under torchrun with 2 CPU ranks (gloo): DDP, FSDP, and a checkpoint moving between them.

What must hold: the loss logged by 2 ranks equals the loss a single process computes on the union
of their batches (answer tokens weigh the same across ranks), one optimizer step later too (the
gradients were averaged correctly), and a DDP checkpoint resumed under FSDP continues exactly.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_trainer import make_mixture

from trainer.config import load_config
from trainer.data import SampleEncoder, collate
from trainer.language import build_tokenizer
from trainer.model import build_vlm, mark_trainable
from trainer.prompts import IGNORE_INDEX
from trainer.train import lr_factor, make_optimizer

BATCH = 4
COMMON = ["train.progress=false", "train.log_every=1", "train.save_every=2", "train.keep_checkpoints=5",
          f"train.batch_size={BATCH}", "model.lora_dropout=0", "train.num_workers=0"]


def _torchrun(mixture: Path, out: Path, *extra: str) -> dict[int, dict]:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "trainer.train", "--config", "tiny", "--data", str(mixture), "--out", str(out), "--steps", "3",
           *COMMON, *extra]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return {m["step"]: m for m in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())}


def _single_process_losses(mixture: Path, run: Path, steps: int) -> list[float]:
    """What the 2-rank run must log, computed here in one process from the ranks' own row streams."""
    from medmix.loader import MixtureDataset

    cfg = load_config("tiny", COMMON)
    torch.manual_seed(cfg.train.seed)
    tokenizer = build_tokenizer(cfg.model, source=run / "tokenizer")
    model = build_vlm(cfg.model, tokenizer)
    mark_trainable(model, cfg.train.trainable)
    optimizer = make_optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, cfg.train.warmup_steps, cfg.train.steps, cfg.train.min_lr_ratio))
    encoder = SampleEncoder(tokenizer, model.processor, model.n_visual, cfg.train.max_length)
    streams = [iter(MixtureDataset(mixture, seed=cfg.train.seed, decode_images=False, batch_size=BATCH,
                                   remainder="drop", rank=r, world_size=2)) for r in range(2)]
    losses = []
    for _ in range(steps):
        batches = [collate([encoder(next(s)) for _ in range(BATCH)], tokenizer.pad_token_id) for s in streams]
        n = sum(int((b["labels"][:, 1:] != IGNORE_INDEX).sum()) for b in batches)
        total = sum(model(**b) for b in batches) / n
        total.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], cfg.train.grad_clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(total))
    return losses


def test_ddp_matches_one_process_and_its_checkpoint_resumes_exactly_under_fsdp(tmp_path):
    mixture = make_mixture(tmp_path / "mix", n_rows=48)
    ddp = _torchrun(mixture, tmp_path / "ddp")
    assert sorted(ddp) == [1, 2, 3]
    step2 = tmp_path / "ddp" / "checkpoints" / "step-000002"
    assert {p.name for p in step2.glob("rank-*.pt")} == {"rank-00000.pt", "rank-00001.pt"}

    expected = _single_process_losses(mixture, tmp_path / "ddp", steps=2)
    assert [ddp[1]["loss"], ddp[2]["loss"]] == pytest.approx(expected, rel=1e-5)

    # the step-2 checkpoint, resumed with the other strategy, continues as the DDP run did
    fsdp = tmp_path / "fsdp"
    (fsdp / "checkpoints").mkdir(parents=True)
    shutil.copytree(step2, fsdp / "checkpoints" / step2.name)
    (fsdp / "checkpoints" / "latest").write_text(step2.name + "\n")
    resumed = _torchrun(mixture, fsdp, "train.strategy=fsdp", "--resume")
    assert sorted(resumed) == [3]
    assert resumed[3]["loss"] == pytest.approx(ddp[3]["loss"], rel=1e-5)
    assert resumed[3]["tokens_seen"] == ddp[3]["tokens_seen"]
