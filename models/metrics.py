"""Held-out metrics for risk and treatment-effect models (pure NumPy).

>>> round(auroc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])), 2)
0.75
>>> round(brier(np.array([0.0, 1.0]), np.array([0, 1])), 2)
0.0
>>> top_decile_overlap(np.arange(100.0), np.arange(100.0))
1.0
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from scipy.stats import rankdata


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney), ties counted half."""
    ranks = rankdata(np.asarray(scores, dtype=np.float64))  # ties get their average rank
    labels = np.asarray(labels)
    pos = labels == 1
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def brier(p: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean((np.asarray(p) - np.asarray(y)) ** 2))


def calibration(p: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Calibration intercept and slope: the logistic regression of y on logit(p).

    A slope of 1 and intercept of 0 is perfect; a slope below 1 means predictions are
    too extreme, above 1 too timid.
    """
    eps = 1e-6
    z = np.log(np.clip(p, eps, 1 - eps) / np.clip(1 - p, eps, 1 - eps))
    design = np.stack([np.ones_like(z), z], axis=1)
    beta = np.zeros(2)
    for _ in range(50):  # Newton-Raphson
        mu = 1 / (1 + np.exp(-(design @ beta)))
        w = mu * (1 - mu) + 1e-9
        grad = design.T @ (y - mu)
        hess = design.T @ (design * w[:, None])
        try:
            step = np.linalg.solve(hess, grad)
        except np.linalg.LinAlgError:
            break
        beta += step
        if np.max(np.abs(step)) < 1e-8:
            break
    return float(beta[0]), float(beta[1])


def calibration_bins(
    p: np.ndarray, y: np.ndarray, bins: int = 10, *, min_per_bin: int = 20
) -> list[dict[str, float]]:
    """Mean predicted vs observed rate in groups of predicted risk (for the plot).

    The card leaves the hub, so each group holds at least ``min_per_bin`` people (fewer
    groups on a small held-out set) and group sizes are not published.
    """
    bins = min(bins, len(p) // min_per_bin)
    if bins < 2:
        return []
    order = np.argsort(p)
    return [
        {"predicted": float(np.mean(p[chunk])), "observed": float(np.mean(y[chunk]))}
        for chunk in np.array_split(order, bins)
    ]


def bootstrap_ci(
    metric: Callable[[np.ndarray], float],
    n: int,
    *,
    resamples: int = 200,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``metric(indices)`` over ``n`` rows."""
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(resamples):
        v = metric(rng.integers(0, n, n))
        if math.isfinite(v):
            values.append(v)
    if not values:
        return math.nan, math.nan
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(values, [tail, 100 - tail])
    return float(lo), float(hi)


def rmse(estimate: np.ndarray, truth: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(estimate) - np.asarray(truth)) ** 2)))


def top_decile_overlap(estimate: np.ndarray, truth: np.ndarray) -> float:
    """Share of the true top decile (largest ``truth``) found in the predicted top decile."""
    k = max(1, len(truth) // 10)
    true_top = set(np.argsort(-np.asarray(truth), kind="mergesort")[:k].tolist())
    pred_top = set(np.argsort(-np.asarray(estimate), kind="mergesort")[:k].tolist())
    return len(true_top & pred_top) / k


def qini(estimate: np.ndarray, truth: np.ndarray) -> float:
    """Normalised Qini coefficient against known individual effects (benefit > 0 is good).

    The gain curve ``Q(k)`` sums the true benefit of the ``k`` people the model ranks
    first, minus what a random ranking would gather; its area is divided by the area of
    the oracle ranking's curve: 1 is a perfect ranking, 0 no better than chance.
    """
    truth = np.asarray(truth, dtype=np.float64)
    n = len(truth)
    baseline = np.arange(1, n + 1) * truth.mean()

    def area(order: np.ndarray) -> float:
        return float(np.sum(np.cumsum(truth[order]) - baseline))

    oracle = area(np.argsort(-truth, kind="mergesort"))
    if oracle <= 0:
        return math.nan
    return area(np.argsort(-np.asarray(estimate), kind="mergesort")) / oracle
