"""The cohort compiler: a modeller's cohort SQL → checked person-local SQL the hub writes.

DP-SGD's privacy unit is one person, so the table a model trains on must have exactly one
row per person, and each row must be computed from that person's records only: then
removing one person removes one row and changes no other. This module reads DuckDB's
parse tree of the cohort SQL (already checked by ``governance.sql.policy`` for grants and
functions) and accepts only these shapes, refusing everything else with a rule name:

* **sources**: base tables with a ``person_id`` column (``domains.SOURCES``; columns that
  depend on other people excluded), and derived tables (subqueries in FROM) that are
  themselves accepted cohort relations;
* **joins on the person**: ``INNER``/``LEFT`` joins whose condition has, as a top-level
  conjunct, ``a.person_id = b.person_id`` (or ``USING (person_id)``); any other conjuncts
  row-local. No cross joins, ASOF, positional or lateral joins;
* **row-local expressions**: columns of the joined relations, constants, comparisons,
  AND/OR/NOT, CASE, casts and allow-listed scalar functions;
* **person-local semi-joins**: ``person_id IN (SELECT person_id FROM <accepted> ...)``
  (the SQL that runs drops the subquery's NULL keys, so IN and NOT IN are two-valued);
* **aggregates per person only**: an aggregate may appear only in a SELECT grouped by a
  person key (``GROUP BY person_id``), so ``max(observed_date)`` over everyone, which
  makes every row depend on everyone, is refused;
* never: CTEs, sampling, window functions and QUALIFY, set operations, LIMIT/OFFSET,
  ORDER BY, scalar or EXISTS subqueries, ``SELECT *``.

One row per person is proven from the structure, never checked on the data (a check on
the data would be a yes/no answer about it): a base table is unique when the steward
declared it person-level; ``GROUP BY person_id`` makes a relation unique; ``DISTINCT``
makes it unique only when every select item is a person key; an inner or left join of
unique relations on the person is unique. The cohort must return ``person_id`` as
a person key of a unique relation.

The SQL that runs is written from the checked tree (``cohort_sql``: DuckDB's own
``json_deserialize_sql``) so that no value can turn into an error once data is read,
aggregate or not (every scalar operation in ``TRY(...)``, every cast a ``TRY_CAST``, what
is computed over aggregates in an outer SELECT, arithmetic aggregates over DOUBLE), and
wrapped so that rows without a person are dropped. The few errors ``TRY`` does not catch
are refused here: ``LIKE ... ESCAPE``, and date parts that are not constants of
``DATE_PARTS``.

>>> catalogue = {"patients": {"person_id": "VARCHAR", "sex": "VARCHAR"},
...              "observations": {"person_id": "VARCHAR", "observed_date": "DATE"}}
>>> import duckdb, json
>>> def tree(sql):
...     out = duckdb.connect().execute("SELECT json_serialize_sql(?)", [sql]).fetchall()[0][0]
...     return json.loads(out)["statements"][0]["node"]
>>> check(tree("SELECT person_id, sex FROM patients"), catalogue).unique
True
>>> try:
...     check(tree("SELECT p.person_id FROM patients p JOIN (SELECT person_id, "
...                "max(observed_date) AS d FROM observations) w ON w.person_id = p.person_id"),
...           catalogue)
... except PolicyError as exc:
...     exc.rule
'cohort_aggregate'
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from governance.privacy import domains
from governance.sql.policy import AGGREGATES, SCALARS, PolicyError

PERSON: Final = "person_id"
# set by the checker on a join's proven person equality (``a.person_id = b.person_id``,
# both sides person keys): ``cohort_sql`` leaves it bare so that the join stays a hash join
PERSON_JOIN: Final = "hub_person_join"
Catalogue = Mapping[str, Mapping[str, str]]

_SELECT_KEYS: Final = frozenset(
    {
        "type", "modifiers", "cte_map", "select_list", "from_table", "where_clause",
        "group_expressions", "group_sets", "aggregate_handling", "having", "sample",
        "qualify",
    }
)  # fmt: skip
_JOIN_TYPES: Final = frozenset({"INNER", "LEFT"})
_PLAIN_OPERATORS: Final = frozenset(
    {
        "OPERATOR_NOT", "OPERATOR_IS_NULL", "OPERATOR_IS_NOT_NULL", "COMPARE_IN",
        "COMPARE_NOT_IN", "OPERATOR_COALESCE", "OPERATOR_TRY", "OPERATOR_NULLIF",
    }
)  # fmt: skip


@dataclass(frozen=True)
class Relation:
    """An accepted cohort relation: its output columns (name → is a person key)."""

    columns: Mapping[str, bool]
    unique: bool  # at most one row per person


@dataclass
class _Scope:
    relations: dict[str, Relation] = field(default_factory=dict)  # qualifier → relation

    def resolve(self, names: list[str]) -> bool:
        """Whether the column is a person key; PolicyError if it is not in scope."""
        names = [n.lower() for n in names]
        if len(names) == 2:
            rel = self.relations.get(names[0])
            if rel is None or names[1] not in rel.columns:
                raise PolicyError("cohort_columns", "a column is not in the cohort's FROM")
            return rel.columns[names[1]]
        if len(names) != 1:
            raise PolicyError("cohort_columns", "qualified names are table.column only")
        hits = [r.columns[names[0]] for r in self.relations.values() if names[0] in r.columns]
        if not hits:
            raise PolicyError("cohort_columns", "a column is not in the cohort's FROM")
        if len(hits) > 1 and not all(hits):
            raise PolicyError("cohort_columns", "qualify columns that more than one table has")
        return hits[0]


def _empty(value: Any) -> bool:
    return value in (None, "", [], {}, False) or value == {"map": []}


def _refuse(rule: str, message: str) -> PolicyError:
    return PolicyError(rule, message)


class _Checker:
    def __init__(self, catalogue: Catalogue) -> None:
        self.catalogue = catalogue
        # a person key is only ever a base table's person_id passed through (a select
        # item is a key only as a bare column reference to one), so when every source's
        # person_id has one type, an equality of two keys compares values of one type:
        # no implicit cast, nothing that can raise on the data
        types = {
            str(columns[PERSON]).upper()
            for table, columns in catalogue.items()
            if PERSON in columns and domains.source(table) is not None
        }
        self.one_key_type = len(types) == 1

    # ---------------------------------------------------------------- statements
    def select(self, node: Any) -> Relation:
        if not isinstance(node, dict) or node.get("type") != "SELECT_NODE":
            raise _refuse("cohort_set_operation", "set operations are not allowed in a cohort")
        if (node.get("cte_map") or {}).get("map"):
            raise _refuse(
                "cohort_cte", "WITH is not allowed in a cohort: use subqueries in FROM instead"
            )
        if not _empty(node.get("sample")):
            raise _refuse("cohort_sampling", "sampling is not allowed in a cohort")
        if not _empty(node.get("qualify")):
            raise _refuse("cohort_window", "QUALIFY is not allowed in a cohort")
        if {k for k, v in node.items() if k not in _SELECT_KEYS and not _empty(v)}:
            raise _refuse("cohort_unsupported", "unsupported SELECT feature")
        distinct = False
        for modifier in node.get("modifiers") or []:
            kind = (modifier or {}).get("type")
            if kind == "DISTINCT_MODIFIER" and _empty((modifier or {}).get("distinct_on_targets")):
                distinct = True
                continue
            raise _refuse(
                "cohort_order_limit",
                "ORDER BY, LIMIT, OFFSET and DISTINCT ON are not allowed in a cohort",
            )
        scope = _Scope()
        from_unique = self.source(node.get("from_table"), scope)
        if node.get("where_clause") is not None:
            self.expr(node["where_clause"], scope, aggregate=False, semijoin=True)
        grouped = self.group_by(node, scope)
        if node.get("having") is not None:
            if not grouped:
                raise _refuse("cohort_aggregate", "HAVING needs GROUP BY person_id")
            self.expr(node["having"], scope, aggregate=True, semijoin=False)
        columns: dict[str, bool] = {}
        keys: list[bool] = []  # every item, named or not: is it a person key
        for item in node.get("select_list") or []:
            if not isinstance(item, dict) or item.get("class") == "STAR":
                raise _refuse("cohort_columns", "name the cohort's columns (no *)")
            self.expr(item, scope, aggregate=grouped is not None, semijoin=False)
            is_key = item.get("class") == "COLUMN_REF" and scope.resolve(item["column_names"])
            keys.append(bool(is_key))
            name = str(item.get("alias") or "")
            if not name and item.get("class") == "COLUMN_REF":
                name = str(item["column_names"][-1])
            name = name.lower()
            if name and name in columns:
                raise _refuse("cohort_columns", f"the column name {name!r} appears twice")
            if name:
                columns[name] = bool(is_key)
        if not any(columns.values()):
            raise _refuse("cohort_person", "every cohort relation returns person_id")
        if grouped is not None:
            unique = grouped
        elif distinct:
            # DISTINCT makes a row per person only when every item (named or not) is
            # that person's key: ``SELECT DISTINCT person_id, value + 0`` has many
            unique = from_unique or all(keys)
        else:
            unique = from_unique
        return Relation(columns, unique)

    def group_by(self, node: dict[str, Any], scope: _Scope) -> bool | None:
        """None when not grouped; else whether grouped by exactly one person key."""
        exprs = node.get("group_expressions") or []
        if not exprs:
            if node.get("aggregate_handling") not in ("STANDARD_HANDLING", None):
                raise _refuse("cohort_aggregate", "GROUP BY ALL is not allowed: name person_id")
            return None
        if node.get("aggregate_handling") != "STANDARD_HANDLING" or node.get("group_sets") != [
            list(range(len(exprs)))
        ]:
            raise _refuse("cohort_aggregate", "GROUPING SETS, ROLLUP and CUBE are not allowed")
        keys = 0
        for e in exprs:
            self.expr(e, scope, aggregate=False, semijoin=False)
            if e.get("class") == "COLUMN_REF" and scope.resolve(e["column_names"]):
                keys += 1
        if keys == 0:
            raise _refuse(
                "cohort_aggregate", "aggregates in a cohort must be per person: GROUP BY person_id"
            )
        return len(exprs) == 1

    # ---------------------------------------------------------------- FROM
    def source(self, ref: Any, scope: _Scope) -> bool:
        """Add ``ref``'s relations to ``scope``; whether it is unique per person."""
        if not isinstance(ref, dict):
            raise _refuse("cohort_source", "a cohort reads tables")
        if not _empty(ref.get("sample")):
            raise _refuse("cohort_sampling", "sampling is not allowed in a cohort")
        kind = ref.get("type")
        if kind == "BASE_TABLE":
            return self.base_table(ref, scope)
        if kind == "SUBQUERY":
            if not _empty(ref.get("column_name_alias")) or not ref.get("alias"):
                raise _refuse("cohort_source", "give each subquery in FROM an alias")
            if not _empty((ref.get("subquery") or {}).get("named_param_map")):
                raise _refuse("cohort_source", "unsupported subquery")
            rel = self.select((ref.get("subquery") or {}).get("node"))
            self.add(scope, str(ref["alias"]), rel)
            return rel.unique
        if kind == "JOIN":
            return self.join(ref, scope)
        if kind == "EMPTY":
            raise _refuse("cohort_person", "a cohort reads people's records (FROM a table)")
        raise _refuse("cohort_source", "a cohort reads tables and subqueries only")

    def add(self, scope: _Scope, name: str, rel: Relation) -> None:
        if name.lower() in scope.relations:
            raise _refuse("cohort_source", "each table in FROM needs its own alias")
        scope.relations[name.lower()] = rel

    def base_table(self, ref: dict[str, Any], scope: _Scope) -> bool:
        if not _empty(ref.get("catalog_name")) or ref.get("schema_name") not in ("", "main", None):
            raise _refuse("cohort_source", "only the release's own tables can be read")
        if not _empty(ref.get("column_name_alias")) or not _empty(ref.get("at_clause")):
            raise _refuse("cohort_source", "column renaming and AT clauses are not allowed")
        table = str(ref.get("table_name", "")).lower()
        declared = domains.source(table)
        columns = self.catalogue.get(table)
        if declared is None or columns is None or PERSON not in columns:
            raise _refuse(
                "cohort_source", f"{table!r} is not person-level data (one person per row)"
            )
        rel = Relation(
            {c.lower(): c.lower() == PERSON for c in columns if c not in declared.excluded_columns},
            declared.person_level,
        )
        self.add(scope, str(ref.get("alias") or table), rel)
        return declared.person_level

    def join(self, ref: dict[str, Any], scope: _Scope) -> bool:
        if ref.get("join_type") not in _JOIN_TYPES or ref.get("ref_type") != "REGULAR":
            raise _refuse(
                "cohort_join",
                "a cohort joins with INNER or LEFT JOIN on person_id (no cross, full, right, "
                "ASOF, positional, natural or lateral joins)",
            )
        left_scope, right_scope = _Scope(), _Scope()
        left = self.source(ref.get("left"), left_scope)
        right = self.source(ref.get("right"), right_scope)
        for name, rel in [*left_scope.relations.items(), *right_scope.relations.items()]:
            self.add(scope, name, rel)
        using = [str(c).lower() for c in ref.get("using_columns") or []]
        on_person = False
        if using:
            if PERSON not in using or ref.get("condition") is not None:
                raise _refuse("cohort_join", "join USING (person_id)")
            on_person = left_scope.resolve([PERSON]) and right_scope.resolve([PERSON])
        else:
            condition = ref.get("condition")
            if condition is None:
                raise _refuse("cohort_join", "every join is on person_id")
            for part in _conjuncts(condition):
                if _person_equality(part, left_scope, right_scope):
                    on_person = True
                    if self.one_key_type:
                        part[PERSON_JOIN] = True
                else:
                    self.expr(part, scope, aggregate=False, semijoin=False)
        if not on_person:
            raise _refuse(
                "cohort_join", "every join has a.person_id = b.person_id in its condition"
            )
        return left and right

    # ---------------------------------------------------------------- expressions
    def expr(self, node: Any, scope: _Scope, *, aggregate: bool, semijoin: bool) -> None:
        if not isinstance(node, dict):
            raise _refuse("cohort_unsupported", "unsupported expression")
        cls = node.get("class")
        kind = node.get("type")
        if cls == "COLUMN_REF":
            scope.resolve(node.get("column_names") or [])
            return
        if cls == "CONSTANT":
            return
        if cls == "CONJUNCTION":
            for c in node.get("children") or []:
                self.expr(c, scope, aggregate=aggregate, semijoin=semijoin)
            return
        if cls == "COMPARISON":
            for side in ("left", "right"):
                self.expr(node.get(side), scope, aggregate=aggregate, semijoin=False)
            return
        if cls == "BETWEEN":
            for side in ("input", "lower", "upper"):
                self.expr(node.get(side), scope, aggregate=aggregate, semijoin=False)
            return
        if cls == "OPERATOR" and kind in _PLAIN_OPERATORS:
            inner = semijoin and kind == "OPERATOR_NOT"
            for c in node.get("children") or []:
                self.expr(c, scope, aggregate=aggregate, semijoin=inner)
            return
        if cls == "CAST":
            self.expr(node.get("child"), scope, aggregate=aggregate, semijoin=False)
            return
        if cls == "CASE":
            for check_ in node.get("case_checks") or []:
                self.expr(check_.get("when_expr"), scope, aggregate=aggregate, semijoin=False)
                self.expr(check_.get("then_expr"), scope, aggregate=aggregate, semijoin=False)
            if node.get("else_expr") is not None:
                self.expr(node["else_expr"], scope, aggregate=aggregate, semijoin=False)
            return
        if cls == "FUNCTION":
            self.function(node, scope, aggregate=aggregate)
            return
        if cls == "SUBQUERY":
            if not semijoin:
                raise _refuse("cohort_subquery", _SUBQUERY_RULE)
            self.semijoin(node, scope)
            return
        if cls == "WINDOW":
            raise _refuse("cohort_window", "window functions are not allowed in a cohort")
        raise _refuse("cohort_unsupported", f"{str(cls).lower()} expressions are not allowed")

    def function(self, node: dict[str, Any], scope: _Scope, *, aggregate: bool) -> None:
        name = str(node.get("function_name", "")).lower()
        if node.get("schema") or node.get("catalog"):
            raise _refuse("cohort_functions", "qualified function names are not allowed")
        if any((a or {}).get("name") for a in node.get("arguments") or []):
            raise _refuse("cohort_functions", "named arguments are not allowed")
        args = [(a or {}).get("expression") for a in node.get("arguments") or []]
        if name in AGGREGATES or name == "count_star":
            if not aggregate:
                raise _refuse(
                    "cohort_aggregate",
                    "aggregates in a cohort must be per person: GROUP BY person_id",
                )
            _check_arity(name, args)
            inner = {"aggregate": False, "semijoin": False}
            for a in args:
                self.expr(a, scope, **inner)
            if node.get("filter") is not None:
                self.expr(node["filter"], scope, **inner)
            for order in (node.get("order_bys") or {}).get("orders") or []:
                self.expr((order or {}).get("expression"), scope, **inner)
            return
        if name not in SCALARS:
            raise _refuse("cohort_functions", f"function {name!r} is not allowed in a cohort")
        if (
            not _empty(node.get("filter"))
            or node.get("distinct")
            or (node.get("order_bys") or {}).get("orders")
        ):
            raise _refuse("cohort_functions", "unsupported function call")
        # errors that TRY() does not catch (DuckDB's NotImplemented and Syntax errors)
        # would make a run fail on one value: LIKE ... ESCAPE raises on a bad escape, and
        # a date part such as 'era' on every row that reaches it
        if name == "like_escape":
            raise _refuse("cohort_functions", "LIKE ... ESCAPE is not allowed in a cohort")
        if name in SPECIFIER_FUNCTIONS and not safe_date_part(args[0] if args else None):
            raise _refuse(
                "cohort_functions",
                f"{name} takes a constant date part ('year', 'month', 'day', ...)",
            )
        for a in args:
            self.expr(a, scope, aggregate=aggregate, semijoin=False)

    def semijoin(self, node: dict[str, Any], scope: _Scope) -> None:
        refuse = _refuse("cohort_subquery", _SUBQUERY_RULE)
        if node.get("subquery_type") != "ANY" or node.get("comparison_type") != "COMPARE_EQUAL":
            raise refuse
        child = node.get("child") or {}
        if child.get("class") != "COLUMN_REF" or not scope.resolve(child["column_names"]):
            raise refuse
        if not self.one_key_type:
            # keys of different types would be compared through a cast that can raise
            raise _refuse("cohort_subquery", "person keys of different types cannot be compared")
        sub = node.get("subquery") or {}
        if not _empty(sub.get("named_param_map")):
            raise refuse
        items = (sub.get("node") or {}).get("select_list") or []
        rel = self.select(sub.get("node"))
        if len(items) != 1 or len(rel.columns) != 1 or not all(rel.columns.values()):
            raise refuse
        # the subquery's key may be NULL (the nullable side of a LEFT JOIN): the SQL the
        # hub runs drops NULL keys in every semi-join (``cohort_sql``), so that
        # ``x IN (...)`` is two-valued and NOT IN cannot go NULL for everyone


