"""Typed training configuration: two dataclasses, named presets, YAML files and `key=value` overrides.

Why dataclasses and not a dict: a typo in an override (`lora_rr=16`) must fail at start with the
list of valid keys, not be silently ignored 3 hours into a run. Why presets in code: `tiny` and
`openmedq-7b` must share every code path, so they differ only in values, and the values live here.

Which parameters train is decided in ONE place: `TrainConfig.trainable` (a subset of
`TRAINABLE_PARTS`); `trainer.model.mark_trainable` applies it and logs the counts.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from medmix.core.errors import MedmixError

TRAINABLE_PARTS = ("vision", "projector", "lora")


class ConfigError(MedmixError):
    """A config name, file or override is wrong; the message names it and the valid choices."""


@dataclass
class ModelConfig:
    """The VLM: vision tower → 2-layer MLP projector → causal LM with LoRA.

    `vision` / `llm` name a Hugging Face checkpoint (or a local folder) loaded with
    `from_pretrained`. `vision_config` / `llm_config` are the same architecture as plain config
    kwargs; they are used instead of the names when `random_init` is true (benchmarks, tests),
    so a 7B benchmark needs no download.
    """

    vision: str | None = "google/vit-base-patch16-224-in21k"
    vision_type: str = "vit"  # config class for random init: "vit" or "clip"
    vision_config: dict[str, Any] = field(default_factory=dict)
    # -1 = the encoder's final output; -2 = penultimate layer (LLaVA's choice), etc.
    vision_feature_layer: int = -1
    drop_cls: bool = True  # keep patch tokens only; the CLS token duplicates their content
    image_mean: list[float] | None = None  # None = from the checkpoint's preprocessor config
    image_std: list[float] | None = None

    llm: str | None = "meta-llama/Llama-2-7b-hf"
    llm_config: dict[str, Any] = field(default_factory=dict)
    llm_dtype: str = "bfloat16"  # dtype of the frozen LLM weights; LoRA/projector/vision stay fp32
    # "sdpa" everywhere torch has it; "flash_attention_2" on GPUs with flash-attn installed.
    attn_implementation: str = "sdpa"
    # "auto": the LLM's own tokenizer, or (random init) a BPE trained on the mixture's text.
    tokenizer: str = "auto"
    tokenizer_vocab_size: int = 1024  # only for a tokenizer trained on the mixture

    projector_hidden: int | None = None  # None = the LLM's hidden size
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    random_init: bool = False
    # Fast paths (issue 16), each A/B-measured by benchmarks/h200_ladder.py. The two LoRA ones are
    # exact and on; liger needs CUDA (Triton) and stays off until the ladder says it pays.
    lora_cast_input: bool = False  # true = peft's fp32 cast of every LoRA input, even under bf16 autocast
    lora_fused_add: bool = True  # lora_B's matmul adds into the base output in place (trainer/lora_fast.py)
    liger: bool = False  # Liger's Triton RMSNorm, RoPE and SwiGLU in the LLM (trainer/liger.py; CUDA only)


@dataclass
class TrainConfig:
    """The loop. Sizes are per device: the global batch is batch_size * grad_accum * world_size."""

    seed: int = 0
    steps: int = 10_000
    batch_size: int = 8
    grad_accum: int = 4
    max_length: int = 768  # text + visual tokens; text is cut first, visual tokens never
    lr: float = 2e-4  # projector and LoRA
    vision_lr: float | None = 2e-5  # None = lr
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    warmup_steps: int = 200
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    grad_clip: float = 1.0
    trainable: list[str] = field(default_factory=lambda: list(TRAINABLE_PARTS))
    gradient_checkpointing: bool = True
    # torch.compile each LLM decoder layer and ViT block (trainer/compile.py); pair it with
    # pad_to_multiple or packing so batch widths come from a few buckets, not one per length.
    # "off", "inductor" (the fast one; also `true`) or "aot_eager" (traces and runs autograd, no codegen: checks).
    compile: str = "off"
    # Several samples per row, attention kept within each (trainer/packing.py): a micro-batch's
    # samples fill rows of max_length instead of each row padding to the longest sample.
    packing: bool = False
    pad_to_multiple: int = 1  # batch width rounded up to this (128: few compile shapes, tensor-core sizes)
    precision: str = "auto"  # "auto" (bf16 autocast on GPU, fp32 on CPU), "bf16" or "fp32"
    strategy: str = "ddp"  # under torchrun: "ddp" or "fsdp" (shards the LLM's layers; for 7B on small GPUs)
    num_workers: int = 2
    shuffle: bool = True
    log_every: int = 10
    save_every: int = 1000
    keep_checkpoints: int = 2
    progress: bool = True


@dataclass
class Config:
    name: str
    model: ModelConfig
    train: TrainConfig

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Config:
        return cls(name=data.get("name", "custom"),
                   model=_build(ModelConfig, data.get("model", {}), "model"),
                   train=_build(TrainConfig, data.get("train", {}), "train"))


# -- presets ---------------------------------------------------------------------------------------

_VIT_BASE = {"image_size": 224, "patch_size": 16, "hidden_size": 768, "num_hidden_layers": 12,
             "num_attention_heads": 12, "intermediate_size": 3072, "hidden_act": "gelu", "layer_norm_eps": 1e-12}
_LLAMA_7B = {"vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
             "num_attention_heads": 32, "num_key_value_heads": 32, "max_position_embeddings": 4096,
             "rms_norm_eps": 1e-5, "hidden_act": "silu", "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}


def _tiny() -> Config:
    model = ModelConfig(
        vision=None, vision_type="vit",
        vision_config={"image_size": 32, "patch_size": 8, "hidden_size": 64, "num_hidden_layers": 2,
                       "num_attention_heads": 2, "intermediate_size": 128},
        image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5],
        llm=None,
        # initializer_range 0.1, not LLaMA's 0.02: the LLM is frozen, and a random LM head that
        # small caps every logit margin near 2.5 (loss cannot fall below ~ln(vocab) - 2.5).
        llm_config={"hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4,
                    "num_key_value_heads": 4, "max_position_embeddings": 512, "rms_norm_eps": 1e-5,
                    "initializer_range": 0.1},
        llm_dtype="float32", tokenizer="auto", tokenizer_vocab_size=512, random_init=True)
    train = TrainConfig(steps=60, batch_size=8, grad_accum=1, max_length=128, lr=3e-3, vision_lr=None,
                        warmup_steps=5, num_workers=0, log_every=5, save_every=20, gradient_checkpointing=False)
    return Config("tiny", model, train)


def _openmedq_7b() -> Config:
    model = ModelConfig(vision="google/vit-base-patch16-224-in21k", vision_type="vit", vision_config=dict(_VIT_BASE),
                        llm="meta-llama/Llama-2-7b-hf", llm_config=dict(_LLAMA_7B), tokenizer_vocab_size=32000)
    return Config("openmedq-7b", model, TrainConfig())


def _proxy_tiny() -> Config:
    """`medmix ablate`'s CPU proxy: `tiny`, smaller (4 visual tokens, max_length 96, rank-16 LoRA), so
    one variant's run takes seconds and a loo of five sources fits a test."""
    cfg = _tiny()
    cfg.name = "proxy-tiny"
    cfg.model.vision_config = {"image_size": 16, "patch_size": 8, "hidden_size": 32, "num_hidden_layers": 1,
                               "num_attention_heads": 2, "intermediate_size": 64}
    cfg.model.llm_config = {**cfg.model.llm_config, "hidden_size": 64, "intermediate_size": 128,
                            "num_attention_heads": 2, "num_key_value_heads": 2, "max_position_embeddings": 128}
    cfg.model.tokenizer_vocab_size = 384
    cfg.model.lora_r, cfg.model.lora_alpha, cfg.model.lora_dropout = 16, 32, 0.0
    cfg.train.max_length, cfg.train.batch_size, cfg.train.steps = 96, 16, 40
    cfg.train.lr, cfg.train.warmup_steps, cfg.train.save_every, cfg.train.progress = 1e-2, 4, 10_000, False
    return cfg


