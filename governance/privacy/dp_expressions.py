"""Row-local expressions of a DP query, checked and rewritten by the hub.

The compiler in :mod:`governance.privacy.dp_query` hands each predicate, group key and
aggregate argument to :class:`Compiler`, which accepts only row-local expressions over
the source's own columns (comparisons, arithmetic, a short list of scalar functions,
literals), wraps every operator that could raise on a value in ``TRY`` so that no answer
depends on an error, and writes the SQL text the hub runs. Anything else is refused with
a rule name.

>>> render_literal({"kind": "STRING", "text": "it's"})
"'it''s'"
>>> quote("person_id")
'"person_id"'
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from governance.privacy import domains
from governance.privacy.cohort_query import (
    SPECIFIER_FUNCTIONS,
    TIMESTAMP_FUNCTIONS,
    safe_date_part,
)
from governance.sql.policy import (
    AGGREGATES,
    GROWS,
    MAX_COST_CHARS,
    SCALARS,
    PolicyError,
    grows,
)

PERSON: Final = "person_id"
Catalogue = Mapping[str, Mapping[str, str]]  # table or view -> column -> type

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
# a constant is at most MAX_LITERAL_CHARS long in dp mode, any constant, not only a
# grower's (what a row may cost: ``governance.sql.policy.GROWS``, met by every query)
MAX_LITERAL_CHARS: Final = MAX_COST_CHARS


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
SELECT_KEYS: Final = frozenset(
    {
        "type", "modifiers", "cte_map", "select_list", "from_table", "where_clause",
        "group_expressions", "group_sets", "aggregate_handling", "having", "sample",
        "qualify",
    }
)  # fmt: skip
TABLE_KEYS: Final = frozenset(
    {
        "type", "alias", "sample", "query_location", "query_location_length", "schema_name",
        "table_name", "column_name_alias", "catalog_name", "at_clause", "qualified_name",
    }
)  # fmt: skip


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


def literal_value(value: Any) -> str:
    """A declared domain value as SQL."""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    raise PolicyError("dp_group_key", "unsupported domain value")


def is_empty(value: Any) -> bool:
    return value in (None, "", [], {}, False) or value == {"map": []}


@dataclass
class Scope:
    table: str
    alias: str  # the alias the hub writes (src, s1, s2 ...)
    names: frozenset[str]  # qualifiers the user may write: the table and its alias
    columns: Mapping[str, str]
    excluded: frozenset[str]
    outer: bool  # semi-joins are allowed only at the outer scope
    compiler: Compiler


@dataclass
class Compiler:
    catalogue: Catalogue
    semijoins: int = 0
    subquery_aliases: list[str] = field(default_factory=list)

    # ---------------------------------------------------------------- sources
    def source(self, ref: Any, *, outer: bool) -> Scope:
        if not isinstance(ref, dict) or ref.get("type") != "BASE_TABLE":
            raise PolicyError(
                "dp_one_source",
                "a dp query reads one table or person-level view (no joins, derived "
                "tables or table functions)",
            )
        if set(ref) - TABLE_KEYS:
            raise PolicyError("dp_unsupported", "unsupported table reference")
        if not is_empty(ref.get("sample")):
            raise PolicyError("dp_sampling", "sampling (TABLESAMPLE) is not allowed in dp mode")
        if not is_empty(ref.get("column_name_alias")) or not is_empty(ref.get("at_clause")):
            raise PolicyError("dp_unsupported", "column renaming and AT clauses are not allowed")
        if not is_empty(ref.get("catalog_name")) or ref.get("schema_name") not in (
            "",
            "main",
            None,
        ):
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
        return Scope(
            table=table,
            alias=alias,
            names=frozenset(names),
            columns=columns,
            excluded=declared.excluded_columns,
            outer=outer,
            compiler=self,
        )

    # ---------------------------------------------------------------- expressions
    def column(self, node: dict[str, Any], scope: Scope) -> str:
        """The column as the hub writes it (``alias."name"``), checked."""
        return f"{scope.alias}.{quote(self.column_name(node, scope))}"

    def column_name(self, node: dict[str, Any], scope: Scope) -> str:
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

    def expr(self, node: Any, scope: Scope) -> str:
        """A row-local (or person-local) expression, written by the hub with TRY()."""
        if not isinstance(node, dict):
            raise PolicyError("dp_unsupported", "unsupported expression")
        cls = node.get("class")
        kind = node.get("type")
        if cls == "COLUMN_REF":
            return self.column(node, scope)
        if cls == "CONSTANT":
            literal = node.get("literal") or {}
            if len(str(literal.get("text", ""))) > MAX_LITERAL_CHARS:
                raise PolicyError(
                    "dp_string_growth",
                    f"a constant longer than {MAX_LITERAL_CHARS} characters is not allowed "
                    "in dp mode",
                )
            return render_literal(literal)
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

    def operator(self, node: dict[str, Any], scope: Scope) -> str:
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

    def cast(self, node: dict[str, Any], scope: Scope) -> str:
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

    def function(self, node: dict[str, Any], scope: Scope) -> str:
        name = str(node.get("function_name", "")).lower()
        if name in AGGREGATES or name == "count_star":
            raise PolicyError("dp_aggregate", "aggregates are allowed only in the select list")
        if (
            not is_empty(node.get("filter"))
            or node.get("distinct")
            or (node.get("order_bys") or {}).get("orders")
            or node.get("schema")
            or node.get("catalog")
        ):
            raise PolicyError("dp_unsupported", "unsupported function call")
        args_nodes = node.get("arguments") or []
        if any((a or {}).get("name") for a in args_nodes):
            raise PolicyError("dp_unsupported", "named arguments are not allowed in dp mode")
        if name in GROWS and any(grows((a or {}).get("expression")) for a in args_nodes):
            raise PolicyError(
                "dp_string_growth",
                f"{name} of the result of replace, concat or || is not allowed in dp mode: "
                "nested, they grow a value exponentially, and how long a query takes must "
                "not depend on how many rows match",
            )
        # errors TRY() does not catch (DuckDB's NotImplemented and Syntax errors) would
        # make the answer a fixed no_answer exactly when a row reaches them, a yes/no
        # oracle: LIKE ... ESCAPE raises on an escape that is not one character, a date
        # part function on a part it does not know ('timezone'), and week, day of week
        # and such parts on an INTERVAL (age(), to_days()). Dates are read as TIMESTAMP
        # there (an INTERVAL becomes NULL), where every part of DATE_PARTS is total.
        if name == "like_escape":
            raise PolicyError("dp_functions", "LIKE ... ESCAPE is not allowed in dp mode")
        if name in SPECIFIER_FUNCTIONS:
            part = (args_nodes[0] or {}).get("expression") if args_nodes else None
            if not safe_date_part(part):
                raise PolicyError(
                    "dp_functions",
                    f"{name} takes a constant date part ('year', 'month', 'day', ...)",
                )
        args = [self.expr((a or {}).get("expression"), scope) for a in args_nodes]
        if name in SPECIFIER_FUNCTIONS:
            args = [args[0], *(f"TRY_CAST({a} AS TIMESTAMP)" for a in args[1:])]
        elif name in TIMESTAMP_FUNCTIONS:
            args = [f"TRY_CAST({a} AS TIMESTAMP)" for a in args]
        if node.get("is_operator") and name in _INFIX:
            if len(args) == 2:
                return f"TRY({args[0]} {_INFIX[name]} {args[1]})"
            if len(args) == 1 and name in ("-", "+"):
                return f"TRY({name}{args[0]})"
            raise PolicyError("dp_unsupported", "unsupported operator")
        if name not in DP_FUNCTIONS:
            raise PolicyError("dp_functions", f"function {name!r} is not allowed in dp mode")
        return f"TRY({name}({', '.join(args)}))"

    def semijoin(self, node: dict[str, Any], scope: Scope) -> str:
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
        if not is_empty((node.get("subquery") or {}).get("named_param_map")):
            raise refuse
        self.check_select_shape(sub)
        if not is_empty(sub.get("group_expressions")) or not is_empty(sub.get("group_sets")):
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
        if not is_empty(node.get("cte_map")) and (node.get("cte_map") or {}).get("map"):
            raise PolicyError("dp_cte", "WITH (common table expressions) is not allowed in dp mode")
        if not is_empty(node.get("sample")):
            raise PolicyError("dp_sampling", "USING SAMPLE is not allowed in dp mode")
        if not is_empty(node.get("qualify")):
            raise PolicyError("dp_window", "QUALIFY is not allowed in dp mode")
        if not is_empty(node.get("having")):
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
        unknown = {k for k, v in node.items() if k not in SELECT_KEYS and not is_empty(v)}
        if unknown:
            raise PolicyError("dp_unsupported", "unsupported SELECT feature")


def as_condition(predicate: str) -> str:
    """A predicate that is TRUE or FALSE and never raises (a non-boolean is FALSE).

    >>> as_condition('src."sex"')
    'coalesce(TRY_CAST(src."sex" AS BOOLEAN), FALSE)'
    """
    return f"coalesce(TRY_CAST({predicate} AS BOOLEAN), FALSE)"
