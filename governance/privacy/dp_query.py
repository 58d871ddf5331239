"""The DP query compiler: a researcher's SQL → a small explicit plan → SQL the hub writes.

A DP answer is never computed from the researcher's parse tree. DuckDB parses the SQL
(``json_serialize_sql``, checked by ``governance.sql.policy`` first); this module reads
that tree into a :class:`Plan` and refuses, with a rule name (``PolicyError.rule``),
anything that is not one of these shapes:

* **one source**: a base table or declared person-level view (``domains.SOURCES``), no
  join, derived table, CTE, sample, set operation, window, QUALIFY, HAVING, ORDER BY,
  LIMIT, DISTINCT or column renaming;
* **row-local predicates** (WHERE and aggregate FILTERs) over that source's own
  columns: comparisons, AND/OR/NOT, IS NULL, IN lists, BETWEEN, LIKE, CASE, casts and
  allow-listed scalar functions on columns and constants;
* **person-local semi-joins**: ``person_id IN (SELECT person_id FROM t WHERE <row-local>)``
  (and its negation), the only subquery; whether one person's rows pass depends only on
  that person's rows in ``t``;
* **at most one group key**, a bare column with a declared domain (the groups come from
  the declaration, never from the data);
* **aggregates with declared bounds**: ``count(*)``, ``count(col)`` (non-null rows),
  ``count(DISTINCT person_id)``, ``sum(col)``, ``avg(col)``/``mean(col)``, each with an
  optional ``FILTER (WHERE <row-local>)``.

The SQL that runs is written here from the plan, not from the user's text: every
identifier is checked against the catalogue and quoted, every constant re-rendered, and
every operator, function, comparison and cast that can raise in DuckDB (division by
zero, failed casts, ``make_date`` out of range, overflow) is wrapped in ``TRY(...)`` (or
``TRY_CAST``), so once data is read, no value can turn into an error.

Contribution bounding (unit: one person): every person keeps at most ``k`` rows of a
stream (``k`` chosen by the query up to the steward's maximum; ``k = 1`` and no window
for person-level sources), chosen by a keyed hash of the row with a fresh salt, not by
value. Person counts de-duplicate (person, group) first and keep at most ``min(k, G)``
pairs. Sums are exact fixed-point integers (``FIXED_POINT`` per unit) of values clamped to
the declared bounds; means are a centred sum over a count.

>>> from governance.privacy.dp_sql import components
>>> plan = Plan("patients", (AggregatePlan("count", "n"),), group=None, domain=(),
...             rows_per_person=1, person_level=True)
>>> [(c.name, c.sensitivity) for c in components(plan)]
[('n', 1)]
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Final, Literal

from governance.privacy import domains
from governance.privacy.dp_expressions import (
    PERSON,
    Catalogue,
    Compiler,
    Scope,
    is_empty,
    quote,
)
from governance.sql.policy import AGGREGATES, PolicyError

Kind = Literal["count", "count_persons", "sum", "mean"]
FIXED_POINT: Final = 1000  # sums are exact integers in thousandths of a unit


@dataclass(frozen=True)
class AggregatePlan:
    kind: Kind
    label: str
    column: str | None = None
    bounds: tuple[float, float] | None = None
    filter: str | None = None  # hub-written SQL predicate over the source alias ``src``


@dataclass(frozen=True)
class Plan:
    source: str
    aggregates: tuple[AggregatePlan, ...]
    where: str | None = None  # hub-written SQL predicate over ``src``
    group: str | None = None
    domain: tuple[Any, ...] = ()
    rows_per_person: int = 1  # k
    person_level: bool = True
    semijoins: int = 0  # how many person-local semi-joins the predicates use

    @property
    def groups(self) -> list[Any]:
        return list(self.domain) if self.group else [None]


@dataclass(frozen=True)
class Component:
    """One vector the mechanism noises: integer-valued, with its L1 sensitivity."""

    name: str
    aggregate: int  # index into plan.aggregates
    part: Literal["count", "sum"]
    sensitivity: int  # in the integer units of the vector (sums: FIXED_POINT per unit)
    unit: float  # multiply an integer value by this to get the answer's unit


# ---------------------------------------------------------------------------- compile
def compile_plan(
    node: dict[str, Any],
    catalogue: Catalogue,
    *,
    rows_per_person: int | None = None,
) -> Plan:
    """The plan for one checked SELECT (DuckDB's parse tree), or PolicyError with a rule.

    ``catalogue`` maps each table and view of the release to its columns and types.
    """
    try:
        return _compile(node, catalogue, rows_per_person)
    except PolicyError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, RecursionError):
        raise PolicyError("dp_unsupported", "the query has a shape dp mode cannot answer") from None


def _compile(node: dict[str, Any], catalogue: Catalogue, rows_per_person: int | None) -> Plan:
    compiler = Compiler(catalogue)
    compiler.check_select_shape(node)
    scope = compiler.source(node.get("from_table"), outer=True)
    declared = domains.source(scope.table)
    assert declared is not None
    # the group key: at most one bare column with a declared domain
    select = node.get("select_list") or []
    keys = [item for item in select if not _is_aggregate_call(item)]
    if len(keys) > 1:
        raise PolicyError("dp_group_key", "a dp query groups by at most one column")
    group: str | None = None
    domain: tuple[Any, ...] = ()
    if keys:
        key = keys[0]
        if key.get("class") != "COLUMN_REF":
            raise PolicyError(
                "dp_group_key", "the group key must be a column with a declared domain"
            )
        group = compiler.column_name(key, scope)  # the source's own, not excluded
        domain = domains.DOMAINS.get(scope.table, {}).get(group, ())
        if not domain:
            raise PolicyError(
                "dp_group_key",
                f"{scope.table}.{group} has no declared domain: it cannot be a dp group key",
            )
        _check_group_by(node, key, group, select.index(key) + 1, scope)
    elif (
        not is_empty(node.get("group_expressions"))
        or node.get("aggregate_handling") not in ("STANDARD_HANDLING", "FORCE_AGGREGATES")
        or any(g for g in node.get("group_sets") or [])
    ):
        raise PolicyError("dp_group_key", "group by a column that is in the select list")
    # the rows-per-person bound k
    if declared.person_level:
        k = 1
        if rows_per_person not in (None, 1):
            raise PolicyError(
                "dp_rows_per_person", f"{scope.table} has one row per person: its bound is 1"
            )
    else:
        k = declared.default_rows_per_person if rows_per_person is None else rows_per_person
        if (
            isinstance(k, bool)
            or not isinstance(k, int)
            or not 1 <= k <= declared.max_rows_per_person
        ):
            raise PolicyError(
                "dp_rows_per_person",
                f"rows_per_person for {scope.table} must be an integer from 1 to "
                f"{declared.max_rows_per_person} (the steward's maximum)",
            )
    where_node = node.get("where_clause")
    where = compiler.expr(where_node, scope) if where_node is not None else None
    aggregates: list[AggregatePlan] = []
    labels: set[str] = set()
    for item in select:
        if keys and item is keys[0]:
            continue
        agg = _aggregate(item, scope, compiler)
        label = agg.label
        n = 2
        while label in labels or label == group:
            label = f"{agg.label}_{n}"
            n += 1
        labels.add(label)
        aggregates.append(AggregatePlan(agg.kind, label, agg.column, agg.bounds, agg.filter))
    if not aggregates:
        raise PolicyError("dp_aggregate", "name at least one aggregate")
    return Plan(
        source=scope.table,
        aggregates=tuple(aggregates),
        where=where,
        group=group,
        domain=tuple(domain),
        rows_per_person=k,
        person_level=declared.person_level,
        semijoins=compiler.semijoins,
    )


def _is_aggregate_call(item: dict[str, Any]) -> bool:
    return item.get("class") in ("FUNCTION", "WINDOW") and (
        str(item.get("function_name", "")).lower() in AGGREGATES | {"count_star"}
    )


def _check_group_by(
    node: dict[str, Any], key: dict[str, Any], group: str, position: int, scope: Scope
) -> None:
    handling = node.get("aggregate_handling")
    exprs = node.get("group_expressions") or []
    sets = node.get("group_sets") or []
    if handling == "FORCE_AGGREGATES" and not exprs:  # GROUP BY ALL
        return
    if handling != "STANDARD_HANDLING" or len(exprs) != 1 or sets != [[0]]:
        raise PolicyError("dp_group_key", "GROUP BY exactly the one group key")
    expr = exprs[0]
    if expr.get("class") == "COLUMN_REF" and scope.compiler.column(
        expr, scope
    ) == scope.compiler.column(key, scope):
        return
    literal = expr.get("literal") if expr.get("class") == "CONSTANT" else None
    if literal and literal.get("kind") == "INTEGER" and literal.get("text") == str(position):
        return
    raise PolicyError("dp_group_key", "GROUP BY exactly the one group key")


def _aggregate(item: dict[str, Any], scope: Scope, compiler: Compiler) -> AggregatePlan:
    if item.get("class") == "WINDOW":
        raise PolicyError("dp_window", "window functions are not allowed in dp mode")
    if item.get("class") != "FUNCTION":
        raise PolicyError(
            "dp_aggregate",
            "every output is the group key or an aggregate (count, sum, avg) of a column",
        )
    name = str(item.get("function_name", "")).lower()
    if (item.get("order_bys") or {}).get("orders") or item.get("schema") or item.get("catalog"):
        raise PolicyError("dp_aggregate", "ordered or qualified aggregates are not allowed")
    args = [(a or {}).get("expression") for a in item.get("arguments") or []]
    if any((a or {}).get("name") for a in item.get("arguments") or []):
        raise PolicyError("dp_aggregate", "named arguments are not allowed in dp mode")
    filter_node = item.get("filter")
    flt = compiler.expr(filter_node, scope) if filter_node is not None else None
    alias = str(item.get("alias") or "")
    column: str | None = None
    if args:
        arg = args[0]
        if len(args) != 1 or not isinstance(arg, dict) or arg.get("class") != "COLUMN_REF":
            raise PolicyError(
                "dp_aggregate", "an aggregate's argument must be one of the source's columns"
            )
        column = compiler.column_name(arg, scope)
    distinct = bool(item.get("distinct"))
    if name == "count_star" and not args and not distinct:
        return AggregatePlan("count", alias or "count", None, None, flt)
    if name == "count" and column == PERSON and distinct:
        return AggregatePlan("count_persons", alias or "count_persons", None, None, flt)
    if name == "count" and column is not None and not distinct:
        # count(col) counts the rows where col is not null
        not_null = f"({scope.alias}.{quote(column)} IS NOT NULL)"
        both = not_null if flt is None else f"({flt} AND {not_null})"
        return AggregatePlan("count", alias or f"count_{column}", None, None, both)
    if name in ("sum", "avg", "mean") and column is not None and not distinct:
        bounds = domains.BOUNDS.get(scope.table, {}).get(column)
        if bounds is None:
            raise PolicyError(
                "dp_bounds",
                f"{scope.table}.{column} has no declared bounds: it cannot be summed in dp mode",
            )
        lo, hi = bounds
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise PolicyError("dp_bounds", "declared bounds must be finite with lower < upper")
        kind: Kind = "sum" if name == "sum" else "mean"
        return AggregatePlan(kind, alias or f"{name}_{column}", column, (lo, hi), flt)
    raise PolicyError(
        "dp_aggregate",
        "dp mode answers count(*), count(col), count(DISTINCT person_id), sum(col) and "
        "avg(col) of columns with declared bounds",
    )
