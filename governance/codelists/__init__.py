"""Codelists for the study conditions, and ``codelist('name')`` in queries.

Each list is a CSV in the shape OpenCodelists downloads have (a header ``code,term``,
one code per row), one coding system per list: ``<condition>-snomed`` (SNOMED CT, for
primary-care records, the generator's and Synthea's codes) and ``<condition>-icd10``
(ICD-10, for hospital episodes). They were assembled for this hub from the codes the
generator writes (``synthetic_data/reference.py``) and the codes Synthea writes for the
same conditions, with the common synonyms a study would expect; they are not clinically
signed off: review a list before relying on it, as one would on OpenCodelists.

A query names a list as ``codelist('type2-diabetes-snomed')`` wherever a parenthesised
list of values may stand, typically ``code IN codelist('...')``; the hub replaces it with
the list's codes before the query is checked, so every mode (dummy, DP, exact) and every
rule sees plain SQL.

>>> expand("SELECT count(*) FROM conditions WHERE code IN codelist('asthma-icd10')")
"SELECT count(*) FROM conditions WHERE code IN ('J45.9', 'J46')"
"""

from __future__ import annotations

import csv
import difflib
import io
import re
from functools import cache
from importlib.resources import files
from typing import Final

from governance.errors import QueryError

SYSTEMS: Final = {"snomed": "SNOMED CT", "icd10": "ICD-10"}
_CALL: Final = re.compile(r"\bcodelist\s*\(\s*'([^']*)'\s*\)", re.IGNORECASE)
_CODE: Final = re.compile(r"[A-Za-z0-9.]+")


class UnknownCodelist(QueryError):
    """A query names a codelist the hub does not ship."""


@cache
def load() -> dict[str, list[tuple[str, str]]]:
    """Every shipped codelist: name → [(code, term)], in file order."""
    lists: dict[str, list[tuple[str, str]]] = {}
    for entry in sorted(files(__name__).iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".csv"):
            continue
        rows = list(csv.DictReader(io.StringIO(entry.read_text(encoding="utf-8"))))
        codes = [(r["code"].strip(), r["term"].strip()) for r in rows]
        if not codes or not all(_CODE.fullmatch(c) for c, _ in codes):
            raise ValueError(f"codelist {entry.name} is not a code,term CSV of plain codes")
        lists[entry.name.removesuffix(".csv")] = codes
    return lists


def system(name: str) -> str:
    """The coding system of a list, from its name's suffix.

    >>> system("depression-snomed")
    'SNOMED CT'
    """
    return SYSTEMS[name.rsplit("-", 1)[-1]]


def describe() -> dict[str, dict[str, object]]:
    """The lists for the data dictionary: system and codes with their terms."""
    return {
        name: {
            "system": system(name),
            "codes": [{"code": c, "term": t} for c, t in codes],
        }
        for name, codes in load().items()
    }


def expand(sql: str) -> str:
    """Replace each ``codelist('name')`` with the list's codes as a SQL value list."""
    lists = load()

    def one(call: re.Match[str]) -> str:
        name = call.group(1).strip().lower()
        if name not in lists:
            close = difflib.get_close_matches(name, sorted(lists), n=3, cutoff=0.5)
            hint = ("; did you mean " + " or ".join(map(repr, close)) + "?") if close else ""
            raise UnknownCodelist(
                f"there is no codelist named {name!r}{hint} (GET /v1/datasets lists them)"
            )
        return "(" + ", ".join(f"'{code}'" for code, _ in lists[name]) + ")"

    return _CALL.sub(one, sql)
