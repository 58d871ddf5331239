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

>>> render_literal({"kind": "STRING", "text": "it's"})
"'it''s'"
>>> quote("person_id")
'"person_id"'
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from governance.privacy import domains
from governance.sql.policy import AGGREGATES, SCALARS, PolicyError

Kind = Literal["count", "count_persons", "sum", "mean"]
FIXED_POINT: Final = 1000  # sums are exact integers in thousandths of a unit
PERSON: Final = "person_id"

# comparison node types → SQL operator
_COMPARISONS: Final = {
    "COMPARE_EQUAL": "=",
    "COMPARE_NOTEQUAL": "<>",
    "COMPARE_LESSTHAN": "<",
    "COMPARE_GREATERTHAN": ">",
    "COMPARE_LESSTHANOREQUALTO": "<=",
    "COMPARE_GREATERTHANOREQUALTO": ">=",
    "COMPARE_DISTINCT_FROM": "IS DISTINCT FROM",
    "COMPARE_NOT_DISTINCT_FROM": "IS NOT DISTINCT FROM",
}
# operators DuckDB spells as functions → infix SQL
_INFIX: Final = {
    "+": "+", "-": "-", "*": "*", "/": "/", "//": "//", "%": "%", "^": "^", "**": "**",
    "||": "||", "~~": "LIKE", "!~~": "NOT LIKE", "~~*": "ILIKE", "!~~*": "NOT ILIKE",
}  # fmt: skip
# functions a DP predicate may call: the policy's scalars (all deterministic, none reads
# anything but its arguments), less any that is also an aggregate
DP_FUNCTIONS: Final = frozenset(SCALARS - AGGREGATES - frozenset(_INFIX))
# types a DP predicate may cast to
_TYPES: Final = frozenset(
    {
        "BOOLEAN", "TINYINT", "SMALLINT", "INTEGER", "INT", "BIGINT", "HUGEINT", "FLOAT",
        "REAL", "DOUBLE", "DECIMAL", "NUMERIC", "VARCHAR", "TEXT", "STRING", "DATE",
        "TIMESTAMP", "INTERVAL",
    }
)  # fmt: skip
_INTEGER_TEXT: Final = re.compile(r"-?[0-9]{1,38}")
_NUMERIC_TEXT: Final = re.compile(r"-?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]{1,3})?")
_SELECT_KEYS: Final = frozenset(
    {
        "type", "modifiers", "cte_map", "select_list", "from_table", "where_clause",
        "group_expressions", "group_sets", "aggregate_handling", "having", "sample",
        "qualify",
    }
)  # fmt: skip
_TABLE_KEYS: Final = frozenset(
    {
        "type", "alias", "sample", "query_location", "query_location_length", "schema_name",
        "table_name", "column_name_alias", "catalog_name", "at_clause", "qualified_name",
    }
)  # fmt: skip

Catalogue = Mapping[str, Mapping[str, str]]  # table or view -> column -> type


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


