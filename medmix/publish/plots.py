"""PNG charts of a mixture, drawn only from the dict `medmix.publish.stats` computes.

Why from the dict: the charts can then never disagree with `--json` or the tables, and they can be
redrawn from a saved JSON without the mixture. Figures are built with `matplotlib.figure.Figure`
(Agg), never pyplot: no global state, no display needed, safe inside a long-lived process.
Long category names go on the y axis of horizontal bars so labels never overlap, and every figure
uses constrained layout and sizes itself by the number of bars.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from medmix.core.licenses import terms

PALETTE = ("#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C", "#CCB974",
           "#64B5CD")
FIELD_COLORS = {"question": "#4C72B0", "answer": "#DD8452", "context": "#55A868"}
# fate of every row read from upstream, in funnel order (layout.FUNNEL)
FATES = (("selected", "kept", "#55A868"), ("quarantined", "quarantined (unreadable / invalid)", "#C44E52"),
         ("license_filtered", "license not accepted", "#8172B3"), ("duplicates", "duplicate", "#DD8452"),
         ("contaminated", "overlaps an evaluation set", "#937860"), ("unselected", "not sampled", "#BBBBBB"))
DPI = 110
# no matplotlib version in the PNG text chunks: the same stats give the same bytes
PNG_META = {"Software": None}


def _thousands(x: float, _pos: Any = None) -> str:
    return f"{x:,.0f}"


def _plain_log_ticks(axis: Any, lo: float = 1.0, hi: float = 10.0) -> None:
    """Plain-number ticks on a log axis: "2×10¹" makes a reader stop and compute.

    1-2-5 ticks over up to ~2.5 decades, powers of ten beyond, so labels never collide.
    """
    decades = np.log10(hi / lo) if np.isfinite(lo) and np.isfinite(hi) and 0 < lo < hi else 1.0
    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0) if decades <= 2.5 else (1.0,)))
    axis.set_major_formatter(FuncFormatter(lambda x, _pos: f"{x:,.0f}" if x >= 1 else f"{x:g}"))
    axis.set_minor_formatter(NullFormatter())


def _per_quarter_octave(s: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Histogram edges and % of rows per ¼ octave.

    Length bins are integers, so below ~8 characters a bin spans more than ¼ octave; dividing by
    each bin's log width keeps short texts from looking more frequent than they are.
    """
    edges = np.array(s["histogram"]["edges"], float)
    counts = np.array(s["histogram"]["counts"], float)
    lo = np.maximum(edges[:-1], 1.0)
    hi = np.maximum(edges[1:], lo * 2 ** 0.25)
    octaves = np.log2(hi / lo)
    return edges, 100 * counts / max(1, s["n"]) * 0.25 / octaves


def _bar_height(n: int) -> float:
    return max(2.6, 0.9 + 0.38 * n)


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=DPI, metadata=PNG_META)
    return path


def composition_by_source(stats: dict[str, Any], path: Path) -> Path:
    """Rows per source, each bar split by task, largest source on top, with the share of the mixture."""
    by_source = stats["rows"]["by_source"]
    total = max(1, stats["rows"]["total"])
    names = list(by_source)[::-1]  # ranked descending; barh draws bottom-up
    tasks = list(stats["rows"]["by_task"])
    fig = Figure(figsize=(9, _bar_height(len(names))), layout="constrained")
    ax = fig.add_subplot()
    left = np.zeros(len(names))
    for i, task in enumerate(tasks):
        vals = np.array([stats["rows"]["by_source_task"].get(n, {}).get(task, 0) for n in names], float)
        ax.barh(names, vals, left=left, color=PALETTE[i % len(PALETTE)], label=task, height=0.7)
        left += vals
    for y, n in enumerate(names):
        ax.text(left[y], y, f"  {by_source[n]:,} ({100 * by_source[n] / total:.1f}%)", va="center", fontsize=9)
    ax.set_xlim(0, max(left.max(initial=1), 1) * 1.3)
    ax.xaxis.set_major_formatter(FuncFormatter(_thousands))
    ax.set_xlabel("rows in the mixture")
    ax.set_title(f"Composition by source: {total:,} rows", loc="left", fontweight="bold")
    if tasks:
        ax.legend(title="task", loc="lower right", frameon=False)
    else:
        ax.text(0.5, 0.5, "no rows", ha="center", va="center", transform=ax.transAxes)
    ax.spines[["top", "right"]].set_visible(False)
    return _save(fig, path)


def _simple_barh(counts: dict[str, int], total: int, title: str, xlabel: str, path: Path, color: str) -> Path:
    names = list(counts)[::-1]
    vals = [counts[n] for n in names]
    fig = Figure(figsize=(8, _bar_height(len(names))), layout="constrained")
    ax = fig.add_subplot()
    ax.barh(names, vals, color=color, height=0.7)
    for y, v in enumerate(vals):
        ax.text(v, y, f"  {v:,} ({100 * v / max(total, 1):.1f}%)", va="center", fontsize=9)
    ax.set_xlim(0, max(vals, default=1) * 1.3 or 1)
    ax.xaxis.set_major_formatter(FuncFormatter(_thousands))
    ax.set_xlabel(xlabel)
    ax.set_title(title, loc="left", fontweight="bold")
    ax.spines[["top", "right"]].set_visible(False)
    return _save(fig, path)


