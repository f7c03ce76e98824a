"""The modality projector: vision features → LLM embedding space (LLaVA-1.5's 2-layer MLP, GELU).

Why an MLP and not a linear map: LLaVA-1.5 showed the 2-layer MLP aligns better at negligible
cost, and it is what the paper's setup describes. Token count is unchanged (one LLM token per
patch), so a ViT-B/16 at 224 px gives 196 visual tokens.
"""

from __future__ import annotations

import torch
from torch import nn


class Projector(nn.Module):
    def __init__(self, vision_dim: int, llm_dim: int, hidden: int | None = None) -> None:
        super().__init__()
        hidden = hidden or llm_dim
        self.fc1 = nn.Linear(vision_dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, llm_dim)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(features)))