# ---------------------------------------------------------------------------- helpers
def quote(name: str) -> str:
    """A double-quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def render_literal(literal: Mapping[str, Any]) -> str:
    """A constant of the parse tree, written again by the hub (never pasted)."""
    kind = literal.get("kind")
    text = literal.get("text")
    if not isinstance(text, str):
        raise PolicyError("dp_constant", "unsupported constant")
    if kind == "STRING":
        if "\x00" in text:
            raise PolicyError("dp_constant", "unsupported constant")
        return "'" + text.replace("'", "''") + "'"
    if kind == "INTEGER" and _INTEGER_TEXT.fullmatch(text):
        return text
    if kind == "NUMERIC" and _NUMERIC_TEXT.fullmatch(text):
        return text
    if kind == "BOOLEAN" and text.lower() in ("true", "false"):
        return text.upper()
    if kind == "NULL_LITERAL":
        return "NULL"
    raise PolicyError("dp_constant", "unsupported constant")


def _literal_value(value: Any) -> str:
    """A declared domain value as SQL."""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    raise PolicyError("dp_group_key", "unsupported domain value")


def _empty(value: Any) -> bool:
    return value in (None, "", [], {}, False) or value == {"map": []}


@dataclass
class _Scope:
    table: str
    alias: str  # the alias the hub writes (src, s1, s2 ...)
    names: frozenset[str]  # qualifiers the user may write: the table and its alias
    columns: Mapping[str, str]
    excluded: frozenset[str]
    outer: bool  # semi-joins are allowed only at the outer scope
    compiler: _Compiler


@dataclass
class _Compiler:
    catalogue: Catalogue
    semijoins: int = 0
    subquery_aliases: list[str] = field(default_factory=list)

    # ---------------------------------------------------------------- sources
    def source(self, ref: Any, *, outer: bool) -> _Scope:
        if not isinstance(ref, dict) or ref.get("type") != "BASE_TABLE":
            raise PolicyError(
                "dp_one_source",
                "a dp query reads one table or person-level view (no joins, derived "
                "tables or table functions)",
            )
        if set(ref) - _TABLE_KEYS:
            raise PolicyError("dp_unsupported", "unsupported table reference")
        if not _empty(ref.get("sample")):
            raise PolicyError("dp_sampling", "sampling (TABLESAMPLE) is not allowed in dp mode")
        if not _empty(ref.get("column_name_alias")) or not _empty(ref.get("at_clause")):
            raise PolicyError("dp_unsupported", "column renaming and AT clauses are not allowed")
        if not _empty(ref.get("catalog_name")) or ref.get("schema_name") not in ("", "main", None):
            raise PolicyError("dp_one_source", "only the release's own tables can be read")
        table = str(ref.get("table_name", "")).lower()
        declared = domains.source(table)
        columns = self.catalogue.get(table)
        if declared is None or columns is None or PERSON not in columns:
            raise PolicyError(
                "dp_source",
                f"{table!r} is not a dp source (one person per row, declared by the steward)",
            )
        alias = "src" if outer else f"s{len(self.subquery_aliases) + 1}"
        if not outer:
            self.subquery_aliases.append(alias)
        names = {table}
        if ref.get("alias"):
            names.add(str(ref["alias"]).lower())
        return _Scope(
            table=table,
            alias=alias,
            names=frozenset(names),
            columns=columns,
            excluded=declared.excluded_columns,
            outer=outer,
            compiler=self,
        )

    # ---------------------------------------------------------------- expressions
    def column(self, node: dict[str, Any], scope: _Scope) -> str:
        """The column as the hub writes it (``alias."name"``), checked."""
        return f"{scope.alias}.{quote(self.column_name(node, scope))}"

    def column_name(self, node: dict[str, Any], scope: _Scope) -> str:
        """The name of one of the scope's own columns, or PolicyError."""
        names = [str(n).lower() for n in node.get("column_names", [])]
        if len(names) == 2 and names[0] in scope.names:
            names = names[1:]
        if len(names) != 1:
            raise PolicyError(
                "dp_columns", "columns must be the source's own (no other table's columns)"
            )
        name = names[0]
        if name not in scope.columns:
            raise PolicyError("dp_columns", f"{scope.table} has no column {name!r}")
        if name in scope.excluded:
            raise PolicyError("dp_columns", f"{scope.table}.{name} depends on other people's rows")
        return name

    def expr(self, node: Any, scope: _Scope) -> str:
        """A row-local (or person-local) expression, written by the hub with TRY()."""
        if not isinstance(node, dict):
            raise PolicyError("dp_unsupported", "unsupported expression")
        cls = node.get("class")
        kind = node.get("type")
        if cls == "COLUMN_REF":
            return self.column(node, scope)
        if cls == "CONSTANT":
            return render_literal(node.get("literal") or {})
        if cls == "CONJUNCTION" and kind in ("CONJUNCTION_AND", "CONJUNCTION_OR"):
            joiner = " AND " if kind == "CONJUNCTION_AND" else " OR "
            children = node.get("children") or []
            if len(children) < 2:
                raise PolicyError("dp_unsupported", "unsupported expression")
            return "(" + joiner.join(self.expr(c, scope) for c in children) + ")"
        if cls == "COMPARISON" and kind in _COMPARISONS:
            left = self.expr(node.get("left"), scope)
            right = self.expr(node.get("right"), scope)
            return f"TRY({left} {_COMPARISONS[kind]} {right})"
        if cls == "BETWEEN":
            x = self.expr(node.get("input"), scope)
            lo = self.expr(node.get("lower"), scope)
            hi = self.expr(node.get("upper"), scope)
            return f"TRY({x} BETWEEN {lo} AND {hi})"
        if cls == "OPERATOR":
            return self.operator(node, scope)
        if cls == "CAST":
            return self.cast(node, scope)
        if cls == "CASE":
            parts = ["CASE"]
            for check in node.get("case_checks") or []:
                when = self.expr(check.get("when_expr"), scope)
                then = self.expr(check.get("then_expr"), scope)
                parts.append(f"WHEN {when} THEN {then}")
            if not node.get("case_checks"):
                raise PolicyError("dp_unsupported", "unsupported expression")
            if node.get("else_expr") is not None:
                parts.append(f"ELSE {self.expr(node['else_expr'], scope)}")
            return "TRY(" + " ".join(parts) + " END)"
        if cls == "FUNCTION":
            return self.function(node, scope)
        if cls == "SUBQUERY":
            return self.semijoin(node, scope)
        if cls == "WINDOW":
            raise PolicyError("dp_window", "window functions are not allowed in dp mode")
        raise PolicyError("dp_unsupported", f"{str(cls).lower()} expressions are not allowed")

    def operator(self, node: dict[str, Any], scope: _Scope) -> str:
        kind = node.get("type")
        children = node.get("children") or []
        if kind == "OPERATOR_NOT" and len(children) == 1:
            return f"(NOT {self.expr(children[0], scope)})"
        if kind in ("OPERATOR_IS_NULL", "OPERATOR_IS_NOT_NULL") and len(children) == 1:
            test = "IS NULL" if kind == "OPERATOR_IS_NULL" else "IS NOT NULL"
            return f"({self.expr(children[0], scope)} {test})"
        if kind in ("COMPARE_IN", "COMPARE_NOT_IN") and len(children) >= 2:
            x = self.expr(children[0], scope)
            items = ", ".join(self.expr(c, scope) for c in children[1:])
            op = "IN" if kind == "COMPARE_IN" else "NOT IN"
            return f"TRY({x} {op} ({items}))"
        if kind == "OPERATOR_COALESCE" and children:
            return "TRY(coalesce(" + ", ".join(self.expr(c, scope) for c in children) + "))"
        raise PolicyError("dp_unsupported", "unsupported operator")

    def cast(self, node: dict[str, Any], scope: _Scope) -> str:
        child = self.expr(node.get("child"), scope)
        type_expr = node.get("type_expr") or {}
        name = str(type_expr.get("type_name", "")).upper()
        if type_expr.get("class") != "TYPE" or name not in _TYPES:
            raise PolicyError("dp_cast", "casts are limited to plain scalar types in dp mode")
        args = type_expr.get("children") or []
        if args:
            if name not in ("DECIMAL", "NUMERIC") or len(args) > 2:
                raise PolicyError("dp_cast", "casts are limited to plain scalar types in dp mode")
            rendered = []
            for a in args:
                literal = a.get("literal") if isinstance(a, dict) else None
                if not literal or literal.get("kind") != "INTEGER":
                    raise PolicyError("dp_cast", "a decimal's width and scale are integers")
                rendered.append(render_literal(literal))
            name = f"{name}({', '.join(rendered)})"
        return f"TRY_CAST({child} AS {name})"

    def function(self, node: dict[str, Any], scope: _Scope) -> str:
        name = str(node.get("function_name", "")).lower()
        if name in AGGREGATES or name == "count_star":
            raise PolicyError("dp_aggregate", "aggregates are allowed only in the select list")
        if (
            not _empty(node.get("filter"))
            or node.get("distinct")
            or (node.get("order_bys") or {}).get("orders")
            or node.get("schema")
            or node.get("catalog")
        ):
            raise PolicyError("dp_unsupported", "unsupported function call")
        args_nodes = node.get("arguments") or []
        if any((a or {}).get("name") for a in args_nodes):
            raise PolicyError("dp_unsupported", "named arguments are not allowed in dp mode")
        args = [self.expr((a or {}).get("expression"), scope) for a in args_nodes]
        if node.get("is_operator") and name in _INFIX:
            if len(args) == 2:
                return f"TRY({args[0]} {_INFIX[name]} {args[1]})"
            if len(args) == 1 and name in ("-", "+"):
                return f"TRY({name}{args[0]})"
            raise PolicyError("dp_unsupported", "unsupported operator")
        if name not in DP_FUNCTIONS:
            raise PolicyError("dp_functions", f"function {name!r} is not allowed in dp mode")
        return f"TRY({name}({', '.join(args)}))"

    def semijoin(self, node: dict[str, Any], scope: _Scope) -> str:
        """``person_id IN (SELECT person_id FROM t WHERE <row-local>)``, and nothing else."""
        refuse = PolicyError(
            "dp_subquery",
            "the only subquery allowed in dp mode is person_id IN (SELECT person_id FROM "
            "<table> WHERE <conditions on that table's own columns>)",
        )
        if (
            not scope.outer
            or node.get("subquery_type") != "ANY"
            or node.get("comparison_type") != "COMPARE_EQUAL"
        ):
            raise refuse
        child = node.get("child") or {}
        if child.get("class") != "COLUMN_REF" or self.column(child, scope) != (
            f"{scope.alias}.{quote(PERSON)}"
        ):
            raise refuse
        sub = (node.get("subquery") or {}).get("node") or {}
        if not _empty((node.get("subquery") or {}).get("named_param_map")):
            raise refuse
        self.check_select_shape(sub)
        if not _empty(sub.get("group_expressions")) or not _empty(sub.get("group_sets")):
            raise refuse
        if sub.get("aggregate_handling") != "STANDARD_HANDLING":
            raise refuse
        inner = self.source(sub.get("from_table"), outer=False)
        select = sub.get("select_list") or []
        if (
            len(select) != 1
            or select[0].get("class") != "COLUMN_REF"
            or self.column(select[0], inner) != f"{inner.alias}.{quote(PERSON)}"
        ):
            raise refuse
        where = sub.get("where_clause")
        pred = f" AND {as_condition(self.expr(where, inner))}" if where is not None else ""
        self.semijoins += 1
        # identifiers are quoted catalogue names; the predicate is hub-written
        return (
            f"({scope.alias}.{quote(PERSON)} IN (SELECT {inner.alias}.{quote(PERSON)} "  # noqa: S608
            f"FROM {quote(inner.table)} AS {inner.alias} "
            f"WHERE {inner.alias}.{quote(PERSON)} IS NOT NULL{pred}))"
        )

    # ---------------------------------------------------------------- statement shape
    def check_select_shape(self, node: Any) -> None:
        """Refuse every SELECT feature a dp plan has no place for, by rule."""
        if not isinstance(node, dict) or node.get("type") != "SELECT_NODE":
            raise PolicyError(
                "dp_set_operation",
                "set operations (UNION, EXCEPT, INTERSECT) are not allowed in dp mode",
            )
        if not _empty(node.get("cte_map")) and (node.get("cte_map") or {}).get("map"):
            raise PolicyError("dp_cte", "WITH (common table expressions) is not allowed in dp mode")
        if not _empty(node.get("sample")):
            raise PolicyError("dp_sampling", "USING SAMPLE is not allowed in dp mode")
        if not _empty(node.get("qualify")):
            raise PolicyError("dp_window", "QUALIFY is not allowed in dp mode")
        if not _empty(node.get("having")):
            raise PolicyError("dp_having", "HAVING is not allowed in dp mode")
        for modifier in node.get("modifiers") or []:
            kind = str((modifier or {}).get("type", ""))
            if kind == "DISTINCT_MODIFIER":
                raise PolicyError("dp_distinct", "SELECT DISTINCT is not allowed in dp mode")
            raise PolicyError(
                "dp_order_limit",
                "ORDER BY, LIMIT and OFFSET are not allowed in dp mode (answers come in the "
                "declared domain's order)",
            )
        unknown = {k for k, v in node.items() if k not in _SELECT_KEYS and not _empty(v)}
        if unknown:
            raise PolicyError("dp_unsupported", "unsupported SELECT feature")


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
    compiler = _Compiler(catalogue)
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
        not _empty(node.get("group_expressions"))
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
    node: dict[str, Any], key: dict[str, Any], group: str, position: int, scope: _Scope
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