# how many arguments each aggregate takes in a cohort: its value, and for arg_max and
# max_by the value it is ordered by. DuckDB also takes a top-n count (``max(x, n)``,
# ``arg_max(x, y, n)``), which it checks only when a group receives a row: ``n = 0`` or
# ``n = 10**8`` then fails the whole run exactly when one person's row reaches it
AGGREGATE_ARITY: Final = {
    "count": (0, 1), "count_star": (0, 0),
    "arg_max": (2, 2), "arg_min": (2, 2), "max_by": (2, 2), "min_by": (2, 2),
    "quantile_cont": (2, 2), "quantile_disc": (2, 2),
}  # fmt: skip


def _check_arity(name: str, args: list[Any]) -> None:
    low, high = AGGREGATE_ARITY.get(name, (1, 1))
    if not low <= len(args) <= high:
        raise _refuse(
            "cohort_aggregate",
            f"{name} takes {low if low == high else f'{low} to {high}'} argument(s) in a cohort",
        )
    if name.startswith("quantile"):
        arg = args[1] or {}
        text = str((arg.get("literal") or {}).get("text")) if arg.get("class") == "CONSTANT" else ""
        try:
            fraction = float(text)
        except ValueError:
            fraction = math.nan
        if not 0.0 <= fraction <= 1.0:
            raise _refuse("cohort_aggregate", f"{name} takes a constant fraction from 0 to 1")


