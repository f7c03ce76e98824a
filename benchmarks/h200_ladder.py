"""Issue 16's A/B ladder on one GPU: each rung adds one fast path; one table at the end.

    python benchmarks/h200_ladder.py --out ladder/                 # H200, ~8 minutes, openmedq-7b --random-init
    python benchmarks/h200_ladder.py --dry-run --out /tmp/ladder    # CPU, tiny config: checks every code path

Rungs (each a fresh `benchmarks/train_throughput.py` process on the GPU, so peak memory, compile
caches and Liger's process-wide patch never leak from one rung into the next):
  1 baseline (peft as shipped: fp32 input cast, out-of-place LoRA add) · 2 cast off · 3 + fused add ·
  4 + compile · 5a Liger instead of compile · 6 best of 3/4/5a + packing · 7 rung 6 at micro-batch 32 ·
  5b Liger + compile (last: the least likely winner, and a second cold compile).
Every rung runs padded (fixed 1 + 196 + 128 = 325 tokens, the earlier 31.7% setting: batch 24,
no checkpointing, lora_dropout=0) and `--lengths real` (the demo mixture's length stats, built
here offline with `medmix build` + `medmix stats --json`, or `--lengths-from`), and prints tokens/s,
MFU, effective MFU and peak memory. Rung 1 (baseline) and rung 7 (final configuration) get
`--profile`. Inductor's cache is
shared between rungs, so only the first compiled rung pays the full cold start. Rungs that would
not fit in `--budget-s` are skipped and listed as such; the table so far is printed after each rung.

`--dry-run` runs the same rungs in-process on the tiny config on CPU with 1 step each, compile
through `aot_eager` (inductor's C++ build takes ~60 s cold for the tiny model on 2 cores); the
Liger rungs must be refused there (Triton has no CPU backend), and the table says so.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks" / "train_throughput.py"
PEFT_AS_SHIPPED = ["model.lora_cast_input=true", "model.lora_fused_add=false"]
CAST_OFF = ["model.lora_cast_input=false", "model.lora_fused_add=false"]
FUSED = ["model.lora_cast_input=false", "model.lora_fused_add=true"]


def rungs(compile_backend: str, big_batch: int) -> list[tuple[str, list[str], bool]]:
    """(name, overrides, profile?) in running order. "BEST" stands for the fastest of rungs 3, 4 and 5a
    on real lengths. Liger + compile runs last: it is the least likely winner and a second cold compile."""
    compiled = [f"train.compile={compile_backend}", "train.pad_to_multiple=128"]
    return [
        ("1 baseline", PEFT_AS_SHIPPED, True),
        ("2 cast off", CAST_OFF, False),
        ("3 + fused add", FUSED, False),
        ("4 + compile", FUSED + compiled, False),
        ("5a Liger, no compile", FUSED + ["model.liger=true"], False),
        ("6 best + packing", ["BEST", "train.packing=true"], False),
        (f"7 + batch {big_batch}", ["BEST", "train.packing=true", f"train.batch_size={big_batch}"], True),
        ("5b Liger + compile", FUSED + compiled + ["model.liger=true"], False),
    ]


def demo_lengths(work: Path) -> Path:
    """Build the embedded demo mixture (offline, seconds) and write its stats JSON."""
    mixture = work / "demo-mixture"
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    subprocess.run([sys.executable, "-m", "medmix.cli", "build", "--out", str(mixture)], check=True, env=env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    stats = subprocess.run([sys.executable, "-m", "medmix.cli", "stats", str(mixture), "--json"], check=True,
                           env=env, capture_output=True, text=True).stdout
    path = work / "demo-stats.json"
    path.write_text(stats)
    return path


def run_rung(args_list: list[str], *, in_process: bool, timeout: float, out_json: Path) -> dict[str, Any]:
    """One rung's result dict, or {"error": ...} (a refused setting, a crash, a timeout)."""
    if in_process:
        import importlib.util

        spec = importlib.util.spec_from_file_location("train_throughput", BENCH)
        bench = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(bench)
        from medmix.core.errors import MedmixError

        try:
            return bench.main(args_list + ["--json", str(out_json)])
        except MedmixError as exc:
            return {"error": str(exc)}
        finally:
            import torch

            torch._dynamo.reset()
    try:
        proc = subprocess.run([sys.executable, str(BENCH), *args_list, "--json", str(out_json)], check=False,
                              timeout=timeout, capture_output=True, text=True)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    if proc.returncode != 0 or not out_json.is_file():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"error": f"exit {proc.returncode}: " + " | ".join(tail)}
    return json.loads(out_json.read_text())


def _speed(result: dict[str, Any]) -> float:
    """Real-length tokens/s when measured (what training sees), else the padded figure."""
    return result["modes"].get("real", result["modes"]["fixed"])["tokens_per_s"]


