"""The ablation's outputs: report.md (Markdown tables), PNG plots and suggested.yaml.

The report leads with what a reader must not over-read: proxy-scale conclusions may not transfer
to the full model, and a difference whose interval spans 0 is not a finding.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from medmix.core.writer import atomic_write_bytes
from medmix.recipe import load_recipe

REPORT = "report.md"
SUGGESTED = "suggested.yaml"
CONTRIB_PNG = "contributions.png"
PRED_PNG = "predicted_vs_observed.png"


def write_report(out: Path, summary: dict[str, Any], suggested_recipe: dict[str, Any], opts: Any) -> None:
    head = (f"# suggested by `medmix ablate --plan {opts.plan} --proxy {opts.proxy}` ({summary['suggested_rule']})\n"
            f"# observed proxy metric {summary['suggested']['metric']:.4f}; see report.md before using it\n")
    atomic_write_bytes(out / SUGGESTED, (head + yaml.safe_dump(suggested_recipe, sort_keys=False)).encode())
    load_recipe(str(out / SUGGESTED))  # a recipe medmix accepts, or this raises naming the problem
    plots = _plots(out, summary)
    atomic_write_bytes(out / REPORT, render(summary, opts, plots).encode())


def _fmt_weights(w: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.3f}" for k, v in sorted(w.items()))


def render(summary: dict[str, Any], opts: Any, plots: list[str]) -> str:
    p = summary["prepared"]
    lines = [f"# medmix ablate: {opts.recipe}, plan `{opts.plan}`", "",
             f"Proxy `{opts.proxy}`, {p['steps']} steps × {p['rows_per_step']} rows (token budget "
             f"{opts.tokens:,}, ~{p['tokens_per_row']:.1f} tokens/row), seed {opts.seed}; the same for every variant.",
             f"Metric: mean answer-token loss on {p['heldout_rows']} held-out rows no variant trains on, "
             f"macro-averaged over {', '.join(summary['eval_sources'])}. Lower is better.", "",
             "> Proxy-scale results may not transfer to the full model, and a difference whose 95% interval "
             "spans 0 is not a finding. Read the intervals before the ranking.", ""]
    if "contributions" in summary:
        lines += ["## Contribution of each source (leave one out)", "",
                  "contribution = metric without the source − metric of the base; **positive: the source helps**.",
                  "", "| rank | source | base weight | metric without | contribution | 95% interval |",
                  "|---:|---|---:|---:|---:|---|"]
        for i, c in enumerate(summary["contributions"], 1):
            lines.append(f"| {i} | {c['source']} | {p['base_weights'][c['source']]:.3f} | {c['metric_without']:.4f} | "
                         f"{c['contribution']:+.4f} | [{c['low']:+.4f}, {c['high']:+.4f}] |")
        lines.append("")
    if "regression" in summary:
        r = summary["regression"]
        s = summary["suggested"]
        lines += ["## Regression from weights to metric (RegMix)", "",
                  f"{r['kind']} (alpha {r['alpha']:.3g}) over {len(summary['variants'])} runs; leave-one-out "
                  f"R² {r['cv_r2']:.2f} (≤ 0: no better than predicting the mean). "
                  "Coefficients (negative: more of the source lowers the loss): " + _fmt_weights(r["coef"]) + ".", "",
                  f"Suggested ({summary['suggested_rule']}): {_fmt_weights(s['weights'])}. Predicted metric "
                  f"**{s['predicted']:.4f}**, observed **{s['metric']:.4f}** (trained like every variant).", ""]
    base = next(v for v in summary["variants"] if v["name"] == "base")
    cv = summary.get("regression", {}).get("cv_predicted", {})
    lines += ["## Runs", "", "| variant | kind | weights | metric | Δ vs base | "
              + ("CV predicted | " if cv else "") + "train rows | reused units | build s |",
              "|---|---|---|---:|---:|" + ("---:|" if cv else "") + "---:|---:|---:|"]
    for v in [*summary["variants"], summary["suggested"]]:
        n = v["build"]["normalize"]
        pred = f"{cv[v['name']]:.4f} | " if v["name"] in cv else ("— | " if cv else "")
        lines.append(f"| {v['name']} | {v['kind']} | {_fmt_weights(v['weights'])} | {v['metric']:.4f} | "
                     f"{v['metric'] - base['metric']:+.4f} | {pred}{v['subset']['rows']} | "
                     f"{n['reused']}/{n['units']} | {v['build']['seconds']:.2f} |")
    short = [v["name"] for v in [*summary["variants"], summary["suggested"]] if not v["subset"]["covered"]]
    if short:
        lines += ["", f"Note: {len(short)} variant(s) ({', '.join(short)}) hold fewer than {opts.tokens:,} training "
                  "tokens once held-out rows are removed; their proxies repeat rows (same steps for every variant). "
                  "Lower --tokens or build a larger base mixture if that matters."]
    bb = p["base_build"]
    builds = [v["build"]["seconds"] for v in summary["variants"]]
    lines += ["", f"Base recipe build (normalize from an empty cache): {bb['seconds']:.2f} s, "
              f"{bb['normalize']['reused']}/{bb['normalize']['units']} units reused. Variant builds reuse the "
              f"cache and re-run only the mix stage: mean {sum(builds) / len(builds):.2f} s.", "",
              "## Per source and per domain (held-out loss)", ""]
    keys = sorted(base["per_source"])
    lines += ["| variant | " + " | ".join(keys) + " |", "|---|" + "---:|" * len(keys)]
    for v in [*summary["variants"], summary["suggested"]]:
        lines.append(f"| {v['name']} | " + " | ".join(f"{v['per_source'].get(k, float('nan')):.4f}" for k in keys)
                     + " |")
    doms = sorted(base["per_domain"])
    lines += ["", "| variant | " + " | ".join(doms) + " |", "|---|" + "---:|" * len(doms)]
    for v in [*summary["variants"], summary["suggested"]]:
        lines.append(f"| {v['name']} | " + " | ".join(f"{v['per_domain'].get(k, float('nan')):.4f}" for k in doms)
                     + " |")
    lines += [""] + [f"![{name}]({name})" for name in plots] + [
        "", "Rerun: `plan.json` holds the command, seeds and every variant's recipe (`variants/*.yaml`); "
        "`suggested.yaml` is a recipe for `medmix build`.", ""]
    return "\n".join(lines)


def _plots(out: Path, summary: dict[str, Any]) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    meta = {"Software": None}  # no version string in the PNG: same inputs, same bytes
    if "contributions" in summary:
        c = summary["contributions"]
        fig, ax = plt.subplots(figsize=(6, 0.5 + 0.45 * len(c)))
        ys = list(range(len(c)))[::-1]
        vals = [e["contribution"] for e in c]
        err = [[v - e["low"] for v, e in zip(vals, c)], [e["high"] - v for v, e in zip(vals, c)]]
        ax.barh(ys, vals, xerr=err, color=["tab:green" if v > 0 else "tab:red" for v in vals], capsize=3)
        ax.set_yticks(ys, [e["source"] for e in c])
        ax.axvline(0, color="black", lw=0.8)
        ax.set_xlabel("contribution (loss without − loss of base); > 0 helps")
        fig.tight_layout()
        fig.savefig(out / CONTRIB_PNG, dpi=100, metadata=meta)
        plt.close(fig)
        made.append(CONTRIB_PNG)
    if "regression" in summary:
        r = summary["regression"]
        fig, ax = plt.subplots(figsize=(4.5, 4.5))
        obs = {v["name"]: v["metric"] for v in summary["variants"]}
        xs = [r["cv_predicted"][k] for k in obs]
        ax.scatter(xs, list(obs.values()), label="variants (leave-one-out prediction)")
        for v in summary["variants"]:
            if v["kind"] in ("base", "stratified", "temperature"):
                ax.annotate(v["kind"], (r["cv_predicted"][v["name"]], v["metric"]), fontsize=8)
        s = summary["suggested"]
        ax.scatter([r["predicted_suggested"]], [s["metric"]], color="tab:red", marker="*", s=120, label="suggested")
        lo = min([*xs, *obs.values(), s["metric"], r["predicted_suggested"]])
        hi = max([*xs, *obs.values(), s["metric"], r["predicted_suggested"]])
        ax.plot([lo, hi], [lo, hi], color="gray", lw=0.8)
        ax.set_xlabel("predicted metric")
        ax.set_ylabel("observed metric")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / PRED_PNG, dpi=100, metadata=meta)
        plt.close(fig)
        made.append(PRED_PNG)
    return made
