"""A region's separate extracts of one population: GP suppliers, acute trusts, A&E, deaths.

A regional hub never receives one tidy export. It receives extracts from each
organisation, each with its own column names, codes, local patient ids and errors, and
must work out which records belong to the same person. ``write_feeds`` turns a population
made by :mod:`synthetic_data.generator` (Parquet) into such a set of feeds::

    feeds.json                     the manifest: every feed, its organisation, its data
                                   controller, its layout and format
    gp-supplier-a/*.csv            GP practices on supplier A: upper-case surnames,
                                   dd/mm/yyyy dates, sex M/F, its own patient GUIDs
    gp-supplier-b/*.parquet        GP practices on supplier B: title case, ISO dates,
                                   sex Male/Female, NHS numbers written "999 000 0018"
    trust-<code>/*.csv             each acute trust's PAS: hospital numbers, admitted
                                   spells and outpatient appointments with their
                                   diagnoses, procedures and tests; dates yyyymmdd, sex 1/2
    ae/attendances.csv             the region's A&E attendances, one row each, typed in
                                   at the front desk (the least complete identifiers)
    deaths/deaths.csv              the death register
    truth/records.parquet          for tests and benchmarks only, never ingested: which
                                   person each feed record belongs to
    truth/people.parquet           each person's sex, ethnic group, birth year and IMD
                                   decile (for linkage quality by group)
    truth/dpp_outcomes/            the generator's ground truth of the DPP study

Every feed record carries the identifiers its organisation holds (NHS number, names,
date of birth, sex, postcode), with errors at rates in the range the NHS linkage
literature reports (each rate below names its source). The same person is recognisable
across feeds only through these identifiers: local ids never repeat across feeds.

The randomness is a keyed hash of (seed, record, purpose), computed in DuckDB, so the
same population and seed give the same feeds whatever the number of threads.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import duckdb

FEEDS_MANIFEST: Final = "feeds.json"
FEEDS_VERSION: Final = "1.0"


@dataclass(frozen=True)
class ErrorRates:
    """Identifier errors of one kind of feed (shares of records)."""

    nhs_missing: float
    nhs_mistyped: float  # one digit changed: always fails the Modulus 11 check
    name_typo: float  # one letter changed, dropped or a common variant used
    dob_error: float  # digits transposed (day or year) or day and month swapped
    old_postcode: float  # of people who moved: the record keeps the earlier postcode


# NHS number completeness: NHS Digital's HES Data Quality Dashboard reports valid NHS
# numbers on over 99% of admitted-care and outpatient records and a lower share in A&E
# (about 95-97% before ECDS); Hagger-Johnson et al. 2017 (J Innov Health Inform 24:
# 891) found missing or invalid NHS numbers on 2-3% of HES records and that these fall
# unevenly across ethnic groups; Harron et al. 2017 (Big Data & Society 4:2) review name
# and date-of-birth discrepancies of 1-5% between NHS datasets; Aldridge et al. 2015
# (PLoS One 10:e0136179) report similar rates for the Enhanced Matching System. GP
# records are the most complete (the NHS number is issued at registration).
RATES: Final[dict[str, ErrorRates]] = {
    "gp": ErrorRates(0.003, 0.001, 0.01, 0.003, 0.0),
    "acute": ErrorRates(0.01, 0.004, 0.03, 0.01, 0.5),
    "ae": ErrorRates(0.05, 0.01, 0.05, 0.02, 0.5),
    "death": ErrorRates(0.01, 0.002, 0.02, 0.005, 0.0),
}
# Minority ethnic groups see more name discrepancies (transliteration, name order):
# Hagger-Johnson et al. 2017 and Harron et al. 2017 both report higher linkage error.
MINORITY_NAME_FACTOR: Final = 1.5
MOVED_SHARE: Final = 0.12  # people whose postcode changed during the records

# Common given-name variants recorded instead of the registered name.
NAME_VARIANTS: Final = {
    "William": "Bill", "Robert": "Bob", "Elizabeth": "Liz", "Margaret": "Maggie",
    "Katherine": "Kate", "Catherine": "Cathy", "Thomas": "Tom", "James": "Jim",
    "Michael": "Mike", "Jennifer": "Jenny", "Christopher": "Chris", "Daniel": "Dan",
    "Matthew": "Matt", "Joseph": "Joe", "Samuel": "Sam", "Rebecca": "Becky",
    "Mohammed": "Muhammad", "Muhammad": "Mohammed", "Mohammad": "Muhammad",
}  # fmt: skip

LAYOUTS: Final = ("gp-supplier-a", "gp-supplier-b", "acute-pas", "ae", "death-register")


def _u(seed: int, *parts: str) -> str:
    """SQL for a deterministic uniform in [0, 1) from the seed and the given SQL parts."""
    joined = " || ':' || ".join(f"({p})::VARCHAR" for p in parts)
    return f"((hash('{seed}:' || {joined}) % 1000000)::DOUBLE / 1000000)"


def _typo(seed: int, col: str, key: str, purpose: str) -> str:
    """SQL: ``col`` with one letter replaced, dropped, or a known variant."""
    pos = f"(1 + hash('{seed}:pos:{purpose}:' || {key}) % greatest(length({col}) - 1, 1))"
    letter = f"chr(97 + (hash('{seed}:chr:{purpose}:' || {key}) % 26)::INTEGER)"
    kind = f"hash('{seed}:kind:{purpose}:' || {key}) % 3"
    variants = " ".join(f"WHEN '{a}' THEN '{b}'" for a, b in NAME_VARIANTS.items())
    return f"""CASE
        WHEN {kind} = 0 AND (CASE {col} {variants} END) IS NOT NULL
            THEN CASE {col} {variants} END
        WHEN {kind} = 1 AND length({col}) > 3
            THEN left({col}, {pos}::INTEGER) || substr({col}, {pos}::INTEGER + 2)
        ELSE left({col}, {pos}::INTEGER) || {letter} || substr({col}, {pos}::INTEGER + 2)
    END"""


def _dob_error(seed: int, key: str) -> str:
    """SQL: the date of birth with digits transposed (year or day) or day/month swapped."""
    y, m, d = "year(date_of_birth)", "month(date_of_birth)", "day(date_of_birth)"
    swapped_year = f"({y} // 100) * 100 + ({y} % 10) * 10 + ({y} % 100) // 10"
    swapped_day = f"({d} % 10) * 10 + {d} // 10"
    pick = f"hash('{seed}:dobkind:' || {key}) % 3"
    return f"""coalesce(CASE
        WHEN {pick} = 0 AND {d} <= 12 AND {d} <> {m} THEN try(make_date({y}, {d}, {m}))
        WHEN {pick} = 1 AND {y} % 10 <> ({y} % 100) // 10
             AND {swapped_year} <= year(current_date) THEN try(make_date({swapped_year}, {m}, {d}))
        WHEN {swapped_day} BETWEEN 1 AND 28 AND {swapped_day} <> {d}
            THEN try(make_date({y}, {m}, {swapped_day}))
    END, date_of_birth + INTERVAL 1 DAY)::DATE"""


def _mistype_nhs(seed: int, key: str) -> str:
    """SQL: the NHS number with one digit changed (Modulus 11 catches every such change)."""
    pos = f"(hash('{seed}:nhspos:' || {key}) % 10)::INTEGER"
    digit = f"substr(nhs_number, {pos} + 1, 1)::INTEGER"
    new = f"((({digit}) + 1 + (hash('{seed}:nhsdig:' || {key}) % 9)::INTEGER) % 10)::VARCHAR"
    return f"left(nhs_number, {pos}) || {new} || substr(nhs_number, {pos} + 2)"


def _identifiers(seed: int, kind: str, key: str) -> str:
    """SQL select list of one record's identifiers, with this kind of feed's errors.

    Expects the columns of ``people`` (below) and ``key``: a SQL expression unique to the
    record.
    """
    r = RATES[kind]
    name_rate = (
        f"({r.name_typo} * CASE WHEN ethnicity <> 'White' THEN {MINORITY_NAME_FACTOR} ELSE 1 END)"
    )
    nhs_draw = _u(seed, f"'nhs:{kind}'", key)
    return f"""
        CASE WHEN {nhs_draw} < {r.nhs_missing} THEN NULL
             WHEN {nhs_draw} < {r.nhs_missing + r.nhs_mistyped} THEN {_mistype_nhs(seed, key)}
             ELSE nhs_number END AS nhs_number,
        CASE WHEN {_u(seed, f"'given:{kind}'", key)} < {name_rate}
             THEN {_typo(seed, "given_name", key, "given")} ELSE given_name END AS given_name,
        CASE WHEN {_u(seed, f"'family:{kind}'", key)} < {name_rate}
             THEN {_typo(seed, "family_name", key, "family")} ELSE family_name END
             AS family_name,
        CASE WHEN {_u(seed, f"'dob:{kind}'", key)} < {r.dob_error}
             THEN {_dob_error(seed, key)} ELSE date_of_birth END AS date_of_birth,
        sex,
        CASE WHEN previous_postcode IS NOT NULL
                  AND {_u(seed, f"'postcode:{kind}'", key)} < {r.old_postcode}
             THEN previous_postcode ELSE postcode END AS postcode
    """


@dataclass(frozen=True)
class FeedsResult:
    out: Path
    feeds: list[dict[str, object]]
    records: int


def write_feeds(
    population: Path,
    out: Path,
    *,
    seed: int = 42,
    progress: Callable[[str], None] | None = None,
) -> FeedsResult:
    """Write the feeds of the Parquet population in ``population`` into ``out``."""
    step = progress or (lambda _label: None)
    if not (population / "patients").is_dir():
        raise ValueError(f"{population} is not a Parquet population from `hub synth`")
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"{out} is not empty")
    out.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    try:
        con.execute("SET preserve_insertion_order = false")

        def table(name: str) -> str:
            return f"read_parquet('{population / name}/*.parquet')"

        orgs = con.sql(f"SELECT * FROM read_parquet('{population}/organisations.parquet')")
        orgs.create("orgs")
        step("people")
        # one row per person, with a previous postcode for the people who moved
        con.execute(
            f"""
            CREATE TABLE people AS
            SELECT p.patient_id, p.nhs_number::VARCHAR AS nhs_number,
                   p.given_name::VARCHAR AS given_name, p.family_name::VARCHAR AS family_name,
                   p.date_of_birth, CASE p.sex::VARCHAR WHEN 'F' THEN 'female' WHEN 'M' THEN 'male' END AS sex, p.postcode::VARCHAR AS postcode,
                   p.ethnicity::VARCHAR AS ethnicity, p.imd_decile,
                   p.practice_code::VARCHAR AS practice_code,
                   p.registration_start, p.registration_end, p.date_of_death,
                   p.local_authority::VARCHAR AS local_authority,
                   CASE WHEN {_u(seed, "'moved'", "p.patient_id")} < {MOVED_SHARE}
                        THEN lag(p.postcode::VARCHAR) OVER (
                            ORDER BY hash('{seed}:moved:' || p.patient_id))
                   END AS previous_postcode,
                   dense_rank() OVER (ORDER BY hash('{seed}:gpguid:' || p.patient_id))
                       AS gp_local_id
            FROM {table("patients")} p
            """
        )
        con.execute("UPDATE people SET previous_postcode = NULL WHERE previous_postcode = postcode")
        # practices: about three in five on supplier A
        con.execute(
            f"""
            CREATE TABLE practices AS
            SELECT organisation_code, name,
                   CASE WHEN {_u(seed, "'supplier'", "organisation_code")} < 0.6
                        THEN 'a' ELSE 'b' END AS supplier
            FROM orgs WHERE kind = 'gp_practice'
            """
        )
        con.sql(f"SELECT * FROM {table('encounters')}").create("encounters")
        con.execute("CREATE TABLE truth (feed VARCHAR, local_id VARCHAR, patient_id BIGINT)")
        records = _Records(con)
        feeds: list[dict[str, object]] = []
        step("GP feeds")
        feeds += _gp_feeds(con, out, seed, table, records)
        step("acute trust feeds")
        feeds += _trust_feeds(con, out, seed, table, records)
        step("A&E feed")
        feeds.append(_ae_feed(con, out, seed, records))
        step("death register")
        feeds.append(_death_feed(con, out, seed, records))
        step("truth")
        truth = out / "truth"
        truth.mkdir()
        con.execute(f"COPY truth TO '{truth / 'records.parquet'}' (FORMAT parquet)")
        con.execute(
            f"""COPY (SELECT patient_id, sex, ethnicity, year(date_of_birth) AS birth_year,
                         imd_decile FROM people)
                TO '{truth / "people.parquet"}' (FORMAT parquet)"""
        )
        n_records = con.execute(
            f"SELECT count(*) FROM read_parquet('{truth / 'records.parquet'}')"
        ).fetchall()[0]
        if (population / "ground_truth").is_dir():
            shutil.copytree(population / "ground_truth", truth / "dpp_outcomes")
        shutil.copy(population / "organisations.parquet", out / "organisations.parquet")
        manifest = {
            "kind": "regional feeds",
            "version": FEEDS_VERSION,
            "seed": seed,
            "organisations": "organisations.parquet",
            "feeds": feeds,
            "truth": "truth/ (tests and benchmarks only; never ingest)",
        }
        (out / FEEDS_MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    finally:
        con.close()
    return FeedsResult(out, feeds, int(n_records[0]) if n_records else 0)


class _Records:
    """The truth of which person each feed record belongs to, collected feed by feed."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con

    def append(self, select: str) -> None:
        self.con.execute(f"INSERT INTO truth {select}")


