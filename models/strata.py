"""DP stratified analysis: who benefits, from noisy stratum-by-arm counts and sums.

The oldest way to ask who benefits from a treatment is to compare the arms within strata
of the factors thought to change the effect (age group, BMI class, deprivation), and
it spends a privacy budget far better than a model's gradients or its cross-products:

1. **One release.** The declared effect modifiers cut the cohort into strata (each
   numeric modifier at its declared cut points, plus a level for a missing value; a
   0/1 feature or a categorical one at its levels). For every stratum and arm the hub
   releases the number of people and the sum of their outcome, each with Gaussian noise.
   A person is in exactly one stratum and one arm, so adding or removing one person
   changes one count by 1 and one sum by at most ½ (the outcome is scaled to [0, 1] by
   the declared ``outcome_bounds`` and centred): L2 sensitivities 1 and ½, however many
   strata there are (parallel composition). The two releases are Gaussian mechanisms,
   ``Δ²/(2σ²)``-zCDP each; they add to the ρ whose (ε, δ) conversion is within the
   spec's ε (:func:`governance.privacy.accounting.zcdp_rho`), split ``SHARES``.
2. **Post-processing.** Strata whose noisy count is below ``THRESHOLD`` noise sds are
   dropped (mostly empty or impossible combinations, whose noise would otherwise
   swamp the fit); a linear S-learner on the modifiers (``outcome ~ 1 + m + t + t·m``)
   is fitted to the rest by weighted least squares, each stratum at its representative
   modifier values (a bin's midpoint within the declared bounds), weighted by its noisy
   count. A person's benefit then comes from their own (continuous) modifier values.

The fit is a linear model over the S-learner's inputs (:func:`models.learners.design`),
with no weight on the controls: it is saved, served and audited as the other linear
effect models are. Noise comes from the OS CSPRNG (:func:`models.dpsgd.secure_normal`).

Strata adjust for confounding by the modifiers only: a confounder that is not a
modifier is not adjusted for (declare it as a modifier, or use DP-SGD, whose controls
enter the outcome model).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import numpy as np
import torch

from governance.privacy import accounting
from models import dpsgd, features

if TYPE_CHECKING:
    from models.spec import Spec

SHARES: Final = (0.2, 0.8)  # ρ shares of the counts and the outcome sums
THRESHOLD: Final = 3.0  # a stratum is kept when its noisy count is above this many sds
RIDGE: Final = 1.0  # in people: keeps the weighted least squares well posed
CENTRE: Final = 0.5


@dataclass(frozen=True)
class Factor:
    """One modifier's strata: which encoded columns it has and its levels."""

    name: str
    columns: tuple[int, ...]  # encoded columns: (value, missing) or the one-hot levels
    numeric: bool
    cuts: tuple[float, ...]  # numeric: cut points on the [0, 1] scale
    labels: tuple[str, ...]  # one per level, for the card
    reps: tuple[tuple[float, ...], ...]  # each level's representative encoded values

    def level(self, x: np.ndarray) -> np.ndarray:
        """Each row's level of this factor (the last level: missing or "other")."""
        if self.numeric:
            value, missing = x[:, self.columns[0]], x[:, self.columns[1]] > 0.5
            return np.where(missing, len(self.cuts) + 1, np.digitize(value, self.cuts))
        hot = x[:, list(self.columns)] > 0.5
        return np.where(hot.any(axis=1), hot.argmax(axis=1), len(self.columns))


def _numeric(name: str, columns: tuple[int, int], bounds: tuple[float, float],
             cuts: list[float] | None) -> Factor:  # fmt: skip
    lo, hi = bounds
    if cuts is None:  # a 0/1 feature: its two values
        return Factor(name, columns, True, (0.5,), ("0", "1", "missing"),
                      ((0.0, 0.0), (1.0, 0.0), (0.5, 1.0)))  # fmt: skip
    scaled = [(c - lo) / (hi - lo) for c in cuts]
    edges = [0.0, *scaled, 1.0]
    bounds_txt = [f"{lo:g}", *(f"{c:g}" for c in cuts), f"{hi:g}"]
    labels = [f"{a}–{b}" for a, b in itertools.pairwise(bounds_txt)]
    reps = [((a + b) / 2, 0.0) for a, b in itertools.pairwise(edges)]
    return Factor(name, columns, True, tuple(scaled), (*labels, "missing"),
                  (*reps, (0.5, 1.0)))  # fmt: skip


