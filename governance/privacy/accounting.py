"""Privacy accounting maths, pure: no I/O, no state (the ledger holds state).

Composition rule: **basic (sequential) composition**. Running mechanisms that are
(ε₁, δ₁), …, (εₖ, δₖ)-differentially private on the same people is
(Σεᵢ, Σδᵢ)-differentially private. It is loose (advanced or Rényi composition give
tighter totals for many small spends) but sound for any mix of mechanisms, including
DP-SGD runs whose own (ε, δ) came from a Rényi or PRV accountant, and it is what
auditors can check with a calculator.

>>> compose([(0.5, 1e-6), (0.25, 0.0)])
(0.75, 1e-06)
>>> remaining(total=(1.0, 1e-5), spent=(0.75, 1e-6))
(0.25, 9e-06)
>>> fits(total=(1.0, 1e-5), spent=(0.75, 1e-6), request=(0.3, 0.0))
False

**Parallel composition**: mechanisms on *disjoint* parts of the data (the groups of one
DP answer, each person's rows landing in at most ``m`` of them) cost the sum of the ``m``
largest (ε, δ) rather than the sum over all parts. The hub uses it for person counts by
group: one person is in at most min(k, G) groups, so the vector's L1 sensitivity is
min(k, G), not G.

>>> parallel([(0.5, 0.0), (0.5, 0.0), (0.5, 0.0)], parts_per_person=1)
(0.5, 0.0)
>>> parallel([(0.5, 0.0), (0.2, 0.0), (0.1, 0.0)], parts_per_person=2)
(0.7, 0.0)
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Final

# spends below this are refused: they make no sense and hide float trickery (1e-320)
MIN_EPSILON: Final = 1e-6
MAX_EPSILON: Final = 100.0
# floating-point slack when comparing sums against a total
TOLERANCE: Final = 1e-12
# a project's total δ when the steward gives none, and each DP-SGD run's δ when the spec
# gives none: a hundred trainings fit, and δ = 1e-7 is far below 1/n for any release the
# hub holds (δ never depends on the cohort's size, which would be data-dependent)
DEFAULT_PROJECT_DELTA: Final = 1e-5
DEFAULT_TRAINING_DELTA: Final = 1e-7

Budget = tuple[float, float]


def validate_epsilon(epsilon: float) -> float:
    """An ε a caller may ask for: finite, at least MIN_EPSILON, at most MAX_EPSILON.

    >>> validate_epsilon(0.1)
    0.1
    """
    if not isinstance(epsilon, int | float) or isinstance(epsilon, bool):
        raise ValueError("epsilon must be a number")
    if not math.isfinite(epsilon):
        raise ValueError("epsilon must be finite")
    if epsilon < MIN_EPSILON:
        raise ValueError(f"epsilon must be at least {MIN_EPSILON}")
    if epsilon > MAX_EPSILON:
        raise ValueError(f"epsilon must be at most {MAX_EPSILON}")
    return float(epsilon)


def validate_delta(delta: float) -> float:
    """A δ a caller may ask for: finite, in [0, 1).

    >>> validate_delta(0.0)
    0.0
    """
    if not isinstance(delta, int | float) or isinstance(delta, bool):
        raise ValueError("delta must be a number")
    if not math.isfinite(delta) or delta < 0 or delta >= 1:
        raise ValueError("delta must be finite and in [0, 1)")
    return float(delta)


def compose(spends: Iterable[Budget]) -> Budget:
    """Basic composition: the sums of ε and of δ."""
    eps = 0.0
    delta = 0.0
    for e, d in spends:
        eps += e
        delta += d
    return (eps, delta)


def remaining(*, total: Budget, spent: Budget) -> Budget:
    """What is left, never below zero."""
    return (max(0.0, total[0] - spent[0]), max(0.0, total[1] - spent[1]))


def fits(*, total: Budget, spent: Budget, request: Budget) -> bool:
    """Whether ``request`` can be spent on top of ``spent`` within ``total``."""
    eps, delta = compose([spent, request])
    return eps <= total[0] + TOLERANCE and delta <= total[1] + TOLERANCE


def parallel(spends: Iterable[Budget], *, parts_per_person: int) -> Budget:
    """Parallel composition: each person is in at most ``parts_per_person`` of the parts."""
    if parts_per_person < 1:
        raise ValueError("parts_per_person must be at least 1")
    items = list(spends)
    eps = sorted((e for e, _ in items), reverse=True)[:parts_per_person]
    deltas = sorted((d for _, d in items), reverse=True)[:parts_per_person]
    return (sum(eps), sum(deltas))


def reachable(*, requested: float, certified: float) -> bool:
    """Whether the accountant's certified ε is a real, positive spend within ``requested``.

    Checked *before* anything is reserved: an ε OpenDP cannot reach is refused without
    spending.

    >>> reachable(requested=1.0, certified=0.999999)
    True
    >>> reachable(requested=1e-6, certified=2e-6)
    False
    >>> reachable(requested=1.0, certified=float("nan"))
    False
    """
    return (
        math.isfinite(certified)
        and 0.0 < certified <= requested * (1 + 1e-9)
        and certified >= MIN_EPSILON * (1 - 1e-9)
    )


def shortfall(*, total: Budget, spent: Budget, request: Budget) -> str:
    """Which of ε and δ a refused request lacks, and by how much (for the refusal).

    >>> shortfall(total=(1.0, 1e-5), spent=(0.75, 1e-6), request=(0.5, 1e-6)).split("; ")[0]
    'epsilon runs out: asked 0.5, 0.25 left (short by 0.25)'
    >>> shortfall(total=(10.0, 1e-6), spent=(1.0, 1e-6), request=(1.0, 1e-7))
    'delta runs out: asked 1e-07, 0 left (short by 1e-07); epsilon is enough (asked 1, 9 left)'
    """
    left = remaining(total=total, spent=spent)
    parts_short, parts_ok = [], []
    for name, asked, have in (("epsilon", request[0], left[0]), ("delta", request[1], left[1])):
        if asked > have + TOLERANCE:
            parts_short.append(
                f"{name} runs out: asked {asked:.6g}, {have:.6g} left (short by {asked - have:.6g})"
            )
        else:
            parts_ok.append(f"{name} is enough (asked {asked:.6g}, {have:.6g} left)")
    return "; ".join(parts_short + parts_ok)


def zcdp_epsilon(rho: float, delta: float) -> float:
    """The ε of (ε, δ)-DP implied by ρ-zCDP (the Gaussian mechanism's natural currency).

    The conversion of Canonne, Kamath and Steinke (2020, "The discrete Gaussian for
    differential privacy", Proposition 12 / Corollary 13), the one OpenDP's
    ``make_zCDP_to_approxDP`` implements: ρ-zCDP implies (ε, δ)-DP for every α > 1 with
    ``ε = αρ + (log(1/δ) + α log(1 − 1/α) − log(α − 1)) / (α − 1)``; the smallest over α
    (a golden-section search on the convex objective, then a grid check). It never
    exceeds the classic ``ρ + 2 √(ρ log(1/δ))`` (Bun and Steinke 2016).

    A Gaussian mechanism with L2 sensitivity Δ and noise standard deviation σ is
    ``Δ² / (2σ²)``-zCDP; zCDP composes by adding ρ.

    >>> round(zcdp_epsilon(0.5, 1e-6), 3)
    5.222
    >>> zcdp_epsilon(0.5, 1e-6) <= 0.5 + 2 * math.sqrt(0.5 * math.log(1e6))
    True
    """
    if not (rho >= 0 and math.isfinite(rho)):
        raise ValueError("rho must be finite and non-negative")
    if not 0 < delta < 1:
        raise ValueError("delta must be in (0, 1)")
    if rho == 0:
        return 0.0

    def eps(alpha: float) -> float:
        return alpha * rho + (
            math.log(1 / delta) + alpha * math.log1p(-1 / alpha) - math.log(alpha - 1)
        ) / (alpha - 1)

    # the optimum lies near 1 + √(log(1/δ) / ρ); search a generous bracket around it
    lo, hi = 1.0 + 1e-9, 2.0 + 4.0 * math.sqrt(math.log(1 / delta) / rho) + 1e3
    golden = (math.sqrt(5) - 1) / 2
    a, b = lo, hi
    for _ in range(300):
        c, d = b - golden * (b - a), a + golden * (b - a)
        if eps(c) <= eps(d):
            b = d
        else:
            a = c
    best = eps((a + b) / 2)
    simple = rho + 2 * math.sqrt(rho * math.log(1 / delta))
    return max(0.0, min(best, simple))


def zcdp_rho(epsilon: float, delta: float) -> float:
    """The largest ρ whose zCDP guarantee converts to (``epsilon``, ``delta``)-DP
    (:func:`zcdp_epsilon` inverted by bisection; the answer errs low, never high).

    >>> rho = zcdp_rho(3.0, 1e-7)
    >>> zcdp_epsilon(rho, 1e-7) <= 3.0
    True
    >>> round(rho, 4)
    0.1573
    """
    validate_epsilon(epsilon)
    if not 0 < delta < 1:
        raise ValueError("delta must be in (0, 1)")
    lo, hi = 0.0, epsilon  # zcdp_epsilon(ρ, δ) ≥ ρ, so ρ = ε is always too much
    for _ in range(200):
        mid = (lo + hi) / 2
        if zcdp_epsilon(mid, delta) <= epsilon:
            lo = mid
        else:
            hi = mid
    return lo