def _copy(con: duckdb.DuckDBPyConnection, sql: str, path: Path, fmt: str) -> None:
    options = "(FORMAT parquet)" if fmt == "parquet" else "(FORMAT csv, HEADER true)"
    con.execute(f"COPY ({sql}) TO '{path}' {options}")


def _events(
    table: Callable[[str], str], where: str, rename: dict[str, str], local: str
) -> dict[str, str]:
    """SQL per clinical table for the events of encounters matching ``where``."""
    out = {}
    for name, date_cols in (
        ("conditions", ("onset_date",)),
        ("observations", ("observed_date",)),
        ("medications", ("start_date", "end_date")),
        ("procedures", ("procedure_date",)),
    ):
        id_col = f"{name[:-1]}_id"
        extra = ", t.value, t.unit::VARCHAR AS unit" if name == "observations" else ""
        dates = ", ".join(f"t.{c}" for c in date_cols)
        out[name] = (
            f"SELECT t.{id_col} AS {rename.get(id_col, id_col)}, {local} AS "
            f"{rename['local_id']}, t.encounter_id AS {rename.get('encounter_id', 'encounter_id')}, "
            f"t.code_system::VARCHAR AS code_system, t.code::VARCHAR AS code, "
            f"t.description::VARCHAR AS description{extra}, {dates} "
            f"FROM {table(name)} t LEFT JOIN encounters e USING (encounter_id) "
            f"JOIN people p ON p.patient_id = t.patient_id WHERE {where}"
        )
    return out


