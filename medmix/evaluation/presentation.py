"""Presenting classification results: one rich table, JSON, Markdown and a bar plot.

Encoders are rows and benchmarks columns, so encoders sit side by side per benchmark; the paper's
mean macro-F1 numbers follow as reference rows (per-benchmark values were not published, so
those cells stay empty). Outputs are byte-for-byte reproducible from the same results: no
timestamps, fixed key order, fixed plot metadata.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from medmix.evaluation.classify import ClassifyReport
from medmix.evaluation.suite import BENCHMARKS, PAPER_MEAN_MACRO_F1

MISSING = "—"


def _fmt(value: float | None) -> str:
    return MISSING if value is None else f"{value:.3f}"


def comparable_to_paper(report: ClassifyReport) -> bool:
    """The paper's means are over all 8 benchmarks with full training sets; anything else is not comparable."""
    return sorted(report.benchmarks) == sorted(BENCHMARKS) and report.recipe.max_train is None


def table_rows(report: ClassifyReport) -> tuple[list[str], list[list[str]], int]:
    """Header, rows (ours first, then reference rows) and how many rows are ours."""
    header = ["encoder", *report.benchmarks, "mean macro-F1"]
    rows = []
    for name in report.encoders:
        scores = report.scores[name]
        rows.append([name, *(_fmt(scores[b].macro_f1) if b in scores else MISSING for b in report.benchmarks),
                     _fmt(report.mean_macro_f1(name))])
    ours = len(rows)
    for name, value in PAPER_MEAN_MACRO_F1.items():
        rows.append([name, *([MISSING] * len(report.benchmarks)), _fmt(value)])
    return header, rows, ours


def caption(report: ClassifyReport) -> str:
    r = report.recipe
    text = (f"macro-F1 on each benchmark's test split; recipe: {r.mode}"
            f"{'' if r.mode == 'linear' else f' ({r.epochs} epochs)'}, seed {r.seed}"
            f"{'' if r.max_train is None else f', about {r.max_train} training rows'}; scratch is always fine-tuned.")
    if not comparable_to_paper(report):
        text += " Reference rows are the paper's 8-benchmark means on full data: not directly comparable."
    return text


def rich_table(report: ClassifyReport) -> Any:
    from rich.markup import escape
    from rich.table import Table

    header, rows, ours = table_rows(report)
    table = Table(title="Classification transfer (macro-F1)", caption=caption(report))
    for i, col in enumerate(header):
        # On a narrow terminal names fold, but a score is never cut: min_width fits "0.757".
        table.add_column(col, justify="left" if i == 0 else "right", overflow="fold", min_width=5)
    for i, row in enumerate(rows):
        table.add_row(*map(escape, row), style="dim" if i >= ours else None, end_section=i == ours - 1)
    return table


def markdown(report: ClassifyReport) -> str:
    header, rows, ours = table_rows(report)
    lines = ["# Classification transfer (macro-F1)", "", caption(report), "",
             "| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    for i, row in enumerate(rows):
        cells = [f"*{row[0]}*" if i >= ours else row[0], *row[1:]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _short(name: str, limit: int = 32) -> str:
    """A plot label: long local paths keep their informative tail."""
    return name if len(name) <= limit else "…" + name[-(limit - 1):]


def bar_plot(report: ClassifyReport, path: Path) -> Path:
    """Grouped bars per benchmark (left) and mean macro-F1 next to the paper's numbers (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = report.encoders
    benches = report.benchmarks
    colors = plt.get_cmap("tab10").colors
    width = 0.8 / max(len(names), 1)
    fig, (left, right) = plt.subplots(1, 2, figsize=(max(9.0, 1.3 * len(benches) + 6), 4.8),
                                      gridspec_kw={"width_ratios": [max(len(benches), 2), 2.2]})
    x = np.arange(len(benches))
    for i, name in enumerate(names):
        values = [report.scores[name][b].macro_f1 if b in report.scores[name] else 0.0 for b in benches]
        left.bar(x + (i - (len(names) - 1) / 2) * width, values, width, label=_short(name), color=colors[i % 10])
    left.set_xticks(x, benches, rotation=30, ha="right")
    left.set_ylim(0, 1)
    left.set_ylabel("macro-F1 (test split)")
    left.set_xlabel("benchmark")
    left.set_title("Per benchmark", pad=26)
    left.grid(axis="y", alpha=0.3)
    left.legend(fontsize="small", loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=min(len(names), 4),
                frameon=False)

    labels = [_short(n, 24) for n in names] + list(PAPER_MEAN_MACRO_F1)
    means = [report.mean_macro_f1(n) or 0.0 for n in names] + list(PAPER_MEAN_MACRO_F1.values())
    bar_colors = [colors[i % 10] for i in range(len(names))] + ["0.75"] * len(PAPER_MEAN_MACRO_F1)
    bars = right.barh(np.arange(len(labels)), means, color=bar_colors,
                      hatch=None, edgecolor="0.3", linewidth=0.5)
    for bar in bars[len(names):]:
        bar.set_hatch("//")
    for y, v in enumerate(means):
        right.text(v + 0.01, y, f"{v:.3f}", va="center", fontsize="small")
    right.set_yticks(np.arange(len(labels)), labels, fontsize="small")
    right.invert_yaxis()
    right.set_xlim(0, 1.12)
    right.set_xlabel("mean macro-F1")
    right.set_title("Mean (hatched: paper)", pad=28)
    right.grid(axis="x", alpha=0.3)
    fig.suptitle(f"Classification transfer, {report.recipe.mode} recipe, {len(benches)} benchmark(s)")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120, metadata={"Software": None})
    plt.close(fig)
    return path


def write_reports(report: ClassifyReport, out_dir: Path) -> dict[str, Path]:
    """classification.json, classification.md and classification.png under `out_dir`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "classification.json", "markdown": out_dir / "classification.md",
             "plot": out_dir / "classification.png"}
    paths["json"].write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    paths["markdown"].write_text(markdown(report))
    bar_plot(report, paths["plot"])
    return paths
