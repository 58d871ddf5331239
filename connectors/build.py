"""Build a release database from a connector's staging views.

A connector defines TEMP views (never persisted) over its source files:

* ``stage_patients``: ``source_patient_id, nhs_number, birth_date, sex, ethnicity,
  local_authority, imd_decile, practice_code, registration_start, registration_end,
  death_date, identifiers`` (JSON of the direct identifiers, for the vault),
  ``bad_reason, source_file, source_row``;
* ``stage_<event table>`` for each table of ``schema.EVENT_TABLES`` it carries: ``id``
  (BIGINT), ``source_id``, ``source_patient_id``, the table's columns, ``bad_reason``,
  ``source_file``, ``source_row``;
* optionally ``stage_organisations`` and ``stage_extra_<name>`` (source-specific tables
  linked to a person by ``source_patient_id``).

The build pseudonymises people inside DuckDB (keyed HMAC bound as query parameters,
nothing key-derived is stored), sends rows that break basic integrity to
``_quarantine`` with a reason (never their content), drops duplicate keys, writes the
research tables and OMOP views, and counts rows in, published and quarantined per table.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

import duckdb
import pyarrow as pa
from anyascii import anyascii
from duckdb.sqltypes import VARCHAR

from connectors import pseudonym, schema, staging
from connectors.errors import IngestError
from connectors.quality import reference

Progress = Callable[[str], None]
REDACTED = "[removed: identifying text]"
# codes whose value is an identity field whatever it says (LOINC: address, phone, email)
IDENTITY_CODES = ("56799-0", "56798-2", "42077-1")


@dataclass
class TableCounts:
    rows_in: int = 0
    published: int = 0
    quarantined: dict[str, int] = field(default_factory=dict)
    redacted: int = 0  # published rows whose free text was removed
    rare_text: dict[str, int] = field(default_factory=dict)  # column -> cells emptied

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "rows_in": self.rows_in,
            "published": self.published,
            "quarantined": dict(sorted(self.quarantined.items())),
        }
        if self.redacted:
            out["redacted_free_text"] = self.redacted
        if self.rare_text:
            out["rare_text_removed"] = dict(sorted(self.rare_text.items()))
        return out


# the NHS number's weighted digit sum: digit i (1-based) times 11 - i, for i = 1..9
_NHS_WEIGHTED_SUM = " + ".join(f"(ord(n[{i + 1}]) - 48) * {10 - i}" for i in range(9))
MACROS = r"""
CREATE OR REPLACE TEMP MACRO hub_date(x) AS (
    CASE
        WHEN x IS NULL OR trim(x) = '' THEN NULL
        -- a date with a time: the whole timestamp must be valid (no T25:99), the date is
        -- the one written (local to the source)
        WHEN length(trim(x)) > 10 THEN CASE WHEN try_cast(trim(x) AS TIMESTAMP) IS NOT NULL
            THEN try_strptime(left(trim(x), 10), '%Y-%m-%d')::DATE END
        WHEN length(trim(x)) = 10 THEN try_strptime(trim(x), '%Y-%m-%d')::DATE
        WHEN length(trim(x)) = 7 THEN try_strptime(trim(x) || '-01', '%Y-%m-%d')::DATE
        WHEN length(trim(x)) = 4 THEN try_strptime(trim(x) || '-01-01', '%Y-%m-%d')::DATE
    END
);
CREATE OR REPLACE TEMP MACRO hub_bad_date(x) AS (
    x IS NOT NULL AND trim(x) <> '' AND hub_date(x) IS NULL
);
CREATE OR REPLACE TEMP MACRO hub_bad_number(x) AS (
    x IS NOT NULL AND trim(x) <> '' AND try_cast(x AS DOUBLE) IS NULL
);
CREATE OR REPLACE TEMP MACRO hub_blank(x) AS (nullif(trim(x), ''));
-- an event's (or a source record's) published id: a keyed hash of its source id. Until
-- the build installs the hub's id key (``install_id_key``) any use of it fails: an
-- unkeyed hash would let whoever holds the export map every published id back to it
CREATE OR REPLACE TEMP MACRO hub_id(x) AS (
    CASE WHEN x IS NULL THEN NULL
         ELSE error('hub_id: the event id key is not installed (build.install_id_key)') END
    ::BIGINT
);
-- the modulus 11 check, digit by digit through ord(): no cast, so that no string (a
-- letter, a short value) can raise instead of being refused; DuckDB does not promise
-- to skip the sum when the pattern test is false
CREATE OR REPLACE TEMP MACRO hub_nhs_valid(n) AS (
    regexp_full_match(n, '[0-9]{10}')
    AND (11 - ((NHS_WEIGHTED_SUM) % 11)) % 11 = ord(n[10]) - 48
);
CREATE OR REPLACE TEMP MACRO hub_code_system(uri) AS (
    CASE
        WHEN uri IS NULL THEN NULL
        WHEN uri IN ('http://snomed.info/sct', 'SNOMED-CT', 'SNOMED CT', 'SNOMED') THEN 'SNOMED CT'
        WHEN uri IN ('http://loinc.org', 'LOINC') THEN 'LOINC'
        WHEN uri IN ('http://www.nlm.nih.gov/research/umls/rxnorm', 'RxNorm', 'RXNORM')
            THEN 'RxNorm'
        WHEN uri IN ('http://hl7.org/fhir/sid/cvx', 'CVX') THEN 'CVX'
        WHEN uri IN ('http://hl7.org/fhir/sid/icd-10', 'ICD-10', 'ICD10') THEN 'ICD-10'
        WHEN uri IN ('http://hl7.org/fhir/sid/icd-10-cm', 'ICD-10-CM') THEN 'ICD-10-CM'
        WHEN uri IN ('https://bnf.nice.org.uk', 'BNF') THEN 'BNF'
        WHEN uri IN ('https://dmd.nhs.uk', 'dm+d', 'DMD') THEN 'dm+d'
        ELSE uri
    END
);
""".replace("NHS_WEIGHTED_SUM", _NHS_WEIGHTED_SUM)


# Free text is published only when at least MIN_TEXT_PEOPLE people share it. A
# description, a text value or an encounter type that one or two people have can only
# be about them: a name however written ("WEST, Alfred", "A. West"), a street, a birth
# date, a phone number with any separators. Looking for each form of each identifier
# (``identifier_scan``) cannot be complete; counting who shares a text is, whatever it
# says. Free text is a column named for it (a description, a text value, a note, a
# name, a category, an encounter type); codes, dates and amounts kept as text by a
# source's extra tables are not (the identifier scan looks at every text column).
MIN_TEXT_PEOPLE: Final = 3
_FREE_TEXT_WORDS: Final = ("description", "text", "note", "comment", "name")
_FREE_TEXT_COLUMNS: Final = frozenset({"encounter_type", "category"})


def is_free_text(column: str) -> bool:
    """Whether a column of a person's table holds free text (by its name)."""
    name = column.lower()
    return name in _FREE_TEXT_COLUMNS or any(w in name for w in _FREE_TEXT_WORDS)


