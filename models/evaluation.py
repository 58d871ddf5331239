"""Held-out evaluation: DP metrics for the modeller, exact metrics for the steward only.

The modeller sees **DP metrics**, charged to the project's ledger with the training
(``Spec.metrics_epsilon``), noised by OpenDP's discrete Laplace
(``governance.privacy.mechanism``), planned and certified before any data is read:

* risk models: a histogram of held-out people by band of predicted risk (edges
  ``THRESHOLDS``) and outcome; each person is in exactly one cell, so its L1
  sensitivity is 1 (two thirds of ``metrics_epsilon``); and the Brier sum (each person's
  squared error, in [0, 1], in fixed point; one third). The confusion counts at every
  threshold, sensitivity, specificity, the outcome rate, the observed rate by band, the
  Brier score and an AUROC through the noisy ROC points are post-processing;
* effect models: the held-out count, the sum of predicted benefit (clamped to its
  bounds) and the sum of the observed arm's squared error (in [0, 1]), a third each.

**Exact metrics** (AUROC, Brier and calibration with bootstrap intervals, calibration by
decile) are computed too, but written only to the steward's file beside the model: they
are exact statistics of held-out people and leave the hub only through output review.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import torch

from governance.privacy import mechanism
from models import dpsgd, learners, metrics
from models.spec import Spec

THRESHOLDS: Final = (0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.7)
BANDS: Final = len(THRESHOLDS) + 1
FIXED_POINT: Final = 1000  # sums in thousandths


@dataclass(frozen=True)
class DpPlan:
    """The OpenDP measurements of a model's held-out metrics, certified before data."""

    vectors: tuple[mechanism.PreparedVector, ...]
    epsilon: float  # certified, composed


def plan(spec: Spec) -> DpPlan:
    """Certify the metrics' measurements at ``spec.metrics_epsilon`` (no data read)."""
    eps = spec.metrics_epsilon
    vectors: tuple[mechanism.PreparedVector, ...]
    if spec.kind != "effect":
        vectors = (
            mechanism.prepare_vector(length=2 * BANDS, sensitivity=1, epsilon=eps * 2 / 3),
            mechanism.prepare_vector(length=1, sensitivity=FIXED_POINT, epsilon=eps / 3),
        )
    else:
        vectors = (
            mechanism.prepare_vector(length=1, sensitivity=1, epsilon=eps / 3),
            mechanism.prepare_vector(length=1, sensitivity=FIXED_POINT, epsilon=eps / 3),
            mechanism.prepare_vector(length=1, sensitivity=FIXED_POINT, epsilon=eps / 3),
        )
    return DpPlan(vectors, sum(v.epsilon for v in vectors))


def _histogram(p: np.ndarray, y: np.ndarray) -> list[int]:
    """People by band of predicted risk (``THRESHOLDS`` as edges) and outcome:
    [band 0 without, band 0 with, band 1 without, ...]; each person in one cell."""
    band = np.searchsorted(np.asarray(THRESHOLDS), p, side="right")
    out = []
    for b in range(BANDS):
        out += [int(np.sum((band == b) & (y == 0))), int(np.sum((band == b) & (y == 1)))]
    return out


def _fixed(values: np.ndarray) -> int:
    """A sum of per-person values in [0, 1] (clamped), in fixed point."""
    return int(np.sum(np.round(np.clip(values, 0.0, 1.0) * FIXED_POINT)))


