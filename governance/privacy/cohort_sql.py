"""The SQL the hub runs for a checked cohort (``governance.privacy.cohort_query``).

No value may turn into an error once data is read: a run that fails or not depending on
one person's record is a yes/no answer about that person. The checked tree is rewritten
so that every expression is total, aggregate or not:

* every scalar operation is in ``TRY()`` and every cast is a ``TRY_CAST`` (except a
  join's proven person equality between two person keys of one type, which cannot
  raise: bare, it stays a hash join);
* every place that reads a value as a truth value (WHERE, a join's condition, an
  aggregate's FILTER, AND/OR/NOT, ``bool_and``/``bool_or``) reads it through
  ``TRY_CAST(... AS BOOLEAN)``: DuckDB's implicit cast of text to BOOLEAN raises on
  ``'maybe'``. Truth-valued expressions (comparisons, IN, IS NULL, ...) are left as
  they are;
* DuckDB refuses ``TRY()`` around an aggregate, so a SELECT that computes over its
  aggregates (``max(x) + 1``, ``count(*) * k``, HAVING) is split in two: the inner
  SELECT groups and returns only the aggregates and the group values, and an outer
  SELECT computes the rest from them, made total like any row-local expression;
* the arithmetic aggregates that can overflow or fail on extreme inputs (``sum``,
  ``avg``/``mean``, ``median``, ``quantile_cont``: HUGEINT and wide DECIMAL sums,
  DATE and INTERVAL averages) are computed over DOUBLE: their argument is
  ``TRY(x + 0::DOUBLE)``, which binds for numbers only (a date is refused before any
  data is read) and whose sum can reach infinity but never raise;
* every semi-join's subquery drops NULL keys (``WHERE key IS NOT NULL``), so
  ``person_id IN (SELECT ...)`` is two-valued and ``NOT IN`` cannot be turned NULL for
  everyone by one person's missing record.

The tree is then turned back into SQL by DuckDB's ``json_deserialize_sql`` and wrapped
so that rows without a person, and any person with more than one row, are dropped
(defence in depth: the compiler proves one row per person; dropping depends only on
that person's rows).

>>> wrap_sql("SELECT 1 AS person_id").startswith("SELECT * FROM (SELECT 1 AS person_id)")
True
>>> col = {"class": "COLUMN_REF", "type": "COLUMN_REF", "alias": "", "column_names": ["s"]}
>>> _as_bool(_harden(col))["try_cast"]
True
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable
from typing import Any, Final

from governance.privacy.cohort_query import (
    PERSON_JOIN,
    SPECIFIER_FUNCTIONS,
    TIMESTAMP_FUNCTIONS,
)
from governance.sql.policy import AGGREGATES, PolicyError

PERSON: Final = "person_id"
# the inner SELECT of a split aggregate and its columns (scoped to that split only)
GROUPED: Final = "hub_grouped"
VALUE: Final = "hub_value_"
# aggregates computed over DOUBLE (their first argument), so that they cannot overflow
_ARITHMETIC: Final = frozenset({"sum", "avg", "mean", "median", "quantile_cont"})
# aggregates that read their argument as a truth value
_LOGICAL: Final = frozenset({"bool_and", "bool_or"})
_BOOLEAN_OPERATORS: Final = frozenset(
    {"OPERATOR_NOT", "OPERATOR_IS_NULL", "OPERATOR_IS_NOT_NULL", "COMPARE_IN", "COMPARE_NOT_IN"}
)


# ---------------------------------------------------------------- tree pieces
def _wrap(node: dict[str, Any]) -> dict[str, Any]:
    alias = node.get("alias", "")
    inner = {**node, "alias": ""}
    return {"class": "OPERATOR", "type": "OPERATOR_TRY", "alias": alias, "children": [inner]}


def _column(names: list[str], alias: str = "") -> dict[str, Any]:
    return {"class": "COLUMN_REF", "type": "COLUMN_REF", "alias": alias, "column_names": names}


def _try_cast(node: dict[str, Any], type_name: str) -> dict[str, Any]:
    alias = node.get("alias", "")
    return {
        "class": "CAST",
        "type": "OPERATOR_CAST",
        "alias": alias,
        "child": {**node, "alias": ""},
        "try_cast": True,
        "type_expr": {
            "class": "TYPE", "type": "TYPE", "alias": "", "catalog": "", "schema": "",
            "type_name": type_name, "children": [], "qualified_name": {"path": [type_name]},
        },
    }  # fmt: skip


def _operator(kind: str, children: list[dict[str, Any]]) -> dict[str, Any]:
    cls = "CONJUNCTION" if kind.startswith("CONJUNCTION_") else "OPERATOR"
    return {"class": cls, "type": kind, "alias": "", "children": children}


def _plus(left: dict[str, Any], right: dict[str, Any]) -> dict[str, Any]:
    return {
        "class": "FUNCTION", "type": "FUNCTION", "alias": "", "function_name": "+",
        "schema": "", "filter": None, "order_bys": {"type": "ORDER_MODIFIER", "orders": []},
        "distinct": False, "is_operator": True, "export_state": False, "catalog": "",
        "arguments": [{"name": "", "expression": left}, {"name": "", "expression": right}],
        "qualified_name": {"path": ["+"]}, "is_legacy_function_call": False,
    }  # fmt: skip


def _zero() -> dict[str, Any]:
    return {"class": "CONSTANT", "type": "VALUE_CONSTANT", "alias": "",
            "literal": {"kind": "INTEGER", "text": "0"}}  # fmt: skip


def _is_aggregate_call(node: Any) -> bool:
    name = str(node.get("function_name", "")).lower() if isinstance(node, dict) else ""
    return (
        isinstance(node, dict)
        and node.get("class") == "FUNCTION"
        and (name in AGGREGATES or name == "count_star")
    )


def _has_aggregate(node: Any) -> bool:
    if isinstance(node, list):
        return any(_has_aggregate(v) for v in node)
    if not isinstance(node, dict):
        return False
    if node.get("class") == "SUBQUERY":
        return False  # its aggregates are its own
    if _is_aggregate_call(node):
        return True
    return any(_has_aggregate(v) for v in node.values())


def _has_column(node: Any) -> bool:
    if isinstance(node, list):
        return any(_has_column(v) for v in node)
    if not isinstance(node, dict):
        return False
    return node.get("class") == "COLUMN_REF" or any(_has_column(v) for v in node.values())


def _is_bool(node: dict[str, Any]) -> bool:
    """Whether the expression is truth-valued by its form (no cast needed to read it)."""
    cls, kind = node.get("class"), node.get("type")
    if cls in ("COMPARISON", "BETWEEN", "CONJUNCTION") or kind in _BOOLEAN_OPERATORS:
        return True
    if cls == "SUBQUERY":
        return node.get("subquery_type") == "ANY"
    if kind == "OPERATOR_TRY":
        return all(_is_bool(c) for c in node.get("children") or [])
    return (
        cls == "CAST"
        and bool(node.get("try_cast"))
        and str((node.get("type_expr") or {}).get("type_name", "")).upper() == "BOOLEAN"
    )


def _as_bool(node: dict[str, Any]) -> dict[str, Any]:
    """An (already hardened) expression read as a truth value, without an implicit cast
    that can raise (text to BOOLEAN): ``TRY_CAST(... AS BOOLEAN)`` unless truth-valued."""
    return node if _is_bool(node) else _try_cast(node, "BOOLEAN")


def _as_double(node: dict[str, Any]) -> dict[str, Any]:
    """An (already hardened) aggregate argument as DOUBLE: a truth value as 1.0/0.0, a
    number through ``TRY(x + 0::DOUBLE)``, which binds for numbers only."""
    if _is_bool(node):
        return _try_cast(node, "DOUBLE")
    return _wrap(_plus(node, _try_cast(_zero(), "DOUBLE")))


# ---------------------------------------------------------------- rewriting
def _drop_null_keys(sub: dict[str, Any]) -> None:
    """A semi-join's subquery (one person key column) with ``key IS NOT NULL`` added to
    its WHERE: ``x IN (...)`` is then never NULL for a non-NULL ``x``."""
    node = sub.get("node")
    if not isinstance(node, dict) or node.get("type") != "SELECT_NODE":
        raise PolicyError("cohort_subquery", "a semi-join reads one person_id column")
    items = node.get("select_list") or []
    if len(items) != 1:
        raise PolicyError("cohort_subquery", "a semi-join reads one person_id column")
    key = _operator("OPERATOR_IS_NOT_NULL", [{**copy.deepcopy(items[0]), "alias": ""}])
    where = node.get("where_clause")
    node["where_clause"] = key if where is None else _operator("CONJUNCTION_AND", [where, key])


def _positional_groups(node: dict[str, Any]) -> None:
    """``GROUP BY 1`` names the first select item: spelled out, since the split changes
    the inner SELECT's items."""
    items = node.get("select_list") or []
    groups = []
    for e in node.get("group_expressions") or []:
        literal = e.get("literal") or {}
        if e.get("class") == "CONSTANT" and literal.get("kind") in ("INTEGER", "BIGINT"):
            position = int(literal.get("text", "0"))
            if not 1 <= position <= len(items):
                raise PolicyError("cohort_aggregate", "GROUP BY names a column out of range")
            e = {**copy.deepcopy(items[position - 1]), "alias": ""}
        groups.append(e)
    node["group_expressions"] = groups