# a person's name words, from the identifiers each connector vaults: Synthea's columns,
# the native and feeds formats' given and family names, and FHIR's HumanName whatever its
# shape (a list or one object; given as a list or a string; only ``text``), read as the
# JSON text of the whole name with its keys and its non-name fields (use, prefix, suffix,
# period, extension URLs) taken out, the names of a FHIR patient's contacts (next of kin,
# carers), and the mother's maiden name extension. Words are lower case without accents
# ("Müller" is "muller"), also as transliterated ("mueller") and with apostrophes and
# hyphens joined ("obrien"); one Latin letter is an initial, not a word ("李" is a word)
_NAME_WORDS_SQL: Final = r"""
    CREATE OR REPLACE TEMP TABLE person_name_words AS
    WITH n AS (
        SELECT person_id, lower(concat_ws(' ',
            array_to_string(json_extract_string(identifiers, ['$.first', '$.middle', '$.last',
                '$.maiden', '$.given_name', '$.family_name']), ' '),
            CASE WHEN contains(identifiers, '"name"') THEN regexp_replace(regexp_replace(
                concat_ws(' ', json_extract(identifiers, '$.name')::VARCHAR,
                          json_extract(identifiers, '$.contact[*].name')::VARCHAR),
                '"(use|url|system|prefix|suffix|period|start|end)"\s*:\s*'
                    || '("(\\.|[^"\\])*"|\[[^\]]*\]|\{[^}]*\})', ' ', 'g'),
                '"(\\.|[^"\\])*"\s*:', ' ', 'g') END,
            CASE WHEN contains(lower(identifiers), 'maiden') THEN array_to_string(
                json_extract_string(identifiers, '$.extension[*].valueString'), ' ') END
        )) AS names
        FROM stage_people WHERE reason IS NULL AND identifiers IS NOT NULL),
    forms AS (
        SELECT person_id, concat_ws(' ', strip_accents(names),
            CASE WHEN regexp_matches(names, '[üöäß]') THEN strip_accents(replace(replace(
                replace(replace(names, 'ü', 'ue'), 'ö', 'oe'), 'ä', 'ae'), 'ß', 'ss')) END,
            CASE WHEN regexp_matches(names, '[''’‘-]')
                 THEN regexp_replace(strip_accents(names), '[''’‘-]', '', 'g') END) AS names
        FROM n)
    SELECT person_id, w AS word  -- a word twice is harmless: people are counted DISTINCT
    FROM (SELECT person_id, concat_ws(' ', names, CASE WHEN regexp_matches(names, '[^ -~]')
                                             THEN lower(hub_ascii(names)) END) AS names
          FROM forms), unnest(string_split_regex(names, '[^\pL]+')) AS u(w)
    WHERE length(w) >= 2 OR (length(w) = 1 AND NOT regexp_full_match(w, '[a-z]'))
"""


# a text held by so few people that any one holder's name in it is about them (a
# household of several surnames: "Home visit, Schmitt household" on Berta Schmitt and
# her children, the Webers)
FEW_HOLDERS: Final = 10
# a text that names most of its holders is about a family or a household: one held by
# this many people or more is not (and counting its holders' names is the rule's cost)
NAME_RULE_HOLDERS: Final = 1000


def _install_ascii(con: duckdb.DuckDBPyConnection) -> None:
    """``hub_ascii(text)``: a name in any script in Latin letters (anyascii: "李" is
    "Li", "Иванова" is "Ivanova"), so that a text writing it in another script still
    names its holders ("Home visit, Li family" on the 李s, a red-team find)."""
    with contextlib.suppress(duckdb.NotImplementedException):  # installed here already
        con.create_function("hub_ascii", anyascii, [VARCHAR], VARCHAR, side_effects=False)


def _name_texts(table: str, column: str, held: str | None = None) -> str:
    """SQL: the texts of ``table.column`` that name the people who hold them: a word of
    the text is a name word of more than half of its holders ("Home visit, Schmitt
    family" on three Schmitts' records). A word of a name that most holders do not
    carry ("White", "Young", a clinician's name) is an everyday word there. Words are
    compared without case or accents, and a plural or possessive is its name ("the
    Schmitts", "Müller's" for Muller). ``held``: SQL of (person_id, t), who holds each
    text (by default the table's own people)."""
    # the filter inside the DISTINCT: outside it, DuckDB made the pairs of the whole table
    own_held = f"""SELECT DISTINCT person_id, "{column}" AS t FROM "{table}"
                   WHERE "{column}" IN (SELECT t FROM cand)"""
    held_cand = f"SELECT * FROM ({held}) WHERE t IN (SELECT t FROM cand)"
    return rf"""
        WITH cand AS (
            SELECT DISTINCT t.t, v.w FROM text_holders t,
                   unnest(string_split_regex(strip_accents(lower(t.t)), '[^\pL]+')) AS u(w),
                   unnest([u.w,
                           CASE WHEN ends_with(u.w, 's') THEN left(u.w, length(u.w) - 1) END,
                           CASE WHEN ends_with(u.w, 'es') THEN left(u.w, length(u.w) - 2) END])
                       AS v(w)
            WHERE v.w IN (SELECT word FROM person_name_words) AND t.n < {NAME_RULE_HOLDERS}),
        held AS ({own_held if held is None else held_cand}),
        named AS (SELECT c.t, c.w, count(DISTINCT h.person_id) AS k FROM cand c
                  JOIN held h USING (t)
                  JOIN person_name_words p ON p.person_id = h.person_id AND p.word = c.w
                  GROUP BY ALL)
        SELECT DISTINCT named.t FROM named JOIN text_holders h ON h.t = named.t
        WHERE 2 * named.k > h.n OR h.n < {FEW_HOLDERS}"""


# Units are published as the source writes them (UCUM codes, or a display when there is
# none), so a unit is text like any other: one that neither the reference data knows nor
# at least MIN_TEXT_PEOPLE people share, or that has no unit's form (spaces, more than 20
# characters), is emptied ("/min (Mr West's watch)"). Every connector's units pass here.
KNOWN_UNITS: Final = frozenset(
    {m.unit for m in reference.MEASURES}
    | {u for pair in reference.CONVERSIONS for u in pair}
    | set(reference.UNIT_RANGES)
)
UNIT_FORM: Final = r"[A-Za-z0-9%/.*^_{}\[\]()-]{1,20}"

