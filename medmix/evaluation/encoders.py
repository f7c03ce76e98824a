"""Vision encoders by name, behind one contract: normalized pixels (B, 3, S, S) → one vector per image.

Names a user can pass (`medmix eval classify --encoder NAME`):

* `medmix:PATH` (or a PATH holding a medmix training checkpoint): the vision tower a medmix run
  trained, via `trainer.checkpoint.load_vision_encoder`.
* `hf:NAME_OR_PATH` (or a PATH holding a transformers `config.json`): any Hugging Face vision
  model (ViT, CLIP/SigLIP vision towers, DINOv2, ResNet, ...). Hub names need network.
* `open_clip:MODEL[@PRETRAINED]`: an open_clip model (e.g. BiomedCLIP is
  `open_clip:hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224`). Optional: works
  only where `open_clip` is importable; it is not a medmix dependency.
* `scratch` / `scratch:NAME`: the architecture of NAME (default: the first other encoder of the
  run, else ViT-B/16 at 224 px) with fresh random weights, trained on each benchmark.
* Short aliases for the paper's baselines (`biomedclip`, `pubmedclip`, `pmc-clip`): see ALIASES.

Pooling, the same rule for every Hugging Face model: the model's own pooled image embedding when
it has one that is part of the pretrained encoder (CLIP/SigLIP post-layernorm CLS, DINOv2's
normed CLS), else the final CLS token, else the spatial mean of a feature map (CNNs). ViT's
optional `pooler` (a dense + tanh head that most checkpoints never trained) is deliberately skipped.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medmix.core.errors import MedmixError

ALIASES: dict[str, str] = {
    "biomedclip": "open_clip:hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224",
    "pubmedclip": "hf:flaviagiammarino/pubmed-clip-vit-base-patch32",
    # PMC-CLIP ships a ResNet-50 checkpoint for its own code base, not for open_clip or transformers.
    "pmc-clip": "unsupported:PMC-CLIP weights load only with the PMC-CLIP repository's code",
}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class _HFPooled(nn.Module):
    """A transformers vision model → one vector per image (pooling rule in the module docstring)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        # A full CLIP/SigLIP model also wants text: its image tower is `vision_model`.
        self.model = model.vision_model if hasattr(model, "vision_model") and hasattr(model, "text_model") else model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        out = self.model(pixel_values=pixel_values)
        pooled = getattr(out, "pooler_output", None)
        if pooled is not None and getattr(self.model, "pooler", None) is None:
            return pooled.flatten(1)
        hidden = out.last_hidden_state
        return hidden[:, 0] if hidden.dim() == 3 else hidden.mean(dim=tuple(range(2, hidden.dim())))


