"""The ablation as units with completion markers: prepare, then per variant build → subset → train → eval.

A unit's marker (`OUT/units/<unit>.json`, written to a temporary name and renamed) holds its
result; a unit with a marker is never run again, so a killed ablation resumes where it stopped
(a half-trained proxy resumes from its last checkpoint, a half-built variant from its shards).
`OUT/plan.json` records the command, seeds, variants and proxy settings; resuming with other
settings is refused instead of mixing two ablations in one folder.

Every variant's build shares one cache folder: the normalize units are content-keyed, so a
variant re-runs only the mix stage. Each build's manifest says how many units it reused
(`build_info.normalize`), and the report shows it beside the base build's.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from medmix.ablate.holdout import HELDOUT, select_heldout, training_subset
from medmix.ablate.variants import (
    Variant,
    base_recipe_dict,
    base_weights,
    make_variants,
    parse_plan,
    variant_recipe,
    write_recipe,
)
from medmix.core.errors import MedmixError
from medmix.core.writer import atomic_write_json

Log = Callable[[str], None]
STAGES = ("build", "subset", "train", "eval")


@dataclass
class AblationOptions:
    recipe: str
    plan: str
    proxy: str
    tokens: int
    out: Path
    cache: Path
    executor: str = "local"
    eval_sources: tuple[str, ...] = ()
    seed: int = 0
    heldout_fraction: float = 0.2
    heldout_cap: int = 200
    proxy_overrides: tuple[str, ...] = ()
    from_dirs: dict[str, Path] = field(default_factory=dict)
    accept: tuple[str, ...] = ()
    address: str | None = None

    def identity(self) -> dict[str, Any]:
        """What must match for a folder to be resumed (paths to caches and executors may change)."""
        d = asdict(self)
        for k in ("out", "cache", "executor", "address", "from_dirs"):
            d.pop(k)
        return json.loads(json.dumps(d, default=str))


class Units:
    """Markers plus whole-plan progress: each unit logs its time, the rate and the plan's ETA."""

    def __init__(self, out: Path, total: int, log: Log) -> None:
        self.dir = out / "units"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.total, self.log = total, log
        self.done = 0  # units of this plan finished, in this run or (markers) before it
        self.ran, self.seconds = 0, 0.0

    def marker(self, name: str) -> Path:
        return self.dir / f"{name}.json"

    def result(self, name: str) -> dict[str, Any] | None:
        m = self.marker(name)
        return json.loads(m.read_text())["result"] if m.is_file() else None

    def run(self, name: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        have = self.result(name)
        if have is not None:
            self.done += 1
            return have
        t0 = time.perf_counter()
        result = fn()
        took = time.perf_counter() - t0
        atomic_write_json(self.marker(name), {"unit": name, "seconds": round(took, 3), "result": result})
        self.done += 1
        self.ran += 1
        self.seconds += took
        rate = self.ran / self.seconds if self.seconds else 0.0
        left = max(self.total - self.done, 0)
        eta = f"{left / rate:,.0f}s" if rate else "?"
        self.log(f"[{self.done}/{self.total}] {name}: {took:.1f}s ({rate * 60:.1f} units/min, {left} left, ETA {eta})")
        return result

    def grow(self, n: int) -> None:
        self.total += n


@dataclass
class Context:
    opts: AblationOptions
    recipes: Path
    prepared: dict[str, Any]

    @property
    def out(self) -> Path:
        return self.opts.out


def run_ablation(opts: AblationOptions, log: Log = print) -> dict[str, Any]:
    from medmix.recipe import load_recipe

    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    kind, n = parse_plan(opts.plan)
    if opts.tokens < 1:
        raise MedmixError(f"--tokens {opts.tokens}: the token budget must be positive")
    _claim(out, opts)
    recipe = load_recipe(opts.recipe)
    # a variant without a source still decontaminates against that source's evaluation split, which is
    # read from the source's `from:` folder: keep every base source's folder at hand (the user's --from wins)
    from medmix.planning import _resolve_from

    kept = {s.name: _resolve_from(recipe, s.from_dir) for s in recipe.sources if s.from_dir}
    opts = dataclasses.replace(opts, from_dirs={**kept, **opts.from_dirs})
    units = Units(out, total=1, log=log)
    prepared = units.run("prepare", lambda: _prepare(opts, recipe, out, log))
    variants = make_variants(kind, n, prepared["base_weights"], prepared["available"], opts.seed)
    units.grow(len(variants) * len(STAGES))
    ctx = Context(opts, out / "variants", prepared)
    base = base_recipe_dict(recipe)
    _write_plan(out, opts, recipe, prepared, variants)
    for v in variants:
        _variant_recipe(ctx, base, v)
    results = _run_variants(ctx, units, variants, log)

    from medmix.ablate import analyze

    eval_sources = prepared["eval_sources"]
    held = pq.read_table(out / HELDOUT, columns=["source", "domain"])
    heldout = held.column("source").to_numpy(zero_copy_only=False)
    domains = held.column("domain").to_numpy(zero_copy_only=False)
    losses = {v.name: _losses(out, v.name) for v in variants}
    summary: dict[str, Any] = {"plan": kind, "eval_sources": eval_sources, "prepared": prepared,
                               "variants": [_variant_summary(v, results[v.name], losses[v.name], heldout,
                                                             domains, eval_sources) for v in variants]}
    sources = sorted(prepared["base_weights"])
    base_vec = np.array([prepared["base_weights"][s] for s in sources])
    if kind == "loo":
        contrib = analyze.loo_contributions(losses, {v.name: v.dropped for v in variants if v.dropped}, heldout,
                                            eval_sources, opts.seed)
        summary["contributions"] = contrib
        harmful = {c["source"] for c in contrib if c["high"] < 0}
        weights = {s: w for s, w in prepared["base_weights"].items() if s not in harmful}
        suggested = _suggested(_renorm(weights))
        summary["suggested_rule"] = ("base weights without the sources whose whole interval is below 0 "
                                     f"({', '.join(sorted(harmful)) or 'none'})")
        predicted = None
    else:
        x = np.array([v.vector(sources) for v in variants])
        y = np.array([s["metric"] for s in summary["variants"]])
        model = analyze.fit_regression(x, y)
        cv = analyze.cv_predictions(x, y)
        r2 = analyze.cv_r2(cv, y)
        if r2 > 0:
            best, predicted = analyze.search(model, base_vec, opts.seed)
            suggested = _suggested(_renorm(dict(zip(sources, best.tolist()))))
            summary["suggested_rule"] = (f"mean of the {analyze.TOP} best of {analyze.CANDIDATES:,} Dirichlet "
                                         "candidates predicted by the ridge fit")
        else:
            # a fit that predicts left-out runs worse than their mean has no optimum worth trusting
            top = variants[int(np.argmin(y))]
            suggested = _suggested(dict(top.weights))
            predicted = float(model.predict(top.vector(sources)[None])[0])
            summary["suggested_rule"] = (f"the best observed run ({top.name}): the ridge fit predicts left-out runs "
                                         f"no better than their mean (leave-one-out R² {r2:.2f}), so its optimum "
                                         "is not trusted")
        alpha = float(getattr(model, "alpha_", None) or model.alpha)
        summary["regression"] = {"kind": type(model).__name__, "alpha": alpha, "cv_r2": r2,
                                 "coef": dict(zip(sources, np.asarray(model.coef_).tolist())),
                                 "cv_predicted": dict(zip([v.name for v in variants], cv.tolist())),
                                 "predicted_suggested": predicted}
    units.grow(len(STAGES))
    _variant_recipe(ctx, base, suggested)
    results.update(_run_variants(ctx, units, [suggested], log))
    losses[suggested.name] = _losses(out, suggested.name)
    summary["suggested"] = _variant_summary(suggested, results[suggested.name], losses[suggested.name], heldout,
                                            domains, eval_sources)
    summary["suggested"]["predicted"] = predicted
    _write_plan(out, opts, recipe, prepared, [*variants, suggested])

    from medmix.ablate.ablation_report import write_report

    suggested_recipe = variant_recipe(base, suggested, prepared["target_samples"])
    suggested_recipe["name"] = f"{recipe.name}-suggested"
    write_report(out, summary, suggested_recipe, opts)
    atomic_write_json(out / "summary.json", summary)
    return summary


def _suggested(weights: dict[str, float]) -> Variant:
    """The suggested variant, named by its weights: a resumed ablation whose suggestion changed (other
    code, other results) trains the new one instead of reusing the old one's markers."""
    digest = hashlib.sha256(json.dumps(weights, sort_keys=True).encode()).hexdigest()[:8]
    return Variant(f"suggested-{digest}", "suggested", weights)


def _renorm(weights: dict[str, float]) -> dict[str, float]:
    total = sum(weights.values())
    return {k: round(v / total, 6) for k, v in sorted(weights.items()) if v / total >= 1e-4}


def _claim(out: Path, opts: AblationOptions) -> None:
    marker = out / ".medmix-ablate.json"
    want = opts.identity()
    if marker.is_file():
        have = json.loads(marker.read_text())
        if have != want:
            changed = sorted(k for k in set(have) | set(want) if have.get(k) != want.get(k))
            raise MedmixError(f"{out} holds an ablation with other settings ({', '.join(changed)}); resume it with "
                              f"the same arguments, or choose another --out")
    elif any(p for p in out.iterdir() if not p.name.startswith(".")):
        raise MedmixError(f"{out} is not empty and holds no medmix ablation; choose an empty --out folder")
    else:
        atomic_write_json(marker, want)


def _prepare(opts: AblationOptions, recipe, out: Path, log: Log) -> dict[str, Any]:
    """Build the base recipe as written, pick held-out rows, train the shared tokenizer, fix the steps."""
    from medmix.ablate.proxy import TokenCounter, make_tokenizer, mean_tokens_per_row, n_visual_tokens, proxy_config

    log(f"building the base recipe {recipe.name} (the normalize cache is filled here, once)")
    manifest, seconds = _build(recipe, opts, out / "mixtures" / "_recipe")
    weights, available = base_weights(manifest)
    base_mix = out / "mixtures" / "_recipe"
    heldout = select_heldout(base_mix, out / HELDOUT, seed=opts.seed, fraction=opts.heldout_fraction,
                             cap=opts.heldout_cap)
    held_sources = sorted(set(heldout.column("source").to_pylist()))
    eval_sources = list(opts.eval_sources) or held_sources
    unknown = [s for s in eval_sources if s not in held_sources]
    if unknown:
        raise MedmixError(f"--eval-sources {','.join(unknown)}: not a training source with held-out rows; "
                          f"choose from {', '.join(held_sources)}")
    cfg = proxy_config(opts.proxy, seed=opts.seed, overrides=opts.proxy_overrides)
    tokenizer = make_tokenizer(cfg, base_mix, out / "tokenizer")
    n_visual = n_visual_tokens(cfg)
    counter = TokenCounter(tokenizer, n_visual, cfg.train.max_length)
    per_row = mean_tokens_per_row(base_mix, counter, set(heldout.column("id").to_pylist()))
    from medmix.ablate.proxy import steps_for_budget

    steps = steps_for_budget(opts.tokens, cfg, per_row)
    log(f"held out {heldout.num_rows} rows; proxy {opts.proxy}: {steps} steps of "
        f"{cfg.train.batch_size * cfg.train.grad_accum} rows (~{per_row:.1f} tokens/row) for {opts.tokens:,} tokens")
    return {"base_build": {"seconds": seconds, "normalize": manifest["build_info"]["normalize"]},
            "base_weights": weights, "available": available, "target_samples": int(manifest["total_rows"]),
            "heldout_rows": heldout.num_rows, "heldout_per_source": {s: heldout.column("source").to_pylist().count(s)
                                                                     for s in held_sources},
            "eval_sources": eval_sources, "steps": steps, "tokens_per_row": per_row, "n_visual": n_visual,
            "rows_per_step": cfg.train.batch_size * cfg.train.grad_accum}


def _build(recipe, opts: AblationOptions, dest: Path) -> tuple[dict[str, Any], float]:
    from medmix.fetch.lock import default_lock_path
    from medmix.pipeline import build
    from medmix.planning import BuildOptions

    lock = default_lock_path(opts_recipe_name(recipe))
    t0 = time.perf_counter()
    manifest = build(recipe, BuildOptions(out=dest, cache=opts.cache, from_dirs=opts.from_dirs, accept=opts.accept,
                                          lock=lock if lock.is_file() else None), log=lambda m: None)
    return manifest, round(time.perf_counter() - t0, 3)


def opts_recipe_name(recipe) -> str:
    """Variants are named `<base>-<variant>`; the base's lock pins their (same) sources."""
    return recipe.name.split("-ablate-", 1)[0]


def _variant_recipe(ctx: Context, base: dict[str, Any], v: Variant) -> Path:
    path = ctx.recipes / f"{v.name}.yaml"
    data = variant_recipe(base, v, ctx.prepared["target_samples"])
    data["name"] = f"{base['name']}-ablate-{v.name}"
    write_recipe(path, data, comment=f"medmix ablate variant {v.name} ({v.kind}); weights are shares of the "
                                     f"base mixture's {ctx.prepared['target_samples']} rows")
    return path


def _run_variants(ctx: Context, units: Units, variants: list[Variant], log: Log) -> dict[str, dict[str, Any]]:
    if ctx.opts.executor == "ray":
        from medmix.ablate.ray_variants import run_on_ray

        return run_on_ray(ctx, units, variants, log, _run_one_on_worker)
    return {v.name: run_variant(ctx, units, v) for v in variants}


def _run_one_on_worker(ctx: Context, variant: Variant) -> dict[str, Any]:
    """A Ray worker's variant: it counts its own units; the driver logs the whole plan's progress."""
    return run_variant(ctx, Units(ctx.out, len(STAGES), log=print), variant)


def run_variant(ctx: Context, units: Units, v: Variant) -> dict[str, Any]:
    """The four units of one variant; each is skipped when its marker exists."""
    from medmix.ablate.evaluate import heldout_losses
    from medmix.ablate.proxy import TokenCounter, make_tokenizer, proxy_config, train_proxy
    from medmix.recipe import load_recipe

    out, p = ctx.out, ctx.prepared
    mix, subset, run = out / "mixtures" / v.name, out / "subsets" / v.name, out / "runs" / v.name
    cfg = proxy_config(ctx.opts.proxy, seed=ctx.opts.seed, steps=p["steps"], overrides=ctx.opts.proxy_overrides)

    def build() -> dict[str, Any]:
        manifest, seconds = _build(load_recipe(str(ctx.recipes / f"{v.name}.yaml")), ctx.opts, mix)
        return {"seconds": seconds, "normalize": manifest["build_info"]["normalize"],
                "total_rows": manifest["total_rows"],
                "selected": {k: e["counts"]["selected"] for k, e in manifest["sources"].items() if "counts" in e}}

    def make_subset() -> dict[str, Any]:
        tokenizer = make_tokenizer(cfg, out / "mixtures" / "_recipe", out / "tokenizer")
        heldout = set(pq.read_table(out / HELDOUT, columns=["id"]).column("id").to_pylist())
        counter = TokenCounter(tokenizer, p["n_visual"], cfg.train.max_length)
        return training_subset(mix, subset, heldout, counter, ctx.opts.tokens, info={"variant": v.name})

    def train() -> dict[str, Any]:
        return train_proxy(cfg, subset, run, out / "tokenizer")

    def evaluate() -> dict[str, Any]:
        table = heldout_losses(run, out / HELDOUT, out / "evals" / f"{v.name}.parquet")
        return {"rows": table.num_rows}

    result = {}
    for stage, fn in zip(STAGES, (build, make_subset, train, evaluate)):
        result[stage] = units.run(f"{v.name}.{stage}", fn)
    return result


def _losses(out: Path, name: str) -> np.ndarray:
    return pq.read_table(out / "evals" / f"{name}.parquet", columns=["loss"]).column("loss").to_numpy()


def _variant_summary(v: Variant, result: dict[str, Any], loss: np.ndarray, sources: np.ndarray,
                     domains: np.ndarray, eval_sources: list[str]) -> dict[str, Any]:
    from medmix.ablate.analyze import metric, per_source_means

    return {"name": v.name, "kind": v.kind, "weights": v.weights, "dropped": v.dropped,
            "metric": metric(loss, sources, eval_sources),
            "per_source": per_source_means(loss, sources, sorted(set(sources.tolist()))),
            "per_domain": per_source_means(loss, domains, sorted(set(domains.tolist()))),
            "build": result["build"], "subset": result["subset"], "train": result["train"]}


def _write_plan(out: Path, opts: AblationOptions, recipe, prepared: dict[str, Any], variants: list[Variant]) -> None:
    cmd = (f"medmix ablate --recipe {opts.recipe} --plan {opts.plan} --proxy {opts.proxy} --tokens {opts.tokens} "
           f"--out {opts.out} --cache {opts.cache} --seed {opts.seed}"
           + (f" --eval-sources {','.join(opts.eval_sources)}" if opts.eval_sources else ""))
    atomic_write_json(out / "plan.json", {
        "command": cmd, "options": opts.identity(), "base_recipe": recipe.name, "base_recipe_sha256": recipe.sha256(),
        "seed": opts.seed, "steps": prepared["steps"], "rows_per_step": prepared["rows_per_step"],
        "variants": [{"name": v.name, "kind": v.kind, "weights": v.weights, "dropped": v.dropped,
                      "recipe": f"variants/{v.name}.yaml"} for v in variants]})
