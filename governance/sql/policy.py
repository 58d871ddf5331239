"""The SQL policy: an allow-list checked on what DuckDB itself will do.

A researcher's SQL is checked before anything runs, against the project's grants:

1. **One SELECT.** DuckDB's own parser (``json_serialize_sql``) must read exactly one
   statement, and it must be a SELECT: no COPY, ATTACH, SET, PRAGMA, INSTALL, DDL, and
   none of the statements DuckDB rewrites into a SELECT over a special table reference
   (``SHOW``, ``DESCRIBE``, ``SUMMARIZE``): table references are allow-listed. The text
   and its parse tree are bounded in size and depth (``MAX_SQL_CHARS``,
   ``MAX_TREE_DEPTH``), refused with rule ``too_complex``, so no check recurses deeply.
2. **Granted tables only**, from the parse tree: every base table is granted (or is a
   CTE of the query); no table functions (``read_csv``, ``glob``, ``query``...), no
   file paths, no other catalogs or schemas.
3. **Allow-listed functions only**, from the parse tree: aggregates, arithmetic,
   comparison, dates, strings; nothing that reads files, settings, variables or the
   catalogue.
4. **Granted columns only**, named anywhere in the parse tree or read by a scan of the
   plan (``EXPLAIN (FORMAT json)``: projections, and the columns of filters pushed into
   scans), which covers what ``*`` expands to and columns used only in WHERE, JOIN or
   ORDER BY. The plan is made on the release's schema alone (``engine.Planner``: its tables
   empty, DuckDB's statistics propagation off), never on its data: DuckDB's optimiser
   prunes a filter that the data's min/max statistics prove false, so a plan of the
   real tables would make a verdict, and so a refusal, depend on the data.
5. **Aggregates only on the real release**: the outermost SELECT returns aggregates and
   group keys only, never ``*``, and never groups by a person-level key.

A refusal names the rule it broke (``PolicyViolation.rule``), never a data value.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol

import duckdb

from governance.sql.mistakes import (  # PolicyError and QueryMistake are re-exported
    PolicyError,
    QueryMistake,
    located,
    suggest,
    syntax_error,
    unknown_name,
)

AGGREGATES: Final = frozenset(
    {
        "count", "count_star", "sum", "avg", "mean", "min", "max", "median", "stddev",
        "stddev_samp", "stddev_pop", "var_samp", "var_pop", "variance", "quantile_cont",
        "quantile_disc", "mode", "bool_and", "bool_or", "approx_count_distinct",
        # the value at the latest or earliest row of a group (like max and min)
        "arg_max", "arg_min", "max_by", "min_by",
    }
)  # fmt: skip
SCALARS: Final = frozenset(
    {
        # operators (DuckDB spells them as functions)
        "+", "-", "*", "/", "//", "%", "^", "**", "~~", "!~~", "~~*", "!~~*", "||",
        # numbers
        "abs", "round", "floor", "ceil", "ceiling", "least", "greatest", "sign", "sqrt",
        "ln", "log", "log10", "exp", "power", "pow", "trunc",
        # text
        "lower", "upper", "length", "substr", "substring", "starts_with", "ends_with",
        "contains", "trim", "ltrim", "rtrim", "concat", "left", "right", "replace",
        "prefix", "suffix", "like_escape", "regexp_matches", "regexp_full_match",
        # dates
        "year", "month", "day", "quarter", "week", "dayofweek", "date_diff", "datediff",
        "date_trunc", "datetrunc", "date_part", "datepart", "make_date", "age",
        "current_date", "today", "last_day", "date_add", "date_sub", "to_days",
        "to_months", "to_years", "epoch",
        # nulls and types
        "coalesce", "ifnull", "nullif", "isnan", "isfinite", "isinf",
    }
)  # fmt: skip
ALLOWED_FUNCTIONS: Final = AGGREGATES | SCALARS
# group keys that would make one row per person
PERSON_KEYS: Final = frozenset({"person_id"})
# the table references a query may use (others: SHOW/DESCRIBE/SUMMARIZE, PIVOT, ...)
TABLE_REFS: Final = frozenset(
    {"BASE_TABLE", "JOIN", "SUBQUERY", "EMPTY", "EXPRESSION_LIST", "TABLE_FUNCTION"}
)
MAX_SQL_CHARS: Final = 50_000
MAX_TREE_DEPTH: Final = 300  # levels of DuckDB's JSON parse tree


@dataclass(frozen=True)
class CheckedQuery:
    sql: str
    tables: frozenset[str]
    columns: dict[str, frozenset[str]]  # table -> columns the plan reads
    aggregate: bool
    node: dict[str, Any]  # DuckDB's parse tree of the statement, as checked


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from _walk(item)


def _too_complex() -> PolicyError:
    return PolicyError(
        "too_complex",
        f"the query is too long or too deeply nested (at most {MAX_SQL_CHARS} characters "
        f"and {MAX_TREE_DEPTH} levels of parse tree)",
    )


def tree_depth(tree: Any, *, limit: int = MAX_TREE_DEPTH) -> int:
    """The nesting depth of a JSON value, iteratively (stops counting past ``limit``).

    >>> tree_depth({"a": [{"b": 1}]})
    3
    """
    deepest = 0
    stack: list[tuple[Any, int]] = [(tree, 1)]
    while stack:
        value, depth = stack.pop()
        if not isinstance(value, dict | list):
            continue
        deepest = max(deepest, depth)
        if deepest > limit:
            return deepest
        children = value.values() if isinstance(value, dict) else value
        stack.extend((child, depth + 1) for child in children)
    return deepest


def _table_refs(node: Any) -> Iterator[dict[str, Any]]:
    """Every table reference in FROM clauses (through joins), anywhere in the tree."""
    for n in _walk(node):
        ref = n.get("from_table")
        stack = [ref] if isinstance(ref, dict) else []
        while stack:
            r = stack.pop()
            yield r
            for side in ("left", "right"):
                if isinstance(r.get(side), dict) and r.get("type") == "JOIN":
                    stack.append(r[side])


def parse(con: duckdb.DuckDBPyConnection, sql: str) -> dict[str, Any]:
    """DuckDB's own parse tree of exactly one SELECT statement."""
    if not isinstance(sql, str) or not sql.strip():
        raise PolicyError("one_select", "the query is empty")
    if len(sql) > MAX_SQL_CHARS:
        raise _too_complex()
    if "\x00" in sql:
        raise PolicyError("syntax", "the query could not be parsed")
    try:
        text = con.execute("SELECT json_serialize_sql($q)", {"q": sql}).fetchall()[0][0]
    except duckdb.Error:
        raise QueryMistake("syntax", "the query could not be parsed") from None
    try:
        tree = json.loads(text)
    except RecursionError:
        raise _too_complex() from None
    except ValueError:
        raise QueryMistake("syntax", "the query could not be parsed") from None
    if tree_depth(tree) > MAX_TREE_DEPTH:
        raise _too_complex()
    if tree.get("error"):
        message = str(tree.get("error_message", ""))
        if "Only SELECT" in message:
            raise PolicyError("one_select", "only a single SELECT statement may run")
        if "depth" in message.lower():
            raise _too_complex()
        raise syntax_error(sql, tree)
    statements = tree.get("statements", [])
    if len(statements) != 1:
        raise PolicyError("one_select", "exactly one statement may run")
    node: dict[str, Any] = statements[0]["node"]
    for ref in _table_refs(node):
        if ref.get("type") not in TABLE_REFS:
            raise PolicyError(
                "one_select",
                "only a SELECT over tables may run (no SHOW, DESCRIBE, SUMMARIZE or PIVOT)",
            )
    return node