def composition_by_domain(stats: dict[str, Any], path: Path) -> Path:
    return _simple_barh(stats["rows"]["by_domain"], stats["rows"]["total"], "Composition by domain",
                        "rows in the mixture", path, PALETTE[0])


LICENSE_CLASSES = (("commercial use and redistribution allowed", "#4C72B0"), ("non-commercial only", "#DD8452"),
                   ("no redistribution, or terms unknown", "#C44E52"))


def _license_class(spdx: str) -> int:
    t = terms(spdx)
    if not (t.known and t.redistribution):
        return 2
    return 0 if t.commercial else 1


def composition_by_license(stats: dict[str, Any], path: Path) -> Path:
    """Rows per license, coloured by what the license allows, so restricted content stands out."""
    counts = stats["rows"]["by_license"]
    total = stats["rows"]["total"]
    names = list(counts)[::-1]
    vals = [counts[n] for n in names]
    classes = [_license_class(n) for n in names]
    fig = Figure(figsize=(8, _bar_height(len(names)) + 0.4), layout="constrained")
    ax = fig.add_subplot()
    ax.barh(names, vals, color=[LICENSE_CLASSES[c][1] for c in classes], height=0.7)
    for y, v in enumerate(vals):
        ax.text(v, y, f"  {v:,} ({100 * v / max(total, 1):.1f}%)", va="center", fontsize=9)
    ax.set_xlim(0, max(vals, default=1) * 1.3 or 1)
    ax.xaxis.set_major_formatter(FuncFormatter(_thousands))
    ax.set_xlabel("rows in the mixture")
    ax.set_title("Rows per license (as carried by each row)", loc="left", fontweight="bold")
    handles = [Patch(color=color, label=label) for i, (label, color) in enumerate(LICENSE_CLASSES) if i in classes]
    ax.legend(handles=handles, loc="lower right", frameon=False, fontsize=8)
    ax.spines[["top", "right"]].set_visible(False)
    return _save(fig, path)


