"""Person and record keys by any name: which output names of a query carry one.

A name can hide a pseudonym: an alias (``person_id AS p``), a derived table's or CTE's
column (``(SELECT person_id FROM t) d(x)``), an expression (``person_id + 0``,
``'x' || person_id``), a whole row as a struct (``SELECT t FROM patients t``). The
check follows what each column computes, through every level of the query, to a
fixpoint; only counting keys (``count(DISTINCT person_id)``) does not carry one.

>>> is_record_key("person_id"), is_record_key("encounter_id"), is_record_key("gender_concept_id")
(True, True, False)
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Final

PERSON: Final = "person_id"
COUNTS: Final = frozenset({"count", "count_star", "approx_count_distinct"})
_NOT_KEYS: Final = ("_concept_id", "vocabulary_id")


def is_record_key(name: str) -> bool:
    """A pseudonym or a row's own id: naming one person or one record."""
    name = name.lower()
    return name == PERSON or (name.endswith("_id") and not name.endswith(_NOT_KEYS))


def walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from walk(item)


def fn(node: dict[str, Any]) -> str:
    return str(node.get("function_name", "")).lower()


def output_name(item: dict[str, Any]) -> str:
    if item.get("alias"):
        return str(item["alias"]).lower()
    if item.get("class") == "COLUMN_REF":
        return str(item.get("column_names", [""])[-1]).lower()
    return ""


def relation_names(node: dict[str, Any]) -> set[str]:
    names: set[str] = set()
    for n in walk(node):
        if n.get("type") in ("BASE_TABLE", "SUBQUERY") and "sample" in n:
            names.add(str(n.get("alias") or n.get("table_name") or "").lower())
    return names - {""}


def tainted(expr: Any, person_names: set[str], relations: set[str]) -> bool:
    """Whether ``expr`` computes anything from a person or record key, other than a count
    of them. A bare relation name (a whole row as a struct) counts as one."""
    if not isinstance(expr, dict | list):
        return False
    if isinstance(expr, list):
        return any(tainted(e, person_names, relations) for e in expr)
    if expr.get("class") == "FUNCTION" and fn(expr) in COUNTS:
        return False  # how many people, not who
    if expr.get("class") == "COLUMN_REF":
        names = [str(n).lower() for n in expr.get("column_names", [])]
        last = names[-1] if names else ""
        if last in person_names or is_record_key(last):
            return True
        if len(names) == 1 and last in relations:
            return True
    return any(tainted(v, person_names, relations) for v in expr.values())


def person_names(node: dict[str, Any]) -> set[str]:
    """Every output name, at any level of the query, that carries a person or record key
    (found by following select lists, aliases, derived tables and CTEs to a fixpoint)."""
    relations = relation_names(node)
    names: set[str] = set()
    while True:
        before = len(names)
        for n in walk(node):
            for item in n.get("select_list") or [] if n.get("type") == "SELECT_NODE" else []:
                if item.get("class") == "STAR":
                    for rename in item.get("rename_list") or []:
                        names.add(str(rename.get("value", "")).lower())
                elif tainted(item, names, relations):
                    names.add(output_name(item))
        # positional renames (d(a, b), WITH w(a, b)) carry the taint of their column
        for aliases, inner in renames(node):
            star = any(i.get("class") == "STAR" for i in inner)
            for i, alias in enumerate(aliases):
                if star or (i < len(inner) and tainted(inner[i], names, relations)):
                    names.add(str(alias).lower())
        names.discard("")
        if len(names) == before:
            return names


def renames(node: dict[str, Any]) -> Iterator[tuple[list[Any], list[dict[str, Any]]]]:
    """(positional aliases, the select list they rename) of derived tables and CTEs."""
    for n in walk(node):
        if n.get("type") == "SUBQUERY" and n.get("column_name_alias"):
            inner = ((n.get("subquery") or {}).get("node") or {}).get("select_list") or []
            yield list(n["column_name_alias"]), list(inner)
        if isinstance(n.get("aliases"), list) and n["aliases"] and "query_node" in n:
            yield list(n["aliases"]), list((n.get("query_node") or {}).get("select_list") or [])