def cte_names(node: Any) -> set[str]:
    """The names of every CTE a query defines, lower case."""
    names = set()
    for n in _walk(node):
        cte_map = n.get("cte_map")
        if isinstance(cte_map, dict):
            for entry in cte_map.get("map", []):
                names.add(str(entry.get("key", "")).lower())
    return names


def check_tree(
    node: dict[str, Any],
    granted: dict[str, list[str]],
    *,
    known: frozenset[str] | None = None,
    sql: str = "",
) -> frozenset[str]:
    """Rules 2 and 3 on the parse tree; returns the granted tables the query names.

    ``known`` (the release's tables and views, when given) tells a name that does not
    exist (a mistake, with the closest granted names) from one that is not granted.
    """
    ctes = cte_names(node)
    tables: set[str] = set()
    for n in _walk(node):
        kind = n.get("type")
        if kind == "TABLE_FUNCTION":
            raise PolicyError("no_table_functions", "table functions cannot be used")
        if kind == "BASE_TABLE":
            name = str(n.get("table_name", "")).lower()
            if n.get("catalog_name") or n.get("schema_name") not in ("", "main", None):
                raise PolicyError("granted_tables", "only the release's own tables can be queried")
            if name in ctes:
                continue
            if name not in granted:
                if known is not None and name not in known and _WORD.fullmatch(name):
                    where = located(sql, name)
                    at = f" ({where})" if where else ""
                    raise QueryMistake(
                        "unknown_name",
                        f"there is no table named {name!r}{at}{suggest(name, granted)}",
                    )
                raise PolicyError(
                    "granted_tables", f"table {name!r} is not granted to this project"
                )
            tables.add(name)
        if n.get("class") == "FUNCTION" or kind in ("FUNCTION", "AGGREGATE", "WINDOW_AGGREGATE"):
            name = str(n.get("function_name", "")).lower()
            if name and name not in ALLOWED_FUNCTIONS:
                raise PolicyError("allowed_functions", f"function {name!r} is not allowed")
            if n.get("schema") or n.get("catalog"):
                raise PolicyError(
                    "allowed_functions", "functions from other schemas are not allowed"
                )
            _check_cost(name, n)
        if n.get("class") == "STAR" and n.get("columns"):
            raise PolicyError("allowed_functions", "COLUMNS(...) expressions are not allowed")
        if kind in ("SUBQUERY_REF",) and n.get("subquery") is None:
            raise PolicyError("syntax", "unsupported subquery")
    return frozenset(tables)


