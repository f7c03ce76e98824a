"""`medmix train`: the typer-facing wrapper around `trainer.train.train`.

Why a plain function: the medmix CLI registers it (`app.command("train")(train_command)`), and
it stays callable from Python and tests without typer's runner.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

import typer

from trainer.config import load_config


def train_command(
    config: Annotated[str, typer.Option(help="preset (tiny, openmedq-7b) or a YAML config file")],
    data: Annotated[Path, typer.Option(help="mixture folder (manifest.json + data/*.parquet)")],
    out: Annotated[Path, typer.Option(help="run folder: checkpoints/, metrics.jsonl, config.json")],
    steps: Annotated[int | None, typer.Option(help="total optimizer steps (sets train.steps)")] = None,
    overrides: Annotated[list[str] | None, typer.Argument(help="key=value, e.g. train.lr=1e-4 lora_r=16")] = None,
    resume: Annotated[bool, typer.Option(help="continue exactly from the run folder's latest checkpoint")] = False,
    stop_after: Annotated[int | None, typer.Option(help="end this run after this global step")] = None,
) -> dict[str, Any]:
    """Train the VLM on a mixture. For several GPUs: torchrun --nproc_per_node N -m trainer.train ..."""
    from trainer.train import train

    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    items = list(overrides or []) + ([f"train.steps={steps}"] if steps is not None else [])
    cfg = load_config(config, items)
    return train(cfg, data, out, resume=resume, stop_after=stop_after)
