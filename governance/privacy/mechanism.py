"""Differentially private aggregates with per-person contribution bounding and OpenDP noise.

A DP query names one table, an optional (policy-checked) filter, at most one grouping
column with a **declared domain** (group keys come from the domain, never from the
data, so the set of groups reveals nothing), and aggregates:

* ``count``: rows; ``count_persons``: distinct people; ``sum`` and ``mean`` of a numeric
  column clamped to **declared bounds**.

Sensitivity is made true by construction: before aggregating, each person keeps at most
``max_rows_per_person`` rows (chosen by a keyed hash, not by value), and values are
clamped. Adding or removing one person then changes the vector of group answers by at
most (L1):

* count: ``k``; count_persons: ``min(k, groups)``; sum: ``k · max(|lo|, |hi|)``;
  mean: a noisy sum over a noisy count, each with half the budget.

Noise comes from OpenDP's vetted Laplace mechanisms (discrete for counts, continuous for
sums) calibrated to scale = Δ/ε; OpenDP's privacy map then confirms the ε actually
spent, which must not exceed what was asked. The answer carries the noise scale and a
95% interval half-width (``scale · ln(20)``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import duckdb
import opendp.prelude as dp

from governance.errors import InvalidRequest

dp.enable_features("contrib")

Kind = Literal["count", "count_persons", "sum", "mean"]
CI_FACTOR: Final = math.log(20)  # P(|Laplace(b)| > b·ln 20) = 5%
DEFAULT_ROWS_PER_PERSON: Final = 10


@dataclass(frozen=True)
class Aggregate:
    kind: Kind
    column: str | None = None
    bounds: tuple[float, float] | None = None

    def validate(self) -> None:
        if self.kind in ("sum", "mean"):
            if self.column is None or self.bounds is None:
                raise InvalidRequest(f"{self.kind} needs a column and declared bounds")
            lo, hi = self.bounds
            if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
                raise InvalidRequest("bounds must be finite with lower < upper")


@dataclass(frozen=True)
class DpQuery:
    table: str
    aggregates: tuple[Aggregate, ...]
    group_by: str | None = None
    domain: tuple[Any, ...] = ()
    where: str | None = None  # checked by the SQL policy before it gets here
    max_rows_per_person: int = DEFAULT_ROWS_PER_PERSON
    # or: a row-level SELECT (person_id and the columns used) DuckDB wrote back from a
    # policy-checked parse tree; used instead of table and where
    source: str | None = None


@dataclass
class DpAnswer:
    groups: list[Any]
    values: dict[str, list[float]]  # aggregate label -> noisy value per group
    epsilon: float  # as certified by OpenDP's privacy maps
    scales: dict[str, float] = field(default_factory=dict)
    ci95: dict[str, float] = field(default_factory=dict)


def label(a: Aggregate) -> str:
    return a.kind if a.column is None else f"{a.kind}_{a.column}"


def sensitivity(a: Aggregate, *, k: int, groups: int) -> float:
    """L1 change in the (bounded) answer vector when one person is added or removed."""
    if a.kind == "count":
        return float(k)
    if a.kind == "count_persons":
        return float(min(k, max(groups, 1)))
    assert a.bounds is not None
    return float(k * max(abs(a.bounds[0]), abs(a.bounds[1])))


def bounded_sql(q: DpQuery, *, salt: str) -> str:
    """Per-group true answers after contribution bounding (one row per domain value)."""
    if q.max_rows_per_person < 1:
        raise InvalidRequest("max_rows_per_person must be at least 1")
    names = [q.group_by or "person_id", *(a.column for a in q.aggregates if a.column)]
    if q.source is None:
        names.append(q.table)
    if not all(n.isidentifier() for n in names) or not salt.isalnum():
        raise InvalidRequest("tables and columns must be plain names")
    group = q.group_by or "NULL"
    values = []
    for i, a in enumerate(q.aggregates):
        a.validate()
        if a.column is not None and a.bounds is not None:
            lo, hi = a.bounds
            values.append(f"least(greatest({a.column}::DOUBLE, {lo}), {hi}) AS v{i}")
    value_cols = ", ".join(values)
    where = f"WHERE {q.where}" if q.where else ""
    selects = []
    for i, a in enumerate(q.aggregates):
        if a.kind == "count":
            selects.append(f"count(*) AS a{i}")
        elif a.kind == "count_persons":
            selects.append(f"count(DISTINCT person_id) AS a{i}")
        elif a.kind == "sum":
            selects.append(f"coalesce(sum(v{i}), 0) AS a{i}")
        else:  # mean: sum and count, noised separately
            selects.append(f"coalesce(sum(v{i}), 0) AS a{i}, count(v{i}) AS c{i}")
    # which rows a person keeps: a keyed hash of the row, not its values' order
    order_key = ", ".join(["person_id", group, *(a.column for a in q.aggregates if a.column)])
    # names are checked identifiers from the project's grants; the filter has passed
    # the SQL policy; nothing else is interpolated
    return f"""
        WITH rows AS (
            SELECT person_id, {group} AS g{", " + value_cols if value_cols else ""},
                   row_number() OVER (
                       PARTITION BY person_id ORDER BY hash({order_key}, '{salt}')
                   ) AS rn
            FROM {f"({q.source}) AS source" if q.source else q.table} {where}
        )
        SELECT g, {", ".join(selects)} FROM rows WHERE rn <= {q.max_rows_per_person} GROUP BY g
    """  # noqa: S608


def true_answers(
    con: duckdb.DuckDBPyConnection, q: DpQuery, *, salt: str
) -> dict[Any, tuple[float, ...]]:
    rows = con.execute(bounded_sql(q, salt=salt)).fetchall()
    return {r[0]: tuple(float(x) for x in r[1:]) for r in rows}


def _vector(
    values: list[float], *, sensitivity: float, epsilon: float, integer: bool
) -> tuple[list[float], float, float]:
    """Noisy vector from OpenDP; returns (values, scale, certified epsilon)."""
    scale = sensitivity / epsilon
    if integer:
        m = dp.m.make_laplace(
            dp.vector_domain(dp.atom_domain(T=int)), dp.l1_distance(T=int), scale=scale
        )
        noisy = m([round(v) for v in values])
        certified = m.map(math.ceil(sensitivity))
        return [int(x) for x in noisy], scale, float(certified)
    else:
        m = dp.m.make_laplace(
            dp.vector_domain(dp.atom_domain(T=float, nan=False)),
            dp.l1_distance(T=float),
            scale=scale,
        )
        noisy = m([float(v) for v in values])
        certified = m.map(float(sensitivity))
    return [float(x) for x in noisy], scale, float(certified)


def release(con: duckdb.DuckDBPyConnection, q: DpQuery, *, epsilon: float, salt: str) -> DpAnswer:
    """Answer ``q`` spending at most ``epsilon`` (split evenly over the aggregates)."""
    if not q.aggregates:
        raise InvalidRequest("name at least one aggregate")
    if q.group_by is not None and not q.domain:
        raise InvalidRequest(f"grouping by {q.group_by} needs its declared domain")
    groups = list(q.domain) if q.group_by else [None]
    truth = true_answers(con, q, salt=salt)
    parts = sum(2 if a.kind == "mean" else 1 for a in q.aggregates)
    eps_each = epsilon / parts
    answer = DpAnswer(groups=groups, values={}, epsilon=0.0)
    k = q.max_rows_per_person
    column = 0
    for a in q.aggregates:
        name = label(a)
        delta = sensitivity(a, k=k, groups=len(groups))
        raw = [truth.get(g, ())[column] if g in truth else 0.0 for g in groups]
        integer = a.kind in ("count", "count_persons")
        noisy, scale, spent = _vector(raw, sensitivity=delta, epsilon=eps_each, integer=integer)
        answer.epsilon += spent
        if a.kind == "mean":
            counts = [truth[g][column + 1] if g in truth else 0.0 for g in groups]
            noisy_n, _, spent_n = _vector(
                counts, sensitivity=float(k), epsilon=eps_each, integer=True
            )
            answer.epsilon += spent_n
            lo, hi = a.bounds or (0.0, 0.0)
            noisy = [
                min(max(s / n, lo), hi) if n >= 1 else float("nan")
                for s, n in zip(noisy, noisy_n, strict=True)
            ]
            column += 2
        else:
            column += 1
        answer.values[name] = noisy
        answer.scales[name] = scale
        answer.ci95[name] = scale * CI_FACTOR
    if answer.epsilon > epsilon * (1 + 1e-9):
        raise RuntimeError("OpenDP certified more privacy loss than was budgeted")
    return answer