def text_lengths(stats: dict[str, Any], path: Path) -> Path:
    """One panel per task: character-length histograms of question / answer / context, log x axis."""
    chars = stats["text"]["chars"]
    tasks = list(chars) or ["(no text)"]
    cols = min(2, len(tasks))
    rows = -(-len(tasks) // cols)
    fig = Figure(figsize=(6 * cols, 3.4 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat[len(tasks):]:
        ax.set_visible(False)
    for ax, task in zip(axes.flat, tasks, strict=False):  # more axes than tasks when the grid is not full
        fields = chars.get(task, {})
        span, top = (np.inf, 1.0), 0.0
        for field in ("question", "answer", "context"):
            s = fields.get(field)
            if not s or not s.get("n"):
                continue
            edges, share = _per_quarter_octave(s)
            span = (min(span[0], max(edges[0], 0.8)), max(span[1], edges[-1]))
            top = max(top, float(share.max()))
            ax.stairs(share, np.maximum(edges, 0.8), color=FIELD_COLORS[field], linewidth=1.8,
                      label=f"{field} (median {s['p50']:,}, n={s['n']:,})")
        ax.set_xscale("log")
        _plain_log_ticks(ax.xaxis, *span)
        ax.set_ylim(0, top * 1.4 or 1)  # headroom so the legend sits above the curves
        ax.set_ylabel("% of rows per ¼-octave bin")
        ax.set_title(f"{task}", loc="left", fontweight="bold")
        ax.set_xlabel("length (characters, log scale)")
        if ax.has_data():
            ax.legend(fontsize=8, frameon=False, loc="best")
        else:
            ax.text(0.5, 0.5, "no text", ha="center", va="center", transform=ax.transAxes)
        ax.spines[["top", "right"]].set_visible(False)
    fig.suptitle("Text length by task", fontweight="bold")
    return _save(fig, path)


def image_sizes(stats: dict[str, Any], path: Path) -> Path:
    """Width × height heatmap (log bins) beside the width and height histograms."""
    img = stats["images"]
    fig = Figure(figsize=(12, 4.6), layout="constrained")
    ax_map, ax_hist = fig.subplots(1, 2)
    cells = img.get("grid", {}).get("cells", [])
    if cells:
        arr = np.array(cells, float)
        # cells sit on the ¼-octave grid of stats.SizeGrid: recover the grid indices, draw one mesh
        kw = np.rint(4 * np.log2(arr[:, 0])).astype(int)
        kh = np.rint(4 * np.log2(arr[:, 2])).astype(int)
        k0, k1 = min(kw.min(), kh.min()) - 1, max(kw.max(), kh.max()) + 2
        grid = np.zeros((k1 - k0, k1 - k0))
        grid[kh - k0, kw - k0] = arr[:, 4]
        edges = 2.0 ** (np.arange(k0, k1 + 1) / 4)
        counts = arr[:, 4]
        norm = LogNorm(vmin=max(1, counts.min()), vmax=max(1, counts.max()) + (counts.max() == counts.min()))
        cmap = colormaps["viridis"]
        ax_map.pcolormesh(edges, edges, np.ma.masked_equal(grid, 0), norm=norm, cmap=cmap)
        lo, hi = edges[0], edges[-1]
        ax_map.set_xscale("log")
        ax_map.set_yscale("log")
        ax_map.set_xlim(lo, hi)
        ax_map.set_ylim(lo, hi)
        _plain_log_ticks(ax_map.xaxis, lo, hi)
        _plain_log_ticks(ax_map.yaxis, lo, hi)
        ax_map.plot([lo, hi], [lo, hi], color="#999999", linewidth=0.8, linestyle="--", label="square")
        ax_map.set_aspect("equal")
        bar = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax_map, label="images")
        _plain_log_ticks(bar.ax.yaxis, norm.vmin, norm.vmax)
        ax_map.legend(loc="upper left", frameon=False, fontsize=8)
    else:
        ax_map.text(0.5, 0.5, "no images", ha="center", va="center", transform=ax_map.transAxes)
    ax_map.set_xlabel("width (px, log scale)")
    ax_map.set_ylabel("height (px, log scale)")
    ax_map.set_title(f"Image sizes: {img.get('rows', 0):,} images", loc="left", fontweight="bold")
    for axis, color in (("width", PALETTE[0]), ("height", PALETTE[1])):
        s = img.get(axis, {})
        if s.get("n"):
            edges = np.maximum(np.array(s["histogram"]["edges"], float), 0.8)
            ax_hist.stairs(s["histogram"]["counts"], edges, color=color, linewidth=1.8,
                           label=f"{axis}: p5 {s['p5']}, median {s['p50']}, p95 {s['p95']}")
    ax_hist.set_xscale("log")
    _plain_log_ticks(ax_hist.xaxis, *ax_hist.get_xlim())
    ax_hist.set_xlabel("pixels (log scale)")
    ax_hist.set_ylabel("images per bin")
    ax_hist.set_title("Width and height", loc="left", fontweight="bold")
    if ax_hist.has_data():
        ax_hist.set_ylim(0, ax_hist.get_ylim()[1] * 1.15)  # headroom for the legend
        ax_hist.legend(fontsize=8, frameon=False, loc="best")
    ax_hist.spines[["top", "right"]].set_visible(False)
    return _save(fig, path)


def funnel(stats: dict[str, Any], path: Path) -> Path:
    """Per source, what happened to every row read: one 100% bar split by fate, absolute numbers at right."""
    sources = stats["manifest"]["sources"]
    names = list(sources)[::-1]
    fig = Figure(figsize=(11, _bar_height(len(names)) + 0.6), layout="constrained")
    ax = fig.add_subplot()
    left = np.zeros(len(names))
    shares = {}
    for name in names:
        c = sources[name]["counts"]
        kept = min(c.get("selected", 0), c.get("available", 0))
        shares[name] = {"selected": kept, "quarantined": c.get("quarantined", 0),
                        "license_filtered": c.get("license_filtered", 0), "duplicates": c.get("duplicates", 0),
                        "contaminated": c.get("contaminated", 0),
                        "unselected": max(0, c.get("available", 0) - c.get("selected", 0))}
    for key, label, color in FATES:
        vals = np.array([100 * shares[n][key] / max(1, sum(shares[n].values())) for n in names])
        ax.barh(names, vals, left=left, color=color, label=label, height=0.7)
        left += vals
    for y, name in enumerate(names):
        c = sources[name]["counts"]
        extra = f", ×{c.get('epochs', 1):.3g} epochs" if c.get("selected", 0) > c.get("available", 0) else ""
        ax.text(101, y, f"read {c.get('read', 0):,} → {c.get('selected', 0):,} in mixture{extra}", va="center",
                fontsize=9)
    ax.set_xlim(0, 100)
    ax.set_xlabel("share of rows read from upstream (%)")
    ax.set_title("Funnel per source: what happened to every row read", loc="left", fontweight="bold")
    # below the axes, outside them: constrained layout makes room, so it never covers bars or the x label
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncols=3, frameon=False, fontsize=9)
    ax.spines[["top", "right"]].set_visible(False)
    return _save(fig, path)


PLOTS = {
    "composition_source.png": composition_by_source,
    "composition_domain.png": composition_by_domain,
    "composition_license.png": composition_by_license,
    "text_lengths.png": text_lengths,
    "image_sizes.png": image_sizes,
    "funnel.png": funnel,
}


def plot_all(stats: dict[str, Any], out_dir: Path) -> list[Path]:
    """Write every chart into `out_dir` (created); returns the paths in a fixed order."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return [fn(stats, out_dir / name) for name, fn in PLOTS.items()]
