"""The trainer's fast paths (issue 16) change speed, never results: each is checked against the plain path
on the tiny random model, on CPU. (Their speed is measured on a GPU by benchmarks/h200_ladder.py.)"""

from __future__ import annotations

import json

import pytest
import torch

from trainer.config import ConfigError, load_config
from trainer.data import collate
from trainer.language import train_bpe
from trainer.model import build_vlm, mark_trainable
from trainer.packing import pack
from trainer.prompts import IGNORE_INDEX, IMAGE_TOKEN_ID

N_VISUAL = 16  # tiny ViT: (32 / 8)^2 patches


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tokenizer():
    return train_bpe(["what does the image show? a red square on a black background"] * 4, 300)


def _model(tokenizer, *overrides: str):
    cfg = load_config("tiny", ["model.lora_dropout=0", *overrides])
    torch.manual_seed(0)
    model = build_vlm(cfg.model, tokenizer)
    mark_trainable(model, ["vision", "projector", "lora"])
    gen = torch.Generator().manual_seed(1)
    for name, param in model.named_parameters():
        if "lora_B" in name:  # peft starts B at zero, which would make every LoRA path trivially equal
            with torch.no_grad():
                param.copy_(0.2 * torch.randn(param.shape, generator=gen))
    return model


def _examples(lengths: list[int], seed: int = 0) -> list[dict]:
    gen = torch.Generator().manual_seed(seed)
    out = []
    for i, n in enumerate(lengths):
        image = i % 2 == 0
        ids = [1] + [IMAGE_TOKEN_ID] * (N_VISUAL if image else 0) + torch.randint(4, 300, (n,), generator=gen).tolist()
        labels = [IGNORE_INDEX] * (len(ids) - 6) + ids[-6:]
        out.append({"input_ids": ids, "labels": labels, "id": f"s{i}",
                    "pixel_values": torch.randn(3, 32, 32, generator=gen) if image else None})
    return out


def _loss_and_grads(model, batch, bf16: bool):
    model.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        loss = model(**batch)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def test_skipping_peft_input_cast_under_bf16_autocast_gives_bitwise_identical_gradients(tokenizer):
    batch = collate(_examples([20, 30, 12]), 0)
    peft_model = _model(tokenizer, "model.llm_dtype=bfloat16", "model.lora_cast_input=true",
                        "model.lora_fused_add=false")
    assert not any(type(m).__name__ == "FastLoraLinear" for m in peft_model.modules())  # the untouched baseline
    no_cast = _model(tokenizer, "model.llm_dtype=bfloat16", "model.lora_cast_input=false",
                     "model.lora_fused_add=false")
    fast = [m for m in no_cast.modules() if type(m).__name__ == "FastLoraLinear"]
    assert len(fast) == 7 * 2 and not any(m.cast_input_dtype_enabled for m in fast)  # 7 targets x 2 layers
    ref_loss, ref = _loss_and_grads(peft_model, batch, bf16=True)
    loss, grads = _loss_and_grads(no_cast, batch, bf16=True)
    assert ref.keys() == grads.keys() and any("lora_A" in n for n in ref)
    assert torch.equal(loss, ref_loss)
    assert all(torch.equal(grads[n], ref[n]) for n in ref), [n for n in ref if not torch.equal(grads[n], ref[n])]
    # without autocast the cast stays (fp32 LoRA weights cannot take a bf16 input): fp32 training still runs
    assert torch.isfinite(no_cast(**batch))


def test_fused_in_place_lora_add_matches_peft_outputs_and_gradients(tokenizer):
    batch = collate(_examples([25, 9, 40]), 0)
    peft_model = _model(tokenizer, "model.lora_cast_input=true", "model.lora_fused_add=false")
    fused = _model(tokenizer, "model.lora_cast_input=true", "model.lora_fused_add=true")
    ref_loss, ref = _loss_and_grads(peft_model, batch, bf16=False)
    loss, grads = _loss_and_grads(fused, batch, bf16=False)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-6, atol=1e-6)
    for name in ref:
        torch.testing.assert_close(grads[name], ref[name], rtol=1e-5, atol=1e-6, msg=name)
    # one layer alone, output level, including the fall-back when the adapter is merged into the weight
    layer = fused.llm.get_base_model().model.layers[0].self_attn.q_proj
    peft_layer = peft_model.llm.get_base_model().model.layers[0].self_attn.q_proj
    x = torch.randn(2, 5, layer.in_features)
    torch.testing.assert_close(layer(x), peft_layer(x), rtol=1e-6, atol=1e-6)
    assert not torch.equal(layer(x), layer.base_layer(x))  # the LoRA term is really there
    layer.merge()
    torch.testing.assert_close(layer(x), peft_layer(x), rtol=1e-5, atol=1e-5)
    layer.unmerge()