def _proxy_small() -> Config:
    """`medmix ablate`'s GPU proxy, about 100M parameters, random init (no download): a ViT-S/16-sized
    tower (21.7M) and a 12-layer, 768-wide LLaMA with an 8k mixture BPE (97.5M, 12.6M of it embeddings),
    rank-64 LoRA (11.2M): 130M in all, counted by building it."""
    model = ModelConfig(
        vision=None, vision_type="vit",
        vision_config={"image_size": 224, "patch_size": 16, "hidden_size": 384, "num_hidden_layers": 12,
                       "num_attention_heads": 6, "intermediate_size": 1536},
        image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5], llm=None,
        llm_config={"hidden_size": 768, "intermediate_size": 2048, "num_hidden_layers": 12, "num_attention_heads": 12,
                    "num_key_value_heads": 12, "max_position_embeddings": 1024, "rms_norm_eps": 1e-5,
                    "initializer_range": 0.05},
        llm_dtype="bfloat16", tokenizer="auto", tokenizer_vocab_size=8192, random_init=True,
        lora_r=64, lora_alpha=128, lora_dropout=0.0)
    train = TrainConfig(steps=2000, batch_size=32, grad_accum=1, max_length=512, lr=1e-3, vision_lr=None,
                        warmup_steps=100, num_workers=4, save_every=10_000, gradient_checkpointing=False,
                        pad_to_multiple=64, progress=False)
    return Config("proxy-small", model, train)


PRESETS = {"tiny": _tiny, "openmedq-7b": _openmedq_7b, "proxy-tiny": _proxy_tiny, "proxy-small": _proxy_small}


