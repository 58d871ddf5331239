"""AdaSSP: differentially private linear regression by sufficient-statistics perturbation.

Wang (2018), "Revisiting differentially private linear regression: optimal and adaptive
prediction & estimation in unbounded domain" (UAI), Algorithm 2. Instead of many noisy
gradient steps (DP-SGD), the learner releases the two statistics least squares needs,
``XᵀX`` and ``Xᵀy``, once each with Gaussian noise, plus a noisy smallest eigenvalue of
``XᵀX`` that sets a ridge just large enough to keep the noisy system well posed:

1. ``λ̃ = max(0, λ_min(XᵀX) + σ₁ Z − σ₁ √(2 log(3/p)))`` (a high-probability lower bound);
2. ``λ = max(0, σ₂ √(d log(2d²/p)) − λ̃)``, with ``p = FAILURE`` (Wang's ρ);
3. ``θ = (XᵀX + σ₂ E + λ I)⁻¹ (Xᵀy + σ₃ z)``, ``E`` a symmetric matrix of N(0, 1).

**Bounds, never data.** Every input column is in [0, 1] by construction (the spec's
declared bounds; :mod:`models.features` clips) and the outcome is scaled to [0, 1] by the
declared ``outcome_bounds``; both are clipped again here. Columns are centred on 0.5 and
an intercept column of 0.5 is added, so every entry of a row is in [−½, ½]: a row's norm
is at most ``B = ½ √(d)`` (``d`` columns with the intercept) and the centred outcome at
most ``½``. Adding or removing one person (the privacy unit: the cohort has one row per
person) changes ``XᵀX`` by ``x xᵀ`` (Frobenius norm ``‖x‖² ≤ B²``), ``Xᵀy`` by ``x y``
(norm ``≤ B/2``) and ``λ_min(XᵀX)`` by at most ``‖x‖² ≤ B²`` (Weyl). These are the L2
sensitivities the noise is scaled to; none depends on the data.

**Accounting.** Each release is a Gaussian mechanism, ``Δ²/(2σ²)``-zCDP; the three
compose by adding ρ. The total ρ is the largest whose conversion to (ε, δ)-DP
(Canonne, Kamath and Steinke 2020; :func:`governance.privacy.accounting.zcdp_epsilon`)
is within the spec's ε at its δ; it is split ``SHARES`` between the three releases. The
card states ρ, each σ and each Δ. Noise comes from the OS CSPRNG
(:func:`models.dpsgd.secure_normal`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

import numpy as np
import torch

from governance.privacy import accounting
from models import dpsgd

# ρ shares of λ_min, XᵀX and Xᵀy. λ_min only sets the ridge, so it gets a small share;
# the rest goes to the two statistics the coefficients are made of.
SHARES: Final = (0.1, 0.45, 0.45)
FAILURE: Final = 0.05  # Wang's ρ: the ridge keeps the noisy XᵀX positive w.p. ≥ 1 − p
CENTRE: Final = 0.5  # inputs and outcome are in [0, 1]: centred, every entry is in [−½, ½]


@dataclass(frozen=True)
class Plan:
    """The noise of an AdaSSP fit, fixed by ε, δ and the design's width (no data)."""

    epsilon: float  # the (ε, δ) the three releases compose to
    delta: float
    rho: float  # total zCDP
    width: int  # columns, the intercept included
    row_bound: float  # B: the largest norm a (centred) row can have
    outcome_bound: float  # the largest |y| a (centred) outcome can have
    sensitivity: tuple[float, float, float]  # L2: λ_min, XᵀX, Xᵀy
    sigma: tuple[float, float, float]  # noise standard deviations, same order

    def as_dict(self) -> dict[str, object]:
        names = ("lambda_min", "xtx", "xty")
        return {
            "rho": self.rho,
            "rho_shares": dict(zip(names, SHARES, strict=True)),
            "sensitivity": dict(zip(names, self.sensitivity, strict=True)),
            "sigma": dict(zip(names, self.sigma, strict=True)),
            "row_bound": self.row_bound,
            "outcome_bound": self.outcome_bound,
            "width": self.width,
        }


def plan(epsilon: float, delta: float, inputs: int) -> Plan:
    """The noise for ``inputs`` feature columns at (ε, δ), before any data is read.

    >>> p = plan(3.0, 1e-7, 15)
    >>> p.row_bound, p.sensitivity[1], p.sensitivity[2]
    (2.0, 4.0, 1.0)
    >>> accounting.zcdp_epsilon(p.rho, 1e-7) <= 3.0
    True
    >>> parts = zip(p.sensitivity, p.sigma, SHARES)
    >>> all(abs(d**2 / (2 * s**2) - r * p.rho) < 1e-12 for d, s, r in parts)
    True
    """
    width = inputs + 1
    row = CENTRE * math.sqrt(width)
    out = CENTRE
    rho = accounting.zcdp_rho(epsilon, delta)
    sens = (row**2, row**2, row * out)
    sigma = tuple(d / math.sqrt(2 * share * rho) for d, share in zip(sens, SHARES, strict=True))
    return Plan(
        epsilon=accounting.zcdp_epsilon(rho, delta), delta=delta, rho=rho, width=width,
        row_bound=row, outcome_bound=out, sensitivity=sens,
        sigma=(sigma[0], sigma[1], sigma[2]),
    )  # fmt: skip


