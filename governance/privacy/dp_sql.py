"""What a compiled DP plan costs and runs: sensitivities, and the SQL the hub writes.

:func:`components` gives the integer vectors the mechanism noises, each with its L1
sensitivity under the unit of privacy (one person); :func:`statements` writes the SQL
that computes them after contribution bounding, from the plan alone (never from the
researcher's text). The plan itself comes from :mod:`governance.privacy.dp_query`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from governance.privacy.dp_expressions import PERSON, as_condition, literal_value, quote
from governance.privacy.dp_query import FIXED_POINT, AggregatePlan, Component, Plan


# ---------------------------------------------------------------------------- sensitivity
def components(plan: Plan) -> list[Component]:
    """The integer vectors the mechanism noises, each with its L1 sensitivity.

    Removing or adding one person changes, over all groups together:

    * a row count by at most k (the person keeps at most k rows);
    * a person count by at most min(k, G) (at most that many (person, group) pairs;
      1 without a group key), which is parallel composition over the groups;
    * a fixed-point sum by at most k · max(|lo|, |hi|) · FIXED_POINT;
    * a mean's centred sum by k · (hi − lo)/2 · FIXED_POINT, and its count by k.

    >>> plan = Plan("obs", (AggregatePlan("count", "n"), AggregatePlan("count_persons", "p")),
    ...             group="sex", domain=("F", "M"), rows_per_person=5, person_level=False)
    >>> [(c.name, c.sensitivity) for c in components(plan)]
    [('n', 5), ('p', 2)]
    """
    k = plan.rows_per_person
    out = []
    for i, a in enumerate(plan.aggregates):
        if a.kind == "count":
            out.append(Component(a.label, i, "count", k, 1.0))
        elif a.kind == "count_persons":
            pairs = min(k, len(plan.groups)) if plan.group else 1
            out.append(Component(a.label, i, "count", pairs, 1.0))
        else:
            assert a.bounds is not None
            lo, hi = _fixed_bounds(a)
            if a.kind == "sum":
                out.append(Component(a.label, i, "sum", k * max(abs(lo), abs(hi)), 1 / FIXED_POINT))
            else:
                half = (hi - lo + 1) // 2
                out.append(Component(f"{a.label}.sum", i, "sum", k * half, 1 / FIXED_POINT))
                out.append(Component(f"{a.label}.count", i, "count", k, 1.0))
    return out


def _fixed_bounds(a: AggregatePlan) -> tuple[int, int]:
    """The bounds in fixed point; for a mean, centred on the midpoint (integer)."""
    assert a.bounds is not None
    lo = math.floor(a.bounds[0] * FIXED_POINT)
    hi = math.ceil(a.bounds[1] * FIXED_POINT)
    if a.kind == "mean":
        centre = center(a)
        return lo - centre, hi - centre
    return lo, hi


def center(a: AggregatePlan) -> int:
    """A mean's centre, in fixed point."""
    assert a.bounds is not None
    lo = math.floor(a.bounds[0] * FIXED_POINT)
    hi = math.ceil(a.bounds[1] * FIXED_POINT)
    return (lo + hi) // 2


# ---------------------------------------------------------------------------- SQL
@dataclass(frozen=True)
class Stream:
    """One SQL statement: the aggregates that share a filter and a kind of bounding."""

    sql: str
    outputs: tuple[tuple[int, str], ...]  # (aggregate index, part) per output column
    salted: bool = False  # which rows a person keeps depends on the salt (a per-person bound)


def statements(plan: Plan, *, salt: str) -> list[Stream]:
    """The SQL the hub runs for ``plan``: one statement per stream, each returning one row
    per group present (``g`` first, then integer outputs).

    ``salt`` keys the choice of which rows a person keeps; it is fresh per query.
    """
    if not salt.isalnum():
        raise ValueError("salt must be alphanumeric")
    streams: dict[tuple[str, str | None], list[int]] = {}
    for i, a in enumerate(plan.aggregates):
        kind = "persons" if a.kind == "count_persons" else "rows"
        streams.setdefault((kind, a.filter), []).append(i)
    out = []
    for (kind, flt), indices in streams.items():
        if kind == "persons":
            out.append(_persons_stream(plan, flt, indices, salt))
        else:
            out.append(_rows_stream(plan, flt, indices, salt))
    return out


def _base_where(plan: Plan, flt: str | None) -> str:
    parts = [f"src.{quote(PERSON)} IS NOT NULL"]
    if plan.group:
        values = ", ".join(literal_value(v) for v in plan.domain)
        parts.append(f"TRY(src.{quote(plan.group)} IN ({values}))")
    for predicate in (plan.where, flt):
        if predicate:
            parts.append(as_condition(predicate))
    return " AND ".join(parts)