# Tables that belong to no person (organisations, payers, a FHIR export's locations and
# practitioner roles) carry text the source wrote: an organisation named "West, A
# (self-pay)", a location "Residence of Mr A. West". Their first column is the row's key;
# its text is kept only when at least MIN_TEXT_PEOPLE people's records refer to the row
# (by a column of the same name, or one of these); a table no person's record refers
# to keeps none (three home-visit locations "Residence of Mr A. West" share their text).
_REFERRED_BY: Final = {
    "organisation_code": ("organisation_code", "practice_code"),
    "payer_id": ("payer_id", "primary_payer_id", "secondary_payer_id"),
}

# Every text column of a person's table is text, whatever its name, except values whose
# form says they are not: a code's form (no spaces: "44054006", "QALY", "BILLED",
# "http://loinc.org"), a known unit, a short number (an amount, a quantity). "Smith
# family home visit" as a code, "Guardian: Mr L. Greenholt" as a payer's ownership were
# published when only columns named for text were counted. (A code of a known system
# in the wrong form is the quality gate's to refuse.) Values of a code's form that hold a
# name word still face the rules on names.
_NUMBER: Final = r"-?[0-9]{1,9}(\.[0-9]+)?"
_CODE_FORM: Final = r"[A-Za-z0-9][A-Za-z0-9._:/|^#=?&%+-]{0,79}"
# hub-written or keyed by construction: a source system's label, organisation codes
# (an ODS code in its form from an ODS identifier, else the hub's keyed id)
_NOT_TEXT: Final = frozenset({"source_system", "organisation_code", "practice_code"})
# a person's sex as the connectors write it; any other value is emptied
_SEXES: Final = ("M", "F", "U", "O", "I", "X", "male", "female", "other", "unknown")
# what a patient's local authority and ethnicity look like: words (an Australian LGA's
# "Glenelg (S)" too), no digits, commas or colons ("Westfield House, Acacia Ave"; a
# name in either, "Not stated (Mr West declined)", is the title rule's)
_PLACE_FORMS: Final = {
    "local_authority": r"[\pL][\pL .'&()-]{0,59}",
    "ethnicity": r"[\pL][\pL .'&()/-]{0,79}",
}
# words that name a person when a name follows ("Mrs B. Schmitt", "exposed to Mr A.
# West"), whoever holds the text: a title, or an initial (with or without its dot)
_TITLES: Final = (
    r"(\b(mr|mrs|ms|miss|mx|dr|prof|master|sir|dame|lady|lord|rev|herr|frau|fr|mme|mlle"
    r"|m|sr|sra|srta|dona|don|sig|sigra|dott|heer|mevr)(\.\s*|\s+)|\b[a-z](\.\s*|\s+))"
)


def _structured(column: str) -> str:
    """SQL over ``v`` (a value): true when the value's form says it is no text."""
    number = f"regexp_full_match(v, '{_NUMBER}')"
    if column == "unit":
        return f"(v IN {_sql_list(sorted(KNOWN_UNITS))} OR {number})"
    if is_free_text(column):
        return "false"
    form = f"regexp_full_match(v, {_sql_str(_CODE_FORM)})"
    if column == "code_system":  # the hub's names of known systems hold a space
        return f"(v IN {_sql_list(sorted(reference.CODE_FORMATS))} OR {form})"
    return f"({form} OR {number})"


def _titled_texts() -> str:
    """SQL: the texts of ``text_holders`` that name someone: a title (Mr, Mrs, Dr, Prof,
    Herr, Frau, Mme, Sr ...) or an initial, dotted or not, before a word that is any
    person's name word ("household of Mrs B. Schmitt" on her children, named Weber;
    "Mr A West", "Herr Schmitt", "Mr.West"); such a word before a comma or a space and an
    initial ("Schmitt, B (self-pay)", "WEST A"); or two name words of one person side by
    side, in either order ("west_alfred", "Alfred West"). A word is compared as name
    words are made: without case, accents, apostrophes (straight or curly), a possessive
    or a plural's s, and with its hyphens joined."""
    word = r"[\pL''’‘-]+"  # (in SQL: the quote doubled)
    return rf"""
        WITH w AS (
            SELECT t, list_concat(
                regexp_extract_all(x, '{_TITLES}((\b[a-z](\.\s*|\s+))*)({word})', 8),
                regexp_extract_all(x, '({word}),?\s+[a-z]\b\.?', 1),
                regexp_extract_all(x, '({word}),\s*[a-z]\b', 1)) AS found,
                string_split_regex(x, '[^\pL]+') AS words
            FROM (SELECT t, strip_accents(lower(t)) AS x FROM text_holders)),
        titled AS (
            SELECT DISTINCT t FROM (SELECT t, unnest(found) AS f FROM w),
                 unnest([regexp_replace(regexp_replace(f, '[''’‘]s$', ''), '[''’‘-]', '', 'g'),
                         regexp_replace(regexp_replace(f, '[''’‘]s$', ''), '[''’‘-]s?$', '')])
                     AS u(v)
            WHERE v IN (SELECT word FROM person_name_words)),
        pairs AS (
            SELECT DISTINCT t, words[i] AS a, words[i + 1] AS b
            FROM w, range(1, len(words)) AS r(i)
            WHERE length(words[i]) >= 2 AND length(words[i + 1]) >= 2),
        paired AS (
            SELECT DISTINCT p.t FROM pairs p
            JOIN person_name_words x ON x.word = p.a
            JOIN person_name_words y ON y.word = p.b AND y.person_id = x.person_id
            WHERE p.a IN (SELECT word FROM person_name_words)
              AND p.b IN (SELECT word FROM person_name_words))
        SELECT t FROM titled UNION SELECT t FROM paired"""


