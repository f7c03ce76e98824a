"""`medmix ablate` on the demo recipe, end to end, plus the numbers behind docs/ablate.md's cost model.

    nice -n 10 python benchmarks/ablate_cost.py --out /tmp/ablate-bench [--plan loo] [--tokens 20000]

Measures, in one run:
- a variant build (mix stage only, cache shared) against the base build from an empty cache, as a ratio;
- proxy-tiny training tokens/s on this CPU (from the runs' metrics.jsonl);
- proxy-small training tokens/s on this CPU for a few steps (an anchor only: it is a GPU config);
then prints the FLOPs estimate of a full `openmedq-3.35m` ablation with proxy-small on H100s
(6·N·T per run; N counted by building the model; throughput and MFU are stated assumptions).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from pathlib import Path

import torch

H100_BF16_DENSE = 989e12  # FLOP/s, NVIDIA's dense bf16 figure for H100 SXM
MFU = 0.30                # assumed model FLOPs utilization for a 130M VLM with LoRA at batch 32 x 512


def count_params(name: str) -> int:
    from medmix.ablate.proxy import proxy_config
    from trainer.language import build_llm, train_bpe
    from trainer.vision import build_vision

    cfg = proxy_config(name, seed=0)
    tower, _ = build_vision(cfg.model)
    tok = train_bpe(["x"], cfg.model.tokenizer_vocab_size)
    cfg.model.llm_config["vocab_size"] = cfg.model.tokenizer_vocab_size
    llm = build_llm(cfg.model, tok)
    return sum(p.numel() for p in tower.parameters()) + sum(p.numel() for p in llm.parameters())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--plan", default="loo")
    ap.add_argument("--tokens", type=int, default=20_000)
    ap.add_argument("--small-steps", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    from medmix.ablate.runner import AblationOptions, run_ablation

    shutil.rmtree(args.out, ignore_errors=True)
    t0 = time.perf_counter()
    summary = run_ablation(AblationOptions(recipe="demo", plan=args.plan, proxy="proxy-tiny", tokens=args.tokens,
                                           out=args.out / "ablation", cache=args.out / "cache", heldout_fraction=0.2,
                                           heldout_cap=20), log=lambda m: print(m, flush=True))
    wall = time.perf_counter() - t0
    base_build = summary["prepared"]["base_build"]["seconds"]
    variant_builds = [v["build"]["seconds"] for v in summary["variants"]]
    reused = [v["build"]["normalize"] for v in summary["variants"]]
    tiny_tps = [json.loads((args.out / "ablation" / "runs" / v["name"] / "metrics.jsonl").read_text()
                           .splitlines()[-2])["tokens_per_s"] for v in summary["variants"]]
    print(f"\ndemo {args.plan}: {len(summary['variants']) + 1} runs in {wall:.0f} s")
    med = statistics.median(variant_builds)
    print(f"base build (empty cache) {base_build:.2f} s; variant build median {med:.2f} s "
          f"(ratio {med / base_build:.2f}); units reused "
          f"{sum(r['reused'] for r in reused)}/{sum(r['units'] for r in reused)}")
    print(f"proxy-tiny on CPU (1 thread): median {statistics.median(tiny_tps):,.0f} tokens/s")

    # proxy-small: a few steps on the demo's base-variant subset, CPU
    from medmix.ablate.proxy import proxy_config
    from trainer.train import train

    cfg = proxy_config("proxy-small", seed=0, steps=args.small_steps,
                       overrides=("train.batch_size=4", "train.num_workers=0", "train.pad_to_multiple=1"))
    run = args.out / "small"
    torch.set_num_threads(2)
    t1 = time.perf_counter()
    train(cfg, args.out / "ablation" / "subsets" / "base", run)
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    print(f"proxy-small on CPU (2 threads, batch 4): {lines[-1]['tokens_per_s']:,.0f} tokens/s "
          f"({time.perf_counter() - t1:.0f} s for {args.small_steps} steps incl. start)")

    n = count_params("proxy-small")
    rows, tokens_per_row = 3_350_000, 196 + 150  # 14x14 visual tokens + ~150 text tokens (estimate)
    epoch_tokens = rows * tokens_per_row
    print(f"\nproxy-small parameters: {n / 1e6:.1f}M; openmedq-3.35m ~{epoch_tokens / 1e9:.2f}B tokens per epoch")
    for t in (1e8, 5e8):
        per_run = 6 * n * t / (H100_BF16_DENSE * MFU) / 3600
        for plan, runs in (("loo (14 sources)", 14 + 2), ("regmix:32", 32 + 4)):
            print(f"T={t / 1e9:.1f}B tokens/run: {per_run:.2f} GPU-h/run; {plan}: {runs} runs = "
                  f"{per_run * runs:.1f} H100 GPU-h (estimate, MFU {MFU:.0%})")


if __name__ == "__main__":
    main()