def safe_date_part(part: Any) -> bool:
    """Whether a date part function's first argument is a constant part of DATE_PARTS."""
    literal = (part or {}).get("literal") or {}
    return bool(
        (part or {}).get("class") == "CONSTANT"
        and literal.get("kind") == "STRING"
        and str(literal.get("text", "")).lower() in DATE_PARTS
    )


# functions of a date part: the part must be a constant from DATE_PARTS, and the hub
# reads their dates as TIMESTAMP (``cohort_sql``), where each of these parts is total
SPECIFIER_FUNCTIONS: Final = frozenset(
    {"date_part", "datepart", "date_trunc", "datetrunc", "date_diff", "datediff", "date_sub"}
)
DATE_PARTS: Final = frozenset(
    {
        "year", "years", "y", "yr", "yrs", "month", "months", "mon", "mons", "day", "days",
        "d", "dayofmonth", "decade", "decades", "dec", "decs", "century", "centuries",
        "cent", "c", "millennium", "millennia", "mil", "mils", "quarter", "quarters",
        "week", "weeks", "w", "weekofyear", "dow", "dayofweek", "weekday", "isodow", "doy",
        "dayofyear", "yearweek", "isoyear", "julian", "epoch", "hour", "hours", "h", "hr",
        "hrs", "minute", "minutes", "min", "mins", "m", "second", "seconds", "sec", "secs",
        "s", "millisecond", "milliseconds", "ms", "msec", "msecs", "microsecond",
        "microseconds", "us", "usec", "usecs",
    }
)  # fmt: skip
# functions of one date that raise (uncaught by TRY) on an INTERVAL: read as TIMESTAMP
TIMESTAMP_FUNCTIONS: Final = frozenset({"week", "dayofweek"})