def remove_rare_text(con: duckdb.DuckDBPyConnection, counts: dict[str, TableCounts]) -> None:
    """Empty every text cell of a person's table whose text fewer than
    ``MIN_TEXT_PEOPLE`` people share, or that names the people who hold them (a family's
    surname; ``_name_texts``) or anyone behind a title or an initial (``_titled_texts``),
    counted per table and column. Text is any value whose form does not say otherwise
    (``_structured``: codes, known units, numbers). In tables that belong to no person,
    text too few people's records refer to (``_REFERRED_BY``); in ``patients``, whose
    ethnicity and local authority are core fields kept for everyone, text naming a person,
    a local authority with digits (a house and street), and a sex the connectors do not
    write."""
    _install_ascii(con)
    con.execute(_NAME_WORDS_SQL)  # from ``build_people``'s stage_people, run before
    rows = con.execute(
        """SELECT table_name, list(column_name ORDER BY column_index),
                  list(column_name ORDER BY column_index) FILTER (WHERE data_type = 'VARCHAR'),
                  bool_or(column_name = 'person_id')
           FROM duckdb_columns() WHERE NOT internal AND database_name = current_database()
             AND schema_name = 'main' AND table_name IN (SELECT table_name FROM duckdb_tables()
                 WHERE database_name = current_database() AND NOT temporary)
           GROUP BY table_name ORDER BY table_name"""
    ).fetchall()
    personal = {table: all_columns for table, all_columns, _, is_personal in rows if is_personal}
    for table, all_columns, columns, is_personal in rows:
        if table.startswith("_"):
            continue
        referred = False
        if not is_personal:
            referred = _referring_people(con, table, all_columns[0], personal)
        for column in columns or []:
            if column in _NOT_TEXT:
                continue
            if table == "patients":
                _patient_text(con, counts, column)
            elif is_personal:
                _person_text(con, counts, table, column)
            elif column != all_columns[0]:
                _reference_text(con, counts, table, all_columns[0], column, referred)


def _candidates(con: duckdb.DuckDBPyConnection, table: str, column: str) -> bool:
    """``text_values(v, free)``: the distinct values of a column that are text (``free``:
    not ``_structured``) or that hold a person's name word; whether there are any (most
    columns of generated data: none, so the column is read once, by value)."""
    con.execute(
        rf"""CREATE OR REPLACE TEMP TABLE text_values AS
            WITH col AS (SELECT DISTINCT "{column}" AS v FROM "{table}"
                         WHERE "{column}" IS NOT NULL AND "{column}" <> $redacted),
            typed AS (SELECT v, NOT {_structured(column)} AS free FROM col)
            SELECT v, free FROM typed WHERE free
            UNION
            SELECT DISTINCT v, false FROM typed,
                   unnest(string_split_regex(strip_accents(lower(v)), '[^\pL]+')) AS u(w)
            WHERE NOT free AND w IN (SELECT word FROM person_name_words)""",
        {"redacted": REDACTED},
    )
    return bool(_count(con, "SELECT count(*) FROM text_values"))


def _person_text(
    con: duckdb.DuckDBPyConnection, counts: dict[str, TableCounts], table: str, column: str
) -> None:
    if _structured(column) == "false":  # a column of free text: every value is text
        holders = f"""CREATE OR REPLACE TEMP TABLE text_holders AS
                SELECT "{column}" AS t, count(DISTINCT person_id) AS n FROM "{table}"
                WHERE "{column}" IS NOT NULL AND "{column}" <> $redacted GROUP BY 1"""
        con.execute(holders, {"redacted": REDACTED})
        if _normalise(con, table, column, "SELECT t AS v FROM text_holders"):
            con.execute(holders, {"redacted": REDACTED})
        con.execute(
            "CREATE OR REPLACE TEMP TABLE text_values AS SELECT t AS v, true AS free "
            "FROM text_holders"
        )
    else:
        if not _candidates(con, table, column):
            return
        if _normalise(con, table, column, "SELECT v FROM text_values") and not _candidates(
            con, table, column
        ):
            return
        con.execute(
            f"""CREATE OR REPLACE TEMP TABLE text_holders AS
                SELECT "{column}" AS t, count(DISTINCT person_id) AS n FROM "{table}"
                WHERE "{column}" IN (SELECT v FROM text_values) GROUP BY 1"""
        )
    rare = f"n < {MIN_TEXT_PEOPLE}"
    if column == "unit":
        rare += f" OR NOT regexp_full_match(t, {_sql_str(UNIT_FORM)})"
    removed = (
        f"SELECT t FROM text_holders WHERE ({rare}) "
        "AND t IN (SELECT v FROM text_values WHERE free) "
        f"UNION SELECT t FROM ({_name_texts(table, column)}) "
        f"UNION SELECT t FROM ({_titled_texts()})"
    )
    _empty(con, counts, table, column, removed)


def _patient_text(
    con: duckdb.DuckDBPyConnection, counts: dict[str, TableCounts], column: str
) -> None:
    holders = f"""CREATE OR REPLACE TEMP TABLE text_holders AS
            SELECT "{column}" AS t, count(*) AS n FROM patients
            WHERE "{column}" IS NOT NULL GROUP BY 1"""
    con.execute(holders)
    if _normalise(con, "patients", column, "SELECT t AS v FROM text_holders"):
        con.execute(holders)
    odd = "false"
    if column == "sex":
        odd = f"t NOT IN {_sql_list(list(_SEXES))}"
    elif column in _PLACE_FORMS:  # a place's or a category's name, not an address or a note
        odd = f"NOT regexp_full_match(t, {_sql_str(_PLACE_FORMS[column])})"
    removed = (
        f"SELECT t FROM text_holders WHERE {odd} "
        f"UNION SELECT t FROM ({_name_texts('patients', column)}) "
        f"UNION SELECT t FROM ({_titled_texts()})"
    )
    _empty(con, counts, "patients", column, removed)


def _reference_text(
    con: duckdb.DuckDBPyConnection,
    counts: dict[str, TableCounts],
    table: str,
    key: str,
    column: str,
    referred: bool,
) -> None:
    """A table of no person's text, with ``referring`` made for it if ``referred``."""
    if not _candidates(con, table, column):
        return
    if _normalise(con, table, column, "SELECT v FROM text_values") and not _candidates(
        con, table, column
    ):
        return
    named = ""
    if referred:
        held = f"""SELECT DISTINCT p.person_id, r."{column}" AS t
                   FROM "{table}" r JOIN referring p ON p.k = r."{key}"
                   WHERE r."{column}" IN (SELECT v FROM text_values)"""
        holders = f"""SELECT v AS t, count(DISTINCT h.person_id) AS n
                      FROM (SELECT DISTINCT v FROM text_values) LEFT JOIN ({held}) h ON h.t = v
                      GROUP BY 1"""
        # an organisation named for the household that uses it ("Schmitt, B (self-pay)")
        named = f"UNION SELECT t FROM ({_name_texts(table, column, held)})"
    else:  # no person's record refers to the table: its text has no holders
        holders = "SELECT DISTINCT v AS t, 0 AS n FROM text_values"
    con.execute(f"CREATE OR REPLACE TEMP TABLE text_holders AS {holders}")
    removed = (
        f"SELECT t FROM text_holders WHERE n < {MIN_TEXT_PEOPLE} "
        f"AND t IN (SELECT v FROM text_values WHERE free) {named} "
        f"UNION SELECT t FROM ({_titled_texts()})"
    )
    _empty(con, counts, table, column, removed)