def _needs_split(node: dict[str, Any]) -> bool:
    if node.get("having") is not None:
        return True
    return any(
        _has_aggregate(item) and not _is_aggregate_call(item)
        for item in node.get("select_list") or []
    )


def _split(node: dict[str, Any]) -> dict[str, Any]:
    """A grouped SELECT as an outer SELECT over an inner one that returns only its
    aggregates and group values, so that what is computed over them can be made total."""
    _positional_groups(node)
    leaves: list[dict[str, Any]] = []

    def leaf(expr: dict[str, Any]) -> dict[str, Any]:
        name = f"{VALUE}{len(leaves)}"
        leaves.append({**expr, "alias": name})
        return _column([GROUPED, name])

    def lift(expr: Any) -> Any:
        if isinstance(expr, list):
            return [lift(v) for v in expr]
        if not isinstance(expr, dict):
            return expr
        if "class" not in expr:  # a holder: a function's argument, a CASE's check
            return {k: lift(v) for k, v in expr.items()}
        if _is_aggregate_call(expr) or (not _has_aggregate(expr) and _has_column(expr)):
            return {**leaf(expr), "alias": expr.get("alias", "")}
        if not _has_aggregate(expr):
            return expr  # constants
        return {k: lift(v) for k, v in expr.items()}

    outer_items = []
    for item in node.get("select_list") or []:
        name = str(item.get("alias") or "")
        if not name and item.get("class") == "COLUMN_REF":
            name = str(item["column_names"][-1])
        outer_items.append({**lift(item), "alias": name})
    where = lift(node["having"]) if node.get("having") is not None else None
    if not leaves:
        leaf(_zero())
    inner = {**node, "modifiers": [], "select_list": leaves, "having": None}
    source: dict[str, Any] = {
        "type": "SUBQUERY",
        "alias": GROUPED,
        "sample": None,
        "subquery": {"node": inner, "named_param_map": []},
        "column_name_alias": [],
    }
    return {
        **node,
        "select_list": outer_items,
        "from_table": source,
        "where_clause": where,
        "group_expressions": [],
        "group_sets": [],
        "aggregate_handling": "STANDARD_HANDLING",
        "having": None,
    }