def factors(spec: Spec) -> list[Factor]:
    """The strata of ``spec``'s modifiers (checked by the spec: every numeric modifier
    other than a 0/1 feature has cut points)."""
    columns = features.Encoder(spec.numeric, spec.categorical).columns
    out = []
    for name in spec.modifiers or []:
        if name in spec.numeric:
            j = columns.index(name)
            cuts = (spec.strata or {}).get(name)
            out.append(_numeric(name, (j, j + 1), spec.numeric[name], cuts))
        else:
            levels = spec.categorical[name]
            cols = tuple(columns.index(f"{name}={v}") for v in levels)
            eye = np.eye(len(levels) + 1)[:, : len(levels)]
            out.append(Factor(name, cols, False, (), (*levels, "other"),
                              tuple(tuple(float(v) for v in row) for row in eye)))  # fmt: skip
    return out


def strata_count(parts: list[Factor]) -> int:
    return math.prod(len(f.labels) for f in parts)


@dataclass(frozen=True)
class Plan:
    """The noise of a stratified fit, fixed by ε, δ and the declared strata (no data)."""

    factors: tuple[Factor, ...]
    encoded: int  # encoded feature columns (the S-learner's x)
    modifiers: tuple[int, ...]  # the modifier columns, in the S-learner's order
    epsilon: float
    delta: float
    rho: float
    sigma: tuple[float, float]  # noise sds of the counts and the sums
    sensitivity: tuple[float, float]

    @property
    def strata(self) -> int:
        return strata_count(list(self.factors))

    def as_dict(self) -> dict[str, object]:
        names = ("counts", "sums")
        return {
            "rho": self.rho,
            "rho_shares": dict(zip(names, SHARES, strict=True)),
            "sensitivity": dict(zip(names, self.sensitivity, strict=True)),
            "sigma": dict(zip(names, self.sigma, strict=True)),
            "strata": {f.name: list(f.labels) for f in self.factors},
            "cells": 2 * self.strata,
            "threshold_count": THRESHOLD * self.sigma[0],
        }


def plan(spec: Spec, epsilon: float, delta: float) -> Plan:
    """The releases' noise for ``spec`` at (ε, δ), before any data is read."""
    from models import learners  # learners dispatches to this module

    encoded = len(features.Encoder(spec.numeric, spec.categorical).columns)
    mods = learners.modifier_columns(spec) or []
    rho = accounting.zcdp_rho(epsilon, delta)
    sens = (1.0, CENTRE)
    sigma = tuple(d / math.sqrt(2 * share * rho) for d, share in zip(sens, SHARES, strict=True))
    return Plan(
        factors=tuple(factors(spec)), encoded=encoded, modifiers=tuple(mods),
        epsilon=accounting.zcdp_epsilon(rho, delta), delta=delta, rho=rho,
        sigma=(sigma[0], sigma[1]), sensitivity=sens,
    )  # fmt: skip


def _noise(n: int, std: float) -> np.ndarray:
    return np.asarray(dpsgd.secure_normal((n,), std).numpy(), dtype=np.float64)


@dataclass(frozen=True)
class Released:
    """What the privacy guarantee covers: per stratum and arm (index ``2·stratum +
    arm``), the noisy count and the noisy sum of the centred outcome."""

    counts: np.ndarray
    sums: np.ndarray


