"""Figures about a built mixture, computed by streaming its shards column by column.

Why streaming and why exact: a 3.35M-row mixture must be described on a laptop, and two builds
must be comparable number for number. So shards are read one record batch at a time and only the
columns a figure needs (never the image bytes: width and height are columns already); lengths are
kept as exact integer counts (memory grows with the number of *distinct* lengths, not rows), so
quantiles are exact and identical on every run.

Quantiles use the nearest-rank definition: the p-th quantile is the smallest value v such that at
least p·n of the values are ≤ v. It always returns a value that occurs in the data.

Everything here returns plain JSON-able dicts; printing (stats_cli) and plotting (plots) only read
them, so `--json`, the tables, the PNGs and the dataset card cannot disagree.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from medmix.core.errors import MedmixError
from medmix.core.extras import install_command
from medmix.core.layout import FUNNEL, iter_batches, manifest_sha256, read_manifest, shard_files

TEXT_FIELDS = ("question", "answer", "context")
CATEGORY_COLUMNS = ("source", "domain", "task", "license", "split")
SCAN_COLUMNS = CATEGORY_COLUMNS + ("width", "height") + TEXT_FIELDS
QUANTILES = (("p5", 0.05), ("p50", 0.50), ("p95", 0.95))
BATCH_ROWS = 8192
HAN = r"\p{Han}"  # RE2 script class: rows in Chinese (SLAKE ships zh questions) put `zh` on the card


# --- exact integer distributions --------------------------------------------------------------

class IntCounts:
    """Exact counts of non-negative integers.

    Dense below `DENSE` (a growing bincount), a dict above, so one 2-million-character context
    costs one dict entry instead of a 16 MB array.
    """

    DENSE = 1 << 16

    def __init__(self) -> None:
        self.dense = np.zeros(0, np.int64)
        self.sparse: Counter[int] = Counter()

    def add(self, values: np.ndarray) -> None:
        values = np.asarray(values, dtype=np.int64)
        if values.size == 0:
            return
        if values.min() < 0:
            raise ValueError("IntCounts holds non-negative integers only")
        small = values[values < self.DENSE]
        if small.size:
            counts = np.bincount(small)
            if counts.size > self.dense.size:
                self.dense = np.pad(self.dense, (0, counts.size - self.dense.size))
            self.dense[:counts.size] += counts
        big = values[values >= self.DENSE]
        if big.size:
            for v, c in zip(*np.unique(big, return_counts=True), strict=True):
                self.sparse[int(v)] += int(c)

    def items(self) -> tuple[np.ndarray, np.ndarray]:
        """(values, counts), ascending, zero counts left out."""
        nz = np.flatnonzero(self.dense)
        big = sorted(self.sparse.items())
        values = np.concatenate([nz, np.array([v for v, _ in big], np.int64)])
        counts = np.concatenate([self.dense[nz], np.array([c for _, c in big], np.int64)])
        return values.astype(np.int64), counts.astype(np.int64)

    @property
    def n(self) -> int:
        return int(self.dense.sum()) + sum(self.sparse.values())

    def summary(self) -> dict[str, Any]:
        """n, min, p5, p50, p95, max, mean, and a log-binned histogram (for plots)."""
        values, counts = self.items()
        n = int(counts.sum())
        if n == 0:
            return {"n": 0}
        cum = np.cumsum(counts)
        out: dict[str, Any] = {"n": n, "min": int(values[0])}
        for name, q in QUANTILES:
            rank = max(1, math.ceil(q * n))
            out[name] = int(values[np.searchsorted(cum, rank)])
        out["max"] = int(values[-1])
        out["mean"] = round(float((values * counts).sum()) / n, 3)
        out["histogram"] = log_histogram(values, counts)
        return out


def log_edges(maximum: int) -> list[int]:
    """Integer bin edges 0, 1, 2, ... growing by 2^(1/4): fine where values are small, ~19% wide above."""
    edges = {0, 1}
    k = 0
    while True:
        e = math.floor(2 ** (k / 4))
        edges.add(e)
        if e > maximum:
            break
        k += 1
    return sorted(edges)


def log_histogram(values: np.ndarray, counts: np.ndarray) -> dict[str, list[int]]:
    """Counts per [edges[i], edges[i+1]) bin, trimmed to the occupied range."""
    edges = np.array(log_edges(int(values[-1])), np.int64)
    which = np.searchsorted(edges, values, side="right") - 1
    hist = np.bincount(which, weights=counts, minlength=len(edges) - 1)[:len(edges) - 1].astype(np.int64)
    lo, hi = int(which.min()), int(which.max())
    return {"edges": edges[lo:hi + 2].tolist(), "counts": hist[lo:hi + 1].tolist()}


class SizeGrid:
    """Image (width, height) pairs counted on the same log grid as the histograms, for the heatmap.

    Fixed size (a 73×73 grid covers 1 to 262,144 px) whatever the number of images.
    """

    STEPS = 72

    def __init__(self) -> None:
        self.counts = np.zeros((self.STEPS + 1, self.STEPS + 1), np.int64)

    @classmethod
    def bin(cls, v: np.ndarray) -> np.ndarray:
        return np.clip(np.floor(4 * np.log2(np.maximum(v, 1))).astype(np.int64), 0, cls.STEPS)

    def add(self, width: np.ndarray, height: np.ndarray) -> None:
        np.add.at(self.counts, (self.bin(width), self.bin(height)), 1)

    def to_json(self) -> dict[str, Any]:
        ws, hs = np.nonzero(self.counts)
        if ws.size == 0:
            return {"cells": []}
        # [width_lo, width_hi, height_lo, height_hi, count] per occupied cell
        cells = [[2 ** (w / 4), 2 ** ((w + 1) / 4), 2 ** (h / 4), 2 ** ((h + 1) / 4), int(self.counts[w, h])]
                 for w, h in zip(ws.tolist(), hs.tolist(), strict=True)]
        return {"cells": [[round(c, 3) if isinstance(c, float) else c for c in cell] for cell in cells]}


# --- the manifest's own figures -----------------------------------------------------------

def manifest_figures(manifest: dict[str, Any], top_reasons: int = 10) -> dict[str, Any]:
    """The build's own accounting (funnel, dedup, decontamination, quarantine), copied, not recomputed."""
    sources: dict[str, Any] = {}
    totals = {k: 0 for k in FUNNEL}
    decon: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    evaluation = []
    for name, entry in manifest["sources"].items():
        if "counts" not in entry:
            evaluation.append(name)
            continue
        counts = entry["counts"]
        sources[name] = {"adapter": entry.get("adapter"), "license": entry.get("license"),
                         "license_terms": entry.get("license_terms"), "counts": counts,
                         "decontamination": entry.get("decontamination", {})}
        for k in FUNNEL:
            totals[k] += int(counts.get(k, 0))
        decon.update(entry.get("decontamination", {}))
        reasons.update(counts.get("quarantine_reasons", {}))
    ranked = sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))
    return {
        "recipe": manifest["recipe"].get("name") if isinstance(manifest["recipe"], dict) else None,
        "recipe_sha256": manifest["recipe_sha256"],
        "medmix_version": manifest.get("medmix_version"),
        "schema_version": manifest.get("schema_version"),
        "total_rows": manifest["total_rows"],
        "shards": len(manifest["shards"]),
        "sources": sources,
        "evaluation_sources": evaluation,
        "totals": totals,
        "decontamination": dict(sorted(decon.items())),
        "quarantine": {"rows": manifest["quarantine"].get("rows", 0),
                       "top_reasons": [list(r) for r in ranked[:top_reasons]], "reasons": len(ranked)},
        "removed_rows": (manifest.get("removed") or {}).get("rows", 0),
    }