def _aggregate(item: dict[str, Any], scope: _Scope, compiler: _Compiler) -> AggregatePlan:
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
        values = ", ".join(_literal_value(v) for v in plan.domain)
        parts.append(f"TRY(src.{quote(plan.group)} IN ({values}))")
    for predicate in (plan.where, flt):
        if predicate:
            parts.append(as_condition(predicate))
    return " AND ".join(parts)


def as_condition(predicate: str) -> str:
    """A predicate that is TRUE or FALSE and never raises (a non-boolean is FALSE).

    >>> as_condition('src."sex"')
    'coalesce(TRY_CAST(src."sex" AS BOOLEAN), FALSE)'
    """
    return f"coalesce(TRY_CAST({predicate} AS BOOLEAN), FALSE)"


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
    return Stream(sql, tuple(outputs))


def _persons_stream(plan: Plan, flt: str | None, indices: list[int], salt: str) -> Stream:
    pairs = (  # quoted catalogue names and hub-written predicates only
        f"SELECT DISTINCT src.{quote(PERSON)} AS pid, {_group_expr(plan)} AS g "  # noqa: S608
        f"FROM {quote(plan.source)} AS src WHERE {_base_where(plan, flt)}"
    )
    cap = min(plan.rows_per_person, len(plan.groups))
    if plan.group and cap < len(plan.groups):
        # de-duplicate (person, group) first, then keep at most k pairs per person
        pairs = (  # quoted catalogue names and hub-written predicates only
            f"SELECT pid, g FROM ({pairs}) AS pairs QUALIFY row_number() OVER "  # noqa: S608
            f"(PARTITION BY pid ORDER BY hash(pid, g, '{salt}')) <= {cap}"
        )
    selects = ", ".join(f"count(*) AS o{n}" for n in range(len(indices)))
    sql = f"SELECT g, {selects} FROM ({pairs}) AS bounded GROUP BY g"  # noqa: S608
    return Stream(sql, tuple((i, "count") for i in indices))


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