def tabulate(p: Plan, design: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact counts and centred-outcome sums per stratum and arm (private)."""
    x = design[:, : p.encoded]
    arm = (design[:, p.encoded] >= 0.5).astype(np.int64)
    cell = np.zeros(len(x), dtype=np.int64)
    for f in p.factors:
        cell = cell * len(f.labels) + f.level(x)
    index = 2 * cell + arm
    target = np.clip(np.asarray(y, dtype=np.float64), 0.0, 1.0) - CENTRE
    size = 2 * p.strata
    return (
        np.bincount(index, minlength=size).astype(np.float64),
        np.bincount(index, weights=target, minlength=size),
    )


def release(p: Plan, design: np.ndarray, y: np.ndarray) -> Released:
    counts, sums = tabulate(p, design, y)
    return Released(counts + _noise(len(counts), p.sigma[0]), sums + _noise(len(sums), p.sigma[1]))


def _cell_features(p: Plan) -> np.ndarray:
    """Each stratum's representative values of the modifier columns (S-learner order)."""
    where = {c: i for i, c in enumerate(p.modifiers)}
    grid = np.indices([len(f.labels) for f in p.factors]).reshape(len(p.factors), -1).T
    out = np.zeros((p.strata, len(p.modifiers)))
    for k, f in enumerate(p.factors):
        reps = np.asarray(f.reps)[grid[:, k]]
        for j, column in enumerate(f.columns):
            out[:, where[column]] = reps[:, j]
    return out


def coefficients(p: Plan | None, counts: np.ndarray, sums: np.ndarray, width: int,
                 threshold: float) -> np.ndarray:  # fmt: skip
    """Weighted least squares of ``outcome − ½ ~ 1 + m + t + t·m`` over the strata kept
    (post-processing): ``[θ₀, θ_m…, θ_t, θ_tm…]``."""
    assert p is not None
    f = _cell_features(p)
    ones = np.ones((len(f), 1))
    rows = [np.concatenate([ones, f, arm * ones, arm * f], 1) for arm in (0.0, 1.0)]
    design = np.stack(rows, axis=1).reshape(2 * len(f), -1)  # row 2·stratum + arm
    weights = np.where(counts > threshold, counts, 0.0)
    sums = np.where(counts > threshold, sums, 0.0)
    xtx = (design * weights[:, None]).T @ design + RIDGE * np.eye(width)
    xty = design.T @ sums
    try:
        return np.asarray(np.linalg.solve(xtx, xty))
    except np.linalg.LinAlgError:  # never expected with the ridge
        return np.asarray(np.linalg.lstsq(xtx, xty, rcond=None)[0])


def to_module(p: Plan, theta: np.ndarray) -> torch.nn.Linear:
    """The fit as a linear model over the S-learner's inputs ``[x, t, x_m·t]`` (the
    controls get no weight), on the [0, 1] outcome scale."""
    m = len(p.modifiers)
    weights = np.zeros(p.encoded + 1 + m)
    weights[list(p.modifiers)] = theta[1 : 1 + m]
    weights[p.encoded] = theta[1 + m]
    weights[p.encoded + 1 :] = theta[2 + m :]
    module = torch.nn.Linear(len(weights), 1)
    with torch.no_grad():
        module.weight.copy_(torch.from_numpy(weights.astype(np.float32))[None, :])
        module.bias.fill_(float(CENTRE + theta[0]))
    module.eval()
    return module


def fit(design: np.ndarray, y: np.ndarray, p: Plan, *, private: bool) -> dpsgd.FitResult:
    """The stratified fit on S-learner inputs ``design`` and outcome ``y`` (in [0, 1]);
    ``private=False``: the same learner on exact counts and sums (the baseline).

    Never fails on the data: an empty cohort gives noise only.
    """
    width = 2 + 2 * len(p.modifiers)
    if private:
        r = release(p, design, y)
        threshold = THRESHOLD * p.sigma[0]
        theta = coefficients(p, r.counts, r.sums, width, threshold)
        kept = int((r.counts > threshold).sum())
    else:
        counts, sums = tabulate(p, design, y)
        theta = coefficients(p, counts, sums, width, 0.0)
        kept = int((counts > 0).sum())
    return dpsgd.FitResult(
        model=to_module(p, theta), private=private,
        epsilon=p.epsilon if private else math.inf, delta=p.delta if private else 0.0,
        noise_multiplier=p.sigma[1] / p.sensitivity[1] if private else 0.0,
        sample_rate=1.0, steps=1, accountant="zcdp" if private else "none",
        method="strata",
        mechanism={**p.as_dict(), "cells_kept": kept} if private else {},
    )  # fmt: skip
