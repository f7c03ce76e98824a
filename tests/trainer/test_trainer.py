"""The bundled trainer on a tiny random model and a generated mixture (CPU, no downloads).

The mixture is synthetic but has every row shape the real one has (image captions, image VQA,
text-only MCQA with options, text QA with context) and is learnable: answers follow from the
image colour or the text, so a working model's loss must fall.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from medmix.core.schema import dumps_meta, to_table
from trainer.config import ConfigError, load_config
from trainer.data import SampleEncoder, collate, load_image
from trainer.language import build_tokenizer
from trainer.model import build_vlm, mark_trainable
from trainer.prompts import IGNORE_INDEX, IMAGE_TOKEN_ID, render

COLORS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 60, 220), "yellow": (230, 220, 20)}
SHAPES = ("square", "disc")
FACTS = [("Which organ pumps blood?", ["heart", "liver", "kidney"], "heart"),
         ("Which cells carry oxygen?", ["platelets", "red blood cells", "neurons"], "red blood cells"),
         ("Which organ filters urine?", ["lung", "kidney", "spleen"], "kidney")]
FINDINGS = ["pneumonia", "a fracture", "edema", "no abnormality"]


def _png(color: tuple[int, int, int], shape: str, rng: random.Random) -> bytes:
    size = 40 + rng.randrange(24)  # varied sizes: the processor must resize
    image = Image.new("RGB", (size, size), (0, 0, 0))
    pixels = image.load()
    c = size // 2
    for x in range(size):
        for y in range(size):
            inside = abs(x - c) < size // 3 and abs(y - c) < size // 3 if shape == "square" else \
                (x - c) ** 2 + (y - c) ** 2 < (size // 3) ** 2
            if inside:
                pixels[x, y] = color
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _row(i: int, rng: random.Random) -> dict:
    row = {"id": f"synthetic/{i}", "source": "synthetic", "split": "train", "domain": "radiology",
           "modality": None, "task": "", "image": None, "image_hash": None, "image_phash": None,
           "width": None, "height": None, "question": None, "options": None, "answer": "", "context": None,
           "license": "CC0-1.0", "meta": dumps_meta({})}
    kind = i % 4
    if kind in (0, 1):
        color, shape = rng.choice(list(COLORS)), rng.choice(SHAPES)
        data = _png(COLORS[color], shape, rng)
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
        row.update(image={"bytes": data, "path": None}, image_hash=hashlib.sha256(data).hexdigest(),
                   image_phash=0, width=w, height=h)
        if kind == 0:
            row.update(task="caption", answer=f"a {color} {shape} on a black background")
        else:
            row.update(task="vqa", question="What color is the shape?", answer=color)
    elif kind == 2:
        question, options, answer = rng.choice(FACTS)
        row.update(task="mcqa", domain="clinical-text", question=question, options=rng.sample(options, len(options)),
                   answer=answer)
    else:
        finding = rng.choice(FINDINGS)
        row.update(task="qa", domain="clinical-text", context=f"The radiograph shows {finding}.",
                   question="What does the radiograph show?", answer=finding)
    return row


def make_mixture(path: Path, n_rows: int = 96, seed: int = 0, shards: int = 2) -> Path:
    """A mixture folder as medmix writes it: manifest.json + data/train-*.parquet in ARROW_SCHEMA."""
    rng = random.Random(seed)
    rows = [_row(i, rng) for i in range(n_rows)]
    (path / "data").mkdir(parents=True, exist_ok=True)
    per = -(-n_rows // shards)
    listed = []
    for s in range(shards):
        name = f"data/train-{s:05d}-of-{shards:05d}.parquet"
        part = rows[s * per:(s + 1) * per]
        pq.write_table(to_table(part), path / name, row_group_size=16)
        listed.append({"path": name, "rows": len(part), "split": "train"})
    (path / "manifest.json").write_text(json.dumps({"name": "synthetic", "shards": listed}))
    return path


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def mixture(tmp_path_factory) -> Path:
    return make_mixture(tmp_path_factory.mktemp("mix"))


@pytest.fixture(scope="module")
def tiny_model(mixture):
    cfg = load_config("tiny")
    torch.manual_seed(0)
    tokenizer = build_tokenizer(cfg.model, mixture)
    model = build_vlm(cfg.model, tokenizer)
    return cfg, model


def _rows(mixture: Path) -> list[dict]:
    return [r for f in sorted((mixture / "data").glob("*.parquet")) for r in pq.read_table(f).to_pylist()]


# -- config --------------------------------------------------------------------------------------------
def test_overrides_are_typed_and_typos_are_refused():
    cfg = load_config("tiny", ["train.lr=1e-4", "lora_r=4", "model.lora_target_modules=q_proj,v_proj",
                               "train.trainable=[projector]"])
    assert cfg.train.lr == pytest.approx(1e-4) and cfg.model.lora_r == 4
    assert cfg.model.lora_target_modules == ["q_proj", "v_proj"] and cfg.train.trainable == ["projector"]
    with pytest.raises(ConfigError, match="lora_rr"):
        load_config("tiny", ["lora_rr=4"])
    with pytest.raises(ConfigError, match="expected an integer"):
        load_config("tiny", ["train.steps=many"])
    with pytest.raises(ConfigError, match="unknown part"):
        load_config("tiny", ["train.trainable=[vision,everything]"])
    with pytest.raises(ConfigError, match="neither a preset"):
        load_config("no-such-config")


def test_yaml_config_file_builds_on_a_preset(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("base: openmedq-7b\ntrain:\n  lr: 0.0001\n  grad_accum: 8\nmodel:\n  lora_r: 16\n")
    cfg = load_config(str(path), ["train.steps=5"])
    assert (cfg.name, cfg.model.llm, cfg.model.lora_r) == ("mine", "meta-llama/Llama-2-7b-hf", 16)
    assert (cfg.train.lr, cfg.train.grad_accum, cfg.train.steps) == (1e-4, 8, 5)
    path.write_text("train:\n  nonsense: 1\n")
    with pytest.raises(ConfigError, match=r"mine.yaml.*nonsense"):
        load_config(str(path))


# -- prompts and labels -----------------------------------------------------------------------------
def test_every_task_renders_with_an_image_slot_only_when_there_is_an_image():
    rows = {"caption": {"task": "caption", "answer": "a cell"},
            "vqa": {"task": "vqa", "question": "Is there <image> a mass?", "answer": "no"},
            "mcqa": {"task": "mcqa", "question": "Q?", "options": ["x", "y"], "answer": "y"},
            "qa": {"task": "qa", "context": "Ctx.", "question": "Q?", "answer": "yes"}}
    for task, row in rows.items():
        with_image = "".join(p.text for p in render(row, has_image=True))
        text_only = "".join(p.text for p in render(row, has_image=False))
        assert with_image.count("<image>") == 1 and with_image.startswith("<image>\n"), task
        assert "<image>" not in text_only, task  # also the literal one inside the vqa question
        assert text_only.endswith("Answer: " + ("(B) y" if task == "mcqa" else row["answer"])), task
    assert "Options:\n(A) x\n(B) y\n" in "".join(p.text for p in render(rows["mcqa"], has_image=False))
    assert "Context: Ctx.\n" in "".join(p.text for p in render(rows["qa"], has_image=False))


def test_label_mask_on_a_real_batch(mixture, tiny_model):
    """Every unmasked label is an answer token (or the closing EOS), and no answer token is masked."""
    cfg, model = tiny_model
    tok = model.tokenizer
    encoder = SampleEncoder(tok, model.processor, model.n_visual, cfg.train.max_length)
    rows = _rows(mixture)[:8]
    batch = collate([encoder(r) for r in rows], tok.pad_token_id)
    assert {r["task"] for r in rows} == {"caption", "vqa", "mcqa", "qa"}
    assert batch["pixel_values"].shape == (4, 3, 32, 32)  # only the image rows
    for i, row in enumerate(rows):
        ids, labels, mask = batch["input_ids"][i], batch["labels"][i], batch["attention_mask"][i]
        labelled = (labels != IGNORE_INDEX).nonzero().flatten().tolist()
        expected = tok(" " + row["answer"] if row["task"] != "mcqa" else
                       " (" + "ABC"[row["options"].index(row["answer"])] + ") " + row["answer"],
                       add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        assert labels[labelled].tolist() == expected, row["id"]  # exactly the answer, nothing more or less
        assert labelled == list(range(labelled[0], labelled[0] + len(expected)))  # one contiguous run
        assert ids[labelled].tolist() == expected  # labels are the inputs (the model shifts)
        n = int(mask.sum())
        assert labelled[-1] == n - 1 and (labels[n:] == IGNORE_INDEX).all()  # padding masked
        assert int((ids == IMAGE_TOKEN_ID).sum()) == (model.n_visual if row["image"] else 0)
        assert tok.decode(ids[1:labelled[0]][ids[1:labelled[0]] >= 0]).endswith("Answer:")


def test_truncation_cuts_context_first_then_the_answer_and_never_the_image(tiny_model, mixture):
    _, model = tiny_model
    tok = model.tokenizer
    encoder = SampleEncoder(tok, model.processor, model.n_visual, max_length=48)
    image_row = next(r for r in _rows(mixture) if r["task"] == "vqa")
    # a long context goes first; question, template and answer survive whole
    out = encoder(dict(image_row, context="The radiograph shows edema. " * 40))
    ids, labels = out["input_ids"], out["labels"]
    assert len(ids) == 48 and ids.count(IMAGE_TOKEN_ID) == model.n_visual
    text = tok.decode([t for t in ids if t >= 0])
    assert text.endswith("Question: What color is the shape?\nAnswer: " + image_row["answer"] + "</s>")
    assert 0 < text.count("edema") < 40
    # an answer too long for any budget is cut last, after every other text, never the image
    out = encoder(dict(image_row, context="Edema. " * 40, answer="blue " * 60))
    ids, labels = out["input_ids"], out["labels"]
    assert len(ids) == 48 and ids.count(IMAGE_TOKEN_ID) == model.n_visual
    kept = [t for t in labels if t != IGNORE_INDEX]
    assert "edema" not in tok.decode([t for t in ids if t >= 0]).lower()
    assert 1 < len(kept) < 60 and kept[-1] == tok.eos_token_id
    assert tok.decode(kept[:-1]).split() == ["blue"] * (len(kept) - 1)  # the answer's head, in order
    with pytest.raises(ConfigError, match="max_length=20 cannot hold 16 visual tokens"):
        SampleEncoder(tok, model.processor, model.n_visual, max_length=20)


def test_an_undecodable_image_skips_that_row_by_id(tiny_model, mixture, caplog):
    from trainer.data import EncodedStream

    _, model = tiny_model
    rows = _rows(mixture)[:4]
    rows[0] = dict(rows[0], image={"bytes": b"\x89PNG not really", "path": None})

    class Rows(list):
        def state_dict(self):
            return {}

    stream = EncodedStream(Rows(rows), SampleEncoder(model.tokenizer, model.processor, model.n_visual, 128))
    out = list(stream)
    assert len(out) == 3 and stream.skipped == 1
    assert [o["id"] for o in out] == [r["id"] for r in rows[1:]]
    assert rows[0]["id"] in caplog.text and "cannot be decoded" in caplog.text


# -- parameters -------------------------------------------------------------------------------------------
def test_only_the_intended_parameters_train_and_all_of_them_get_gradients(tiny_model, mixture):
    cfg, model = tiny_model
    counts = mark_trainable(model, ["vision", "projector", "lora"])
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable, "nothing trains"
    for name in trainable:
        assert name.startswith(("vision.", "projector.")) or "lora_" in name, name
    assert all(p.requires_grad for p in model.projector.parameters())
    assert not any(p.requires_grad for n, p in model.llm.named_parameters() if "lora_" not in n)
    assert counts["lora"] == sum(p.numel() for n, p in model.llm.named_parameters() if "lora_" in n)
    assert counts["vision"] == sum(p.numel() for p in model.vision.parameters())  # ViT built without pooler
    encoder = SampleEncoder(model.tokenizer, model.processor, model.n_visual, cfg.train.max_length)
    batch = collate([encoder(r) for r in _rows(mixture)[:8]], model.tokenizer.pad_token_id)
    with torch.no_grad():  # LoRA starts with B = 0, which zeroes A's gradient exactly; move off that point
        for name, param in model.llm.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.01)
    model.zero_grad(set_to_none=True)
    model(**batch).backward()
    for name, param in model.named_parameters():
        if param.requires_grad:
            assert param.grad is not None and param.grad.abs().sum() > 0, f"{name} got no gradient"
        else:
            assert param.grad is None, f"frozen {name} got a gradient"
    model.zero_grad(set_to_none=True)
    # the same switch, narrowed: only the projector
    counts = mark_trainable(model, ["projector"])
    assert counts["vision"] == counts["lora"] == 0 and counts["projector"] > 0
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {
        f"projector.{n}" for n, _ in model.projector.named_parameters()}


# -- the loop: learning, exact resume, checkpoints other tools read ------------------------------------
RUN_OVERRIDES = ["train.progress=false", "train.log_every=1", "train.save_every=10", "train.keep_checkpoints=10"]


def _losses(run: Path) -> dict[int, dict]:
    return {m["step"]: m for m in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())}


@pytest.fixture(scope="module")
def trained_run(mixture, tmp_path_factory) -> Path:
    """`medmix train --config tiny` for 60 steps, as the CLI calls it."""
    from trainer.cli import train_command

    out = tmp_path_factory.mktemp("run")
    train_command(config="tiny", data=mixture, out=out, steps=60, overrides=RUN_OVERRIDES, resume=False)
    return out


def test_sixty_tiny_steps_cut_the_loss_by_at_least_thirty_percent(trained_run):
    metrics = _losses(trained_run)
    assert sorted(metrics) == list(range(1, 61))
    first = sum(metrics[s]["loss"] for s in range(1, 11)) / 10
    last = sum(metrics[s]["loss"] for s in range(51, 61)) / 10
    assert last <= 0.7 * first, (first, last)
    assert metrics[60]["epoch"] >= 4  # 96 rows / batch 8 = 12 steps an epoch: epochs roll over
    assert all(m["tokens_per_s"] > 0 and 0 <= m["data_wait"] < 1 for m in metrics.values())
    assert metrics[5]["lr"] == pytest.approx(3e-3) and metrics[60]["lr"] == pytest.approx(3e-4)  # warmup, cosine


def test_stop_and_resume_gives_exactly_the_uninterrupted_losses(trained_run, mixture, tmp_path):
    """Interrupted after step 10 (and with 2 loader worker processes instead of none), the
    resumed run reproduces steps 11-15 of the uninterrupted run bit for bit."""
    from trainer.cli import train_command

    overrides = RUN_OVERRIDES + ["train.num_workers=2"]
    train_command(config="tiny", data=mixture, out=tmp_path, steps=60, overrides=overrides, resume=False,
                  stop_after=10)
    assert sorted(_losses(tmp_path)) == list(range(1, 11))
    assert (tmp_path / "checkpoints" / "latest").read_text().strip() == "step-000010"
    with (tmp_path / "metrics.jsonl").open("a") as f:  # as if it crashed after logging step 11, before saving
        f.write(json.dumps({"step": 11, "loss": -1.0}) + "\n")
    train_command(config="tiny", data=mixture, out=tmp_path, steps=60, overrides=overrides, resume=True,
                  stop_after=15)
    resumed, straight = _losses(tmp_path), _losses(trained_run)
    logged = [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert logged == list(range(1, 16))  # the crashed run's stray step 11 is gone, not duplicated
    for step in range(1, 16):
        for key in ("loss", "lr", "grad_norm", "tokens_seen", "epoch"):
            assert resumed[step][key] == straight[step][key], (step, key)
    with pytest.raises(Exception, match="already holds checkpoints"):
        train_command(config="tiny", data=mixture, out=tmp_path, steps=60, overrides=overrides, resume=False)


def test_trained_vlm_answers_with_greedy_generation(trained_run, mixture):
    from trainer.model import load_vlm

    model = load_vlm(trained_run)
    vqa = [r for r in _rows(mixture) if r["task"] == "vqa"][:12]
    images = [load_image(r) for r in vqa]
    answers = model.generate(images, [r["question"] for r in vqa], max_new_tokens=6)
    accuracy = sum(a == r["answer"] for a, r in zip(answers, vqa)) / len(vqa)
    assert accuracy >= 0.75, list(zip(answers, [r["answer"] for r in vqa]))
    # left padding must not change an answer: one at a time gives the same text as a batch
    assert [model.generate([i], [r["question"]], 6)[0] for i, r in zip(images[:4], vqa)] == answers[:4]
    text_rows = [r for r in _rows(mixture) if r["task"] == "qa"][:4]
    out = model.generate([None] * 4, text_rows, max_new_tokens=6)
    assert len(out) == 4 and all(isinstance(o, str) for o in out)


def test_checkpoint_parts_load_with_plain_transformers_and_peft(trained_run):
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModel, AutoModelForCausalLM

    from trainer.checkpoint import load_vision_encoder, resolve_checkpoint

    ckpt = resolve_checkpoint(trained_run)
    assert ckpt.name == "step-000060"
    encoder, processor = load_vision_encoder(trained_run)
    assert processor["size"] == {"height": 32, "width": 32} and processor["image_mean"] == [0.5] * 3
    pixels = torch.randn(2, 3, 32, 32)
    plain = AutoModel.from_pretrained(ckpt / "vision").eval()
    with torch.no_grad():
        ours = encoder(pixel_values=pixels).last_hidden_state
        theirs = plain(pixel_values=pixels).last_hidden_state
    assert torch.equal(ours, theirs)  # same trained weights through plain transformers
    first = resolve_checkpoint(trained_run / "checkpoints" / "step-000010")
    before, after = load_file(first / "vision" / "model.safetensors"), load_file(ckpt / "vision" / "model.safetensors")
    assert before.keys() == after.keys() and any(not torch.equal(before[k], after[k]) for k in before)  # it trained
    base = AutoModelForCausalLM.from_pretrained(ckpt / "llm_base")
    lora = PeftModel.from_pretrained(base, ckpt / "adapter")
    saved = load_file(ckpt / "adapter" / "adapter_model.safetensors")
    loaded = {n: p for n, p in lora.named_parameters() if "lora_" in n}
    assert len(saved) == len(loaded) > 0
    name = next(iter(saved))
    assert torch.equal(saved[name], loaded[name.replace(".weight", ".default.weight")])


# -- the throughput benchmark, in its CPU mode ---------------------------------------------------------
def test_throughput_benchmark_runs_the_real_step_and_counts_lora_flops(tmp_path):
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "train_throughput.py"
    spec = importlib.util.spec_from_file_location("train_throughput", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    result = bench.main(["--config", "tiny", "--steps", "2", "--warmup", "1", "--text-len", "24", "--answer-len", "8",
                         "--peak-tflops", "1", "--json", str(tmp_path / "r.json"),
                         "train.gradient_checkpointing=true"])
    assert json.loads((tmp_path / "r.json").read_text())["tokens_per_s"] == pytest.approx(result["tokens_per_s"])
    assert result["seq_len"] == 1 + 16 + 24 and result["tokens_per_s"] > 0 and result["peak_gpu_mem_gib"] is None
    assert result["mfu"] == pytest.approx(result["model_tflop_per_step"] / result["step_s"])  # peak 1 TFLOP/s
    assert result["hfu"] > result["mfu"]  # checkpointing recomputes the forward: hardware work, not model work

    # the formula: frozen weights cost 4 FLOPs per token per weight, not 6; the LM head runs on answers only
    cfg = load_config("tiny")
    torch.manual_seed(0)
    model = build_vlm(cfg.model, bench.train_bpe(["x"], 300))
    gen = torch.Generator().manual_seed(0)
    text_only = bench.synthetic_batch(2, 24, 8, 0.0, model.n_visual, 300, (32, 32), gen)
    flops, _ = bench.step_flops(model, text_only, False)
    llm = model.llm.get_base_model()
    n_body = sum(p.numel() for n, p in llm.get_decoder().named_parameters() if "lora_" not in n and "embed" not in n)
    n_lora = sum(p.numel() for n, p in model.llm.named_parameters() if "lora_" in n)
    d, layers = llm.config.hidden_size, llm.config.num_hidden_layers
    tokens, answers = 2 * 25, 2 * 8
    expected = (4 * n_body + 6 * n_lora) * tokens + 3 * 2 * layers * d * 2 * 25 ** 2 + 4 * d * 300 * answers
    assert flops == pytest.approx(expected)
    with_images = bench.synthetic_batch(2, 24, 8, 1.0, model.n_visual, 300, (32, 32), gen)
    assert bench.step_flops(model, with_images, False)[0] > flops


def test_any_vision_tower_trains_only_what_its_features_use(mixture):
    """CLIP's post-layernorm, or ViT's last block when features come from the layer before it,
    cannot get gradients: the probe leaves them frozen, whatever the encoder."""
    tokenizer = build_tokenizer(load_config("tiny").model, mixture)
    vit = {"image_size": 32, "patch_size": 8, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
           "intermediate_size": 128}
    for overrides, frozen_prefix in ((["model.vision_type=clip"], ("vision.encoder.post_layernorm.",)),
                                     (["model.vision_feature_layer=-2"],
                                      ("vision.encoder.layers.1.", "vision.encoder.layernorm."))):
        cfg = load_config("tiny", overrides)
        cfg.model.vision_config = dict(vit)
        torch.manual_seed(0)
        model = build_vlm(cfg.model, tokenizer)
        mark_trainable(model, ["vision", "projector", "lora"])
        frozen = {n for n, p in model.vision.named_parameters(prefix="vision") if not p.requires_grad}
        assert frozen and all(n.startswith(frozen_prefix) for n in frozen), (overrides, sorted(frozen))
        assert {p for p in frozen_prefix if any(n.startswith(p) for n in frozen)} == set(frozen_prefix)
        assert model.n_visual == 16
        encoder = SampleEncoder(tokenizer, model.processor, model.n_visual, 128)
        batch = collate([encoder(r) for r in _rows(mixture)[:4]], tokenizer.pad_token_id)
        model(**batch).backward()
        assert all(p.grad is not None for n, p in model.vision.named_parameters() if p.requires_grad)