def _referring_people(
    con: duckdb.DuckDBPyConnection, table: str, key: str, personal: dict[str, list[str]]
) -> bool:
    """``referring(k, person_id)``: each person whose records name a row of ``table``
    (by ``_REFERRED_BY``), made once per table; whether any person's table refers to it."""
    names = _REFERRED_BY.get(key, (key,))
    people = [
        f'SELECT "{c}" AS k, person_id FROM "{t}" WHERE "{c}" IS NOT NULL'
        for t, cols in sorted(personal.items())
        for c in cols
        if c in names
    ]
    if not people:
        return False
    con.execute(
        "CREATE OR REPLACE TEMP TABLE referring AS SELECT DISTINCT k, person_id FROM ("
        + " UNION ALL ".join(people)
        + ")"
    )
    return True


# What normalising a text changes: spaces other than ASCII's, invisible format
# characters (zero-width space and joiner, soft hyphen, word joiner, BOM) and fullwidth
# forms. "Mr\u00a0West", "We\u200bst" and "Ｗｅｓｔ" escaped every rule on names (a
# red-team find): texts holding them are published normalised, before any rule looks.
_ODD_SPACES: Final = r"\x{00A0}\x{1680}\x{2000}-\x{200A}\x{2028}\x{2029}\x{202F}\x{205F}\x{3000}"
_INVISIBLE: Final = r"\x{00AD}\x{200B}-\x{200F}\x{202A}-\x{202E}\x{2060}-\x{2064}\x{FEFF}"
_FULLWIDTH: Final = "".join(chr(c) for c in range(0xFF01, 0xFF5F))
_ASCII: Final = "".join(chr(c) for c in range(0x21, 0x7F))
# what ``_normalised`` changes, as one character class
_ODD_CHARACTERS: Final = f"[{_ODD_SPACES}{_INVISIBLE}\\x{{FF01}}-\\x{{FF5E}}]"


def _normalised(value: str) -> str:
    """SQL: ``value`` with odd spaces as spaces, invisible characters dropped and
    fullwidth forms as ASCII."""
    return (
        f"translate(regexp_replace(regexp_replace({value}, '[{_INVISIBLE}]', '', 'g'), "
        f"'[{_ODD_SPACES}]', ' ', 'g'), {_sql_str(_FULLWIDTH)}, {_sql_str(_ASCII)})"
    )


def _normalise(con: duckdb.DuckDBPyConnection, table: str, column: str, values: str) -> bool:
    """Normalise the column's texts among ``values`` (SQL of one column ``v``) that hold
    odd characters; whether any did (then what was counted must be counted again)."""
    odd = _count(
        con, f"SELECT count(*) FROM ({values}) WHERE regexp_matches(v, '{_ODD_CHARACTERS}')"
    )
    if not odd:
        return False
    con.execute(
        f'UPDATE "{table}" SET "{column}" = {_normalised(f"{chr(34)}{column}{chr(34)}")} '
        f"WHERE regexp_matches(\"{column}\", '{_ODD_CHARACTERS}')"
    )
    return True


def _empty(
    con: duckdb.DuckDBPyConnection,
    counts: dict[str, TableCounts],
    table: str,
    column: str,
    removed: str,
) -> None:
    """Set ``table.column`` to NULL where it holds one of the texts ``removed`` selects."""
    con.execute(f"CREATE OR REPLACE TEMP TABLE text_removed AS {removed}")
    if not _count(con, "SELECT count(*) FROM text_removed"):
        return  # most columns of most sources: no second pass over the table
    n = _count(  # an UPDATE answers with the rows it changed
        con,
        f'UPDATE "{table}" SET "{column}" = NULL WHERE "{column}" IN (SELECT t FROM text_removed)',
    )
    if n:
        counts.setdefault(table, TableCounts()).rare_text[column] = n


