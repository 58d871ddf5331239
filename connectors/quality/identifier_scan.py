"""The release-time identifier scan: the last line of defence before publication.

Each source names its identifying fields by meaning (names, SSN, licence, passport,
address, telecom, identifiers, birthplace, coordinates) in a TEMP view
``stage_identifying_values(meaning, value)``. Before a release is published, every text
value of every research table and view, and every string of the manifest, is compared
with those values (all normalised: lower case, spacing collapsed):

* a whole value equal to an identifying value, or to a person's full name, is a leak
  (one plain word of a name alone, "White", is not: it is also an everyday word; nor is
  a one-word birthplace, a city's name);
* so is a word of a value that equals a distinctive identifying word: one of at least
  four characters mixing letters and digits (Synthea's ``Jacinto644``, a passport
  number), or at least six characters with a digit (an SSN, a phone number, a member id);
* so is a value that holds a multi-word identifying value as whole words: a full name
  (``Visit for Lyndon Greenholt``, also surname first: ``GREENHOLT, Lyndon``; Synthea's
  numbered names are also looked for without their numbers), a street address line (``Fall at home, 814 Padberg Street``; also
  without its flat or unit), a birthplace (``Lawrence Massachusetts US``). Words are
  split as for distinctive words, so punctuation between them does not matter;
* so is a value whose digits, in a run of digit groups joined by spaces, dashes, dots or
  brackets (``999 87 7360``, ``(555) 810-7203``), spell an identifier that is a number
  of at least nine digits (SSN, phone, NHS number, licence, member id), compared digits
  only: consecutive whole groups of the run are joined, so a number's digits never match
  from the middle of a longer number, and a decimal (``7619.0999999998``) is no run.

Each rule is a set-based join inside DuckDB (no Python per row): a phrase is looked up
by its longest word among the words of the values, then checked on word boundaries.

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
# meanings whose values are words of a name or a place: a lone word is an everyday word
PLAIN_WORD_MEANINGS: Final = ("name", "birthplace")
# meanings looked for as phrases (two words or more) inside a value, on word boundaries
PHRASE_MEANINGS: Final = ("name", "address", "birthplace")
MIN_PHRASE_LENGTH: Final = 7  # characters, spaces included: "li wu" is too short to tell
# a title and a surname ("mr white") is not a full name once Synthea's numbers are gone
NAME_TITLES: Final = ("mr", "mrs", "ms", "miss", "mx", "dr", "prof", "sir", "rev")
# the flat or unit part of an address line, dropped for a second, shorter phrase
UNIT_SQL: Final = r"\s+(apt|apartment|unit|suite|ste|flat|room)\b.*$"
# identifiers that are numbers: at least this many digits, at most this many letters
MIN_DIGITS: Final = 9
MAX_LETTERS_IN_NUMBER: Final = 2
_TOO_MANY_LETTERS: Final = r"\pL" + r"[^\pL]*\pL" * MAX_LETTERS_IN_NUMBER
NOT_NUMBERS: Final = ("name", "address", "birthplace", "coordinate")
# a word with a letter in it (replaced before digit runs are read: "s99928026", a hash)
_LETTER_WORD: Final = r"[\pL\pN_]*\pL[\pL\pN_]*"
# digit groups joined by spaces, dashes, dots or brackets
_DIGIT_RUN: Final = r"[0-9]+(?:[ .()+-]{1,3}[0-9]+)*"


class IdentifierLeak(IngestError):
    """An identifying value of the source was found in what would be published."""


@dataclass
class ScanResult:
    values: int  # distinct identifying values looked for
    relations: int  # tables and views scanned
    columns: int  # text columns scanned
    leaks: dict[str, int] = field(default_factory=dict)  # "table.column" -> values matched
    phrases: int = 0  # multi-word values looked for inside text
    numbers: int = 0  # identifiers looked for by their digits

    def as_dict(self) -> dict[str, object]:
        return {
            "passed": not self.leaks,
            "identifying_values": self.values,
            "identifying_phrases": self.phrases,
            "identifying_numbers": self.numbers,
            "relations": self.relations,
            "text_columns": self.columns,
        }


def _norm(x: str) -> str:
    return NORMALISE.format(x=x)


def _words(x: str) -> str:
    """SQL: a normalised value's words joined by single spaces (how phrases are kept);
    most values (a name, an address line) have nothing but letters, digits and spaces."""
    return (
        f"CASE WHEN regexp_matches({x}, '[^ \\pL\\pN]') "
        f"THEN trim(regexp_replace({x}, '{_SPLIT_SQL}', ' ', 'g')) ELSE {x} END"
    )


def _listed(values: tuple[str, ...]) -> str:
    return ", ".join(f"'{v}'" for v in values)


def _prepare(con: duckdb.DuckDBPyConnection) -> tuple[int, int, int, int]:
    """TEMP tables of what to look for; returns how many values, phrases and numbers
    are looked for, and the most digits a number has."""
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE scan_all AS
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
            SELECT unnest(regexp_split_to_array(v, '{_SPLIT_SQL}')) AS w FROM scan_all
        ) WHERE {DISTINCTIVE}
        """
    )
    # one plain word of a name ("White", "Green") is also an everyday word, and one word
    # of a birthplace a city's name: they count as a whole value only within a full name
    # or place, or as a distinctive word
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE scan_values AS
        SELECT DISTINCT v FROM scan_all
        WHERE meaning NOT IN ({_listed(PLAIN_WORD_MEANINGS)}) OR contains(v, ' ')
        """
    )
    # (a) multi-word values, found inside a value as whole words; each phrase is looked
    # up by one of its words (its first of four characters or more not starting with a
    # digit, else its first), then checked on word boundaries
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE scan_phrases AS
        WITH base AS (  -- values of several words as written ("O'Neill" is one word)
            SELECT meaning, {_words("v")} AS p FROM scan_all
            WHERE meaning IN ({_listed(PHRASE_MEANINGS)}) AND contains(v, ' ')
            UNION ALL
            SELECT meaning, {_words(f"regexp_replace(v, '{UNIT_SQL}', '')")} FROM scan_all
            WHERE meaning = 'address' AND contains(v, ' ') AND regexp_matches(v, '{UNIT_SQL}')
        ), variants AS (  -- Synthea numbers its people's names (Lyndon118): also without
            SELECT meaning, unnest(CASE WHEN meaning = 'name' AND regexp_matches(p, '[^0-9 ][0-9]')
                THEN [p, regexp_replace(p, '([^0-9 ])[0-9]+( |$)', '\\1\\2', 'g')]
                ELSE [p] END) AS p
            FROM base
        ), turned AS (  -- a name written surname first ("WEST, Alfred"): family given
            SELECT meaning, p FROM variants
            UNION ALL
            SELECT meaning, string_split(p, ' ')[-1] || ' ' || string_split(p, ' ')[1]
            FROM variants WHERE meaning = 'name' AND contains(p, ' ')
              AND NOT regexp_matches(p, '^({"|".join(NAME_TITLES)}) ')
        )
        SELECT p, CASE WHEN length(split_part(p, ' ', 1)) >= 4 AND NOT left(p, 1) BETWEEN '0' AND '9'
                       THEN split_part(p, ' ', 1)
                       ELSE coalesce(nullif(regexp_extract(p, '(?:^| )([^ 0-9][^ ]{{3,}})', 1), ''),
                                     split_part(p, ' ', 1)) END AS anchor
        FROM (SELECT DISTINCT p FROM turned
              WHERE contains(p, ' ') AND length(p) >= {MIN_PHRASE_LENGTH}
                AND NOT (meaning = 'name'
                         AND regexp_full_match(p, '({"|".join(NAME_TITLES)}) [^ ]+')))
        """
    )
    # (b) identifiers that are numbers, compared digits only
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE scan_digits AS
        SELECT DISTINCT d FROM (
            SELECT CASE WHEN regexp_full_match(v, '[0-9]+') THEN v
                        WHEN NOT regexp_matches(v, '{_TOO_MANY_LETTERS}')
                            THEN regexp_replace(v, '[^0-9]+', '', 'g') END AS d
            FROM scan_all WHERE meaning NOT IN ({_listed(NOT_NUMBERS)})
        ) WHERE length(d) >= {MIN_DIGITS}
        """
    )
    counts = con.execute(
        """SELECT (SELECT count(*) FROM scan_values), (SELECT count(*) FROM scan_phrases),
                  (SELECT count(*) FROM scan_digits),
                  (SELECT coalesce(max(length(d)), 0) FROM scan_digits)"""
    ).fetchall()[0]
    return int(counts[0]), int(counts[1]), int(counts[2]), int(counts[3])


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


def _matches(
    con: duckdb.DuckDBPyConnection, sources: list[str], *, phrases: bool, max_digits: int
) -> dict[int, int]:
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
    found = [
        "SELECT v FROM vals SEMI JOIN scan_values USING (v)",
        "SELECT v FROM words SEMI JOIN scan_words USING (w)",
    ]
    if phrases:
        # a value holding a phrase holds its longest word: only those values are checked
        found.append(
            f"""SELECT v FROM (
                    SELECT DISTINCT w.v, p.p FROM words w JOIN scan_phrases p ON p.anchor = w.w
                ) WHERE contains(' ' || {_words("v")} || ' ', ' ' || p || ' ')"""
        )
    if max_digits:
        # digit runs (groups joined by spaces, dashes, dots, brackets) of the values with
        # enough digits; every join of consecutive whole groups is looked up
        found.append(
            f"""SELECT v FROM (
                    SELECT v, unnest(flatten(list_transform(range(1, len(g) + 1),
                        lambda i: list_transform(range(i, least(len(g), i + {max_digits - 1}) + 1),
                            lambda j: array_to_string(g[i:j], ''))))) AS d
                    FROM (
                        SELECT v, regexp_split_to_array(run, '[^0-9]+') AS g FROM (
                            SELECT v, unnest(regexp_extract_all(
                                regexp_replace(v, '{_LETTER_WORD}', '#', 'g'), '{_DIGIT_RUN}'))
                                AS run
                            FROM vals
                            WHERE length(regexp_replace(v, '[^0-9]', '', 'g')) >= {MIN_DIGITS}
                        )
                        WHERE length(regexp_replace(run, '[^0-9]', '', 'g')) >= {MIN_DIGITS}
                          AND NOT regexp_full_match(run, '[0-9]+\\.[0-9]+')
                    )
                ) SEMI JOIN scan_digits USING (d)
                WHERE length(d) BETWEEN {MIN_DIGITS} AND {max_digits}"""
        )
    rows = con.execute(
        f"""
        WITH raw AS MATERIALIZED ({branches}),
        cells AS MATERIALIZED (SELECT x, {_norm("x")} AS v FROM (SELECT DISTINCT x FROM raw)),
        vals AS MATERIALIZED (SELECT DISTINCT v FROM cells),
        words AS MATERIALIZED (
            SELECT DISTINCT v, w FROM (
                SELECT v, unnest(regexp_split_to_array(v, '{_SPLIT_SQL}')) AS w FROM vals
            )
        ),
        hits AS ({" UNION ".join(found)})
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
    values, phrases, numbers, max_digits = _prepare(con)
    columns = _text_columns(con)
    relations = _relations(con)
    result = ScanResult(
        values=values, relations=len(relations), columns=0, phrases=phrases, numbers=numbers
    )
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
    matched = _matches(con, sources, phrases=bool(phrases), max_digits=max_digits)
    for source, found in sorted(matched.items()):
        if found:
            result.leaks[named[source]] = found
    for temp in ("scan_all", "scan_values", "scan_words", "scan_phrases", "scan_digits",
                 "scan_manifest"):  # fmt: skip
        con.execute(f"DROP TABLE {temp}")
    if result.leaks:
        where = ", ".join(f"{k} ({n} value{'s' if n > 1 else ''})" for k, n in result.leaks.items())
        raise IdentifierLeak(
            f"the identifier scan found identifying values of the source in {where}; "
            "nothing was published"
        )
    return result