def table(results: list[tuple[str, dict[str, Any]]]) -> str:
    def pct(v):
        return "-" if v is None else f"{100 * v:.1f}%"
    head = (f"{'rung':<22} {'lengths':<6} {'rows x width':>12} {'pad':>6} {'step ms':>8} {'tokens/s':>10} "
            f"{'MFU':>6} {'eff MFU':>7} {'peak GiB':>8} {'1st step s':>10}")
    lines = [head, "-" * len(head)]
    for name, r in results:
        if "error" in r:
            lines.append(f"{name:<22} not run: {r['error'][:150]}")
            continue
        for m in r["modes"].values():
            mem = "-" if m["peak_gpu_mem_gib"] is None else f"{m['peak_gpu_mem_gib']:.1f}"
            lines.append(f"{name:<22} {m['lengths']:<6} {m['rows_per_micro_batch']:>5} x {m['seq_len']:<5} "
                         f"{100 * m['padding_share']:5.1f}% {1000 * m['step_s']:8.1f} {m['tokens_per_s']:10,.0f} "
                         f"{pct(m['mfu']):>6} {pct(m['effective_mfu']):>7} {mem:>8} {m['first_step_s']:10.1f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[tuple[str, dict[str, Any]]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="tiny config on CPU, in-process, 1 step per rung")
    parser.add_argument("--out", type=Path, required=True, help="results.json, table.txt, rung JSONs, profiles")
    parser.add_argument("--lengths-from", type=Path, default=None, help="stats JSON or mixture (default: demo)")
    parser.add_argument("--budget-s", type=float, default=420, help="stop starting rungs after this (GPU mode)")
    parser.add_argument("--batch-size", type=int, default=24)
    parser.add_argument("--big-batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rungs", default=None, help="comma-separated rung numbers to run (default: all)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        lengths = args.lengths_from
        if lengths is None:
            try:
                lengths = demo_lengths(Path(tmp))
            except (OSError, subprocess.CalledProcessError) as exc:
                print(f"could not build the demo mixture for real lengths ({exc}); running padded lengths only")
        if args.dry_run:
            base = ["--config", "tiny", "--steps", "1", "--warmup", "1", "--text-len", "24", "--answer-len", "8",
                    "--peak-tflops", "1", "--threads", "1"]
            fixed = ["train.batch_size=4"]
            ladder = rungs("aot_eager", 6)
        else:
            base = ["--config", "openmedq-7b", "--random-init", "--steps", str(args.steps), "--warmup",
                    str(args.warmup), "--text-len", "128", "--answer-len", "32", "--grad-ckpt", "off"]
            fixed = [f"train.batch_size={args.batch_size}", "train.grad_accum=1", "model.lora_dropout=0"]
            ladder = rungs("inductor", args.big_batch)
        os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(Path(tmp) / "inductor-cache"))  # shared by rungs
        wanted = None if args.rungs is None else {r.strip() for r in args.rungs.split(",")}
        ladder = [(n, o, p) for n, o, p in ladder
                  if wanted is None or n.split()[0] in wanted or n.split()[0].rstrip("ab") in wanted]
        results: list[tuple[str, dict[str, Any]]] = []
        best: list[str] = FUSED
        for name, overrides, profiled in ladder:
            number = name.split()[0]
            if "BEST" in overrides:
                overrides = best + [o for o in overrides if o != "BEST"]
            elapsed = time.perf_counter() - start
            per_rung = elapsed / max(1, len(results))
            if not args.dry_run and results and elapsed + per_rung > args.budget_s:
                results.append((name, {"error": f"skipped: {elapsed:.0f} s of the {args.budget_s:.0f} s budget used"}))
                continue
            extra = ["--lengths", "both", "--lengths-from", str(lengths)] if lengths else ["--lengths", "fixed"]
            if profiled or (args.rungs is not None and name == ladder[-1][0]):  # baseline and final config
                extra += ["--profile", str(args.out / f"profile-rung{number}")]
            out_json = args.out / f"rung{number}.json"
            result = run_rung(base + extra + fixed + overrides, in_process=args.dry_run,
                              timeout=max(30.0, args.budget_s - elapsed), out_json=out_json)
            result["overrides"] = overrides
            results.append((name, result))
            if number in ("3", "4", "5a") and "error" not in result:
                contenders = [(_speed(r), r["overrides"]) for n, r in results
                              if n.split()[0] in ("3", "4", "5a") and "error" not in r]
                best = max(contenders)[1]
            print(table(results), flush=True)
        text = table(results)
        (args.out / "table.txt").write_text(text + "\n")
        (args.out / "results.json").write_text(json.dumps([{"rung": n, **r} for n, r in results], indent=2) + "\n")
    print(f"\nladder: {len(results)} rungs in {time.perf_counter() - start:.0f} s; best fast paths: {best}")
    for profile in sorted(args.out.glob("profile-rung*/profile.txt")):
        print(f"\n== {profile.parent.name} ==\n" + "\n".join(profile.read_text().splitlines()[:14]))
    return results


if __name__ == "__main__":
    main()