def _restructure(node: Any) -> Any:
    """Every semi-join drops NULL keys; every SELECT that computes over its aggregates
    is split (innermost first)."""
    if isinstance(node, list):
        return [_restructure(v) for v in node]
    if not isinstance(node, dict):
        return node
    if node.get("class") == "SUBQUERY":
        if node.get("subquery_type") != "ANY":
            raise PolicyError("cohort_subquery", "only IN (SELECT person_id ...) semi-joins")
        _drop_null_keys(node.get("subquery") or {})
    out = {k: _restructure(v) for k, v in node.items()}
    if out.get("type") == "SELECT_NODE" and "class" not in out and _needs_split(out):
        return _split(out)
    return out


def _harden(node: Any) -> Any:
    """The tree with every value-raising operation made total (see the module's text).

    Run after :func:`_restructure`: an aggregate is then never inside another expression
    of its SELECT, and an expression that still holds one is refused.
    """
    if isinstance(node, list):
        return [_harden(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: _harden(v) for k, v in node.items()}
    if out.pop(PERSON_JOIN, False):
        # a join's proven person equality: two person keys of one type, which cannot
        # raise. Bare, it stays a hash join; inside TRY() it is an opaque function of
        # both sides and the join a nested loop, quadratic in the rows (a
        # 400,000-people cohort ran for minutes instead of seconds)
        return out
    cls, kind = out.get("class"), out.get("type")
    if cls is None:  # a statement, a table reference or a holder
        if kind == "SELECT_NODE":
            for key in ("where_clause", "having"):
                if out.get(key) is not None:
                    out[key] = _as_bool(out[key])
        elif kind == "JOIN" and out.get("condition") is not None:
            out["condition"] = _as_bool(out["condition"])
        return out
    if cls == "CAST":
        out["try_cast"] = True
        return out
    if cls == "CONJUNCTION" or kind == "OPERATOR_NOT":
        # AND/OR/NOT of truth values cannot raise (and TRY() cannot hold a subquery)
        out["children"] = [_as_bool(c) for c in out.get("children") or []]
        return out
    if _is_aggregate_call(out):
        name = str(out.get("function_name", "")).lower()
        if out.get("filter") is not None:
            out["filter"] = _as_bool(out["filter"])
        args = out.get("arguments") or []
        if args and (name in _ARITHMETIC or name in _LOGICAL):
            total = _as_double if name in _ARITHMETIC else _as_bool
            args[0] = {**args[0], "expression": total(args[0]["expression"])}
        return out
    if _has_aggregate(out):
        raise PolicyError("cohort_unsupported", "the cohort has a shape the hub cannot check")
    if cls == "FUNCTION":
        # dates read as TIMESTAMP, where every allowed date part is total (an INTERVAL or
        # a TIME raises NotImplemented on some parts, which TRY() does not catch)
        name = str(out.get("function_name", "")).lower()
        args = out.get("arguments") or []
        first = 1 if name in SPECIFIER_FUNCTIONS else 0 if name in TIMESTAMP_FUNCTIONS else None
        if first is not None:
            out["arguments"] = args[:first] + [
                {**a, "expression": _try_cast(a["expression"], "TIMESTAMP")} for a in args[first:]
            ]
    if kind in ("OPERATOR_IS_NULL", "OPERATOR_IS_NOT_NULL"):
        return out  # no cast, nothing that can raise
    if cls in ("COMPARISON", "BETWEEN", "CASE", "OPERATOR", "FUNCTION"):
        return _wrap(out)
    return out


def hardened_tree(node: dict[str, Any]) -> dict[str, Any]:
    """The checked tree, rewritten so that no value can raise (see :func:`wrap_sql`)."""
    result: dict[str, Any] = _harden(_restructure(copy.deepcopy(node)))
    return result


def wrap_sql(inner_sql: str) -> str:
    """The SQL the hub runs around the rewritten cohort: one row per non-null person."""
    return (
        f"SELECT * FROM ({inner_sql}) AS cohort WHERE cohort.{PERSON} IS NOT NULL "  # noqa: S608
        f"QUALIFY count(*) OVER (PARTITION BY cohort.{PERSON}) = 1"
    )


def check_result_types(types: Iterable[str]) -> None:
    """Refuse result types whose values can fail when a row is read (after the run).

    An INTERVAL past Python's ``timedelta`` (``to_days(2000000000)``) cannot be turned
    into a Python value: the read fails on one value, so the cohort may not return one.

    >>> check_result_types(["VARCHAR", "DOUBLE", "DATE"])
    >>> try:
    ...     check_result_types(["BIGINT", "INTERVAL"])
    ... except PolicyError as exc:
    ...     exc.rule
    'cohort_types'
    """
    if any("INTERVAL" in str(t).upper() for t in types):
        raise PolicyError(
            "cohort_types", "a cohort cannot return an INTERVAL: return a number (date_diff, epoch)"
        )


def statement_json(tree: dict[str, Any]) -> str:
    """The tree as the statement list ``json_deserialize_sql`` reads."""
    return json.dumps({"error": False, "statements": [{"node": tree, "named_param_map": []}]})
