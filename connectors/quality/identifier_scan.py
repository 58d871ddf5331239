"""The release-time identifier scan: the last line of defence before publication.

Each source names its identifying fields by meaning (names, SSN, licence, passport,
address, telecom, identifiers) in a TEMP view ``stage_identifying_values(meaning,
value)``. Before a release is published, every text value of every research table and
view, and every string of the manifest, is compared with those values:

* a whole value equal (case and spacing aside) to an identifying value, or to a
  person's full name, is a leak (one plain word of a name alone, "White", is not: it is
  also an everyday word);
* so is a word of a value that equals a distinctive identifying word: one of at least
  four characters mixing letters and digits (Synthea's ``Jacinto644``, a passport
  number), or at least six characters with a digit (an SSN, a phone number, a member id).

A leak refuses the release, naming the table and column and how many values matched,
never a value. The scan runs on the staging connection, where the identifying values
live in TEMP storage only: they are never written to the release.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Final

import duckdb

from connectors.errors import IngestError

MIN_VALUE_LENGTH: Final = 3
# split words on spaces and punctuation that never sits inside an identifier
WORD_SPLIT: Final = r"[\s,;:/()\[\]{}<>|\"'!?.@=]+"
_SPLIT_SQL: Final = WORD_SPLIT.replace("'", "''")
NORMALISE: Final = "lower(regexp_replace(trim({x}), '\\s+', ' ', 'g'))"
DISTINCTIVE: Final = (
    "((length(w) >= 4 AND regexp_matches(w, '[0-9]') AND regexp_matches(w, '[a-z]')) "
    "OR (length(w) >= 6 AND regexp_matches(w, '[0-9]')))"
)


class IdentifierLeak(IngestError):
    """An identifying value of the source was found in what would be published."""


@dataclass
class ScanResult:
    values: int  # distinct identifying values looked for
    relations: int  # tables and views scanned
    columns: int  # text columns scanned
    leaks: dict[str, int] = field(default_factory=dict)  # "table.column" -> values matched

    def as_dict(self) -> dict[str, object]:
        return {
            "passed": not self.leaks,
            "identifying_values": self.values,
            "relations": self.relations,
            "text_columns": self.columns,
        }


def _norm(x: str) -> str:
    return NORMALISE.format(x=x)


def _prepare(con: duckdb.DuckDBPyConnection) -> int:
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE scan_values AS
        SELECT DISTINCT {_norm("value")} AS v, meaning FROM (
            SELECT DISTINCT value, meaning FROM stage_identifying_values
            WHERE value IS NOT NULL AND length(trim(value)) >= {MIN_VALUE_LENGTH}
        )
        """
    )
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE scan_words AS
        SELECT DISTINCT w FROM (
            SELECT unnest(regexp_split_to_array(v, '{_SPLIT_SQL}')) AS w FROM scan_values
        ) WHERE {DISTINCTIVE}
        """
    )
    # one plain word of a name ("White", "Green") is also an everyday word: it counts
    # as a whole value only within a full name, or as a distinctive word
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE scan_values AS
        SELECT DISTINCT v FROM scan_values WHERE meaning <> 'name' OR contains(v, ' ')
        """
    )
    return int(con.execute("SELECT count(*) FROM scan_values").fetchall()[0][0])


def _text_columns(con: duckdb.DuckDBPyConnection) -> dict[str, list[str]]:
    rows = con.execute(
        """
        SELECT table_name, column_name FROM duckdb_columns()
        WHERE NOT internal AND database_name = current_database() AND schema_name = 'main'
          AND data_type = 'VARCHAR'
        ORDER BY table_name, column_index
        """
    ).fetchall()
    out: dict[str, list[str]] = {}
    for table, column in rows:
        out.setdefault(str(table), []).append(str(column))
    return out


def _relations(con: duckdb.DuckDBPyConnection) -> list[str]:
    rows = con.execute(
        """SELECT table_name FROM duckdb_tables() WHERE NOT temporary
             AND database_name = current_database()
           UNION SELECT view_name FROM duckdb_views() WHERE NOT temporary AND NOT internal
             AND database_name = current_database()"""
    ).fetchall()
    return sorted(str(r[0]) for r in rows)


def _matches(con: duckdb.DuckDBPyConnection, sources: list[str]) -> dict[int, int]:
    """How many distinct values of each source hold an identifier, by source index.

    Each source is a query of one column ``x``. All are scanned in one statement: each
    source's values are de-duplicated as they are (a column of a million rows usually
    has a few hundred values), then the values of every source together, so that a
    value found in a table and again in the view over it (or in ten columns) is
    normalised, split into words and looked up once. Normalising equal values gives
    equal results, so the counts are those of scanning each column on its own.
    """
    if not sources:
        return {}
    branches = " UNION ALL ".join(
        f"SELECT DISTINCT {i} AS source, x FROM ({sql}) WHERE x IS NOT NULL"
        for i, sql in enumerate(sources)
    )
    rows = con.execute(
        f"""
        WITH raw AS MATERIALIZED ({branches}),
        cells AS MATERIALIZED (SELECT x, {_norm("x")} AS v FROM (SELECT DISTINCT x FROM raw)),
        words AS (SELECT v, unnest(regexp_split_to_array(v, '{_SPLIT_SQL}')) AS w
                  FROM (SELECT DISTINCT v FROM cells)),
        hits AS (
            SELECT v FROM (SELECT DISTINCT v FROM cells) SEMI JOIN scan_values USING (v)
            UNION SELECT v FROM words SEMI JOIN scan_words USING (w)
        )
        SELECT r.source, count(DISTINCT c.v) FROM raw r JOIN cells c USING (x)
        WHERE c.v IN (SELECT v FROM hits)
        GROUP BY r.source
        """
    ).fetchall()
    return {int(source): int(found) for source, found in rows}


def manifest_strings(manifest: Any) -> list[str]:
    """Every key and string value of a manifest."""
    out: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                out.append(str(key))
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)
        elif isinstance(node, str):
            out.append(node)

    walk(json.loads(json.dumps(manifest, default=str)))
    return out


def scan(con: duckdb.DuckDBPyConnection, *, manifest: dict[str, Any]) -> ScanResult:
    """Scan the staging database on ``con`` and the manifest; raise on any leak."""
    values = _prepare(con)
    columns = _text_columns(con)
    relations = _relations(con)
    result = ScanResult(values=values, relations=len(relations), columns=0)
    con.execute("CREATE OR REPLACE TEMP TABLE scan_manifest (x VARCHAR)")
    strings = manifest_strings(manifest)
    if strings:
        con.executemany("INSERT INTO scan_manifest VALUES (?)", [[s] for s in strings])
    named: list[str] = []
    sources: list[str] = []
    for relation in relations:
        for column in columns.get(relation, []):
            named.append(f"{relation}.{column}")
            sources.append(f'SELECT "{column}"::VARCHAR AS x FROM "{relation}"')
    result.columns = len(sources)
    named.append("the manifest")
    sources.append("SELECT x FROM scan_manifest")
    for source, found in sorted(_matches(con, sources).items()):
        if found:
            result.leaks[named[source]] = found
    con.execute("DROP TABLE scan_values; DROP TABLE scan_words; DROP TABLE scan_manifest")
    if result.leaks:
        where = ", ".join(f"{k} ({n} value{'s' if n > 1 else ''})" for k, n in result.leaks.items())
        raise IdentifierLeak(
            f"the identifier scan found identifying values of the source in {where}; "
            "nothing was published"
        )
    return result