def _gp_feeds(
    con: duckdb.DuckDBPyConnection,
    out: Path,
    seed: int,
    table: Callable[[str], str],
    records: _Records,
) -> list[dict[str, object]]:
    feeds: list[dict[str, object]] = []
    for supplier, fmt in (("a", "csv"), ("b", "parquet")):
        name = f"gp-supplier-{supplier}"
        folder = out / name
        folder.mkdir()
        ext = "csv" if fmt == "csv" else "parquet"
        ids = _identifiers(seed, "gp", f"'{name}:' || p.patient_id")
        con.execute(
            f"""
            CREATE OR REPLACE TEMP TABLE gp AS
            SELECT p.patient_id, p.gp_local_id, p.practice_code, p.registration_start,
                   p.registration_end, p.ethnicity AS recorded_ethnicity,
                   p.local_authority, p.imd_decile, {ids}
            FROM people p JOIN practices r ON r.organisation_code = p.practice_code
            WHERE r.supplier = '{supplier}'
            """
        )
        if supplier == "a":
            local = "'A' || lpad(p.gp_local_id::VARCHAR, 9, '0')"
            patients = """
                SELECT 'A' || lpad(gp_local_id::VARCHAR, 9, '0') AS PatientGuid,
                       nhs_number AS NhsNumber, given_name AS Forenames,
                       upper(family_name) AS Surname,
                       strftime(date_of_birth, '%d/%m/%Y') AS DateOfBirth,
                       CASE sex WHEN 'female' THEN 'F' WHEN 'male' THEN 'M' ELSE 'U' END
                           AS Gender,
                       postcode AS Postcode, practice_code AS PracticeCode,
                       strftime(registration_start, '%d/%m/%Y') AS RegistrationDate,
                       strftime(registration_end, '%d/%m/%Y') AS DeregistrationDate,
                       recorded_ethnicity AS Ethnicity,
                       local_authority AS LocalAuthority, imd_decile AS ImdDecile
                FROM gp"""
            rename = {"local_id": "PatientGuid"}
        else:
            local = "p.gp_local_id"
            patients = """
                SELECT gp_local_id AS patient_id,
                       CASE WHEN nhs_number IS NULL THEN NULL ELSE
                           substr(nhs_number, 1, 3) || ' ' || substr(nhs_number, 4, 3) || ' '
                           || substr(nhs_number, 7) END AS nhs_no,
                       given_name AS first_name,
                       upper(left(family_name, 1)) || lower(substr(family_name, 2))
                           AS last_name,
                       date_of_birth AS dob,
                       CASE sex WHEN 'female' THEN 'Female' WHEN 'male' THEN 'Male'
                           ELSE 'Unknown' END AS sex,
                       postcode AS post_code, practice_code AS practice_ods,
                       registration_start AS reg_start, registration_end AS reg_end,
                       recorded_ethnicity AS ethnic_category,
                       local_authority AS la_name, imd_decile
                FROM gp"""
            rename = {"local_id": "patient_id"}
        _copy(con, patients, folder / f"patients.{ext}", fmt)
        where = (
            f"e.encounter_type = 'gp' AND p.practice_code IN "
            f"(SELECT organisation_code FROM practices WHERE supplier = '{supplier}')"
        )
        _copy(
            con,
            f"SELECT e.encounter_id, {local} AS {rename['local_id']}, e.start_date, "
            f"e.end_date, e.organisation_code::VARCHAR AS organisation_code "
            f"FROM encounters e JOIN people p USING (patient_id) WHERE {where}",
            folder / f"encounters.{ext}",
            fmt,
        )
        # the GP record also holds what was recorded outside any encounter
        events_where = where.replace(
            "e.encounter_type = 'gp'", "(e.encounter_type = 'gp' OR t.encounter_id IS NULL)"
        )
        for event, sql in _events(table, events_where, rename, local).items():
            _copy(con, sql, folder / f"{event}.{ext}", fmt)
        records.append(
            f"SELECT '{name}' AS feed, "
            + (
                "'A' || lpad(gp_local_id::VARCHAR, 9, '0')"
                if supplier == "a"
                else "gp_local_id::VARCHAR"
            )
            + " AS local_id, patient_id FROM gp"
        )
        feeds.append({
            "name": name, "layout": name, "format": fmt, "kind": "gp",
            "organisation": f"GP practices on clinical system supplier {supplier.upper()}",
            "controller": f"the {supplier.upper()} practices (each practice a controller)",
            "path": name,
        })  # fmt: skip
    return feeds


