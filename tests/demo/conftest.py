"""What the demo tests share: a tiny checkpoint trained for two steps on the demo mixture, and one
page serving it for the whole module (starting Gradio and loading the model cost seconds each)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from medmix.pipeline import BuildOptions, build
from medmix.recipe import load_recipe


@pytest.fixture(scope="session")
def trained(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(run folder, mixture, build cache): the demo mixture, and 2 optimizer steps of the tiny preset on it,
    as `medmix train` runs them."""
    from trainer.cli import train_command

    tmp = tmp_path_factory.mktemp("demo-run")
    build(load_recipe("demo"), BuildOptions(out=tmp / "mixture", cache=tmp / "cache"), log=lambda m: None)
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matmuls; a shared 2-core box runs several test processes
    try:
        train_command(config="tiny", data=tmp / "mixture", out=tmp / "run", steps=2,
                      overrides=["train.progress=false", "train.save_every=2"], resume=False)
    finally:
        torch.set_num_threads(before)
    return tmp / "run", tmp / "mixture", tmp / "cache"

