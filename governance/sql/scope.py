"""A project's view of a release built from feeds: only the rows its controllers approved.

The engine gives each query of such a project a fresh cursor on which these statements
have defined TEMP views that shadow the release's tables (DuckDB resolves an unqualified
name, and ``main.<name>``, in the temporary catalogue first; the views read the release
through its fully qualified catalogue name). So the SQL policy, the DP and exact
compilers and the cohort builder all run unchanged on filtered data, and no path can
read around the filter: a query may name no catalogue (``sql.policy``).

* A table whose rows carry ``source_system`` keeps the rows of approved feeds.
* ``patients`` keeps the people some approved feed holds a record of; the details one
  feed supplies (the GP registration: practice, dates, ethnicity, area, deprivation; the
  date of death) are withheld (NULL) unless that feed is approved. Birth year and month
  and sex are the linked person's, agreed across the records.
* Other person-linked tables keep the visible people's rows; the OMOP views are defined
  again over the filtered tables; ``organisations`` (reference data) is unchanged.

>>> sql = statements("release-0001", {"patients": {"person_id": "BIGINT",
...     "practice_code": "VARCHAR"}, "conditions": {"person_id": "BIGINT",
...     "source_system": "VARCHAR"}, "_person_sources": {"person_id": "BIGINT"}},
...     frozenset({"feeds:ae"}))
>>> print(sql[0])  # doctest: +NORMALIZE_WHITESPACE
CREATE TEMP VIEW conditions AS SELECT * FROM "release-0001".main.conditions
WHERE source_system IN ('feeds:ae')
"""

from __future__ import annotations

from typing import Final

from connectors.schema import OMOP_VIEWS

PERSON_SOURCES: Final = "_person_sources"
# patients' columns supplied by one feed's record, by what that feed supplies
SUPPLIED: Final = {
    "registration": (
        "practice_code", "registration_start", "registration_end", "ethnicity",
        "local_authority", "imd_decile",
    ),
    "death": ("death_date",),
}  # fmt: skip
UNFILTERED: Final = frozenset({"organisations"})


# names come from the release's own catalogue and values from the governance store,
# always quoted (identifiers and literals): no user text reaches these statements
def ident(name: str) -> str:
    """A quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def statements(
    catalog: str, catalogue: dict[str, dict[str, str]], systems: frozenset[str]
) -> list[str]:
    """The TEMP views that restrict a release to the feeds whose rows carry ``systems``."""
    if PERSON_SOURCES not in catalogue:
        raise ValueError("the release records no per-person sources")
    allowed = ", ".join(_literal(s) for s in sorted(systems)) or "NULL"
    base = f"{ident(catalog)}.main."
    out: list[str] = []
    tables = {t: c for t, c in catalogue.items() if not t.startswith("_") and t not in OMOP_VIEWS}
    for table, columns in sorted(tables.items()):
        if table in UNFILTERED or table == "patients" or "source_system" not in columns:
            continue
        out.append(
            f"CREATE TEMP VIEW {ident(table)} AS SELECT * FROM {base}{ident(table)} "  # noqa: S608
            f"WHERE source_system IN ({allowed})"
        )
    if "patients" in tables:
        withheld = [
            f"CASE WHEN s.{kind} THEN p.{ident(c)} END AS {ident(c)}"
            for kind, cols in SUPPLIED.items()
            for c in cols
            if c in tables["patients"]
        ]
        replace = f" REPLACE ({', '.join(withheld)})" if withheld else ""
        out.append(
            f"CREATE TEMP VIEW patients AS SELECT p.*{replace} "  # noqa: S608
            f"FROM {base}patients p JOIN ("
            "SELECT person_id, bool_or(supplies = 'registration') AS registration, "
            "bool_or(supplies = 'death') AS death "
            f"FROM {base}{PERSON_SOURCES} WHERE source_system IN ({allowed}) "
            "GROUP BY person_id) s ON s.person_id = p.person_id"
        )
    for table, columns in sorted(tables.items()):
        if table in UNFILTERED or table == "patients" or "source_system" in columns:
            continue
        if "person_id" in columns:
            out.append(
                f"CREATE TEMP VIEW {ident(table)} AS SELECT * FROM {base}{ident(table)} "  # noqa: S608
                "WHERE person_id IN (SELECT person_id FROM patients)"
            )
    for view, sql in OMOP_VIEWS.items():
        if view in catalogue:
            out.append(f"CREATE TEMP VIEW {ident(view)} AS {sql}")
    return out
