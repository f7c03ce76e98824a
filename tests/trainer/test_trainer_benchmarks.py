"""The throughput benchmark's real-length mode and profiler, and the GPU A/B ladder's CPU dry run."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


pytestmark = pytest.mark.usefixtures("one_thread")


def _stats() -> dict:
    """`medmix stats --json` layout: 3 vqa rows with images, 1 text qa row; token lengths per field."""
    def hist(lo, hi):
        return {"n": 1, "histogram": {"edges": [lo, hi], "counts": [1]}}
    return {"rows": {"total": 4, "by_task": {"vqa": 3, "qa": 1}}, "images": {"rows": 3},
            "text": {"chars": {}, "tokens": {"vqa": {"question": hist(5, 9), "answer": hist(2, 4)},
                                             "qa": {"question": hist(10, 12), "context": hist(40, 60),
                                                    "answer": hist(20, 30)}}}}


def test_real_lengths_are_drawn_from_the_mixture_stats():
    bench = _load("train_throughput")
    sampler = bench.LengthSampler(_stats(), seed=0)
    draws = [sampler.sample() for _ in range(400)]
    vqa = [d for d in draws if d[0]]
    qa = [d for d in draws if not d[0]]
    assert 0.65 < len(vqa) / len(draws) < 0.85  # 3 of 4 rows are vqa, and only vqa rows have images
    tpl = bench.TEMPLATE_TOKENS
    assert all(tpl + 5 + 2 + 1 <= text <= tpl + 8 + 3 + 1 and 3 <= answer <= 4 for _, text, answer in vqa)
    assert all(tpl + 10 + 40 + 20 + 1 <= text <= tpl + 11 + 59 + 29 + 1 for _, text, _ in qa)
    chars = {**_stats(), "text": {"chars": _stats()["text"]["tokens"]}}  # no tokenizer: characters / 4
    assert max(t for _, t, _ in (bench.LengthSampler(chars).sample() for _ in range(50))) < tpl + 30


def test_real_lengths_report_effective_mfu_below_padded_and_packing_cuts_the_padding(tmp_path):
    bench = _load("train_throughput")
    stats = tmp_path / "stats.json"
    stats.write_text(json.dumps(_stats()))
    common = ["--config", "tiny", "--steps", "1", "--warmup", "1", "--text-len", "24", "--answer-len", "8",
              "--peak-tflops", "1", "--lengths", "both", "--lengths-from", str(stats), "train.batch_size=8"]
    plain = bench.main(common + ["--profile", str(tmp_path / "prof")])
    fixed, real = plain["modes"]["fixed"], plain["modes"]["real"]
    assert fixed["padding_share"] == 0 and fixed["mfu"] == pytest.approx(fixed["effective_mfu"])
    assert real["padding_share"] > 0.2 and real["effective_mfu"] < real["mfu"]
    assert real["padded_tflop_per_step"] > real["model_tflop_per_step"]
    packed = bench.main(common + ["train.packing=true"])["modes"]["real"]
    assert packed["rows_per_micro_batch"] < 8 and packed["padding_share"] < real["padding_share"]
    assert packed["model_tflop_per_step"] == pytest.approx(real["model_tflop_per_step"])  # same samples, same work
    summary = json.loads((tmp_path / "prof" / "profile.json").read_text())
    assert summary["top"] and 0 < summary["share_by_kind"]["elementwise"] < 1
    assert sum(summary["share_by_kind"].values()) == pytest.approx(1)
    assert "elementwise" in (tmp_path / "prof" / "profile.txt").read_text()
    assert bench.kernel_kind("void at::native::vectorized_elementwise_kernel<4, ...>") == "elementwise"
    assert bench.kernel_kind("triton_poi_fused_add_mul_0") == "elementwise"
    assert bench.kernel_kind("sm90_xmma_gemm_bf16bf16_bf16f32") == "gemm"
    assert bench.kernel_kind("fmha_cutlassF_bf16_aligned_64x64_rf_sm80") == "attention"


def test_h200_ladder_dry_run_walks_its_rungs_on_cpu(tmp_path):
    ladder = _load("h200_ladder")
    results = dict(ladder.main(["--dry-run", "--out", str(tmp_path), "--rungs", "1,3,5a,6"]))
    assert list(results) == ["1 baseline", "3 + fused add", "5a Liger, no compile", "6 best + packing"]
    assert "needs a CUDA GPU" in results["5a Liger, no compile"]["error"]
    baseline, final = results["1 baseline"], results["6 best + packing"]
    assert baseline["fast_paths"]["lora_cast_input"] and not baseline["fast_paths"]["lora_fused_add"]
    assert final["fast_paths"]["lora_fused_add"] and final["fast_paths"]["packing"]
    for r in (baseline, results["3 + fused add"], final):
        assert set(r["modes"]) == {"fixed", "real"} and all(m["tokens_per_s"] > 0 for m in r["modes"].values())
    table = (tmp_path / "table.txt").read_text()
    assert "eff MFU" in table and table.count("real") == 3 and "not run" in table
    assert {p.parent.name for p in tmp_path.glob("profile-rung*/profile.txt")} == {"profile-rung1", "profile-rung6"}
    assert len(json.loads((tmp_path / "results.json").read_text())) == 4
