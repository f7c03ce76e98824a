"""Encoders by name: loading, the pooling rule per model family, preprocessing settings, scratch copies."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from medmix.core.errors import MedmixError
from medmix.evaluation.encoders import Encoder, _processor_settings, load_encoder, scratch_encoder


def _save(model, path, processor=None):
    model.save_pretrained(path)
    if processor is not None:
        (path / "preprocessor_config.json").write_text(json.dumps(processor))
    return path


@pytest.fixture(scope="module")
def pixels():
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def test_vit_uses_the_final_cls_token_not_the_untrained_pooler(tmp_path, pixels):
    from transformers import ViTConfig, ViTModel

    torch.manual_seed(0)
    vit = ViTModel(ViTConfig(image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=1,
                             num_attention_heads=2, intermediate_size=32))
    enc = load_encoder(str(_save(vit, tmp_path, {"size": {"height": 32, "width": 32}})))
    with torch.no_grad():
        out = vit.eval()(pixel_values=pixels)
        assert torch.equal(enc.module(pixels), out.last_hidden_state[:, 0])
        assert not torch.equal(enc.module(pixels), out.pooler_output)
    assert enc.feature_dim() == 16 and enc.image_size == 32


def test_clip_vision_uses_its_post_layernorm_pooled_output_and_full_clip_its_image_tower(tmp_path, pixels):
    from transformers import CLIPConfig, CLIPModel, CLIPVisionConfig, CLIPVisionModel

    vision_cfg = dict(image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                      intermediate_size=32)
    torch.manual_seed(0)
    tower = CLIPVisionModel(CLIPVisionConfig(**vision_cfg))
    enc = load_encoder(f"hf:{_save(tower, tmp_path / 'v')}")
    with torch.no_grad():
        out = tower.eval()(pixel_values=pixels)
        assert torch.equal(enc.module(pixels), out.pooler_output)
        assert not torch.equal(enc.module(pixels), out.last_hidden_state[:, 0])  # the layernorm is applied
    full = CLIPModel(CLIPConfig(vision_config=vision_cfg, text_config=dict(hidden_size=16, num_hidden_layers=1,
                                                                          num_attention_heads=2, intermediate_size=32,
                                                                          vocab_size=50)))
    enc = load_encoder(str(_save(full, tmp_path / "full")))
    assert enc.image_size == 32  # read from the nested vision config when no processor file is there
    with torch.no_grad():
        assert torch.equal(enc.module(pixels), full.eval().vision_model(pixel_values=pixels).pooler_output)


def test_cnn_feature_maps_are_averaged(tmp_path, pixels):
    from transformers import ResNetConfig, ResNetModel

    torch.manual_seed(0)
    net = ResNetModel(ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1]))
    enc = load_encoder(str(_save(net, tmp_path, {"crop_size": 32, "image_mean": [0.1, 0.2, 0.3],
                                                 "image_std": [1, 1, 1]})))
    with torch.no_grad():
        assert torch.allclose(enc.module(pixels), net.eval()(pixel_values=pixels).pooler_output.flatten(1), atol=1e-6)
    assert (enc.image_size, enc.mean) == (32, (0.1, 0.2, 0.3))


def test_processor_settings_read_every_hf_size_layout():
    assert _processor_settings({"size": 40}, None)[0] == 40
    assert _processor_settings({"size": {"shortest_edge": 224}, "crop_size": {"height": 196, "width": 196}},
                               None)[0] == 196
    size, mean, std = _processor_settings({}, 64)
    assert size == 64 and mean == (0.485, 0.456, 0.406) and std == (0.229, 0.224, 0.225)
    with pytest.raises(MedmixError, match="input size"):
        _processor_settings({"size": {"longest_edge": 9}}, None)


def test_pixels_normalize_with_the_encoders_statistics():
    enc = Encoder("x", torch.nn.Identity(), 2, (0.5, 0.5, 0.5), (0.25, 0.5, 1.0))
    batch = np.full((1, 2, 2, 3), 255, dtype=np.uint8)
    x = enc.pixels(batch)
    assert x.shape == (1, 3, 2, 2)
    assert x[0, :, 0, 0].tolist() == [2.0, 1.0, 0.5]


def test_small_stored_batches_are_enlarged_to_the_input_size():
    enc = Encoder("x", torch.nn.Identity(), 6, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    flat = np.full((2, 3, 3, 3), 51, dtype=np.uint8)  # 0.2 everywhere
    x = enc.pixels(flat)
    assert x.shape == (2, 3, 6, 6) and torch.allclose(x, torch.full_like(x, 0.2), atol=1e-6)
    edge = np.zeros((1, 3, 3, 3), dtype=np.uint8)
    edge[:, :, 2] = 255  # a hard edge: bicubic overshoot is clamped back into [0, 1]
    y = enc.pixels(edge)
    assert y.min() >= 0.0 and y.max() <= 1.0 and y[0, 0, 0, -1] == 1.0 and y[0, 0, 0, 0] == 0.0


def test_scratch_is_the_same_architecture_with_seeded_fresh_weights(tmp_path):
    from transformers import ViTConfig, ViTModel

    torch.manual_seed(123)  # the "pretrained" weights: another seed than the scratch copies use
    vit = ViTModel(ViTConfig(image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=1,
                             num_attention_heads=2, intermediate_size=32))
    template = load_encoder(str(_save(vit, tmp_path, {"size": 32, "image_mean": [0.1] * 3, "image_std": [0.2] * 3})))
    a = scratch_encoder("scratch", template.architecture, seed=0, template=template)
    b = scratch_encoder("scratch", template.architecture, seed=0, template=template)
    c = scratch_encoder("scratch", template.architecture, seed=1, template=template)
    def weights(e):
        return torch.cat([p.flatten() for p in e.module.parameters()])

    assert torch.equal(weights(a), weights(b)) and not torch.equal(weights(a), weights(c))
    assert not torch.equal(weights(a), weights(template))
    assert a.from_scratch and (a.image_size, a.mean, a.std) == (32, (0.1,) * 3, (0.2,) * 3)
    before = torch.random.get_rng_state()
    scratch_encoder("scratch", template.architecture, seed=5)
    assert torch.equal(torch.random.get_rng_state(), before)  # building one does not disturb the caller's RNG
    with pytest.raises(MedmixError, match="architecture is unknown"):
        scratch_encoder("scratch", None, seed=0)
