"""Differentially private answers to a compiled plan (``dp_query.Plan``), noised by OpenDP.

Three steps, so that nothing that can fail depends on the data:

1. :func:`prepare` (before any budget is reserved, no data): one OpenDP discrete-Laplace
   measurement per integer vector of the plan (``dp_sql.components``), with scale
   Δ/ε_each; OpenDP's privacy map certifies each ε and the sum must not exceed what was
   asked (``accounting.reachable``), and a dry run on zeros proves the measurement runs.
   An ε too small for OpenDP is refused here, before anything is reserved or read.
2. :func:`bounded_answers` (reads data): the exact answer after contribution bounding,
   integer per group in the declared domain's order. Exposed so tests can compare it on
   neighbouring releases.
3. :func:`release`: noise from OpenDP (exact discrete Laplace on integers: counts and
   fixed-point sums, so no floating-point attack on the sum), then post-processing only:
   sums back to units, means as centre + noisy centred sum / noisy count, and 95%
   intervals from OpenDP's discrete-Laplace accuracy (the mean's from both noise laws,
   each at 97.5%, by a union bound).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import duckdb
import opendp.prelude as dp

from governance.errors import InvalidRequest
from governance.privacy import accounting
from governance.privacy.dp_query import FIXED_POINT, Component, Plan
from governance.privacy.dp_sql import Stream, center, components, describe, statements

dp.enable_features("contrib")

ALPHA: Final = 0.05  # intervals are 95%
# a larger scale saturates 64-bit integers often enough to make the answer meaningless
MAX_SCALE: Final = 1e12


@dataclass(frozen=True)
class Prepared:
    plan: Plan
    components: tuple[Component, ...]
    measurements: tuple[Any, ...]  # OpenDP measurements, one per component
    scales: tuple[float, ...]  # integer units
    epsilon: float  # certified by OpenDP's privacy maps, composed


@dataclass
class DpAnswer:
    groups: list[Any]
    values: dict[str, list[float | int | None]]  # aggregate label -> noisy value per group
    epsilon: float  # as certified by OpenDP's privacy maps
    scales: dict[str, float | None] = field(default_factory=dict)  # None for means
    ci95: dict[str, list[list[float]]] = field(default_factory=dict)  # per group [lo, hi]
    ci95_half_width: dict[str, float | None] = field(default_factory=dict)
    noise: dict[str, dict[str, float]] = field(default_factory=dict)  # per component


def _measurement(scale: float) -> Any:
    return dp.m.make_laplace(
        dp.vector_domain(dp.atom_domain(T="i64")), dp.l1_distance(T="i64"), scale=scale
    )


def prepare(plan: Plan, epsilon: float) -> Prepared:
    """The OpenDP measurements for ``plan`` at ``epsilon``, certified; no data is read.

    Raises InvalidRequest when OpenDP cannot answer this plan within ``epsilon``.
    """
    comps = tuple(components(plan))
    each = epsilon / len(comps)
    measurements = []
    scales = []
    spent = []
    zeros = [0] * len(plan.groups)
    too_small = InvalidRequest(
        f"epsilon {epsilon:g} is too small for this query (its noise would be unusable); "
        "nothing was spent"
    )
    for c in comps:
        scale = c.sensitivity / each
        if not math.isfinite(scale) or scale > MAX_SCALE:
            raise too_small
        try:
            m = _measurement(scale)
            certified = float(m.map(c.sensitivity))
            for _ in range(8):  # float rounding can certify a hair over: widen a hair
                if certified <= each:
                    break
                scale = math.nextafter(scale, math.inf) * (1 + 1e-12)
                m = _measurement(scale)
                certified = float(m.map(c.sensitivity))
            m(zeros)  # a dry run: the measurement works on a vector of this length
        except Exception:  # anything OpenDP refuses is a refusal, before any data
            raise too_small from None
        measurements.append(m)
        scales.append(scale)
        spent.append((certified, 0.0))
    total, _ = accounting.compose(spent)
    if not accounting.reachable(requested=epsilon, certified=total):
        raise too_small
    return Prepared(plan, comps, tuple(measurements), tuple(scales), total)


def bounded_answers(
    con: duckdb.DuckDBPyConnection,
    plan: Plan,
    *,
    salt: str,
    read: Callable[[Stream], list[tuple[Any, ...]]] | None = None,
) -> dict[str, list[int]]:
    """The exact answer after contribution bounding: component name → integer per group.

    This is what the noise protects; tests compare it on neighbouring releases. ``read``
    gives a statement's rows (default: run it on ``con``); the service passes one that
    keeps the rows of unsalted statements per project (``dp_answer``).
    """
    comps = components(plan)
    by_part: dict[tuple[int, str], str] = {(c.aggregate, c.part): c.name for c in comps}
    groups = plan.groups
    index = {g: n for n, g in enumerate(groups)}
    out = {c.name: [0] * len(groups) for c in comps}
    for stream in statements(plan, salt=salt):
        rows = read(stream) if read is not None else con.execute(stream.sql).fetchall()
        for row in rows:
            n = index.get(row[0]) if plan.group else 0
            if n is None:  # cannot happen (the SQL keeps domain values only)
                continue
            for (i, part), value in zip(stream.outputs, row[1:], strict=True):
                out[by_part[(i, part)]][n] = int(value or 0)
    return out


def _accuracy(scale: float, alpha: float) -> int:
    """Half-width h with P(|noise| > h) ≤ alpha for discrete Laplace noise (OpenDP)."""
    return math.floor(float(dp.discrete_laplacian_scale_to_accuracy(scale, alpha)))


def release(prepared: Prepared, truth: dict[str, list[int]]) -> DpAnswer:
    """Noise ``truth`` (from :func:`bounded_answers`) and post-process it."""
    plan = prepared.plan
    noisy: dict[str, list[int]] = {}
    for c, m in zip(prepared.components, prepared.measurements, strict=True):
        noisy[c.name] = [int(x) for x in m([int(v) for v in truth[c.name]])]
    scale = {c.name: s for c, s in zip(prepared.components, prepared.scales, strict=True)}
    answer = DpAnswer(groups=plan.groups, values={}, epsilon=prepared.epsilon)
    for c in prepared.components:
        answer.noise[c.name] = {
            "sensitivity": c.sensitivity * c.unit,
            "scale": scale[c.name] * c.unit,
        }
    for i, a in enumerate(plan.aggregates):
        if a.kind in ("count", "count_persons", "sum"):
            c = next(c for c in prepared.components if c.aggregate == i)
            h = _accuracy(scale[c.name], ALPHA)
            values: list[float | int | None] = [
                v if c.part == "count" else v / FIXED_POINT for v in noisy[c.name]
            ]
            answer.values[a.label] = values
            answer.scales[a.label] = scale[c.name] * c.unit
            answer.ci95_half_width[a.label] = h * c.unit
            answer.ci95[a.label] = [
                [round(float(v) - h * c.unit, 9), round(float(v) + h * c.unit, 9)]  # type: ignore[arg-type]
                for v in values
            ]
            continue
        # a mean: centre + noisy centred sum / noisy count, clamped to the bounds
        assert a.bounds is not None
        lo, hi = a.bounds
        s_name, n_name = f"{a.label}.sum", f"{a.label}.count"
        a_s = _accuracy(scale[s_name], ALPHA / 2)
        a_n = _accuracy(scale[n_name], ALPHA / 2)
        centre = center(a)
        means: list[float | int | None] = []
        intervals: list[list[float]] = []
        for s, n in zip(noisy[s_name], noisy[n_name], strict=True):
            means.append(min(max((centre + s / n) / FIXED_POINT, lo), hi) if n >= 1 else None)
            intervals.append(_mean_interval(s, n, a_s, a_n, centre, lo, hi))
        answer.values[a.label] = means
        answer.scales[a.label] = None  # two noise laws: see answer.noise
        answer.ci95_half_width[a.label] = None
        answer.ci95[a.label] = intervals
    return answer


def _mean_interval(
    s: int, n: int, a_s: int, a_n: int, centre: int, lo: float, hi: float
) -> list[float]:
    """A ≥95% interval for the bounded mean from its two noise laws (union bound).

    With probability ≥ 97.5% each, the true centred sum lies in s ± a_s and the true
    count in n ± a_n; over that rectangle (count ≥ 1) the ratio is extreme at a corner.

    >>> _mean_interval(0, 100, 10, 5, 0, -1.0, 1.0)
    [-0.000105263, 0.000105263]
    >>> _mean_interval(0, 3, 10, 5, 0, -1.0, 1.0)
    [-1.0, 1.0]
    """
    n_lo = n - a_n
    if n_lo < 1:
        return [lo, hi]
    ratios = [(s + ds) / nn for ds in (-a_s, a_s) for nn in (n_lo, n + a_n)]
    low = (centre + min(ratios)) / FIXED_POINT
    high = (centre + max(ratios)) / FIXED_POINT
    return [round(max(lo, low), 9), round(min(hi, high), 9)]


def body(answer: DpAnswer, labels: list[str]) -> dict[str, Any]:
    """The public answer: rows in the declared domain's order, noise and intervals."""
    plan_labels = labels
    rows = [
        ([g] if answer.groups != [None] else []) + [answer.values[lab][n] for lab in plan_labels]
        for n, g in enumerate(answer.groups)
    ]
    return {
        "rows": rows,
        "noise_scale": {lab: answer.scales[lab] for lab in plan_labels},
        "ci95_half_width": {lab: answer.ci95_half_width[lab] for lab in plan_labels},
        "ci95": {lab: answer.ci95[lab] for lab in plan_labels},
        "noise": answer.noise,
        "mechanism": "OpenDP discrete Laplace (integer counts and fixed-point sums)",
    }