def _group_expr(plan: Plan) -> str:
    return f"src.{quote(plan.group)}" if plan.group else "NULL"


def _rows_stream(plan: Plan, flt: str | None, indices: list[int], salt: str) -> Stream:
    values = []
    selects = []
    outputs: list[tuple[int, str]] = []
    for i in indices:
        a = plan.aggregates[i]
        if a.kind == "count":
            selects.append(f"count(*) AS o{len(outputs)}")
            outputs.append((i, "count"))
            continue
        assert a.column is not None
        lo, hi = _fixed_bounds(a)
        raw = f"TRY_CAST(src.{quote(a.column)} AS DOUBLE) * {FIXED_POINT}"
        if a.kind == "mean":
            raw = f"({raw} - {center(a)})"
        # clamp, then round to an exact integer: NaN and ±inf land on a bound
        values.append(f"TRY_CAST(round(least(greatest({raw}, {lo}), {hi})) AS BIGINT) AS v{i}")
        selects.append(f"coalesce(sum(v{i}), 0)::HUGEINT AS o{len(outputs)}")
        outputs.append((i, "sum"))
        if a.kind == "mean":
            selects.append(f"count(v{i}) AS o{len(outputs)}")
            outputs.append((i, "count"))
    value_cols = "".join(f", {v}" for v in values)
    hashed = ", ".join(
        [f"src.{quote(PERSON)}", _group_expr(plan)]
        + [f"src.{quote(c)}" for c in sorted({a.column for a in plan.aggregates if a.column})]
    )
    rows = (  # quoted catalogue names and hub-written predicates only
        f"SELECT src.{quote(PERSON)} AS pid, {_group_expr(plan)} AS g{value_cols} "  # noqa: S608
        f"FROM {quote(plan.source)} AS src WHERE {_base_where(plan, flt)}"
    )
    if not plan.person_level:
        rows += (
            f" QUALIFY row_number() OVER (PARTITION BY src.{quote(PERSON)} "
            f"ORDER BY hash({hashed}, '{salt}')) <= {plan.rows_per_person}"
        )
    sql = f"SELECT g, {', '.join(selects)} FROM ({rows}) AS bounded GROUP BY g"  # noqa: S608
    return Stream(sql, tuple(outputs), salted=not plan.person_level)


def _persons_stream(plan: Plan, flt: str | None, indices: list[int], salt: str) -> Stream:
    """Person counts: (person, group) pairs, de-duplicated, at most ``min(k, G)`` a person.

    A source declared one row per person (``person_level``) already has one pair per
    person at most, so neither the de-duplication nor the per-person bound can change
    anything there, and neither runs (the rows stream skips its bound the same way).
    """
    distinct = "" if plan.person_level else "DISTINCT "
    pairs = (  # quoted catalogue names and hub-written predicates only
        f"SELECT {distinct}src.{quote(PERSON)} AS pid, {_group_expr(plan)} AS g "  # noqa: S608
        f"FROM {quote(plan.source)} AS src WHERE {_base_where(plan, flt)}"
    )
    cap = min(plan.rows_per_person, len(plan.groups))
    salted = bool(plan.group) and cap < len(plan.groups) and not plan.person_level
    if salted:
        # de-duplicate (person, group) first, then keep at most k pairs per person
        pairs = (  # quoted catalogue names and hub-written predicates only
            f"SELECT pid, g FROM ({pairs}) AS pairs QUALIFY row_number() OVER "  # noqa: S608
            f"(PARTITION BY pid ORDER BY hash(pid, g, '{salt}')) <= {cap}"
        )
    selects = ", ".join(f"count(*) AS o{n}" for n in range(len(indices)))
    sql = f"SELECT g, {selects} FROM ({pairs}) AS bounded GROUP BY g"  # noqa: S608
    return Stream(sql, tuple((i, "count") for i in indices), salted=salted)


def describe(plan: Plan) -> dict[str, Any]:
    """What the answer says about how it was computed (no data in it)."""
    return {
        "source": plan.source,
        "group_by": plan.group,
        "rows_per_person": plan.rows_per_person,
        "person_level_source": plan.person_level,
        "semi_joins": plan.semijoins,
        "note": (
            "values are computed after bounding each person's contribution: at most "
            f"{plan.rows_per_person} row(s) per person (chosen at random), person counts "
            "after de-duplicating (person, group), sums and means of values clamped to the "
            "declared bounds; intervals cover the noise, not the bounding"
        ),
    }