# What one row may cost. How long a query on the real release takes must not depend on
# one person's values (a DP answer's or an exact submission's response time would then
# say whether a CASE WHEN <one person> reached an expensive branch): functions that grow
# a value may not take one another's results, nor constants longer than MAX_COST_CHARS,
# nor more than MAX_CONCAT_ARGS arguments (eight nested replace()s made 10^8 characters
# a row); a regular expression's pattern is a constant of at most MAX_COST_CHARS
# without counted repetition (a pattern built from a column is compiled again for every
# row, and (.?){1000} repeated sends RE2 to its slowest engine: 16-49 s for one row).
GROWS: Final = frozenset({"replace", "concat", "||"})
REGEX: Final = frozenset({"regexp_matches", "regexp_full_match"})
MAX_COST_CHARS: Final = 200
MAX_CONCAT_ARGS: Final = 8


def _arguments(node: dict[str, Any]) -> list[Any]:
    return [(a or {}).get("expression") for a in node.get("arguments") or []]


def _short_constant(node: Any) -> bool:
    literal = (node or {}).get("literal") or {} if isinstance(node, dict) else {}
    return bool(
        isinstance(node, dict)
        and node.get("class") == "CONSTANT"
        and len(str(literal.get("text", ""))) <= MAX_COST_CHARS
    )


def grows(node: Any) -> bool:
    """Whether an expression calls a function that can grow a value."""
    return any(
        n.get("class") == "FUNCTION" and str(n.get("function_name", "")).lower() in GROWS
        for n in _walk(node)
    )


def _check_cost(name: str, node: dict[str, Any]) -> None:
    args = _arguments(node)
    costly = PolicyError(
        "costly_expression",
        f"{name} here could cost a row unbounded time: replace, concat and || may not take "
        f"one another's results, more than {MAX_CONCAT_ARGS} arguments or constants over "
        f"{MAX_COST_CHARS} characters, and a regular expression's pattern must be a short "
        "constant",
    )
    if name in GROWS:
        if len(args) > MAX_CONCAT_ARGS or any(grows(a) for a in args):
            raise costly
        for a in args:
            if isinstance(a, dict) and a.get("class") == "CONSTANT" and not _short_constant(a):
                raise costly
    if name in REGEX:
        if not all(_short_constant(a) for a in args[1:]):
            raise costly
        if len(args) > 1 and "{" in str(((args[1] or {}).get("literal") or {}).get("text", "")):
            # a counted repetition multiplies RE2's program: ('(.?){1000}' * 20) cost
            # 116 ms a row, ('(.?)' * 50) 0.06 ms
            raise PolicyError(
                "costly_expression",
                "counted repetition ({n}) is not allowed in a regular expression: repeat "
                "the item, or use + or *",
            )