def _trust_feeds(
    con: duckdb.DuckDBPyConnection,
    out: Path,
    seed: int,
    table: Callable[[str], str],
    records: _Records,
) -> list[dict[str, object]]:
    feeds: list[dict[str, object]] = []
    trusts = con.execute(
        "SELECT organisation_code, name FROM orgs WHERE kind = 'acute_trust' ORDER BY 1"
    ).fetchall()
    for code, trust_name in trusts:
        name = f"trust-{code.lower()}"
        folder = out / name
        folder.mkdir()
        where = (
            f"e.organisation_code = '{code}' AND e.encounter_type IN ('inpatient', 'outpatient')"
        )
        ids = _identifiers(seed, "acute", f"'{name}:' || p.patient_id")
        con.execute(
            f"""
            CREATE OR REPLACE TEMP TABLE pas AS
            SELECT p.patient_id,
                   '{code[:3]}' || lpad((dense_rank() OVER (ORDER BY
                       hash('{seed}:{name}:' || p.patient_id)))::VARCHAR, 7, '0')
                       AS hospital_number, {ids}
            FROM people p
            WHERE p.patient_id IN (SELECT patient_id FROM encounters e WHERE {where})
            """
        )
        _copy(
            con,
            """SELECT hospital_number, nhs_number, upper(family_name) AS surname,
                      given_name AS forename, strftime(date_of_birth, '%Y%m%d') AS birth_date,
                      CASE sex WHEN 'male' THEN '1' WHEN 'female' THEN '2' ELSE '9' END
                          AS sex_code, postcode
               FROM pas""",
            folder / "patients.csv",
            "csv",
        )
        local = "h.hospital_number"
        join = "JOIN pas h ON h.patient_id = p.patient_id"
        _copy(
            con,
            f"""SELECT e.encounter_id AS spell_id, {local}, e.encounter_type AS setting,
                       strftime(e.start_date, '%Y%m%d') AS start_date,
                       strftime(e.end_date, '%Y%m%d') AS end_date
                FROM encounters e JOIN people p USING (patient_id) {join} WHERE {where}""",
            folder / "spells.csv",
            "csv",
        )
        rename = {"local_id": "hospital_number", "encounter_id": "spell_id"}
        for event, sql in _events(table, where, rename, local).items():
            _copy(con, sql.replace("WHERE", f"{join} WHERE", 1), folder / f"{event}.csv", "csv")
        records.append(f"SELECT '{name}', hospital_number, patient_id FROM pas")
        feeds.append({
            "name": name, "layout": "acute-pas", "format": "csv", "kind": "acute",
            "organisation": trust_name, "organisation_code": code,
            "controller": trust_name, "path": name,
        })  # fmt: skip
    return feeds


