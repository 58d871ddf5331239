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
   swamp the fit). An additive S-learner ``outcome ~ 1 + B(m) + t + t·B(m)`` is fitted to
   the rest by weighted least squares, each stratum at its representative modifier
   values (a bin's midpoint within the declared bounds), weighted by its noisy count.
   ``B`` is each modifier's own basis: for a numeric modifier with cut points, one
   "hat" function per bin, peaking at the bin's midpoint (at the strata the fit sees,
   one effect per bin; for a person, the effect interpolated linearly between the
   midpoints either side of their own value, constant beyond the outermost), and a
   missing indicator; for a 0/1 feature its value and a missing indicator; for a
   categorical one its levels. So the effect can bend where the bins say it does
   (a plateau above a BMI of 35, say), and a person's benefit still follows their
   own value, not only their bin.

The fit is a :class:`StrataModel` over the S-learner's inputs
(:func:`models.learners.design`), with no weight on the controls; its layout (which
columns, which knots) is on the card, so it is saved, served, reloaded and audited as
the other effect models are. Noise comes from the OS CSPRNG (:func:`models.dpsgd.secure_normal`).

Strata adjust for confounding by the modifiers only: a confounder that is not a
modifier is not adjusted for (declare it as a modifier, or use DP-SGD, whose controls
enter the outcome model).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal

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
    kind: Literal["bins", "binary", "levels"]  # binned numeric, 0/1 feature, categorical
    cuts: tuple[float, ...]  # bins and binary: cut points on the [0, 1] scale
    labels: tuple[str, ...]  # one per level, for the card
    reps: tuple[tuple[float, ...], ...]  # each level's representative encoded values

    def layout(self) -> dict[str, Any]:
        """How :class:`StrataModel` expands this factor (public: from the spec)."""
        out: dict[str, Any] = {"kind": self.kind, "columns": list(self.columns)}
        if self.kind == "bins":
            out["knots"] = [r[0] for r in self.reps[:-1]]
        return out

    def level(self, x: np.ndarray) -> np.ndarray:
        """Each row's level of this factor (the last level: missing or "other")."""
        if self.kind != "levels":
            value, missing = x[:, self.columns[0]], x[:, self.columns[1]] > 0.5
            return np.where(missing, len(self.cuts) + 1, np.digitize(value, self.cuts))
        hot = x[:, list(self.columns)] > 0.5
        return np.where(hot.any(axis=1), hot.argmax(axis=1), len(self.columns))


