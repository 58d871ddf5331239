"""Plain mistakes in a researcher's SQL, said clearly: where, and what they may have meant.

A syntax error gives the word the parser stopped at and its line and column; a name the
release does not have gives the closest granted names. Messages quote only the
researcher's own text and the names they may use (names are metadata, never data).
Mistakes are ``query_error`` (HTTP 400), apart from governance refusals
(``policy_violation``), so a client can tell "there is no such thing" from "you may not".

>>> position("SELECT sex\\nFORM patients", 15)
'line 2, column 5'
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from typing import Any, Final

import duckdb

from governance.errors import PolicyViolation, QueryError

WORD: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class PolicyError(PolicyViolation):
    def __init__(self, rule: str, message: str) -> None:
        super().__init__(f"{message} (rule: {rule})")
        self.rule = rule


class QueryMistake(PolicyError, QueryError):
    """A mistake, not a refusal: a syntax error or a name the release does not have.

    The message quotes only the researcher's own text (the name they wrote, where they
    wrote it) and the names they may use instead: names are metadata, never data.
    """


def position(sql: str, offset: int) -> str:
    r"""``line L, column C`` of a 0-based character offset.

    >>> position("SELECT sex\nFORM patients", 15)
    'line 2, column 5'
    """
    offset = max(0, min(offset, len(sql)))
    line = sql.count("\n", 0, offset) + 1
    column = offset - (sql.rfind("\n", 0, offset) + 1) + 1
    return f"line {line}, column {column}"


def located(sql: str, name: str) -> str | None:
    """Where the researcher wrote ``name`` (as a word), or None if they did not."""
    found = re.search(r"(?<![A-Za-z0-9_])" + re.escape(name) + r"(?![A-Za-z0-9_])", sql, re.I)
    return position(sql, found.start()) if found else None


def suggest(name: str, candidates: Iterable[str]) -> str:
    """``; did you mean 'a' or 'b'?`` for the closest candidates, or nothing.

    >>> suggest("sexx", ["sex", "person_id", "imd_decile"])
    "; did you mean 'sex'?"
    """
    close = difflib.get_close_matches(name.lower(), sorted(set(candidates)), n=3, cutoff=0.6)
    if not close:
        return ""
    return "; did you mean " + " or ".join(repr(c) for c in close) + "?"


# what DuckDB's binder and catalogue say about a name the query uses and the release
# lacks: (pattern, kind); the name is checked against the query's own text before use
_UNKNOWN: Final = (
    (re.compile(r'Referenced column "([^"]+)" not found'), "column"),
    (re.compile(r'does not have a column named "([^"]+)"'), "column"),
    (re.compile(r'Referenced table "([^"]+)" not found'), "table"),
    (re.compile(r"Table with name ([A-Za-z_][A-Za-z0-9_]*) does not exist"), "table"),
    (re.compile(r"Type with name ([A-Za-z_][A-Za-z0-9_]*) does not exist"), "type"),
    (re.compile(r"Function with name ([A-Za-z_][A-Za-z0-9_]*) does not exist"), "function"),
)


def unknown_name(
    error: duckdb.Error,
    sql: str,
    granted: dict[str, list[str]] | None,
    functions: Iterable[str] = (),
) -> QueryMistake | None:
    """A clear mistake for a name the release does not have, or None if it is not that."""
    message = str(error)
    for pattern, kind in _UNKNOWN:
        found = pattern.search(message)
        if found is None:
            continue
        name = found.group(1)
        where = located(sql, name)
        if where is None:  # not the researcher's own text: say nothing about it
            return None
        grants = granted or {}
        candidates: Iterable[str] = {
            "column": [c for cols in grants.values() for c in cols],
            "table": list(grants),
            "type": ["integer", "bigint", "double", "varchar", "date", "boolean"],
            "function": sorted(functions),
        }[kind]
        hint = suggest(name, candidates)
        return QueryMistake("unknown_name", f"there is no {kind} named {name!r} ({where}){hint}")
    return None


def syntax_error(sql: str, tree: dict[str, Any]) -> QueryMistake:
    """Where the parser stopped, and the word it stopped at (the researcher's own text)."""
    try:
        offset = int(tree.get("position", ""))
    except ValueError:
        return QueryMistake("syntax", "the query could not be parsed")
    word = WORD.match(sql, offset) if 0 <= offset < len(sql) else None
    near = f" near {word.group(0)!r}" if word else ""
    return QueryMistake("syntax", f"syntax error{near} ({position(sql, offset)})")