def _ae_feed(
    con: duckdb.DuckDBPyConnection, out: Path, seed: int, records: _Records
) -> dict[str, object]:
    folder = out / "ae"
    folder.mkdir()
    ids = _identifiers(seed, "ae", "'ae:' || e.encounter_id")
    con.execute(
        f"""
        CREATE TEMP TABLE ae AS
        SELECT 'AE' || e.encounter_id AS attendance_id, e.patient_id,
               e.organisation_code::VARCHAR AS site_code, e.start_date, {ids}
        FROM encounters e JOIN people p USING (patient_id)
        WHERE e.encounter_type = 'ae'
        """
    )
    _copy(
        con,
        """SELECT attendance_id, site_code, strftime(start_date, '%Y-%m-%d') AS arrival_date,
                  nhs_number, given_name AS forename, family_name AS surname,
                  strftime(date_of_birth, '%Y-%m-%d') AS date_of_birth,
                  CASE sex WHEN 'male' THEN 'M' WHEN 'female' THEN 'F' ELSE 'X' END AS sex,
                  postcode
           FROM ae""",
        folder / "attendances.csv",
        "csv",
    )
    records.append("SELECT 'ae', attendance_id, patient_id FROM ae")
    return {
        "name": "ae", "layout": "ae", "format": "csv", "kind": "ae",
        "organisation": "the region's emergency departments",
        "controller": "each department's trust", "path": "ae",
    }  # fmt: skip