_SUBQUERY_RULE: Final = (
    "the only subqueries in a cohort are derived tables in FROM and person_id IN (SELECT "
    "person_id FROM ...) semi-joins in WHERE"
)


def _conjuncts(node: dict[str, Any]) -> list[dict[str, Any]]:
    if node.get("class") == "CONJUNCTION" and node.get("type") == "CONJUNCTION_AND":
        out: list[dict[str, Any]] = []
        for c in node.get("children") or []:
            out += _conjuncts(c)
        return out
    return [node]


def _person_equality(node: dict[str, Any], left: _Scope, right: _Scope) -> bool:
    """``l.person_id = r.person_id`` with one side's person key from each side of a join."""
    if node.get("class") != "COMPARISON" or node.get("type") != "COMPARE_EQUAL":
        return False
    a, b = node.get("left") or {}, node.get("right") or {}
    if a.get("class") != "COLUMN_REF" or b.get("class") != "COLUMN_REF":
        return False

    def key(scope: _Scope, col: dict[str, Any]) -> bool:
        try:
            return scope.resolve(col["column_names"])
        except PolicyError:
            return False

    return (key(left, a) and key(right, b)) or (key(left, b) and key(right, a))


def check(node: dict[str, Any], catalogue: Catalogue) -> Relation:
    """The cohort's relation, or PolicyError with a rule (``cohort_*``) naming what broke.

    The cohort must return ``person_id`` as a person key of a relation with one row per
    person.
    """
    try:
        rel = _Checker(catalogue).select(node)
    except PolicyError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, RecursionError):
        raise PolicyError(
            "cohort_unsupported", "the cohort has a shape the hub cannot check"
        ) from None
    if not rel.columns.get(PERSON):
        raise PolicyError("cohort_person", "the cohort returns person_id (a person's own key)")
    if not rel.unique:
        raise PolicyError(
            "cohort_one_row_per_person",
            "the cohort must have exactly one row per person: read patients, or GROUP BY "
            "person_id, and join only relations with one row per person",
        )
    return rel