def _numeric(name: str, columns: tuple[int, int], bounds: tuple[float, float],
             cuts: list[float] | None) -> Factor:  # fmt: skip
    lo, hi = bounds
    if cuts is None:  # a 0/1 feature: its two values
        return Factor(name, columns, "binary", (0.5,), ("0", "1", "missing"),
                      ((0.0, 0.0), (1.0, 0.0), (0.5, 1.0)))  # fmt: skip
    scaled = [(c - lo) / (hi - lo) for c in cuts]
    edges = [0.0, *scaled, 1.0]
    bounds_txt = [f"{lo:g}", *(f"{c:g}" for c in cuts), f"{hi:g}"]
    labels = [f"{a}–{b}" for a, b in itertools.pairwise(bounds_txt)]
    reps = [((a + b) / 2, 0.0) for a, b in itertools.pairwise(edges)]
    return Factor(name, columns, "bins", tuple(scaled), (*labels, "missing"),
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
            out.append(Factor(name, cols, "levels", (), (*levels, "other"),
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

    @property
    def layout(self) -> dict[str, Any]:
        """What :class:`StrataModel` needs to expand the modifiers (on the card)."""
        return {"encoded": self.encoded, "factors": [f.layout() for f in self.factors]}

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
            "layout": self.layout,
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


def _basis(factors: list[dict[str, Any]], x: torch.Tensor) -> torch.Tensor:
    """Every factor's basis columns for encoded rows ``x`` (see the module docstring)."""
    parts = []
    for f in factors:
        columns = f["columns"]
        if f["kind"] == "levels":
            parts.append(x[:, columns])
            continue
        missing = x[:, columns[1]]
        present = 1.0 - missing
        if f["kind"] == "binary":
            parts += [(x[:, columns[0]] * present)[:, None], missing[:, None]]
            continue
        knots = torch.tensor(f["knots"], dtype=x.dtype)
        v = x[:, columns[0]].clamp(float(knots[0]), float(knots[-1]))
        left = (torch.searchsorted(knots, v, right=True) - 1).clamp(0, len(knots) - 2)
        w = (v - knots[left]) / (knots[left + 1] - knots[left])
        hat = torch.zeros((len(x), len(knots)), dtype=x.dtype)
        rows = torch.arange(len(x))
        hat[rows, left] = 1.0 - w
        hat[rows, left + 1] += w
        parts += [hat * present[:, None], missing[:, None]]
    return torch.cat(parts, dim=1) if parts else torch.zeros((len(x), 0), dtype=x.dtype)


class StrataModel(torch.nn.Module):
    """``ŷ = b + B(x)·main + t·(treat + B(x)·effect)`` on the S-learner's inputs
    ``[x, t, x_m·t]`` (the products are not read: ``B`` is built from ``x``), on the
    [0, 1] outcome scale; ``layout`` comes from the card (``mechanism[0].layout``)."""

    def __init__(self, layout: dict[str, Any]) -> None:
        super().__init__()
        self.layout = layout
        width = _basis(layout["factors"], torch.zeros((1, layout["encoded"]))).shape[1]
        self.bias = torch.nn.Parameter(torch.zeros(1))
        self.main = torch.nn.Parameter(torch.zeros(width))
        self.treat = torch.nn.Parameter(torch.zeros(1))
        self.effect = torch.nn.Parameter(torch.zeros(width))

    def forward(self, design: torch.Tensor) -> torch.Tensor:
        encoded = self.layout["encoded"]
        b = _basis(self.layout["factors"], design[:, :encoded])
        t = design[:, encoded]
        out = self.bias + b @ self.main + t * (self.treat + b @ self.effect)
        return out[:, None]


def _representatives(p: Plan) -> np.ndarray:
    """Each stratum's representative encoded row (the modifier columns; 0 elsewhere)."""
    grid = np.indices([len(f.labels) for f in p.factors]).reshape(len(p.factors), -1).T
    out = np.zeros((p.strata, p.encoded), dtype=np.float32)
    for k, f in enumerate(p.factors):
        reps = np.asarray(f.reps)[grid[:, k]]
        for j, column in enumerate(f.columns):
            out[:, column] = reps[:, j]
    return out


def coefficients(p: Plan, counts: np.ndarray, sums: np.ndarray, threshold: float) -> np.ndarray:
    """Weighted least squares of ``outcome − ½ ~ 1 + B + t + t·B`` over the strata kept
    (post-processing): ``[b, main…, treat, effect…]``."""
    basis = _basis(p.layout["factors"], torch.from_numpy(_representatives(p))).double().numpy()
    ones = np.ones((len(basis), 1))
    rows = [np.concatenate([ones, basis, arm * ones, arm * basis], 1) for arm in (0.0, 1.0)]
    design = np.stack(rows, axis=1).reshape(2 * len(basis), -1)  # row 2·stratum + arm
    keep = counts > threshold
    weights = np.where(keep, counts, 0.0)
    xtx = (design * weights[:, None]).T @ design + RIDGE * np.eye(design.shape[1])
    xty = design.T @ np.where(keep, sums, 0.0)
    try:
        return np.asarray(np.linalg.solve(xtx, xty))
    except np.linalg.LinAlgError:  # never expected with the ridge
        return np.asarray(np.linalg.lstsq(xtx, xty, rcond=None)[0])


def to_module(p: Plan, theta: np.ndarray) -> StrataModel:
    """The fit as a :class:`StrataModel` (centred outcome back on the [0, 1] scale)."""
    module = StrataModel(p.layout)
    m = len(module.main)
    with torch.no_grad():
        module.bias.fill_(float(CENTRE + theta[0]))
        module.main.copy_(torch.from_numpy(theta[1 : 1 + m].astype(np.float32)))
        module.treat.fill_(float(theta[1 + m]))
        module.effect.copy_(torch.from_numpy(theta[2 + m :].astype(np.float32)))
    module.eval()
    return module


def fit(design: np.ndarray, y: np.ndarray, p: Plan, *, private: bool) -> dpsgd.FitResult:
    """The stratified fit on S-learner inputs ``design`` and outcome ``y`` (in [0, 1]);
    ``private=False``: the same learner on exact counts and sums (the baseline).

    Never fails on the data: an empty cohort gives noise only.
    """
    if private:
        r = release(p, design, y)
        counts, sums, threshold = r.counts, r.sums, THRESHOLD * p.sigma[0]
    else:
        counts, sums = tabulate(p, design, y)
        threshold = 0.0
    theta = coefficients(p, counts, sums, threshold)
    kept = int((counts > threshold).sum())
    record = p.as_dict()
    if not private:  # the layout and cells only: no noise was drawn
        record = {k: record[k] for k in ("layout", "strata", "cells")}
    return dpsgd.FitResult(
        model=to_module(p, theta), private=private,
        epsilon=p.epsilon if private else math.inf, delta=p.delta if private else 0.0,
        noise_multiplier=p.sigma[1] / p.sensitivity[1] if private else 0.0,
        sample_rate=1.0, steps=1, accountant="zcdp" if private else "none",
        method="strata", mechanism={**record, "cells_kept": kept},
    )  # fmt: skip