def _death_feed(
    con: duckdb.DuckDBPyConnection, out: Path, seed: int, records: _Records
) -> dict[str, object]:
    folder = out / "deaths"
    folder.mkdir()
    ids = _identifiers(seed, "death", "'death:' || p.patient_id")
    con.execute(
        f"""
        CREATE TEMP TABLE deaths AS
        SELECT 'D' || lpad((dense_rank() OVER (ORDER BY hash('{seed}:death:' || p.patient_id)))
                   ::VARCHAR, 8, '0') AS registration_id,
               p.patient_id, p.date_of_death, {ids}
        FROM people p WHERE p.date_of_death IS NOT NULL
        """
    )
    _copy(
        con,
        """SELECT registration_id, nhs_number, upper(given_name) AS forenames,
                  upper(family_name) AS surname,
                  strftime(date_of_birth, '%Y-%m-%d') AS date_of_birth,
                  CASE sex WHEN 'male' THEN 'M' WHEN 'female' THEN 'F' ELSE 'U' END AS sex,
                  strftime(date_of_death, '%Y-%m-%d') AS date_of_death,
                  postcode AS usual_address_postcode
           FROM deaths""",
        folder / "deaths.csv",
        "csv",
    )
    records.append("SELECT 'deaths', registration_id, patient_id FROM deaths")
    return {
        "name": "deaths", "layout": "death-register", "format": "csv", "kind": "death",
        "organisation": "the death register (civil registration)",
        "controller": "the registration service", "path": "deaths",
    }  # fmt: skip
