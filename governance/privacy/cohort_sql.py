"""The SQL the hub runs for a checked cohort (``governance.privacy.cohort_query``).

The checked tree is rewritten so that no value can raise once data is read (every
scalar operation in ``TRY()``, every cast a ``TRY_CAST``; a join's proven person equality
between two person keys of one type, which cannot raise, stays bare so the join is a
hash join; DuckDB refuses TRY around an
aggregate, so expressions over aggregates keep their operators, whose per-person inputs
are already total), turned back into SQL by DuckDB's ``json_deserialize_sql``, and
wrapped so that rows without a person, and any person with more than one row, are
dropped (defence in depth: the compiler proves one row per person; dropping depends
only on that person's rows).

>>> wrap_sql("SELECT 1 AS person_id").startswith("SELECT * FROM (SELECT 1 AS person_id)")
True
"""

from __future__ import annotations

import copy
import json
from typing import Any, Final

from governance.privacy.cohort_query import PERSON_JOIN
from governance.sql.policy import AGGREGATES, SCALARS

PERSON: Final = "person_id"


def _wrap(node: dict[str, Any]) -> dict[str, Any]:
    alias = node.get("alias", "")
    inner = {**node, "alias": ""}
    return {"class": "OPERATOR", "type": "OPERATOR_TRY", "alias": alias, "children": [inner]}


def _has_aggregate(node: Any) -> bool:
    if isinstance(node, list):
        return any(_has_aggregate(v) for v in node)
    if not isinstance(node, dict):
        return False
    if node.get("class") == "SUBQUERY":
        return False  # its aggregates are its own
    name = str(node.get("function_name", "")).lower()
    if node.get("class") == "FUNCTION" and (name in AGGREGATES or name == "count_star"):
        return True
    return any(_has_aggregate(v) for v in node.values())


def _harden(node: Any) -> Any:
    """The tree with every value-raising operation made total (TRY, TRY_CAST).

    DuckDB refuses TRY around an aggregate, so an expression over aggregates keeps its
    operators (their inputs, computed per person, are already made total).
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
    cls = out.get("class")
    if cls == "CAST":
        out["try_cast"] = True
        return out
    if _has_aggregate(node):
        return out
    if cls in ("COMPARISON", "BETWEEN", "CASE"):
        return _wrap(out)
    if cls == "FUNCTION" and str(out.get("function_name", "")).lower() in SCALARS:
        return _wrap(out)
    if cls == "OPERATOR" and out.get("type") in ("COMPARE_IN", "COMPARE_NOT_IN"):
        return _wrap(out)
    return out


def hardened_tree(node: dict[str, Any]) -> dict[str, Any]:
    """The checked tree, rewritten so that no value can raise (see :func:`wrap_sql`)."""
    result: dict[str, Any] = _harden(copy.deepcopy(node))
    return result


def wrap_sql(inner_sql: str) -> str:
    """The SQL the hub runs around the rewritten cohort: one row per non-null person."""
    return (
        f"SELECT * FROM ({inner_sql}) AS cohort WHERE cohort.{PERSON} IS NOT NULL "  # noqa: S608
        f"QUALIFY count(*) OVER (PARTITION BY cohort.{PERSON}) = 1"
    )


def statement_json(tree: dict[str, Any]) -> str:
    """The tree as the statement list ``json_deserialize_sql`` reads."""
    return json.dumps({"error": False, "statements": [{"node": tree, "named_param_map": []}]})