def answer_body(plan: Plan, answer: DpAnswer) -> dict[str, Any]:
    """Columns, rows and how they were computed, for the query's response."""
    labels = [a.label for a in plan.aggregates]
    out = {"columns": ([plan.group] if plan.group else []) + labels, **body(answer, labels)}
    out["contribution_bound"] = plan.rows_per_person
    out["bounding"] = describe(plan)
    return out


# the response to a query that read data and then produced no answer (a timeout, an
# engine failure): the same shape whatever happened, with no detail that could depend on
# the data; its reservation is spent
NO_ANSWER_REASON: Final = (
    "the query read data but produced no answer (for example it ran out of time); "
    "its budget is spent, as for any query that read data"
)


def no_answer_body(plan: Plan) -> dict[str, Any]:
    return {
        "columns": ([plan.group] if plan.group else []) + [a.label for a in plan.aggregates],
        "rows": [],
        "no_answer": True,
        "reason": NO_ANSWER_REASON,
        "contribution_bound": plan.rows_per_person,
        "bounding": describe(plan),
    }


# ---------------------------------------------------------------------------- vectors
@dataclass(frozen=True)
class PreparedVector:
    """An OpenDP discrete-Laplace measurement for one integer vector of known length and
    L1 sensitivity (a model's held-out confusion counts, a fixed-point Brier sum...)."""

    measurement: Any
    length: int
    sensitivity: int
    scale: float
    epsilon: float  # certified by OpenDP's privacy map