def dp_metrics(
    dp_plan: DpPlan,
    card: dict[str, Any],
    module: torch.nn.Module,
    extra: torch.nn.Module | None,
    x: np.ndarray,
    y: np.ndarray,
    t: np.ndarray | None,
) -> dict[str, Any]:
    """The noisy held-out metrics the modeller sees (post-processing of OpenDP output)."""
    out: dict[str, Any] = {
        "kind": "differentially private (OpenDP discrete Laplace)",
        "epsilon": dp_plan.epsilon,
    }
    if card["model_kind"] != "effect":
        p = dpsgd.predict(module, x, loss="bce") if len(y) else np.zeros(0)
        cells = [max(0, c) for c in mechanism.release_vector(dp_plan.vectors[0], _histogram(p, y))]
        brier_sum = mechanism.release_vector(dp_plan.vectors[1], [_fixed((p - y) ** 2)])[0]
        without, with_ = cells[0::2], cells[1::2]
        n = max(1, sum(cells))
        positives, negatives = sum(with_), sum(without)
        rows = []
        for i, thr in enumerate(THRESHOLDS):
            # predicted positive at this threshold: the bands above its edge
            tp, fp = sum(with_[i + 1 :]), sum(without[i + 1 :])
            fn, tn = positives - tp, negatives - fp
            rows.append(
                {"threshold": thr, "tp": tp, "fp": fp, "fn": fn, "tn": tn,
                 "sensitivity": _ratio(tp, tp + fn), "specificity": _ratio(tn, tn + fp)}
            )  # fmt: skip
        edges = (0.0, *THRESHOLDS, 1.0)
        out.update(
            held_out_people=n,
            outcome_rate=positives / n,
            brier=min(1.0, max(0.0, brier_sum / FIXED_POINT / n)),
            auroc=_roc_area(rows),
            thresholds=rows,
            observed_rate_by_risk_band=[
                {
                    "predicted_from": edges[b],
                    "predicted_to": edges[b + 1],
                    "observed_rate": _ratio(with_[b], with_[b] + without[b]),
                }
                for b in range(BANDS)
            ],
            noise_scale={
                "risk_band_counts": dp_plan.vectors[0].scale,
                "brier_sum": dp_plan.vectors[1].scale / FIXED_POINT,
            },
            ci95_half_width_per_count=mechanism.vector_accuracy(dp_plan.vectors[0]),
        )
        return out
    assert t is not None
    n_noisy = mechanism.release_vector(dp_plan.vectors[0], [len(y)])[0]
    n = max(1, n_noisy)
    scale = 1.0
    if card["outcome_type"] == "continuous":
        lo, hi = card["outcome_bounds"]
        scale = hi - lo
    benefit = learners.predict(card, module, x, extra=extra) if len(y) else np.zeros(0)
    # benefit lies in [-scale, scale]: shift to [0, 1] per person, then back
    shifted = _fixed((benefit / scale + 1) / 2)
    benefit_sum = mechanism.release_vector(dp_plan.vectors[1], [shifted])[0]
    loss = learners.loss_of(card["outcome_type"])
    observed = np.zeros(0)
    if len(y):
        if card["learner"] == "s":
            design = learners.design(x, t, card.get("modifier_columns"))
            observed = dpsgd.predict(module, design, loss=loss)
        else:
            assert extra is not None
            observed = np.where(
                t == 1, dpsgd.predict(module, x, loss=loss), dpsgd.predict(extra, x, loss=loss)
            )
    se_sum = mechanism.release_vector(dp_plan.vectors[2], [_fixed((observed - y) ** 2)])[0]
    mean_shifted = min(1.0, max(0.0, benefit_sum / FIXED_POINT / n))
    out.update(
        held_out_people=max(0, n_noisy),
        mean_predicted_benefit=(2 * mean_shifted - 1) * scale,
        outcome_rmse=math.sqrt(min(1.0, max(0.0, se_sum / FIXED_POINT / n))) * scale,
    )
    return out


def _ratio(a: int, b: int) -> float | None:
    return a / b if b > 0 else None


def _roc_area(rows: list[dict[str, Any]]) -> float | None:
    """AUROC by the trapezoid rule through the noisy ROC points (and (0,0), (1,1))."""
    points = [(0.0, 0.0), (1.0, 1.0)]
    for r in rows:
        if r["sensitivity"] is not None and r["specificity"] is not None:
            points.append((1 - r["specificity"], r["sensitivity"]))
    points.sort()
    pairs = itertools.pairwise(points)
    return float(sum((x1 - x0) * (y0 + y1) / 2 for (x0, y0), (x1, y1) in pairs))


def exact_metrics(
    card: dict[str, Any],
    module: torch.nn.Module,
    extra: torch.nn.Module | None,
    x: np.ndarray,
    y: np.ndarray,
    t: np.ndarray | None,
) -> tuple[dict[str, Any], list[dict[str, float]] | None]:
    """Exact held-out metrics with 95% bootstrap intervals: for the steward only."""
    out: dict[str, Any] = {"held_out_rows": len(y)}
    if len(y) == 0:
        return out, None
    if card["model_kind"] != "effect":
        p = dpsgd.predict(module, x, loss="bce")
        out["auroc"] = metrics.auroc(p, y)
        out["auroc_ci95"] = metrics.bootstrap_ci(lambda i: metrics.auroc(p[i], y[i]), len(y))
        out["brier"] = metrics.brier(p, y)
        out["brier_ci95"] = metrics.bootstrap_ci(lambda i: metrics.brier(p[i], y[i]), len(y))
        intercept, slope = metrics.calibration(p, y)
        out["calibration_intercept"], out["calibration_slope"] = intercept, slope
        out["outcome_rate"] = float(np.mean(y))
        return out, metrics.calibration_bins(p, y)
    assert t is not None
    benefit = learners.predict(card, module, x, extra=extra)
    out["mean_predicted_benefit"] = float(np.mean(benefit))
    out["predicted_benefit_deciles"] = [
        float(v) for v in np.percentile(benefit, range(10, 100, 10))
    ]
    return out, None
