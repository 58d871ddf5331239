"""Exact outputs by what they compute: every output column of an exact query, classified.

Pure: reads DuckDB's parse tree of a checked SELECT (``governance.sql.policy.parse``),
never data. Each output column is one of:

* a **group key**: no aggregate in it, and never a person or record key (``person_id``,
  an ``*_id`` record key, or anything computed from one, through aliases, derived
  tables and CTEs: the check follows what a column computes, not its name);
* a **count** (``count(*)``, ``count(x)``, ``count(DISTINCT x)``): threshold and rounding;
* a **sum** or **mean** (``sum(x)``, ``avg(x)``): released only when the people behind the
  cell are more than the threshold and none of them dominates it, rounded.

An expression over an aggregate counts as the aggregate it wraps when it only changes
its type or rounding (``CAST``, ``round``); anything else over an aggregate is refused
(``count(*) > 0`` is an existence bit, ``sum(x) / 3`` hides a sum). Aggregates that can
return one record's value are refused with rule ``exact_single_value``; others whose
disclosure rule the hub does not know with ``exact_unknown_aggregate``.

So that the hub can count the people behind every cell, the FROM clause keeps each
relation's genuine ``person_id`` (``exact_person_alias``, ``exact_derived_join``), and
the only subquery expression is a person-local semi-join
``person_id IN (SELECT person_id FROM t WHERE ...)`` (``exact_subquery``).

The tracing of person keys through names lives in ``person_keys``.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass
from typing import Any, Final, Literal

from governance.outputs.person_keys import (
    COUNTS,
    PERSON,
    output_name,
    person_names,
    relation_names,
    renames,
    tainted,
)
from governance.outputs.person_keys import fn as _fn
from governance.outputs.person_keys import walk as _walk
from governance.sql.policy import AGGREGATES, PolicyError, cte_names

Kind = Literal["group", "count", "sum", "mean"]
SUMS: Final = frozenset({"sum"})
MEANS: Final = frozenset({"avg", "mean"})
# aggregates whose answer can be one record's value (or an existence bit)
SINGLE_VALUE: Final = frozenset(
    {
        "min", "max", "median", "quantile", "quantile_cont", "quantile_disc", "mode",
        "arg_max", "arg_min", "argmax", "argmin", "max_by", "min_by", "arg_max_null",
        "arg_min_null", "bool_and", "bool_or", "any_value", "arbitrary", "first", "last",
        "list", "array_agg", "string_agg", "group_concat", "listagg", "histogram",
        "bit_and", "bit_or", "bit_xor", "product",
    }
)  # fmt: skip
# wrappers that keep an aggregate what it is: a change of type or of rounding
_WRAPPERS: Final = frozenset({"round"})


@dataclass(frozen=True)
class OutputColumn:
    position: int
    kind: Kind
    node: dict[str, Any]  # the select item (a group key) or the aggregate call it wraps
    function: str = ""  # the aggregate's name
    distinct: bool = False


@dataclass(frozen=True)
class ExactPlan:
    columns: tuple[OutputColumn, ...]

    def positions(self, *kinds: Kind) -> list[int]:
        return [c.position for c in self.columns if c.kind in kinds]

    @property
    def aggregates(self) -> list[OutputColumn]:
        return [c for c in self.columns if c.kind != "group"]


def _is_aggregate(node: dict[str, Any]) -> bool:
    return node.get("class") == "FUNCTION" and (_fn(node) in AGGREGATES or _fn(node) in COUNTS)


def _has_aggregate(node: Any) -> bool:
    return any(_is_aggregate(n) for n in _walk(node))


# ---------------------------------------------------------------------------- structure
def _check_structure(node: dict[str, Any]) -> None:
    if node.get("type") != "SELECT_NODE":
        raise PolicyError("exact_set_operation", "set operations are not allowed in exact mode")
    if node.get("having") or node.get("qualify"):
        raise PolicyError(
            "exact_having",
            "HAVING and QUALIFY are not allowed in exact mode: which rows appear would "
            "depend on small cells (disclosure control redacts them instead)",
        )
    if len(node.get("group_sets") or []) > 1:
        raise PolicyError(
            "exact_grouping_sets", "ROLLUP, CUBE and GROUPING SETS are not allowed in exact mode"
        )
    for n in _walk(node):
        if n.get("type") == "SELECT_NODE" and any(
            "LIMIT" in str((m or {}).get("type", "")) for m in n.get("modifiers") or []
        ):
            # LIMIT keeps the first rows in an order the data decides: a one-person group
            # takes the only place and is then left out, so an empty table says it exists
            raise PolicyError(
                "exact_limit",
                "LIMIT and OFFSET are not allowed in exact mode: which rows remain would "
                "depend on small cells (order the released table yourself)",
            )
        if n.get("class") == "STAR" and (n.get("columns") or n.get("expr")):
            raise PolicyError(
                "exact_columns_expression",
                "COLUMNS(...) is not allowed in exact mode: name the columns",
            )
        if n.get("type") == "JOIN" and str(n.get("ref_type", "")).upper() in (
            "POSITIONAL",
            "ASOF",
        ):
            # a positional join pairs one person's row with another's by position and
            # pads the shorter side with NULLs; an ASOF join pairs by nearest value
            raise PolicyError(
                "exact_join",
                "POSITIONAL and ASOF joins are not allowed in exact mode: join on keys",
            )
        if n.get("type") == "SET_OPERATION_NODE":
            raise PolicyError("exact_set_operation", "set operations are not allowed in exact mode")
        if n.get("class") == "WINDOW":
            raise PolicyError("exact_window", "window functions are not allowed in exact mode")
        if n.get("class") == "SUBQUERY":
            _check_semijoin(n)
        aliases = n.get("column_name_alias") or n.get("aliases") or []
        if isinstance(aliases, list) and PERSON in [str(a).lower() for a in aliases]:
            raise _renamed()
        for rename in n.get("rename_list") or []:
            if str(rename.get("value", "")).lower() == PERSON:
                raise _renamed()
        if n.get("type") == "SELECT_NODE" and n is not node:
            if (n.get("from_table") or {}).get("type") == "JOIN":
                raise PolicyError(
                    "exact_derived_join",
                    "derived tables and CTEs in exact mode read one table each (join at "
                    "the outer level, where the hub can tell whose rows are combined)",
                )
            for item in n.get("select_list") or []:
                if (
                    item.get("alias")
                    and str(item["alias"]).lower() == PERSON
                    and not (
                        item.get("class") == "COLUMN_REF"
                        and str(item.get("column_names", [""])[-1]).lower() == PERSON
                    )
                ):
                    raise _renamed()


def _renamed() -> PolicyError:
    return PolicyError(
        "exact_person_alias", "nothing but a table's own person_id may be called person_id"
    )


def _check_semijoin(node: dict[str, Any]) -> None:
    refuse = PolicyError(
        "exact_subquery",
        "the only subquery allowed in exact mode is person_id IN (SELECT person_id FROM "
        "<table> WHERE <conditions>)",
    )
    child = node.get("child") or {}
    sub = (node.get("subquery") or {}).get("node") or {}
    select = sub.get("select_list") or []
    if (
        node.get("subquery_type") != "ANY"
        or node.get("comparison_type") != "COMPARE_EQUAL"
        or child.get("class") != "COLUMN_REF"
        or str(child.get("column_names", [""])[-1]).lower() != PERSON
        or sub.get("type") != "SELECT_NODE"
        or (sub.get("from_table") or {}).get("type") != "BASE_TABLE"
        or len(select) != 1
        or select[0].get("class") != "COLUMN_REF"
        or str(select[0].get("column_names", [""])[-1]).lower() != PERSON
        or sub.get("group_expressions")
        or sub.get("having")
        or (sub.get("cte_map") or {}).get("map")
    ):
        raise refuse


# ---------------------------------------------------------------------------- columns
def _aggregate_of(item: dict[str, Any]) -> dict[str, Any]:
    """The aggregate call an output column is, through casts and rounding; or refuse."""
    node = item
    while not _is_aggregate(node):
        if node.get("class") == "CAST":
            node = node.get("child") or {}
        elif node.get("class") == "FUNCTION" and _fn(node) in _WRAPPERS:
            args = [(a or {}).get("expression") or {} for a in node.get("arguments") or []]
            if not args or any(_has_aggregate(a) or _walk_has_column(a) for a in args[1:]):
                raise _expression()
            node = args[0]
        else:
            raise _expression()
    return node


def _walk_has_column(node: Any) -> bool:
    return any(n.get("class") == "COLUMN_REF" for n in _walk(node))


def _expression() -> PolicyError:
    return PolicyError(
        "exact_expression",
        "an output column over an aggregate must be the aggregate itself (a CAST or round "
        "of it at most): compute ratios and comparisons after release",
    )


_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _plain(node: Any) -> dict[str, Any] | None:
    """The column a value is, through casts (``CAST(x AS DOUBLE)``); None if computed.

    A ``TRY_CAST`` is computed: it is NULL where a value does not fit (``TRY_CAST(value
    AS TINYINT)`` counts the rows with a value up to 127, a condition). So is a column
    whose name is not an identifier: DuckDB names an unaliased expression of a derived
    table by its text (``"(value + 1)"``), which can be referred to from outside.
    """
    while isinstance(node, dict) and node.get("class") == "CAST":
        if node.get("try_cast"):
            return None
        node = node.get("child")
    if isinstance(node, dict) and node.get("class") == "COLUMN_REF":
        names = [str(n) for n in node.get("column_names", [])]
        if names and all(_IDENT.fullmatch(n) for n in names):
            return node
    return None


def computed_names(node: dict[str, Any]) -> set[str]:
    """Every output name, at any level below the outer SELECT, that holds a computed value
    (anything but a column, through casts), followed through aliases and positional
    renames of derived tables and CTEs to a fixpoint."""
    names: set[str] = set()
    while True:
        before = len(names)
        for n in _walk(node):
            if n is node or n.get("type") != "SELECT_NODE":
                continue
            for item in n.get("select_list") or []:
                if item.get("class") == "STAR":
                    # * REPLACE (<expression> AS x), * RENAME (<computed> AS y)
                    for rep in item.get("replace_list") or []:
                        ref = _plain(rep.get("value"))
                        if ref is None or (str(ref.get("column_names", [""])[-1]).lower() in names):
                            names.add(str(rep.get("key", "")).lower())
                    for ren in item.get("rename_list") or []:
                        if str((ren.get("key") or {}).get("column", "")).lower() in names:
                            names.add(str(ren.get("value", "")).lower())
                    continue
                ref = _plain(item)
                if ref is None or str(ref.get("column_names", [""])[-1]).lower() in names:
                    names.add(output_name(item))
        for aliases, inner in renames(node):
            if any(i.get("class") == "STAR" for i in inner):
                # which column a position names behind * is not followed: all computed
                names.update(str(a).lower() for a in aliases)
                continue
            for i, alias in enumerate(aliases):
                if i < len(inner):
                    ref = _plain(inner[i])
                    if ref is None or str(ref.get("column_names", [""])[-1]).lower() in names:
                        names.add(str(alias).lower())
        names.discard("")
        if len(names) == before:
            return names


def _relations_of(table: Any) -> set[str]:
    """The names of every relation in one FROM item (``person_relations``'s walk)."""
    return {r.lower() for r in person_relations({"from_table": table})} - {""}


def nullable_relations(node: dict[str, Any]) -> set[str]:
    """Relations of the outer FROM whose columns an outer join can fill with NULLs (where
    one exists, an unqualified column may be one of them)."""
    out: set[str] = set()
    stack = [node.get("from_table")]
    while stack:
        t = stack.pop()
        if not isinstance(t, dict) or t.get("type") != "JOIN":
            continue
        kind = str(t.get("join_type", "")).upper()
        if kind in ("LEFT", "FULL", "OUTER"):
            out |= _relations_of(t.get("right"))
        if kind in ("RIGHT", "FULL", "OUTER"):
            out |= _relations_of(t.get("left"))
        stack.extend([t.get("left"), t.get("right")])
    return out


def _outer() -> PolicyError:
    return PolicyError(
        "exact_outer_join_aggregate",
        "in exact mode an aggregate over a column of an outer join's optional side is not "
        "allowed (the join decides which rows it counts): use count(*), an inner join, or "
        "qualify the column with a table every row has",
    )


def _conditional() -> PolicyError:
    return PolicyError(
        "exact_conditional_aggregate",
        "in exact mode an aggregate takes a column (or *), never a FILTER or an expression: "
        "every figure of an output must cover the same rows, so that one person cannot be "
        "counted by one column and left out of another (group by the condition instead)",
    )


def _classify_aggregate(
    position: int,
    call: dict[str, Any],
    names: set[str],
    relations: set[str],
    computed: set[str],
    nullable: set[str],
) -> OutputColumn:
    name = _fn(call)
    args = [(a or {}).get("expression") for a in call.get("arguments") or []]
    distinct = bool(call.get("distinct"))
    if name in SINGLE_VALUE:
        raise PolicyError(
            "exact_single_value",
            f"{name} can return one record's value: it cannot be an exact output",
        )
    if (call.get("order_bys") or {}).get("orders"):
        raise PolicyError("exact_unknown_aggregate", "ordered aggregates are not allowed")
    # Two figures of one output over different rows (count(*) beside count(*) FILTER
    # (WHERE NOT <one person>), sum(x) beside sum(CASE WHEN <one person> THEN 0 ELSE x
    # END)) differ by one person, and each passes the cell rules alone: refused by
    # construction, so every figure of a cell is over the rows the ledger's populations
    # describe.
    if call.get("filter"):
        raise _conditional()
    for arg in args:
        ref = _plain(arg)
        if ref is None:
            raise _conditional()
        if ref is not None and str(ref.get("column_names", [""])[-1]).lower() in computed:
            raise _conditional()
        # an outer join fills a column with NULLs where its ON or a derived table's WHERE
        # says (WHERE person_id <> P): count(o.x) beside count(*) would then differ by P
        if ref is not None and nullable:
            qualified = [str(n).lower() for n in ref.get("column_names", [])]
            if len(qualified) < 2 or qualified[-2] in nullable:
                raise _outer()
    if any(_has_aggregate(a) for a in args):
        raise _expression()
    if name in COUNTS:
        if (distinct or name == "approx_count_distinct") and not tainted(args, names, relations):
            # a count of distinct values is a statistic of values, not of people or
            # records: decoys chosen to cover exactly 12 birth years gave 10 after
            # rounding, and one more person's year 15 (a red-team's fourth round)
            raise PolicyError(
                "exact_distinct_values",
                "count(DISTINCT ...) in exact mode counts people or records: "
                "count(DISTINCT person_id), or a record key; group by the value instead",
            )
        return OutputColumn(position, "count", call, name, distinct)
    if name in SUMS | MEANS:
        if len(args) != 1:
            raise PolicyError("exact_unknown_aggregate", f"{name} takes one argument")
        if tainted(args, names, relations):
            raise PolicyError(
                "exact_person_key", f"{name} of a person or record key is not an exact output"
            )
        if distinct:
            raise PolicyError(
                "exact_distinct_sum",
                "sums and means of DISTINCT values are not allowed (one unusual value "
                "can dominate them)",
            )
        return OutputColumn(position, "sum" if name in SUMS else "mean", call, name)
    raise PolicyError(
        "exact_unknown_aggregate",
        f"{name} has no disclosure rule: exact outputs are counts, sums and means",
    )


def _same(a: Any, b: Any) -> bool:
    def strip(v: Any) -> Any:
        if isinstance(v, dict):
            return {
                k: strip(x)
                for k, x in v.items()
                if k not in ("alias", "query_location", "query_location_length")
            }
        if isinstance(v, list):
            return [strip(x) for x in v]
        return v

    return bool(strip(a) == strip(b))


def _check_group_keys(node: dict[str, Any], keys: list[dict[str, Any]]) -> None:
    """Every GROUP BY expression must be an output column (cells are labelled by keys)."""
    select = node.get("select_list") or []
    aliases = {output_name(k) for k in keys if k.get("alias")}
    for expr in node.get("group_expressions") or []:
        literal = expr.get("literal") if expr.get("class") == "CONSTANT" else None
        if literal and literal.get("kind") == "INTEGER" and str(literal.get("text")).isdigit():
            index = int(str(literal["text"])) - 1
            if 0 <= index < len(select) and any(select[index] is k for k in keys):
                continue
        elif (
            expr.get("class") == "COLUMN_REF"
            and len(expr.get("column_names", [])) == 1
            and output_name(expr) in aliases
        ):
            continue
        if any(_same(expr, k) for k in keys):
            continue
        raise PolicyError("exact_group_keys", "every GROUP BY key must also be an output column")


def classify(node: dict[str, Any]) -> ExactPlan:
    """The plan of an exact query's output, or PolicyError naming the rule it breaks.

    >>> import duckdb
    >>> from governance.sql.policy import parse
    >>> tree = parse(duckdb.connect(), "SELECT sex, count(*) AS n, round(avg(value), 1) "
    ...              "FROM observations GROUP BY sex")
    >>> [c.kind for c in classify(tree).columns]
    ['group', 'count', 'mean']
    """
    _check_structure(node)
    names = person_names(node)
    relations = relation_names(node)
    computed = computed_names(node)
    nullable = nullable_relations(node)
    columns: list[OutputColumn] = []
    keys: list[dict[str, Any]] = []
    for position, item in enumerate(node.get("select_list") or []):
        if item.get("class") == "STAR":
            raise PolicyError("aggregate_only", "name the output columns; * is not allowed")
        if not _has_aggregate(item):
            if any(n.get("class") == "SUBQUERY" for n in _walk(item)):
                raise _expression()
            if tainted(item, names, relations):
                raise PolicyError(
                    "exact_person_key",
                    "an output column may not be a person or record key, or computed from one",
                )
            keys.append(item)
            columns.append(OutputColumn(position, "group", item))
            continue
        columns.append(
            _classify_aggregate(position, _aggregate_of(item), names, relations, computed, nullable)
        )
    aliases = [str(i.get("alias")).lower() for i in node.get("select_list") or [] if i.get("alias")]
    if len(aliases) != len(set(aliases)):
        raise PolicyError("exact_duplicate_names", "give every output column its own name")
    if not any(c.kind == "count" for c in columns):
        raise PolicyError(
            "exact_needs_count",
            "an exact output needs a count per row (count(*) or count(DISTINCT person_id))",
        )
    _check_group_keys(node, keys)
    return ExactPlan(tuple(columns))


# ---------------------------------------------------------------------------- hub SQL
def column_ref(*names: str, alias: str = "") -> dict[str, Any]:
    return {"class": "COLUMN_REF", "type": "COLUMN_REF", "alias": alias, "column_names": [*names]}


def constant(text: str, kind: str = "INTEGER", alias: str = "") -> dict[str, Any]:
    return {
        "class": "CONSTANT",
        "type": "VALUE_CONSTANT",
        "alias": alias,
        "literal": {"kind": kind, "text": text},
    }


def row_level_tree(
    node: dict[str, Any], select_list: list[dict[str, Any]], *, distinct: bool = False
) -> dict[str, Any]:
    """The query's FROM and WHERE returning ``select_list`` per row, as a parse tree
    (DuckDB writes it back as SQL: no text of the researcher's is pasted into SQL)."""
    modifiers = [{"type": "DISTINCT_MODIFIER", "distinct_on_targets": []}] if distinct else []
    row_node = {
        **node,
        "select_list": copy.deepcopy(select_list),
        "group_expressions": [],
        "group_sets": [],
        "having": None,
        "qualify": None,
        "aggregate_handling": "STANDARD_HANDLING",
        "modifiers": modifiers,
    }
    return {"error": False, "statements": [{"node": row_node}]}


def as_json(tree: dict[str, Any]) -> str:
    return json.dumps(tree)


def relation_tables(node: dict[str, Any]) -> list[tuple[str, str | None]]:
    """The relations of the outer FROM clause, left to right, as (name, table): the name
    a query uses for it (alias, else table) and the table it reads (None for a derived
    table)."""
    out: list[tuple[str, str | None]] = []
    stack = [node.get("from_table")]
    while stack:
        ref = stack.pop()
        if not isinstance(ref, dict):
            continue
        if ref.get("type") == "JOIN":
            stack.extend([ref.get("right"), ref.get("left")])
        elif ref.get("type") in ("BASE_TABLE", "SUBQUERY"):
            table = str(ref.get("table_name") or "") if ref.get("type") == "BASE_TABLE" else None
            out.append((str(ref.get("alias") or table or ""), table))
    return out


def check_cte_names(node: dict[str, Any], catalogue: dict[str, dict[str, str]]) -> None:
    """Rule ``exact_cte_name``: a CTE may not take a release table's name. Named like a
    table without person_id (``WITH organisations AS (SELECT ... FROM patients ...)``),
    it passed for a reference table, nobody's rows: no join rule, no people counted."""
    shadowing = sorted(cte_names(node) & set(catalogue))
    if shadowing:
        raise PolicyError(
            "exact_cte_name",
            f"a CTE may not take the name of a release table ({', '.join(shadowing)}) in "
            "exact mode: name it something else",
        )


def person_relations(node: dict[str, Any]) -> list[str]:
    """The relations of the outer FROM clause, left to right: each one's person_id is a
    way to attribute a row to a person."""
    return [name for name, _ in relation_tables(node)]


def _people_names(ref: Any, catalogue: dict[str, dict[str, str]]) -> set[str]:
    """The names (alias, else table) of a FROM subtree's relations that may hold
    people's rows: all but base tables the catalogue shows without a person_id."""
    out: set[str] = set()
    stack = [ref]
    while stack:
        r = stack.pop()
        if not isinstance(r, dict):
            continue
        if r.get("type") == "JOIN":
            stack.extend([r.get("left"), r.get("right")])
            continue
        table = str(r.get("table_name") or "").lower()
        if r.get("type") == "BASE_TABLE" and table in catalogue and PERSON not in catalogue[table]:
            continue  # a reference table (codes, terms): nobody's rows
        out.add(str(r.get("alias") or table).lower())
    return out


def _person_equality(node: Any, left: set[str], right: set[str]) -> bool:
    """``node`` is ``a.person_id = b.person_id`` with ``a`` on one side, ``b`` the other."""
    if not isinstance(node, dict) or node.get("type") not in (
        "COMPARE_EQUAL",
        "COMPARE_NOT_DISTINCT_FROM",
    ):
        return False
    sides = []
    for side in (node.get("left"), node.get("right")):
        names = [str(n).lower() for n in (side or {}).get("column_names", [])]
        if (side or {}).get("class") != "COLUMN_REF" or len(names) != 2 or names[1] != PERSON:
            return False
        sides.append(names[0])
    a, b = sides
    return (a in left and b in right) or (a in right and b in left)


def _conjuncts(node: Any) -> list[Any]:
    if isinstance(node, dict) and node.get("type") == "CONJUNCTION_AND":
        return [c for child in node.get("children", []) for c in _conjuncts(child)]
    return [node]


def check_person_joins(node: dict[str, Any], catalogue: dict[str, dict[str, str]]) -> None:
    """Rule ``exact_join``: two sides of a join that both hold people's rows are joined on
    person_id (``ON a.person_id = b.person_id [AND ...]`` or ``USING (person_id, ...)``),
    so each row of an exact output is one person's.

    Otherwise one person's row pairs with everybody's: ``patients p CROSS JOIN patients
    q WHERE q.<one person>`` counts N rows per person of ``q``, so two outputs that
    differ by that one person differ by N (no rounding hides it), while the people
    behind each cell, and the population the disclosure ledger compares, are
    everyone of ``p`` in both.
    """

    def visit(ref: Any) -> None:
        if not isinstance(ref, dict) or ref.get("type") != "JOIN":
            return
        visit(ref.get("left"))
        visit(ref.get("right"))
        left = _people_names(ref.get("left"), catalogue)
        right = _people_names(ref.get("right"), catalogue)
        if not left or not right:
            return
        using = {str(c).lower() for c in ref.get("using_columns") or []}
        on_person = str(ref.get("ref_type", "")).upper() == "REGULAR" and (
            PERSON in using
            or any(_person_equality(c, left, right) for c in _conjuncts(ref.get("condition")))
        )
        if not on_person:
            raise PolicyError(
                "exact_join",
                "in exact mode, tables of people are joined on person_id "
                "(JOIN ... ON a.person_id = b.person_id, or USING (person_id)): otherwise "
                "one person's rows are counted once for every row they are paired with",
            )

    visit(node.get("from_table"))