def prepare_vector(*, length: int, sensitivity: int, epsilon: float) -> PreparedVector:
    """Certify, before any data is read, that OpenDP answers this vector within ``epsilon``.

    >>> v = prepare_vector(length=4, sensitivity=2, epsilon=0.5)
    >>> v.scale, v.epsilon <= 0.5
    (4.0, True)
    """
    too_small = InvalidRequest(
        f"epsilon {epsilon:g} is too small for these metrics; nothing was spent"
    )
    scale = sensitivity / epsilon
    if not math.isfinite(scale) or scale > MAX_SCALE or length < 1:
        raise too_small
    try:
        m = _measurement(scale)
        certified = float(m.map(sensitivity))
        for _ in range(8):
            if certified <= epsilon:
                break
            scale = math.nextafter(scale, math.inf) * (1 + 1e-12)
            m = _measurement(scale)
            certified = float(m.map(sensitivity))
        m([0] * length)
    except Exception:
        raise too_small from None
    if not accounting.reachable(requested=epsilon, certified=certified):
        raise too_small
    return PreparedVector(m, length, sensitivity, scale, certified)


def release_vector(prepared: PreparedVector, values: list[int]) -> list[int]:
    """The noisy vector (exact discrete Laplace from OpenDP)."""
    if len(values) != prepared.length:
        raise ValueError("the vector's length is not the prepared length")
    return [int(x) for x in prepared.measurement([int(v) for v in values])]


def vector_accuracy(prepared: PreparedVector, alpha: float = ALPHA) -> int:
    """Half-width h with P(|noise| > h) ≤ alpha for each entry."""
    return _accuracy(prepared.scale, alpha)