# --- scanning the shards ------------------------------------------------------------------------

def load_tokenizer(name_or_path: str) -> Callable[[list[str]], list[int]]:
    """A function texts → token counts, from `transformers.AutoTokenizer`; fails clearly offline."""
    try:
        from transformers import AutoTokenizer
    except ImportError:
        raise MedmixError(f"--tokenizer needs transformers: {install_command('train')}") from None
    try:
        tok = AutoTokenizer.from_pretrained(name_or_path)
    except Exception as exc:  # transformers raises OSError, ValueError, HTTP errors...: all mean "cannot load"
        raise MedmixError(f"tokenizer {name_or_path!r} could not be loaded ({type(exc).__name__}: {exc}); give a "
                          f"local folder saved with save_pretrained, or a Hub name already in the cache") from None

    def count(texts: list[str]) -> list[int]:
        enc = tok(texts, add_special_tokens=False, return_attention_mask=False, return_token_type_ids=False)
        return [len(ids) for ids in enc["input_ids"]]

    return count


class _Scan:
    """Accumulators for one pass over the shards."""

    def __init__(self, tokens: Callable[[list[str]], list[int]] | None) -> None:
        self.rows = 0
        self.by: dict[str, Counter[str]] = {c: Counter() for c in CATEGORY_COLUMNS}
        self.source_task: dict[str, Counter[str]] = {}
        self.source_license: dict[str, Counter[str]] = {}
        self.width, self.height, self.grid = IntCounts(), IntCounts(), SizeGrid()
        self.chars: dict[str, dict[str, IntCounts]] = {}
        self.tokens_fn = tokens
        self.tokens: dict[str, dict[str, IntCounts]] = {}
        self.han_rows = 0

    def add(self, batch: pa.RecordBatch) -> None:
        self.rows += batch.num_rows
        cols = {name: batch.column(name) for name in batch.schema.names}
        for c in CATEGORY_COLUMNS:
            for item in pc.value_counts(cols[c]).to_pylist():
                self.by[c][_key(item["values"])] += item["counts"]
        for (src, task), n in pair_counts(cols["source"], cols["task"]).items():
            self.source_task.setdefault(src, Counter())[task] += n
        for (src, lic), n in pair_counts(cols["source"], cols["license"]).items():
            self.source_license.setdefault(src, Counter())[lic] += n
        w, h = cols["width"], cols["height"]
        both = pc.and_(pc.is_valid(w), pc.is_valid(h))
        if pc.any(both).as_py():
            wv = pc.filter(w, both).to_numpy(zero_copy_only=False)
            hv = pc.filter(h, both).to_numpy(zero_copy_only=False)
            self.width.add(wv)
            self.height.add(hv)
            self.grid.add(wv, hv)
        han = None
        tasks = cols["task"]
        for field in TEXT_FIELDS:
            text = cols[field]
            hit = pc.fill_null(pc.match_substring_regex(text, HAN), False)
            han = hit if han is None else pc.or_(han, hit)
            lengths = pc.utf8_length(text)
            for task in pc.unique(tasks).to_pylist():
                mask = pc.and_(pc.equal(tasks, task), pc.is_valid(text))
                if not pc.any(mask).as_py():
                    continue
                key = _key(task)
                self.chars.setdefault(key, {}).setdefault(field, IntCounts()).add(
                    pc.filter(lengths, mask).to_numpy(zero_copy_only=False))
                if self.tokens_fn is not None:
                    texts = pc.filter(text, mask).to_pylist()
                    self.tokens.setdefault(key, {}).setdefault(field, IntCounts()).add(
                        np.array(self.tokens_fn(texts), np.int64))
        if han is not None:
            self.han_rows += int(pc.sum(han.cast(pa.int64())).as_py() or 0)

    def to_json(self) -> dict[str, Any]:
        def ranked(c: Counter[str]) -> dict[str, int]:
            return dict(sorted(c.items(), key=lambda kv: (-kv[1], kv[0])))

        out: dict[str, Any] = {
            "total": self.rows,
            "by_source": ranked(self.by["source"]),
            "by_domain": ranked(self.by["domain"]),
            "by_task": ranked(self.by["task"]),
            "by_license": ranked(self.by["license"]),
            "by_split": ranked(self.by["split"]),
            "by_source_task": {s: ranked(c) for s, c in sorted(self.source_task.items())},
            "by_source_license": {s: ranked(c) for s, c in sorted(self.source_license.items())},
            "rows_with_han_script": self.han_rows,
        }
        images = {"rows": self.width.n, "width": self.width.summary(), "height": self.height.summary(),
                  "grid": self.grid.to_json()}
        text = {"chars": {t: {f: c.summary() for f, c in sorted(v.items())} for t, v in sorted(self.chars.items())}}
        if self.tokens_fn is not None:
            text["tokens"] = {t: {f: c.summary() for f, c in sorted(v.items())}
                              for t, v in sorted(self.tokens.items())}
        return {"rows": out, "images": images, "text": text}