def _sql_str(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _sql_list(values: list[str]) -> str:
    return "(" + ", ".join(_sql_str(v) for v in values) + ")"


def _list(values: list[str] | list[float]) -> str:
    """A SQL list literal of strings or doubles."""
    return (
        "["
        + ", ".join(repr(v) if isinstance(v, str) else f"{float(v)!r}::DOUBLE" for v in values)
        + "]"
    )


def _possible_values_macro() -> str:
    """``hub_value_possible(system, code, unit, value)``: the quality gate's possible range
    for a value (its code's, else its unit's, else a bound no record reaches). Looked up
    by position in list literals: a MAP per row cost 0.5 s for 2.9M observations at
    200k, a chain of CASEs 0.1 s more than this."""
    measures = reference.MEASURES
    codes, systems = _list([m.code for m in measures]), _list([m.code_system for m in measures])
    units = list(reference.UNIT_RANGES)
    low, high = reference.ANY_UNIT_RANGE
    at_code, at_unit = f"list_position({codes}, code)", f"list_position({_list(units)}, unit)"
    unit_low = _list([reference.UNIT_RANGES[u][0] for u in units])
    unit_high = _list([reference.UNIT_RANGES[u][1] for u in units])
    return f"""CREATE OR REPLACE TEMP MACRO hub_value_possible(cs, code, unit, v) AS (
        CASE WHEN {at_code} > 0 AND {systems}[{at_code}] = cs
             THEN v BETWEEN {_list([m.low for m in measures])}[{at_code}]
                        AND {_list([m.high for m in measures])}[{at_code}]
             ELSE v BETWEEN coalesce({unit_low}[{at_unit}], {low})
                        AND coalesce({unit_high}[{at_unit}], {high}) END)"""


def _conversion_macros() -> str:
    """``hub_measure_unit`` and ``hub_measure_value``: a measured code's value in another
    UCUM unit, converted to the code's one unit (``reference.CONVERSIONS``); any other
    value and unit as they are (most rows: their code is not one that converts)."""
    keys: list[str] = []
    scales: list[float] = []
    offsets: list[float] = []
    targets: list[str] = []
    for m in reference.MEASURES:
        for (source, target), (scale, offset) in reference.CONVERSIONS.items():
            if target == m.unit:
                keys.append(f"{m.code_system}|{m.code}|{source}")
                scales.append(scale)
                offsets.append(offset)
                targets.append(target)
    codes = _list(sorted({k.split("|")[1] for k in keys}))
    at = f"list_position({_list(keys)}, cs || '|' || code || '|' || unit)"
    return f"""
        CREATE OR REPLACE TEMP MACRO hub_measure_unit(cs, code, unit) AS (
            CASE WHEN list_position({codes}, code) > 0
                 THEN coalesce({_list(targets)}[{at}], unit) ELSE unit END);
        CREATE OR REPLACE TEMP MACRO hub_measure_value(cs, code, unit, v) AS (
            CASE WHEN list_position({codes}, code) > 0 AND {at} > 0
                 THEN v * {_list(scales)}[{at}] + {_list(offsets)}[{at}] ELSE v END);"""


# a person whose record is impossible is quarantined (their events go with them), as the
# quality gate would otherwise refuse the whole release for that one record
_IMPOSSIBLE_PERSON: Final = f"""
    WHEN birth_date IS NOT NULL AND (year(birth_date) < {reference.EARLIEST_BIRTH_YEAR}
                                     OR birth_date > current_date)
        THEN 'impossible birth date'
    WHEN death_date < date_trunc('month', birth_date) THEN 'death before birth'
    WHEN death_date >= birth_date + INTERVAL {reference.MAX_AGE_YEARS + 1} YEAR
        THEN 'impossible age at death'
    WHEN registration_end < registration_start THEN 'registration ends before it starts'"""


def install_macros(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(MACROS)
    con.execute(_possible_values_macro())
    con.execute(_conversion_macros())
    staging.ensure_rejects(con)


# what the id key is derived for: a key of its own, never the pseudonym key itself
_ID_KEY_CONTEXT = b"health-data-hub/event-ids/v1"


def id_key(pseudonym_key: bytes) -> str:
    """The hub-only key of published ids (hex): HMAC-SHA256(pseudonym key, context).

    Derived, so that the same keys give the same ids in every release and another key
    unlinkable ones, and so that a leak of ids and their source ids reveals nothing of
    the pseudonym key.
    """
    return hmac.new(pseudonym_key, _ID_KEY_CONTEXT, hashlib.sha256).hexdigest()


def install_id_key(con: duckdb.DuckDBPyConnection, pseudonym_key: bytes) -> None:
    """Make ``hub_id(x)`` the keyed id ``md5_number_lower(id_key || ':' || x) >> 1``.

    The key is written into a TEMP macro: TEMP objects live in the connection's memory
    and are never stored in the database file (the release). The staging views call
    ``hub_id`` by name and are bound when they are read, so they use the keyed macro
    however early they were defined.
    """
    key = id_key(pseudonym_key)  # hex digits only: safe in a SQL literal
    con.execute(
        f"""CREATE OR REPLACE TEMP MACRO hub_id(x) AS
            ((md5_number_lower('{key}:' || x) >> 1)::BIGINT)"""
    )


def _admit_rejects(con: duckdb.DuckDBPyConnection, name: str) -> int:
    """Rows the reader rejected (short, long, not UTF-8): quarantined, and counted in."""
    con.execute(
        """INSERT INTO _quarantine
           SELECT table_name, source_file, source_row, NULL, reason FROM stage_rejects
           WHERE table_name = $t""",
        {"t": name},
    )
    return _count(con, "SELECT count(*) FROM stage_rejects WHERE table_name = $t", {"t": name})


def _views(con: duckdb.DuckDBPyConnection) -> set[str]:
    rows = con.execute(
        "SELECT view_name FROM duckdb_views() WHERE temporary AND view_name LIKE 'stage_%'"
    ).fetchall()
    return {r[0] for r in rows}


def _count(
    con: duckdb.DuckDBPyConnection, sql: str, params: dict[str, object] | None = None
) -> int:
    return int(con.execute(sql, params or {}).fetchall()[0][0])


def _quarantine_counts(con: duckdb.DuckDBPyConnection, table: str) -> dict[str, int]:
    rows = con.execute(
        "SELECT reason, count(*) FROM _quarantine WHERE table_name = $t GROUP BY 1",
        {"t": table},
    ).fetchall()
    return {r[0]: int(r[1]) for r in rows}


def build_people(
    con: duckdb.DuckDBPyConnection, *, source: str, pseudonym_key: bytes
) -> TableCounts:
    """Pseudonymise and admit people; fill ``patients`` and TEMP ``person_map``."""
    pads = pseudonym.hmac_pads(pseudonym_key)
    key_sql = pseudonym.sql_person_id("source_key")
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE stage_people AS
        WITH keyed AS (
            SELECT *,
                   CASE WHEN nhs_number IS NOT NULL THEN 'nhs:' || nhs_number
                        ELSE $source || ':' || source_patient_id END AS source_key
            FROM stage_patients
        ), checked AS (
            SELECT *,
                   CASE
                       WHEN source_patient_id IS NULL THEN 'missing patient id'
                       WHEN bad_reason IS NOT NULL THEN bad_reason
                       WHEN nhs_number IS NOT NULL AND NOT hub_nhs_valid(nhs_number)
                           THEN 'invalid NHS number'
                       {_IMPOSSIBLE_PERSON}
                   END AS reject
            FROM keyed
        )
        SELECT *, {key_sql} AS person_id, reject AS reason FROM checked
        """,
        {"source": source, **pads},
    )
    # repeats are looked for by counting distinct keys (a tenth of the cost of numbering
    # every row in two windows); only a source that has some pays for finding them
    repeats = _count(
        con,
        """SELECT 2 * count(*) - count(DISTINCT source_key) - count(DISTINCT source_patient_id)
           FROM stage_people WHERE reason IS NULL""",
    )
    if repeats:
        con.execute(
            """
            CREATE OR REPLACE TEMP TABLE stage_people AS
            SELECT * REPLACE (
                CASE WHEN reject IS NULL AND row_number() OVER (
                         PARTITION BY reject IS NULL, source_key ORDER BY source_row) > 1
                     THEN 'duplicate person'
                     WHEN reject IS NULL AND row_number() OVER (
                         PARTITION BY reject IS NULL, source_patient_id ORDER BY source_row) > 1
                     THEN 'duplicate patient id'
                     ELSE reject END AS reason)
            FROM stage_people
            """
        )
    counts = TableCounts(rows_in=_count(con, "SELECT count(*) FROM stage_patients"))
    counts.rows_in += _admit_rejects(con, "patients")
    collisions = _count(
        con,
        """SELECT count(*) - count(DISTINCT person_id) FROM stage_people
           WHERE reason IS NULL""",
    )
    if collisions:
        raise IngestError(
            f"{collisions} pseudonym collision(s) among admitted people; the load is refused"
        )
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE person_map AS
        SELECT source_patient_id, person_id FROM stage_people WHERE reason IS NULL
        """
    )
    columns = ", ".join(c for c, _ in schema.PATIENT_COLUMNS)
    # a source may say a birth date holds its year only (FHIR's birthDate "1961"): then
    # the month is unknown, never the January the parsed date holds
    staged = {r[0] for r in con.execute("DESCRIBE stage_people").fetchall()}
    month = (
        "CASE WHEN birth_month_known IS FALSE THEN NULL ELSE month(birth_date) END"
        if "birth_month_known" in staged
        else "month(birth_date)"
    )
    con.execute(
        f"""
        INSERT INTO patients ({columns})
        SELECT person_id, year(birth_date), {month}, sex, ethnicity,
               local_authority, imd_decile, practice_code, registration_start,
               registration_end, death_date, $source
        FROM stage_people WHERE reason IS NULL
        """,
        {"source": source},
    )
    # a rejected person's quarantine row names the file and row only: no identifier
    con.execute(
        """
        INSERT INTO _quarantine
        SELECT 'patients', source_file, source_row, NULL, reason
        FROM stage_people WHERE reason IS NOT NULL
        """
    )
    counts.published = _count(con, "SELECT count(*) FROM patients")
    counts.quarantined = _quarantine_counts(con, "patients")
    return counts


def identifier_table(con: duckdb.DuckDBPyConnection) -> pa.Table:
    """Admitted people's identifiers for the vault (from TEMP storage only), in memory.

    Held whole (about 200 bytes a person) so that they can be encrypted on a thread of
    their own while the connection goes on building the event tables.
    """
    return con.sql(
        "SELECT person_id, identifiers FROM stage_people WHERE reason IS NULL"
    ).to_arrow_table()


def build_events(
    con: duckdb.DuckDBPyConnection, table: schema.EventTable, *, source: str
) -> TableCounts:
    name = table.name
    counts = TableCounts(rows_in=_count(con, f"SELECT count(*) FROM stage_{name}"))
    counts.rows_in += _admit_rejects(con, name)
    columns = [c for c, _ in schema.event_columns(table)]
    # a number that is not finite (inf, nan, 1e400) is never published, nor one outside
    # what its code or unit makes possible (a 511 cm height): that row is quarantined,
    # where the gate would otherwise refuse the whole release for it
    measured = {"code_system", "code", "unit", "value"} <= set(columns)
    # a measured code's value in another UCUM unit is converted to the code's one unit
    # (a weight in [lb_av] to kg) before anything judges it
    unit_sql = "hub_measure_unit(s.code_system, s.code, s.unit)"
    value_sql = "hub_measure_value(s.code_system, s.code, s.unit, s.value)"
    possible = (
        f"WHEN NOT hub_value_possible(s.code_system, s.code, {unit_sql}, {value_sql}) "
        "THEN 'impossible value' "
        if measured
        else ""
    )
    reject = (
        "coalesce(s.bad_reason, CASE WHEN NOT isfinite(s.value) THEN 'non-finite number' "
        f"{possible}END)"
        if "value" in columns
        else "s.bad_reason"
    )
    free_text = "value_text" in columns
    staged = {r[0] for r in con.execute(f"DESCRIBE stage_{name}").fetchall()}
    system = "coalesce(s.source_system, $source)" if "source_system" in staged else "$source"
    selected = ", ".join(
        "s.id" if c == table.id_column else "m.person_id" if c == "person_id"
        else system if c == "source_system"
        else f"CASE WHEN r.id IS NULL THEN s.{c} ELSE {REDACTED!r} END" if c == "value_text"
        else unit_sql if measured and c == "unit"
        else value_sql if measured and c == "value"
        else f"s.{c}"
        for c in columns
    )  # fmt: skip
    redact_join = ""
    if free_text:
        _find_identifying_text(con, name)
        redact_join = "LEFT JOIN redact r ON r.id = s.id"
    con.execute(
        f"""
        INSERT INTO {name} ({", ".join(columns)})
        SELECT {selected} FROM stage_{name} s JOIN person_map m USING (source_patient_id)
        {redact_join}
        WHERE {reject} IS NULL AND s.id IS NOT NULL
        """,
        {"source": source},
    )
    if free_text:
        counts.redacted = _count(con, "SELECT count(*) FROM redact")
    inserted = _count(con, f"SELECT count(*) FROM {name}")
    if inserted < counts.rows_in:  # only then is a second pass over the source needed
        _quarantine_events(con, name, reject)
    _drop_duplicate_keys(con, name, table.id_column)
    counts.published = _count(con, f"SELECT count(*) FROM {name}")
    counts.quarantined = _quarantine_counts(con, name)
    return counts


def _identifier_values(con: duckdb.DuckDBPyConnection, name: str) -> None:
    """Every string among the identifiers of the people with free text in ``stage_<name>``.

    Only those people's identifiers can be echoed by that table's free text, so a source
    without free text (the generator's, most feeds) pays nothing here.
    """
    con.execute(
        rf"""
        CREATE OR REPLACE TEMP TABLE identifier_values AS
        SELECT DISTINCT source_patient_id, lower(trim(v, '"')) AS value
        FROM (
            SELECT source_patient_id,
                   unnest(regexp_extract_all(
                       regexp_replace(identifiers, '"(?:[^"\\]|\\.)*"\s*:', ':', 'g'),
                       '"(?:[^"\\]|\\.){{4,}}"')) AS v
            FROM stage_people
            WHERE reason IS NULL AND source_patient_id IN (
                SELECT source_patient_id FROM stage_{name} WHERE value_text IS NOT NULL)
        )
        """
    )


def _find_identifying_text(con: duckdb.DuckDBPyConnection, name: str) -> None:
    """Rows whose free text repeats one of the person's identifiers, or is an identity field.

    Synthea's social-needs surveys, for one, record the patient's street address as an
    observation (LOINC 56799-0): such text is replaced, never published.
    """
    _identifier_values(con, name)
    codes = ", ".join(f"'{c}'" for c in IDENTITY_CODES)
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE redact AS
        SELECT DISTINCT s.id FROM stage_{name} s
        LEFT JOIN identifier_values v ON v.source_patient_id = s.source_patient_id
             AND contains(lower(s.value_text), v.value)
        WHERE s.value_text IS NOT NULL AND (v.value IS NOT NULL OR s.code IN ({codes}))
        """
    )


def _quarantine_events(con: duckdb.DuckDBPyConnection, name: str, reject: str) -> None:
    con.execute(
        f"""
        INSERT INTO _quarantine
        SELECT $t, s.source_file, s.source_row,
               -- the source's id as the hub's keyed id: an export's ids can be names
               -- ("WEST-ALFRED-19610703-wt1", a red-team find)
               hub_id(s.source_id)::VARCHAR,
               CASE WHEN s.id IS NULL THEN 'missing id'
                    WHEN {reject} IS NOT NULL THEN {reject}
                    ELSE 'unknown person' END
        FROM stage_{name} s LEFT JOIN person_map m USING (source_patient_id)
        WHERE {reject} IS NOT NULL OR s.id IS NULL OR m.person_id IS NULL
        """,
        {"t": name},
    )


def _drop_duplicate_keys(con: duckdb.DuckDBPyConnection, name: str, key: str) -> None:
    """Keep the first copy of a repeated primary key; quarantine the others.

    Whether any key repeats is asked first, by comparing each key with its neighbour in
    key order (a sort: a third of the cost of grouping every key); only a table that has
    repeats pays for finding them.
    """
    repeats = _count(
        con,
        f"""SELECT count(*) FROM (
                SELECT {key} = lag({key}) OVER (ORDER BY {key}) AS repeat FROM {name}
            ) WHERE repeat""",
    )
    if not repeats:
        return
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE dup_rows AS
        SELECT rowid AS r, {key} AS k FROM {name}
        WHERE {key} IN (SELECT {key} FROM {name} GROUP BY 1 HAVING count(*) > 1)
        QUALIFY row_number() OVER (PARTITION BY {key} ORDER BY rowid) > 1
        """
    )
    con.execute(
        """INSERT INTO _quarantine
           SELECT $t, NULL, NULL, k::VARCHAR, 'duplicate key' FROM dup_rows""",
        {"t": name},
    )
    con.execute(f"DELETE FROM {name} WHERE rowid IN (SELECT r FROM dup_rows)")
    con.execute("DROP TABLE dup_rows")