class _OpenClipImage(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(pixel_values)


@dataclass
class Encoder:
    """A loaded encoder plus what the fixed recipe needs to feed it.

    `from_scratch` marks `scratch` encoders: random weights are not features worth probing, so
    the recipe always trains them end to end.
    """

    name: str
    module: nn.Module
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    from_scratch: bool = False
    architecture: Any = None  # what `scratch:NAME` copies: a transformers config, or None if unknown

    def pixels(self, batch: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
        """uint8 (B, s, s, 3) → normalized float (B, 3, S, S) at this encoder's input size S.

        A batch stored smaller than S (a benchmark kept at its native size) is enlarged here,
        bicubic, on the device: cheap there, and the disk holds the small images only.
        """
        x = torch.from_numpy(np.require(batch, dtype=np.uint8, requirements=["C", "W"])).to(device)
        x = x.permute(0, 3, 1, 2).float().div_(255.0)
        if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            x = torch.nn.functional.interpolate(x, size=(self.image_size, self.image_size), mode="bicubic",
                                                align_corners=False).clamp_(0.0, 1.0)
        mean = torch.tensor(self.mean, device=device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=device).view(1, 3, 1, 1)
        return (x - mean) / std

    @torch.no_grad()
    def feature_dim(self) -> int:
        device = next(self.module.parameters()).device
        was_training = self.module.training
        self.module.eval()
        try:
            probe = torch.zeros(1, 3, self.image_size, self.image_size, device=device)
            return int(self.module(probe).shape[-1])
        finally:
            self.module.train(was_training)


def _processor_settings(data: dict[str, Any], fallback_size: int | None) -> tuple[int, tuple, tuple]:
    """Input size, mean and std from a Hugging Face `preprocessor_config.json` dict."""
    size: Any = data.get("crop_size") or data.get("size") or fallback_size
    if isinstance(size, dict):
        size = size.get("height") or size.get("shortest_edge") or size.get("width")
    if not isinstance(size, int) or size <= 0:
        raise MedmixError(f"cannot tell the encoder's input size from its preprocessor config {data}")
    mean = tuple(float(v) for v in data.get("image_mean") or IMAGENET_MEAN)
    std = tuple(float(v) for v in data.get("image_std") or IMAGENET_STD)
    return size, mean, std  # type: ignore[return-value]


def _config_image_size(config: Any) -> int | None:
    size = getattr(config, "image_size", None)
    if size is None and getattr(config, "vision_config", None) is not None:
        size = getattr(config.vision_config, "image_size", None)
    if isinstance(size, (list, tuple)):
        size = size[0]
    return int(size) if size else None


def _hf_encoder(name: str, where: str) -> Encoder:
    from transformers import AutoConfig, AutoModel

    local = Path(where).is_dir()
    try:
        config = AutoConfig.from_pretrained(where, local_files_only=local)
        model = AutoModel.from_pretrained(where, local_files_only=local)
    except (OSError, ValueError) as exc:
        raise MedmixError(f"encoder {name!r}: cannot load a Hugging Face model from {where!r}: {exc}") from None
    processor: dict[str, Any] = {}
    if local and (Path(where) / "preprocessor_config.json").is_file():
        processor = json.loads((Path(where) / "preprocessor_config.json").read_text())
    elif not local:
        try:
            from huggingface_hub import hf_hub_download

            processor = json.loads(Path(hf_hub_download(where, "preprocessor_config.json")).read_text())
        except Exception:  # any failure (no such file, offline, gated) means: fall back to the config's size
            processor = {}
    size, mean, std = _processor_settings(processor, _config_image_size(config))
    return Encoder(name, _HFPooled(model), size, mean, std, architecture=config)


def _medmix_encoder(name: str, where: str) -> Encoder:
    try:
        from trainer.checkpoint import load_vision_encoder
    except ImportError as exc:
        raise MedmixError(f"encoder {name!r}: the medmix trainer is not importable ({exc})") from None
    try:
        model, processor = load_vision_encoder(where)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:  # CheckpointError is a MedmixError: it passes
        raise MedmixError(f"encoder {name!r}: cannot load the vision tower of checkpoint {where}: {exc}") from None
    size, mean, std = _processor_settings(processor, _config_image_size(model.config))
    return Encoder(name, _HFPooled(model), size, mean, std, architecture=model.config)


def _open_clip_encoder(name: str, spec: str) -> Encoder:
    try:
        import open_clip  # type: ignore[import-not-found]
    except ImportError:
        raise MedmixError(f"encoder {name!r} needs the optional package open_clip "
                          "(pip install open_clip_torch); it is not installed") from None
    model_name, _, pretrained = spec.partition("@")
    try:
        model, _, _ = open_clip.create_model_and_transforms(model_name, pretrained=pretrained or None)
    except Exception as exc:  # open_clip raises many kinds; the user needs its message
        raise MedmixError(f"encoder {name!r}: open_clip cannot load {spec!r}: {exc}") from None
    visual = model.visual
    size = visual.image_size[0] if isinstance(visual.image_size, (tuple, list)) else int(visual.image_size)
    mean = tuple(getattr(visual, "image_mean", None) or open_clip.OPENAI_DATASET_MEAN)
    std = tuple(getattr(visual, "image_std", None) or open_clip.OPENAI_DATASET_STD)
    return Encoder(name, _OpenClipImage(model), size, mean, std)  # type: ignore[arg-type]


def _looks_like_medmix_checkpoint(path: Path) -> bool:
    return any(((c / "config.json").is_file() and (c / "vision").is_dir()) or (c / "latest").is_file()
               for c in (path, path / "checkpoints"))


def load_encoder(name: str) -> Encoder:
    """Resolve an encoder name (grammar in the module docstring) to a loaded, eval-mode encoder."""
    spec = ALIASES.get(name.lower(), name)
    kind, sep, rest = spec.partition(":")
    if kind == "unsupported":
        raise MedmixError(f"encoder {name!r} is not supported: {rest}")
    if kind == "scratch":
        raise MedmixError("`scratch` encoders are built by scratch_encoder(), from another encoder's architecture")
    if sep and kind == "hf":
        encoder = _hf_encoder(name, rest)
    elif sep and kind == "medmix":
        encoder = _medmix_encoder(name, rest)
    elif sep and kind == "open_clip":
        encoder = _open_clip_encoder(name, rest)
    elif Path(spec).is_dir() and _looks_like_medmix_checkpoint(Path(spec)):
        encoder = _medmix_encoder(name, spec)
    elif Path(spec).is_dir() and (Path(spec) / "config.json").is_file():
        encoder = _hf_encoder(name, spec)
    elif Path(spec).exists():
        raise MedmixError(f"encoder {name!r}: {spec} is neither a medmix checkpoint nor a Hugging Face model folder")
    else:
        encoder = _hf_encoder(name, spec)  # a Hub id
    encoder.module.eval()
    return encoder


def default_architecture() -> Any:
    """ViT-B/16 at 224 px: the vision tower of the paper's model, for `scratch` with nothing to copy."""
    from transformers import ViTConfig

    return ViTConfig()


def scratch_encoder(name: str, architecture: Any, *, seed: int, template: Encoder | None = None) -> Encoder:
    """`architecture` (a transformers config) with fresh weights drawn from `seed`.

    Input size and normalization follow `template` when given, so scratch and the encoder it copies
    see identical pixels; otherwise the config's size and ImageNet statistics.
    """
    from transformers import AutoModel

    if architecture is None:
        raise MedmixError(f"encoder {name!r}: cannot build a scratch copy of an encoder whose architecture is unknown "
                          "(open_clip models); name a Hugging Face or medmix encoder after 'scratch:'")
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = AutoModel.from_config(copy.deepcopy(architecture))
    finally:
        torch.random.set_rng_state(state)
    if template is not None:
        size, mean, std = template.image_size, template.mean, template.std
    else:
        size = _config_image_size(architecture) or 224
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    return Encoder(name, _HFPooled(model), size, mean, std, from_scratch=True, architecture=architecture)