def _key(value: Any) -> str:
    return "(null)" if value is None else str(value)


def pair_counts(a: pa.Array, b: pa.Array) -> Counter[tuple[str, str]]:
    """Counts of (a, b) value pairs, via dictionary codes so a batch costs two small arrays."""
    da, db = pc.dictionary_encode(a), pc.dictionary_encode(b)
    ia = da.indices.fill_null(-1).to_numpy().astype(np.int64)
    ib = db.indices.fill_null(-1).to_numpy().astype(np.int64)
    na = len(da.dictionary)
    pairs, counts = np.unique((ib + 1) * (na + 1) + (ia + 1), return_counts=True)
    va = [None] + da.dictionary.to_pylist()
    vb = [None] + db.dictionary.to_pylist()
    out: Counter[tuple[str, str]] = Counter()
    for p, n in zip(pairs.tolist(), counts.tolist(), strict=True):
        out[(_key(va[p % (na + 1)]), _key(vb[p // (na + 1)]))] += n
    return out


def scan_shards(files: Iterable[Path], tokenizer: str | Callable[[list[str]], list[int]] | None = None,
                batch_rows: int = BATCH_ROWS) -> dict[str, Any]:
    """Row-level figures over `files` (medmix shards), streaming one record batch at a time."""
    tokens = load_tokenizer(tokenizer) if isinstance(tokenizer, str) else tokenizer
    scan = _Scan(tokens)
    for batch in iter_batches(list(files), SCAN_COLUMNS, batch_rows):
        scan.add(batch)
    return scan.to_json()


def consistency(rows: dict[str, Any], manifest: dict[str, Any]) -> list[str]:
    """Where the shards disagree with the manifest (a hand-edited or half-copied mixture)."""
    problems = []
    if rows["total"] != manifest["total_rows"]:
        problems.append(f"shards hold {rows['total']} rows, the manifest says total_rows={manifest['total_rows']}")
    expected = {n: e["counts"]["selected"] for n, e in manifest["sources"].items() if "counts" in e}
    for name in sorted(set(expected) | set(rows["by_source"])):
        have, want = rows["by_source"].get(name, 0), expected.get(name)
        if want is None:
            problems.append(f"source {name!r}: {have} rows in the shards but not in the manifest")
        elif have != want:
            problems.append(f"source {name!r}: {have} rows in the shards, the manifest says selected={want}")
    return problems


def compute_stats(mixture: Path, tokenizer: str | Callable[[list[str]], list[int]] | None = None,
                  batch_rows: int = BATCH_ROWS) -> dict[str, Any]:
    """Every figure `medmix stats` shows, as one JSON-able dict."""
    mixture = Path(mixture)
    manifest = read_manifest(mixture)
    scanned = scan_shards(shard_files(mixture, manifest), tokenizer, batch_rows)
    return {
        "mixture": {"path": str(mixture), "manifest_sha256": manifest_sha256(mixture)},
        **scanned,
        "manifest": manifest_figures(manifest),
        "problems": consistency(scanned["rows"], manifest),
    }


# --- comparing two mixtures ---------------------------------------------------------------------

def _diff_counts(a: dict[str, int], b: dict[str, int]) -> dict[str, list[int]]:
    keys = list(dict.fromkeys(list(a) + list(b)))
    return {k: [a.get(k, 0), b.get(k, 0), b.get(k, 0) - a.get(k, 0)] for k in keys}


def _identity(s: dict[str, Any]) -> dict[str, Any]:
    return {"path": s["mixture"]["path"], "recipe": s["manifest"]["recipe"],
            "recipe_sha256": s["manifest"]["recipe_sha256"]}


def compare_stats(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Side by side: [a, b, b − a] for every count; [a, b] for quantiles. `changed` lists what differs."""
    rows = {k: _diff_counts(a["rows"][k], b["rows"][k]) for k in ("by_source", "by_domain", "by_task", "by_license")}
    rows["total"] = [a["rows"]["total"], b["rows"]["total"], b["rows"]["total"] - a["rows"]["total"]]
    funnel = {}
    for name in dict.fromkeys(list(a["manifest"]["sources"]) + list(b["manifest"]["sources"])):
        ca = a["manifest"]["sources"].get(name, {}).get("counts", {})
        cb = b["manifest"]["sources"].get(name, {}).get("counts", {})
        funnel[name] = {k: [ca.get(k, 0), cb.get(k, 0), cb.get(k, 0) - ca.get(k, 0)] for k in FUNNEL}
    quant = {}
    for axis in ("width", "height"):
        quant[f"image {axis}"] = {q: [a["images"][axis].get(q), b["images"][axis].get(q)]
                                  for q in ("min", "p5", "p50", "p95", "max")}
    for task in sorted(set(a["text"]["chars"]) | set(b["text"]["chars"])):
        for field in TEXT_FIELDS:
            sa = a["text"]["chars"].get(task, {}).get(field, {})
            sb = b["text"]["chars"].get(task, {}).get(field, {})
            if sa or sb:
                quant[f"{task} {field} chars"] = {q: [sa.get(q), sb.get(q)] for q in ("p5", "p50", "p95")}
    changed = [f"{table}: {k}" for table, d in rows.items() if table != "total" for k, v in d.items() if v[2]]
    changed += [f"funnel: {s} {k}" for s, d in funnel.items() for k, v in d.items() if v[2]]
    changed += [f"{name} {q}" for name, d in quant.items() for q, v in d.items() if v[0] != v[1]]
    return {
        "a": _identity(a),
        "b": _identity(b),
        "same_recipe": a["manifest"]["recipe_sha256"] == b["manifest"]["recipe_sha256"],
        "rows": rows,
        "funnel": funnel,
        "quantiles": quant,
        "decontamination": _diff_counts(a["manifest"]["decontamination"], b["manifest"]["decontamination"]),
        "quarantine": [a["manifest"]["quarantine"]["rows"], b["manifest"]["quarantine"]["rows"]],
        "changed": changed,
    }
