"""A constructed mixture whose sources' value is known in advance (the ablation's ground truth).

- `useful`: "What color is <key>?" → a fixed color per key; its held-out rows are the evaluation set.
- `noise`: the same questions with the answers shuffled (the labels of `useful`, permuted).
- `neutral_a` / `neutral_b`: other questions, each with one constant answer (learned at once, so
  they take the proxy's steps, not its capacity, from the evaluation task).

A deterministic key → answer map over a tiny vocabulary is learnable by `proxy-tiny` in a few
dozen steps, so removing `useful` must raise the evaluation loss and removing `noise` must lower it.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from PIL import Image

KEYS = ["zorp", "blick", "fravn", "quel"]
COLORS = ["red", "green", "blue", "gold"]


def _folder(root: Path, rows: list[tuple[str, str]]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    img = Image.new("RGB", (8, 8), (128, 128, 128))
    meta = []
    for i, (q, a) in enumerate(rows):
        name = f"{i:04d}.png"
        img.save(root / name)
        meta.append({"file_name": name, "question": q, "answer": a})
    (root / "metadata.jsonl").write_text("".join(json.dumps(m) + "\n" for m in meta))
    return root


def make_planted(root: Path, rows: int = 96, seed: int = 0) -> Path:
    """Write the four source folders and a recipe under `root`; return the recipe path."""
    rng = random.Random(seed)
    color = {k: COLORS[i % len(COLORS)] for i, k in enumerate(KEYS)}
    useful = [(f"What color is {KEYS[i % len(KEYS)]}?", color[KEYS[i % len(KEYS)]]) for i in range(rows)]
    answers = [a for _, a in useful]
    rng.shuffle(answers)
    noise = [(q, a) for (q, _), a in zip(useful, answers)]
    neutral_a = [("Is this a scan?", "yes")] * rows
    neutral_b = [("Which lab made it?", "acme")] * rows
    sources = {}
    for name, data in (("useful", useful), ("noise", noise), ("neutral_a", neutral_a), ("neutral_b", neutral_b)):
        _folder(root / name, data)
        sources[name] = {"adapter": "local", "from": name, "all": True,
                         "options": {"domain": "general-biomedical", "task": "vqa", "license": "CC0-1.0"}}
    import yaml

    recipe = {"name": "planted", "seed": 0, "shard_rows": 128, "image": {"max_side": 64},
              "dedup": {"exact": False, "image_distance": None, "text_threshold": None}, "sources": sources}
    path = root / "planted.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path