__all__ = ["Plans", "PolicyError", "QueryMistake", "check", "parse", "plan_columns"]

_QUOTED = re.compile(r"'(?:[^']|'')*'")
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _scans(plan: Any) -> Iterator[tuple[str, set[str], str]]:
    """(table, projected columns, filter text) for every scan in a plan."""
    for n in _walk(plan):
        info = n.get("extra_info")
        if isinstance(info, dict) and "Table" in info:
            table = str(info["Table"]).split(".")[-1].strip('"').lower()
            projections = info.get("Projections", [])
            if isinstance(projections, str):
                projections = [projections]
            filters = info.get("Filters", "")
            if isinstance(filters, list):
                filters = " ".join(str(f) for f in filters)
            names = {str(p).strip('"').lower() for p in projections} - {""}
            yield table, names, str(filters)


@dataclass(frozen=True)
class Names:
    """The table and column names a connection sees, as the rules read them.

    A published release never changes, so an engine reads these once per release
    (``Engine.check``) instead of asking DuckDB's catalogue three to five times a query.
    """

    tables: frozenset[str]  # lower-cased, every table and view
    columns: Mapping[str, frozenset[str]]  # by table name as written, lower-cased columns

    def of(self, table: str) -> frozenset[str]:
        return self.columns.get(table, frozenset())


def release_names(con: duckdb.DuckDBPyConnection) -> Names:
    """The names ``con`` sees, from one read of ``duckdb_columns()``."""
    rows = con.execute("SELECT table_name, column_name FROM duckdb_columns()").fetchall()
    columns: dict[str, set[str]] = {}
    for table, column in rows:
        columns.setdefault(str(table), set()).add(str(column).lower())
    return Names(
        tables=frozenset(t.lower() for t in columns),
        columns={t: frozenset(c) for t, c in columns.items()},
    )


class Plans(Protocol):
    """Plans SQL on a release's schema without its data (``governance.sql.engine.Planner``)."""

    def explain(self, sql: str) -> list[tuple[Any, ...]]: ...


def _planner(con: duckdb.DuckDBPyConnection) -> Plans:
    from governance.sql.engine import Planner  # the engine opens databases, and uses this module

    return Planner(con)


def plan_columns(
    con: duckdb.DuckDBPyConnection,
    sql: str,
    granted: dict[str, list[str]] | None = None,
    names: Names | None = None,
    planner: Plans | None = None,
) -> dict[str, frozenset[str]]:
    """Rule 4: the columns DuckDB's plan of ``sql`` reads, per table, planned on the
    release's schema alone (``governance.sql.engine.Planner``; made from ``con`` when not
    given).

    Projections list what a scan returns; a filter pushed into the scan reads its
    columns too, so the words of each scan's filter that are columns of its table count.
    """
    if names is None:
        names = release_names(con)
    if planner is None:
        planner = _planner(con)
    try:
        rows = planner.explain(sql)
    except (duckdb.BinderException, duckdb.CatalogException) as exc:
        # identifiers are not in research tables: asking for one lands here
        mistake = unknown_name(exc, sql, granted, ALLOWED_FUNCTIONS)
        if mistake is not None:
            raise mistake from None
        raise QueryMistake(
            "unknown_name", "the query names a table, column or type the release does not have"
        ) from None
    except duckdb.Error:
        raise QueryMistake("syntax", "the query could not be planned") from None
    plan = json.loads(rows[0][1])
    read: dict[str, set[str]] = {}
    for table, projected, filters in _scans(plan):
        columns = read.setdefault(table, set())
        columns.update(projected)
        if filters:
            present = names.of(table)
            words = {w.lower() for w in _WORD.findall(_QUOTED.sub("", filters))}
            columns.update(words & present)
    return {t: frozenset(c) for t, c in read.items()}


