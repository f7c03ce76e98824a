"""From per-row held-out losses to answers: the metric, loo contributions with intervals, and RegMix.

Metric: mean answer-token loss per evaluation source, macro-averaged over the chosen sources (each
source weighs the same whatever its held-out count). Lower is better.

Contribution of source s (loo) = metric(without s) − metric(base): positive means s helps. Its
interval is a paired bootstrap over held-out rows (resampled within each source, the same draw
for both runs), so the noise shared by both runs cancels; a contribution whose interval spans 0
is not evidence either way at this proxy scale.

RegMix (Liu et al. 2024): fit a regression from weight vectors to the metric over the variants
run, predict the metric of many Dirichlet candidates, and suggest the mean of the best predicted
(RegMix averages its top 100 rather than trusting a single argmin of a noisy fit).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

BOOTSTRAP = 1000
CANDIDATES = 100_000
TOP = 100


def per_source_means(loss: np.ndarray, sources: np.ndarray, keep: Sequence[str]) -> dict[str, float]:
    return {s: float(loss[sources == s].mean()) for s in keep if (sources == s).any()}


def metric(loss: np.ndarray, sources: np.ndarray, keep: Sequence[str]) -> float:
    means = per_source_means(loss, sources, keep)
    return float(np.mean(list(means.values())))


def paired_bootstrap(a: np.ndarray, b: np.ndarray, sources: np.ndarray, keep: Sequence[str], seed: int,
                     n: int = BOOTSTRAP) -> tuple[float, float]:
    """95% interval of metric(a) − metric(b), resampling rows within each evaluation source."""
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(sources == s) for s in keep if (sources == s).any()]
    diffs = np.empty(n)
    for i in range(n):
        d = 0.0
        for g in groups:
            pick = g[rng.integers(0, len(g), len(g))]
            d += a[pick].mean() - b[pick].mean()
        diffs[i] = d / len(groups)
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    return float(lo), float(hi)


def loo_contributions(results: dict[str, np.ndarray], dropped: dict[str, str], sources: np.ndarray,
                      keep: Sequence[str], seed: int) -> list[dict[str, Any]]:
    """One entry per dropped source, best (largest contribution) first."""
    base = results["base"]
    base_metric = metric(base, sources, keep)
    out = []
    for variant, source in dropped.items():
        m = metric(results[variant], sources, keep)
        lo, hi = paired_bootstrap(results[variant], base, sources, keep, seed)
        out.append({"source": source, "variant": variant, "metric_without": m, "contribution": m - base_metric,
                    "low": lo, "high": hi})
    return sorted(out, key=lambda e: -e["contribution"])


def fit_regression(x: np.ndarray, y: np.ndarray):
    """Ridge from weights to metric; the penalty by leave-one-out CV when there are enough runs."""
    try:
        from sklearn.linear_model import Ridge, RidgeCV
    except ImportError:
        from medmix.core.errors import MedmixError

        raise MedmixError("--plan regmix fits a ridge regression with scikit-learn, which is not installed; "
                          "pip install 'medmix[eval]'") from None

    if len(y) >= 5:
        return RidgeCV(alphas=np.logspace(-4, 1, 16)).fit(x, y)
    return Ridge(alpha=1e-2).fit(x, y)


def cv_predictions(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Leave-one-out predictions: how well the fit predicts a run it has not seen."""
    out = np.empty(len(y))
    for i in range(len(y)):
        keep = np.arange(len(y)) != i
        out[i] = fit_regression(x[keep], y[keep]).predict(x[i:i + 1])[0]
    return out


def cv_r2(predicted: np.ndarray, observed: np.ndarray) -> float:
    """1 − SSE/SST of leave-one-out predictions: above 0 only if the fit beats predicting the mean."""
    sst = float(((observed - observed.mean()) ** 2).sum())
    return 1.0 - float(((predicted - observed) ** 2).sum()) / sst if sst > 0 else 0.0


def search(model, base: np.ndarray, seed: int, n: int = CANDIDATES, top: int = TOP) -> tuple[np.ndarray, float]:
    """Mean of the `top` best-predicted candidates, drawn half around the base, half uniformly."""
    rng = np.random.default_rng(seed)
    k = len(base)
    around = rng.dirichlet(np.maximum(base * 4.0 * k, 0.05), n // 2)
    uniform = rng.dirichlet(np.ones(k), n - n // 2)
    cands = np.vstack([around, uniform])
    pred = model.predict(cands)
    best = cands[np.argsort(pred, kind="stable")[:top]].mean(axis=0)
    best = best / best.sum()
    return best, float(model.predict(best[None])[0])
