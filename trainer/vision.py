"""The vision tower: any Hugging Face vision encoder → a sequence of patch features.

Why a wrapper: the VLM needs one contract ("pixels in, [B, N, D] features out") whatever the
encoder is (ViT, CLIP's vision tower, DINOv2 ...), and evaluation must be able to load the same
encoder alone. Preprocessing is plain PIL + numpy (torchvision is not a dependency) and its
settings are saved next to the weights as a standard `preprocessor_config.json`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from trainer.config import ConfigError, ModelConfig

log = logging.getLogger(__name__)

PREPROCESSOR_FILE = "preprocessor_config.json"


@dataclass
class ImageProcessor:
    """Resize (squash to `size`, or shortest edge then centre crop), scale to [0,1], normalize."""

    height: int
    width: int
    image_mean: list[float]
    image_std: list[float]
    shortest_edge: int | None = None  # CLIP-style: resize shortest edge, then crop height x width

    def __call__(self, image: Image.Image) -> torch.Tensor:
        image = image.convert("RGB")  # grayscale X-rays and RGBA figures become 3 channels
        if self.shortest_edge:
            w, h = image.size
            scale = self.shortest_edge / min(w, h)
            image = image.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BICUBIC)
            w, h = image.size
            left, top = (w - self.width) // 2, (h - self.height) // 2
            image = image.crop((left, top, left + self.width, top + self.height))
        else:
            image = image.resize((self.width, self.height), Image.BICUBIC)
        array = np.asarray(image, dtype=np.float32) / 255.0
        array = (array - np.asarray(self.image_mean, np.float32)) / np.asarray(self.image_std, np.float32)
        return torch.from_numpy(array.transpose(2, 0, 1).copy())

    def to_hf_dict(self) -> dict[str, Any]:
        """In the layout of transformers' ViT/CLIP image processors, so their loaders read it too."""
        out: dict[str, Any] = {
            "image_processor_type": "CLIPImageProcessor" if self.shortest_edge else "ViTImageProcessor",
            "do_resize": True, "resample": 3, "do_rescale": True, "rescale_factor": 1 / 255,
            "do_normalize": True, "image_mean": list(self.image_mean), "image_std": list(self.image_std),
            "do_convert_rgb": True,
        }
        if self.shortest_edge:
            out.update(size={"shortest_edge": self.shortest_edge}, do_center_crop=True,
                       crop_size={"height": self.height, "width": self.width})
        else:
            out["size"] = {"height": self.height, "width": self.width}
        return out

    @classmethod
    def from_hf_dict(cls, data: dict[str, Any], mean: list[float] | None = None,
                     std: list[float] | None = None) -> ImageProcessor:
        size = data.get("size") or {}
        if isinstance(size, int):
            size = {"height": size, "width": size}
        crop = data.get("crop_size")
        if isinstance(crop, int):
            crop = {"height": crop, "width": crop}
        mean = mean or data.get("image_mean") or [0.5, 0.5, 0.5]
        std = std or data.get("image_std") or [0.5, 0.5, 0.5]
        if "shortest_edge" in size:
            crop = crop or {"height": size["shortest_edge"], "width": size["shortest_edge"]}
            return cls(crop["height"], crop["width"], list(mean), list(std), shortest_edge=size["shortest_edge"])
        if "height" not in size:
            raise ConfigError(f"image processor config has no usable size: {data}")
        return cls(size["height"], size["width"], list(mean), list(std))

    def save(self, directory: Path) -> None:
        (directory / PREPROCESSOR_FILE).write_text(json.dumps(self.to_hf_dict(), indent=2) + "\n")


class VisionTower(nn.Module):
    """`encoder(pixel_values)` → the chosen layer's tokens, optionally without CLS."""

    def __init__(self, encoder: nn.Module, feature_layer: int = -1, drop_cls: bool = True) -> None:
        super().__init__()
        self.encoder = encoder
        self.feature_layer = feature_layer
        self.drop_cls = drop_cls
        self.hidden_size: int = encoder.config.hidden_size

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        wants_hidden = self.feature_layer != -1
        out = self.encoder(pixel_values=pixel_values, output_hidden_states=wants_hidden)
        feats = out.hidden_states[self.feature_layer] if wants_hidden else out.last_hidden_state
        return feats[:, 1:] if self.drop_cls else feats

    @torch.no_grad()
    def num_tokens(self, processor: ImageProcessor) -> int:
        probe = torch.zeros(1, 3, processor.height, processor.width, device=_device_of(self))
        return int(self(probe).shape[1])


def build_vision(cfg: ModelConfig, source: str | Path | None = None) -> tuple[VisionTower, ImageProcessor]:
    """The tower and its preprocessing. `source` (a checkpoint's `vision/` folder) overrides the config."""
    from transformers import AutoConfig, AutoModel, CLIPVisionConfig, CLIPVisionModel, ViTConfig, ViTModel

    if source is None and cfg.random_init:
        if cfg.vision_type == "clip":
            encoder: nn.Module = CLIPVisionModel(CLIPVisionConfig(**cfg.vision_config))
        else:
            encoder = ViTModel(ViTConfig(**cfg.vision_config), add_pooling_layer=False)
        size = encoder.config.image_size
        processor = ImageProcessor(size, size, cfg.image_mean or [0.5] * 3, cfg.image_std or [0.5] * 3)
        return VisionTower(encoder, cfg.vision_feature_layer, cfg.drop_cls), processor
    name = str(source if source is not None else cfg.vision)
    config = AutoConfig.from_pretrained(name)
    if config.model_type in ("clip", "clip_vision_model"):  # a two-tower CLIP: keep the vision side only
        encoder = CLIPVisionModel.from_pretrained(name)
    elif config.model_type in ("siglip", "siglip_vision_model"):
        from transformers import SiglipVisionModel

        encoder = SiglipVisionModel.from_pretrained(name)
    elif config.model_type == "vit":
        encoder = ViTModel.from_pretrained(name, add_pooling_layer=False)
    else:
        encoder = AutoModel.from_pretrained(name)
    processor = ImageProcessor.from_hf_dict(_read_preprocessor(name), cfg.image_mean, cfg.image_std)
    return VisionTower(encoder, cfg.vision_feature_layer, cfg.drop_cls), processor


def _read_preprocessor(name: str) -> dict[str, Any]:
    local = Path(name) / PREPROCESSOR_FILE
    if local.is_file():
        return json.loads(local.read_text())
    from transformers.utils import cached_file

    path = cached_file(name, PREPROCESSOR_FILE)
    if path is None:
        raise ConfigError(f"vision checkpoint {name!r} has no {PREPROCESSOR_FILE}")
    return json.loads(Path(path).read_text())


def _device_of(module: nn.Module) -> torch.device:
    return next(module.parameters()).device