def build_organisations(con: duckdb.DuckDBPyConnection, *, source: str) -> TableCounts:
    if "stage_organisations" not in _views(con):
        return TableCounts()
    counts = TableCounts(rows_in=_count(con, "SELECT count(*) FROM stage_organisations"))
    con.execute(
        """
        INSERT INTO organisations
        SELECT organisation_code, name, kind, local_authority, $source
        FROM stage_organisations WHERE organisation_code IS NOT NULL
        QUALIFY row_number() OVER (PARTITION BY organisation_code ORDER BY name) = 1
        """,
        {"source": source},
    )
    counts.published = _count(con, "SELECT count(*) FROM organisations")
    dropped = counts.rows_in - counts.published
    if dropped:
        con.execute(
            f"""INSERT INTO _quarantine SELECT 'organisations', NULL, NULL, NULL,
                'missing or duplicate organisation code' FROM range({dropped})"""
        )
    counts.rows_in += _admit_rejects(con, "organisations")
    counts.quarantined = _quarantine_counts(con, "organisations")
    return counts


def build_extras(con: duckdb.DuckDBPyConnection) -> dict[str, TableCounts]:
    """Source-specific person-linked tables, kept as loaded with the person pseudonymised."""
    out: dict[str, TableCounts] = {}
    for view in sorted(v for v in _views(con) if v.startswith("stage_extra_")):
        name = view.removeprefix("stage_extra_")
        counts = TableCounts(rows_in=_count(con, f"SELECT count(*) FROM {view}"))
        con.execute(
            f"""
            CREATE TABLE {name} AS
            SELECT m.person_id, s.* EXCLUDE (source_patient_id, source_file, source_row)
            FROM {view} s JOIN person_map m USING (source_patient_id)
            """
        )
        con.execute(
            f"""INSERT INTO _quarantine
                SELECT $t, s.source_file, s.source_row, NULL, 'unknown person'
                FROM {view} s ANTI JOIN person_map m USING (source_patient_id)""",
            {"t": name},
        )
        counts.rows_in += _admit_rejects(con, name)
        counts.published = _count(con, f"SELECT count(*) FROM {name}")
        counts.quarantined = _quarantine_counts(con, name)
        out[name] = counts
    return out