def load_config(name_or_path: str, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """A preset name or a YAML file (optionally `base: <preset>` plus `model:`/`train:` sections),
    then `key=value` overrides (`train.lr=1e-4`, or `lr=1e-4` when the key is unambiguous)."""
    if name_or_path in PRESETS:
        cfg = PRESETS[name_or_path]()
    else:
        path = Path(name_or_path)
        if not path.is_file():
            raise ConfigError(f"config {name_or_path!r} is neither a preset ({', '.join(PRESETS)}) nor a file")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping with 'model:' and/or 'train:' sections")
        unknown = set(data) - {"base", "name", "model", "train"}
        if unknown:
            raise ConfigError(f"{path}: unknown top-level key(s) {sorted(unknown)}; use base, name, model, train")
        base = data.get("base", "tiny")
        if base not in PRESETS:
            raise ConfigError(f"{path}: base {base!r} is not one of {sorted(PRESETS)}")
        cfg = PRESETS[base]()
        cfg.name = data.get("name", path.stem)
        for section in ("model", "train"):
            for key, value in (data.get(section) or {}).items():
                _set(cfg, f"{section}.{key}", value, where=str(path))
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} is not key=value (e.g. train.lr=1e-4)")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        _set(cfg, key.strip(), value, where=f"override {item!r}")
    validate(cfg)
    return cfg


def validate(cfg: Config) -> None:
    t, m = cfg.train, cfg.model
    bad = set(t.trainable) - set(TRAINABLE_PARTS)
    if bad:
        raise ConfigError(f"train.trainable: unknown part(s) {sorted(bad)}; choose from {list(TRAINABLE_PARTS)}")
    if t.precision not in ("auto", "bf16", "fp32"):
        raise ConfigError(f"train.precision must be auto, bf16 or fp32, not {t.precision!r}")
    # YAML reads a bare off/no/false (and on/yes/true) as a boolean, which reaches here as text
    t.compile = {"false": "off", "true": "inductor"}.get(t.compile.lower(), t.compile)
    if t.compile not in ("off", "inductor", "aot_eager"):
        raise ConfigError(f"train.compile must be off, inductor or aot_eager, not {t.compile!r}")
    if t.strategy not in ("ddp", "fsdp"):
        raise ConfigError(f"train.strategy must be ddp or fsdp, not {t.strategy!r}")
    if m.vision_type not in ("vit", "clip"):
        raise ConfigError(f"model.vision_type must be vit or clip, not {m.vision_type!r}")
    if m.llm_dtype not in ("bfloat16", "float16", "float32"):
        raise ConfigError(f"model.llm_dtype must be bfloat16, float16 or float32, not {m.llm_dtype!r}")
    for name in ("steps", "batch_size", "grad_accum", "max_length", "log_every", "save_every", "lora_r",
                 "pad_to_multiple"):
        value = getattr(m if name == "lora_r" else t, name)
        if value < 1:
            raise ConfigError(f"{name} must be at least 1, got {value}")
    if m.random_init and not (m.vision_config and m.llm_config):
        raise ConfigError("model.random_init needs model.vision_config and model.llm_config")
    if not m.random_init and (m.vision is None or m.llm is None):
        raise ConfigError("model.vision and model.llm must name checkpoints unless model.random_init is true")


def _set(cfg: Config, key: str, value: Any, *, where: str) -> None:
    section, _, name = key.rpartition(".")
    if not section:
        owners = [s for s in ("model", "train") if name in _field_types(type(getattr(cfg, s)))]
        if len(owners) != 1:
            valid = sorted(f"{s}.{f}" for s in ("model", "train") for f in _field_types(type(getattr(cfg, s))))
            raise ConfigError(f"{where}: unknown key {key!r}; valid keys: {', '.join(valid)}")
        section = owners[0]
    if section not in ("model", "train"):
        raise ConfigError(f"{where}: unknown section {section!r}; use model. or train.")
    target = getattr(cfg, section)
    types_ = _field_types(type(target))
    if name not in types_:
        raise ConfigError(f"{where}: {section} has no key {name!r}; valid: {', '.join(sorted(types_))}")
    setattr(target, name, _coerce(value, types_[name], f"{where}: {section}.{name}"))


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check (and where lossless, convert) a YAML value against a field's annotation."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0])
    if origin is list:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (item,) = typing.get_args(tp) or (Any,)
        return [_coerce(v, item, where) for v in value]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML reads "1e-4" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if tp is str:
        if value is None or isinstance(value, (dict, list)):
            raise ConfigError(f"{where}: expected text, got {value!r}")
        return str(value)
    return value


def _build(cls: type, data: dict[str, Any], section: str) -> Any:
    obj = cls()
    types_ = _field_types(cls)
    for key, value in data.items():
        if key not in types_:
            raise ConfigError(f"saved config: {section} has no key {key!r}")
        setattr(obj, key, _coerce(value, types_[key], f"saved config: {section}.{key}"))
    return obj


def dump_json(cfg: Config, path: Path) -> None:
    path.write_text(json.dumps(cfg.to_dict(), indent=2, sort_keys=True) + "\n")