def test_packed_rows_give_each_sample_exactly_its_unpacked_loss(tokenizer):
    model = _model(tokenizer)
    examples = _examples([30, 50, 12, 70, 25, 40])
    packed = pack(examples, pad_id=0, capacity=128, multiple=16)
    rows, width = packed["input_ids"].shape
    assert rows < len(examples) and width % 16 == 0 and width <= 128
    assert int(packed["attention_mask"].sum()) == sum(len(e["input_ids"]) for e in examples)
    for i, e in enumerate(examples):  # each sample intact, positions restarting at 0
        where = packed["sample_index"] == i
        assert packed["input_ids"][where].tolist() == e["input_ids"]
        assert packed["position_ids"][where].tolist() == list(range(len(e["input_ids"])))
    image_order = [int(s) for s in packed["sample_index"][packed["input_ids"] == IMAGE_TOKEN_ID][::N_VISUAL]]
    expected = torch.stack([examples[i]["pixel_values"] for i in image_order])
    assert torch.equal(packed["pixel_values"], expected)  # images follow their slots' packed order

    def per_sample(batch, index):
        losses = model(**batch, reduction="none")
        keep = batch["labels"][:, 1:] != IGNORE_INDEX
        return torch.zeros(len(examples), dtype=torch.float64).index_add_(0, index[:, 1:][keep], losses.double())

    plain = collate(examples, 0)
    with torch.no_grad():
        unpacked = per_sample(plain, torch.arange(len(examples))[:, None].expand_as(plain["input_ids"]))
        packed_losses = per_sample(packed, packed["sample_index"])
    torch.testing.assert_close(packed_losses, unpacked, rtol=1e-6, atol=1e-5)
    with pytest.raises(ValueError, match="s3"):
        pack(examples, pad_id=0, capacity=64)


def test_collate_rounds_the_width_up_to_the_padding_multiple():
    batch = collate(_examples([10, 21]), 0, multiple=128)
    assert batch["input_ids"].shape == (2, 128) and int(batch["attention_mask"].sum()) == (1 + 16 + 10) + (1 + 21)


def test_per_layer_compile_gives_the_eager_loss_and_gradients(tokenizer):
    """aot_eager: Dynamo's trace and AOTAutograd's joint graph (functionalising the in-place LoRA add),
    without inductor's C++ build, which takes ~60 s cold for the tiny model on this CPU."""
    from trainer.compile import compile_layers

    batch = collate(_examples([20, 33]), 0, multiple=64)
    model = _model(tokenizer)
    ref_loss, ref = _loss_and_grads(model, batch, bf16=False)
    compiled = compile_layers(model, static_widths=True, backend="aot_eager", llm_layers=1)
    assert compiled == 1 + 2  # one decoder layer, both ViT blocks
    assert model.llm.get_base_model().model.layers[0]._compiled_call_impl is not None
    loss, grads = _loss_and_grads(model, batch, bf16=False)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-5)
    for name in ref:
        torch.testing.assert_close(grads[name], ref[name], rtol=1e-4, atol=1e-5, msg=name)
    torch._dynamo.reset()


def test_liger_is_refused_on_cpu_and_patches_norm_rope_and_swiglu_with_cross_entropy_left_alone(tokenizer,
                                                                                               monkeypatch):
    with pytest.raises(ConfigError, match="model.liger=true needs a CUDA GPU"):
        _model(tokenizer, "model.liger=true")
    from transformers.models.llama import modeling_llama

    from trainer.liger import patch

    # Liger's patch is process-wide for RoPE/RMSNorm/MLP classes: register the originals for restore.
    for name in ("apply_rotary_pos_emb", "LlamaRMSNorm", "LlamaMLP"):
        monkeypatch.setattr(modeling_llama, name, getattr(modeling_llama, name))
    model = _model(tokenizer)
    causal_lm = model.llm.get_base_model()
    loss_forward = causal_lm.forward
    patch(causal_lm)
    layer = causal_lm.model.layers[0]
    assert "liger" in modeling_llama.apply_rotary_pos_emb.__module__
    assert "liger" in layer.input_layernorm.forward.__func__.__module__
    assert "liger" in layer.mlp.forward.__func__.__module__
    assert type(layer.mlp.gate_proj).__name__ == "FastLoraLinear"  # LoRA still in the MLP's path
    assert causal_lm.forward == loss_forward  # fused linear cross-entropy not installed


def test_fast_path_settings_are_validated():
    with pytest.raises(ConfigError, match="train.compile must be"):
        load_config("tiny", ["train.compile=fast"])
    with pytest.raises(ConfigError, match="pad_to_multiple"):
        load_config("tiny", ["train.pad_to_multiple=0"])
    assert load_config("tiny", ["train.compile=off"]).train.compile == "off"  # YAML's off is False
    assert load_config("tiny", ["train.compile=true"]).train.compile == "inductor"
    defaults = load_config("openmedq-7b")
    assert defaults.model.lora_fused_add and not defaults.model.lora_cast_input and not defaults.model.liger


def test_packed_training_follows_the_unpacked_run_step_for_step(tmp_path, monkeypatch):
    """The real loop (loader, collate → pack, train_step, AdamW): with dropout off, packing a step's
    samples into fewer rows changes nothing but the layout, so every step's loss is the same."""
    from test_trainer import make_mixture

    import trainer.data
    from trainer.train import train

    shapes = []

    def counting_pack(*args, **kwargs):
        batch = pack(*args, **kwargs)
        shapes.append(tuple(batch["input_ids"].shape))
        return batch

    monkeypatch.setattr(trainer.data, "pack", counting_pack)

    mixture = make_mixture(tmp_path / "mix", n_rows=16)
    losses = {}
    for name, extra in (("plain", []), ("packed", ["train.packing=true", "train.pad_to_multiple=32"])):
        cfg = load_config("tiny", ["model.lora_dropout=0", "train.steps=2", "train.log_every=1",
                                   "train.progress=false", "train.save_every=100", *extra])
        train(cfg, mixture, tmp_path / name)
        lines = (tmp_path / name / "metrics.jsonl").read_text().splitlines()
        losses[name] = [json.loads(line)["loss"] for line in lines]
    assert len(losses["plain"]) == 2 and len(shapes) >= 2
    assert all(rows < 8 and width % 32 == 0 for rows, width in shapes)  # 8 samples per step, in fewer rows
    assert losses["packed"] == pytest.approx(losses["plain"], rel=1e-5)