def build_unlinked(con: duckdb.DuckDBPyConnection) -> dict[str, TableCounts]:
    """Source tables that name no person (payers, ...): loaded as they are."""
    out: dict[str, TableCounts] = {}
    for view in sorted(v for v in _views(con) if v.startswith("stage_unlinked_")):
        name = view.removeprefix("stage_unlinked_")
        con.execute(f"CREATE TABLE {name} AS SELECT * FROM {view}")
        rows = _count(con, f"SELECT count(*) FROM {name}")
        rejected = _admit_rejects(con, name)
        out[name] = TableCounts(
            rows_in=rows + rejected, published=rows, quarantined=_quarantine_counts(con, name)
        )
    return out


def create_schema(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(schema.create_table_sql("patients", schema.PATIENT_COLUMNS))
    con.execute(schema.create_table_sql("organisations", schema.ORGANISATION_COLUMNS))
    for table in schema.EVENT_TABLES:
        con.execute(schema.create_table_sql(table.name, schema.event_columns(table)))
    con.execute(schema.QUARANTINE_DDL)


def create_views(con: duckdb.DuckDBPyConnection) -> None:
    for name, sql in schema.OMOP_VIEWS.items():
        con.execute(f"CREATE VIEW {name} AS {sql}")


def build(
    con: duckdb.DuckDBPyConnection,
    *,
    source: str,
    pseudonym_key: bytes,
    progress: Progress | None = None,
    people_ready: Callable[[], None] | None = None,
) -> dict[str, TableCounts]:
    """Run the whole build on a connection whose staging views are defined.

    ``people_ready`` is called once people are pseudonymised, before any event table.
    """
    step = progress or (lambda _label: None)
    views = _views(con)
    if "stage_patients" not in views:
        raise IngestError("the source has no patients: nothing can be linked")
    install_id_key(con, pseudonym_key)  # before any staging view is read
    create_schema(con)
    counts: dict[str, TableCounts] = {}
    step("patients")
    counts["patients"] = build_people(con, source=source, pseudonym_key=pseudonym_key)
    if people_ready is not None:
        people_ready()
    step("organisations")
    org = build_organisations(con, source=source)
    if org.rows_in:
        counts["organisations"] = org
    for table in schema.EVENT_TABLES:
        if f"stage_{table.name}" in views:
            step(table.name)
            counts[table.name] = build_events(con, table, source=source)
    step("source-specific tables")
    counts.update(build_extras(con))
    counts.update(build_unlinked(con))
    step("free text")
    remove_rare_text(con, counts)
    create_views(con)
    return counts