def centred(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows clipped to [0, 1], centred, with the intercept column first; so is y.

    >>> a, b = centred(np.array([[0.0, 2.0]]), np.array([-1.0]))
    >>> a.tolist(), b.tolist()
    ([[0.5, -0.5, 0.5]], [-0.5])
    """
    xs = np.clip(np.asarray(x, dtype=np.float64), 0.0, 1.0) - CENTRE
    design = np.concatenate([np.full((len(xs), 1), CENTRE), xs], axis=1)
    return design, np.clip(np.asarray(y, dtype=np.float64), 0.0, 1.0) - CENTRE


def statistics(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """``XᵀX``, ``Xᵀy`` and ``λ_min(XᵀX)`` of the centred, clipped rows (exact: private)."""
    design, target = centred(x, y)
    xtx = design.T @ design
    lam = float(np.linalg.eigvalsh(xtx)[0]) if len(design) else 0.0
    return xtx, design.T @ target, lam


def _noise(shape: tuple[int, ...], std: float) -> np.ndarray:
    return np.asarray(dpsgd.secure_normal(shape, std).numpy(), dtype=np.float64)


@dataclass(frozen=True)
class Released:
    """The three noisy releases (what the privacy guarantee covers; all else is
    post-processing of them and of the public plan)."""

    xtx: np.ndarray  # XᵀX + σ₂ E, E symmetric N(0, 1)
    xty: np.ndarray  # Xᵀy + σ₃ z
    lambda_min: float  # λ_min(XᵀX) + σ₁ Z


def release(x: np.ndarray, y: np.ndarray, noise: Plan) -> Released:
    """Gaussian noise from the CSPRNG on the statistics, at the plan's σ."""
    xtx, xty, lam_min = statistics(x, y)
    d = xtx.shape[0]
    if d != noise.width:
        raise ValueError("the plan was made for another number of columns")
    s1, s2, s3 = noise.sigma
    upper = np.triu(_noise((d, d), s2))  # d(d+1)/2 independent draws, mirrored
    return Released(
        xtx=xtx + upper + np.triu(upper, 1).T,
        xty=xty + _noise((d,), s3),
        lambda_min=lam_min + float(_noise((1,), s1)[0]),
    )


@dataclass(frozen=True)
class Solution:
    theta: np.ndarray  # coefficients on the centred design, the intercept first
    ridge: float  # λ (post-processing of the noisy λ_min: safe to publish)


def solve(x: np.ndarray, y: np.ndarray, noise: Plan | None) -> Solution:
    """AdaSSP's coefficients (``noise=None``: ordinary least squares, non-private)."""
    if noise is None:
        xtx, xty, _ = statistics(x, y)
        return Solution(np.linalg.lstsq(xtx, xty, rcond=None)[0], 0.0)
    r = release(x, y, noise)
    d = noise.width
    s1, s2, _ = noise.sigma
    lam_tilde = max(0.0, r.lambda_min - s1 * math.sqrt(2 * math.log(3 / FAILURE)))
    ridge = max(0.0, s2 * math.sqrt(d * math.log(2 * d * d / FAILURE)) - lam_tilde)
    system = r.xtx + ridge * np.eye(d)
    try:
        theta = np.linalg.solve(system, r.xty)
    except np.linalg.LinAlgError:  # singular despite the ridge: never expected
        theta = np.linalg.lstsq(system, r.xty, rcond=None)[0]
    return Solution(theta, ridge)


def to_module(theta: np.ndarray) -> torch.nn.Linear:
    """The fit as the hub's linear model on un-centred inputs (saved and served as DP-SGD's
    linear models are): ``ŷ = ½ + θ₀/2 + Σ θⱼ (xⱼ − ½)``, on the [0, 1] outcome scale."""
    weights = theta[1:]
    module = torch.nn.Linear(len(weights), 1)
    with torch.no_grad():
        module.weight.copy_(torch.from_numpy(weights.astype(np.float32))[None, :])
        bias = CENTRE + CENTRE * theta[0] - CENTRE * float(np.sum(weights))
        module.bias.fill_(float(bias))
    module.eval()
    return module


def fit(x: np.ndarray, y: np.ndarray, *, epsilon: float | None, delta: float) -> dpsgd.FitResult:
    """AdaSSP at (ε, δ) on rows ``x`` (in [0, 1]) and outcome ``y`` (in [0, 1]);
    ``epsilon=None`` is the non-private version of the same learner (least squares).

    Never fails on the data: an empty cohort gives noise only.
    """
    private = epsilon is not None and math.isfinite(epsilon)
    noise = plan(float(epsilon), delta, x.shape[1]) if private else None  # type: ignore[arg-type]
    # the sensitivities hold for rows in [0, 1]: the mechanism clamps its own inputs (a
    # NaN reaching the eigenvalue step failed the fit only when one person was in)
    x = np.clip(np.nan_to_num(np.asarray(x, dtype=np.float64), nan=0.0), 0.0, 1.0)
    y = np.clip(np.nan_to_num(np.asarray(y, dtype=np.float64), nan=0.0), 0.0, 1.0)
    solution = solve(x, y, noise)
    return dpsgd.FitResult(
        model=to_module(solution.theta), private=private,
        epsilon=noise.epsilon if noise else math.inf, delta=delta if private else 0.0,
        noise_multiplier=noise.sigma[1] / noise.sensitivity[1] if noise else 0.0,
        sample_rate=1.0, steps=1, accountant="zcdp" if private else "none",
        method="adassp",
        mechanism={**noise.as_dict(), "ridge": solution.ridge} if noise else {},
    )  # fmt: skip