def _column_names(node: Any) -> set[str]:
    return {
        str(n.get("column_names", [""])[-1]).lower()
        for n in _walk(node)
        if n.get("type") == "COLUMN_REF" or n.get("class") == "COLUMN_REF"
    }


def check_aggregate(node: dict[str, Any]) -> None:
    """Rule 5 on the outermost SELECT."""
    select_list = node.get("select_list", [])
    for item in select_list:
        if item.get("class") == "STAR" or item.get("type") == "STAR":
            raise PolicyError(
                "aggregate_only",
                "name the aggregates you want; * is not allowed on the real release",
            )
    keys = [item for item in select_list if not has_aggregate(item)]
    group_columns = _column_names(node.get("group_expressions", []))
    for expr in node.get("group_expressions", []):  # GROUP BY 1: a select-list position
        literal = expr.get("literal") if expr.get("class") == "CONSTANT" else None
        text = str((literal or {}).get("text", ""))
        if (literal or {}).get("kind") == "INTEGER" and text.isdigit():
            position = int(text)
            if 1 <= position <= len(select_list):
                group_columns |= _column_names(select_list[position - 1])
    if node.get("aggregate_handling") == "FORCE_AGGREGATES":  # GROUP BY ALL
        group_columns |= set().union(*(_column_names(k) for k in keys)) if keys else set()
    if (
        group_columns | set().union(*(_column_names(k) for k in keys) if keys else set())
    ) & PERSON_KEYS:
        raise PolicyError(
            "aggregate_only", "results per person are not allowed on the real release"
        )
    if not any(has_aggregate(item) for item in select_list):
        raise PolicyError(
            "aggregate_only", "only aggregates (count, sum, avg, ...) may leave the real release"
        )
    for item in keys:
        if not _column_names(item) <= group_columns:
            raise PolicyError(
                "aggregate_only", "every output column must be an aggregate or a GROUP BY key"
            )


def has_aggregate(item: dict[str, Any]) -> bool:
    for n in _walk(item):
        if (n.get("class") == "FUNCTION" or n.get("type") in ("FUNCTION", "AGGREGATE")) and str(
            n.get("function_name", "")
        ).lower() in AGGREGATES:
            return True
    return False


def _check_named_columns(
    node: dict[str, Any],
    tables: frozenset[str],
    granted: dict[str, list[str]],
    names: Names,
) -> None:
    """Rule 4 on the parse tree too: a non-granted column named anywhere is refused.

    The plan alone is not enough: DuckDB may drop a filter its statistics prove always
    true (``WHERE ethnicity IS NOT NULL``), so the column is never read, yet the answer
    still says something about it. Naming it is refused outright.
    """
    named = _column_names(node)
    for table in tables:
        present = names.of(table)
        hidden = (named & present) - {c.lower() for c in granted[table]}
        if hidden:
            raise PolicyError(
                "granted_columns",
                f"column(s) {', '.join(sorted(hidden))} of {table} are not granted",
            )


def check(
    con: duckdb.DuckDBPyConnection,
    sql: str,
    *,
    granted: dict[str, list[str]],
    real: bool,
    names: Names | None = None,
    planner: Plans | None = None,
) -> CheckedQuery:
    """All five rules. ``con`` is a read-only connection to the target release;
    ``names`` and ``planner``, when given, must be made from a connection that sees the
    same tables (an engine keeps them per release)."""
    node = parse(con, sql)
    if node.get("type") != "SELECT_NODE" and real:
        raise PolicyError(
            "one_select", "set operations (UNION, EXCEPT) are not allowed on the real release"
        )
    if names is None:
        names = release_names(con)
    tables = check_tree(node, granted, known=names.tables, sql=sql)
    _check_named_columns(node, tables, granted, names)
    columns = plan_columns(con, sql, granted, names, planner)
    for table, read in columns.items():
        if table not in granted:
            raise PolicyError("granted_tables", f"table {table!r} is not granted to this project")
        extra = read - {c.lower() for c in granted[table]}
        if extra:
            raise PolicyError(
                "granted_columns",
                f"column(s) {', '.join(sorted(extra))} of {table} are not granted",
            )
    if real:
        check_aggregate(node)
    return CheckedQuery(sql=sql, tables=tables, columns=columns, aggregate=real, node=node)
