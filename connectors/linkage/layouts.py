"""Each feed layout read into one shape: identity records, people's details, events.

A layout names its files and maps its own column names and conventions (date formats,
sex codes, NHS numbers with spaces) onto the hub's. Every relation below keeps the
feed's own local id as ``record_key`` (``<feed>|<local id>``): the linkage decides which
person each record key belongs to.

A CSV file is never read here: ``connectors.sources.feeds`` reads each one once with the
hub's CSV reader (``connectors.staging.read_csv_table``) into a TEMP relation whose
columns carry the header's names, and passes those relations in (``tables``). The
columns a CSV file must have are the ones the SQL below reads from it
(``columns_read``, found by DuckDB's own parser).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import duckdb

from connectors.errors import SourceError
from connectors.staging import quote


@dataclass(frozen=True)
class Layout:
    """How one layout spells things."""

    patients: str  # the file with one row per local patient (or per attendance)
    local_id: str
    nhs: str
    given: str
    family: str
    birth_date: str  # SQL over the raw column, giving a DATE (NULL when unparseable)
    sex: str  # SQL giving 'F', 'M' or NULL
    postcode: str
    ext: str = "csv"
    # SQL for the person-level details only a GP record holds (None: not held)
    practice: str | None = None
    registration: tuple[str, str] | None = None
    ethnicity: str | None = None
    local_authority: str | None = None
    imd_decile: str | None = None
    death_date: str | None = None
    encounters: str | None = None  # the file of encounters, keyed by ``local_id``
    encounter_id: str = "encounter_id"
    encounter_type: str = "'gp'"
    encounter_dates: tuple[str, str] = ("start_date", "end_date")
    encounter_organisation: str = "organisation_code"
    events: bool = False  # conditions, observations, medications, procedures files


def _keyed(feed: str, col: str) -> str:
    """A published id: the hub's keyed hash (``hub_id``) of the feed and its local id, so
    that no one holding a trust's extract can map a published event back to its record,
    and two feeds' local ids never collide. A blank id stays NULL (quarantined)."""
    return f"hub_id({quote(feed)} || '|' || nullif(trim({col}::VARCHAR), ''))"


def _dmy(col: str) -> str:
    return f"try_strptime({col}, '%d/%m/%Y')::DATE"


def _ymd(col: str) -> str:
    return f"try_strptime({col}, '%Y%m%d')::DATE"


def _iso(col: str) -> str:
    return f"try_cast({col} AS DATE)"


LAYOUTS: Final[dict[str, Layout]] = {
    "gp-supplier-a": Layout(
        patients="patients", local_id="PatientGuid", nhs="NhsNumber", given="Forenames",
        family="Surname", birth_date=_dmy("DateOfBirth"),
        sex="CASE upper(Gender) WHEN 'F' THEN 'F' WHEN 'M' THEN 'M' END",
        postcode="Postcode", practice="PracticeCode",
        registration=(_dmy("RegistrationDate"), _dmy("DeregistrationDate")),
        ethnicity="Ethnicity", local_authority="LocalAuthority",
        imd_decile="try_cast(ImdDecile AS INTEGER)", encounters="encounters", events=True,
    ),
    "gp-supplier-b": Layout(
        patients="patients", local_id="patient_id", nhs="nhs_no", given="first_name",
        family="last_name", birth_date=_iso("dob"),
        sex="CASE lower(sex) WHEN 'female' THEN 'F' WHEN 'male' THEN 'M' END",
        postcode="post_code", ext="parquet", practice="practice_ods",
        registration=(_iso("reg_start"), _iso("reg_end")), ethnicity="ethnic_category",
        local_authority="la_name", imd_decile="try_cast(imd_decile AS INTEGER)",
        encounters="encounters", events=True,
    ),
    "acute-pas": Layout(
        patients="patients", local_id="hospital_number", nhs="nhs_number", given="forename",
        family="surname", birth_date=_ymd("birth_date"),
        sex="CASE sex_code WHEN '1' THEN 'M' WHEN '2' THEN 'F' END", postcode="postcode",
        encounters="spells", encounter_id="spell_id", encounter_type="setting",
        encounter_dates=(_ymd("start_date"), _ymd("end_date")), encounter_organisation="",
        events=True,
    ),
    "ae": Layout(
        patients="attendances", local_id="attendance_id", nhs="nhs_number", given="forename",
        family="surname", birth_date=_iso("date_of_birth"),
        sex="CASE upper(sex) WHEN 'F' THEN 'F' WHEN 'M' THEN 'M' END", postcode="postcode",
        encounters="attendances", encounter_id="attendance_id", encounter_type="'ae'",
        encounter_dates=(_iso("arrival_date"), _iso("arrival_date")),
        encounter_organisation="site_code",
    ),
    "death-register": Layout(
        patients="deaths", local_id="registration_id", nhs="nhs_number", given="forenames",
        family="surname", birth_date=_iso("date_of_birth"),
        sex="CASE upper(sex) WHEN 'F' THEN 'F' WHEN 'M' THEN 'M' END",
        postcode="usual_address_postcode", death_date=_iso("date_of_death"),
    ),
}  # fmt: skip

EVENT_FILES: Final = ("conditions", "observations", "medications", "procedures")


def layout(name: str) -> Layout:
    if name not in LAYOUTS:
        raise SourceError(
            f"unknown feed layout {name!r}: the hub reads {', '.join(sorted(LAYOUTS))}"
        )
    return LAYOUTS[name]


def file_of(folder: Path, stem: str, ext: str) -> Path:
    path = folder / f"{stem}.{ext}"
    if not path.is_file():
        raise SourceError(f"a feed has no {stem}.{ext} (in {folder.name}/)")
    return path


def relation(path: Path, tables: Mapping[Path, str]) -> str:
    """SQL reading one feed file: a Parquet file directly; a CSV file from the relation
    it was read into (``tables``: every column as text, conventions differ)."""
    if path.suffix == ".parquet":
        return f"read_parquet({quote(str(path))})"
    if path not in tables:
        raise ValueError(f"{path.name} was not read into a table before its SQL was built")
    return tables[path]


def files_read(lay: Layout, folder: Path) -> list[Path]:
    """The files of ``folder`` that the layout reads (a required one missing: refused)."""
    out = [file_of(folder, lay.patients, lay.ext)]
    if lay.encounters is not None:
        out.append(file_of(folder, lay.encounters, lay.ext))
    if lay.events:
        out += [p for t in EVENT_FILES if (p := folder / f"{t}.{lay.ext}").is_file()]
    return list(dict.fromkeys(out))


def target(lay: Layout, path: Path) -> str:
    """The warehouse table a row of this file feeds: where a row the reader rejected is
    quarantined and counted. A patients (identity) file's row is a record of a person;
    A&E's attendances are encounters that carry their identifiers."""
    if path.stem in EVENT_FILES:
        return path.stem
    return "encounters" if path.stem == lay.encounters else "patients"


def columns_read(
    con: duckdb.DuckDBPyConnection, lay: Layout, folder: Path
) -> dict[Path, list[str]]:
    """Each CSV file the layout reads, and the columns its SQL reads from it (in order).

    Every statement below reads one file, so each column it names is that file's: the
    statements are built over a placeholder and DuckDB's parser lists their columns.
    """
    out: dict[Path, list[str]] = {}
    for path in files_read(lay, folder):
        if path.suffix != ".csv":
            continue
        placeholder = {path: "feed_file"}
        statements: list[str | None] = []
        if path.stem == lay.patients:
            statements.append(identity_sql("feed", lay, folder, placeholder))
            statements.append(details_sql("feed", lay, folder, placeholder))
        if path.stem == lay.encounters:
            statements.append(encounters_sql("feed", lay, folder, None, placeholder))
        if path.stem in EVENT_FILES:
            statements.append(events_sql("feed", lay, folder, path.stem, placeholder))
        names: dict[str, str] = {}
        for sql in statements:
            if sql is not None:
                for name in _column_refs(con, sql):
                    names.setdefault(name.lower(), name)
        out[path] = list(names.values())
    return out


def _column_refs(con: duckdb.DuckDBPyConnection, sql: str) -> list[str]:
    parsed = json.loads(con.execute("SELECT json_serialize_sql($s)", {"s": sql}).fetchall()[0][0])
    if parsed.get("error"):
        raise ValueError(f"a layout's SQL does not parse: {parsed.get('error_message')}")
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("class") == "COLUMN_REF":
                found.append(str(node["column_names"][-1]))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(parsed)
    return found


def identity_sql(feed: str, lay: Layout, folder: Path, tables: Mapping[Path, str]) -> str:
    """One row per feed record: its key and its identifiers, normalised for linkage."""
    rel = relation(file_of(folder, lay.patients, lay.ext), tables)
    return f"""
        SELECT {quote(feed)} || '|' || {lay.local_id}::VARCHAR AS record_key,
               {quote(feed)} AS feed,
               nullif(regexp_replace({lay.nhs}::VARCHAR, '[^0-9]', '', 'g'), '') AS nhs_number,
               nullif(upper(trim({lay.given}::VARCHAR)), '') AS given_name,
               nullif(upper(trim({lay.family}::VARCHAR)), '') AS family_name,
               {lay.birth_date} AS birth_date,
               {lay.sex} AS sex,
               nullif(upper(regexp_replace(trim({lay.postcode}::VARCHAR), '\\s+', ' ', 'g')), '')
                   AS postcode
        FROM {rel}
    """


def details_sql(feed: str, lay: Layout, folder: Path, tables: Mapping[Path, str]) -> str | None:
    """What a GP record or the death register adds about the person (None: nothing)."""
    if lay.practice is None and lay.death_date is None:
        return None
    rel = relation(file_of(folder, lay.patients, lay.ext), tables)
    reg = lay.registration or ("NULL::DATE", "NULL::DATE")
    return f"""
        SELECT {quote(feed)} || '|' || {lay.local_id}::VARCHAR AS record_key,
               {lay.practice or "NULL"}::VARCHAR AS practice_code,
               {reg[0]} AS registration_start, {reg[1]} AS registration_end,
               {lay.ethnicity or "NULL"}::VARCHAR AS ethnicity,
               {lay.local_authority or "NULL"}::VARCHAR AS local_authority,
               {lay.imd_decile or "NULL::INTEGER"} AS imd_decile,
               {lay.death_date or "NULL::DATE"} AS death_date
        FROM {rel}
    """


def encounters_sql(
    feed: str, lay: Layout, folder: Path, organisation: str | None, tables: Mapping[Path, str]
) -> str | None:
    if lay.encounters is None:
        return None
    rel = relation(file_of(folder, lay.encounters, lay.ext), tables)
    org = lay.encounter_organisation or quote(organisation or "")
    start, end = lay.encounter_dates
    if lay.ext == "parquet" or not start.startswith("try_"):
        start, end = _iso(start), _iso(end)
    return f"""
        SELECT {_keyed(feed, lay.encounter_id)} AS id,
               {lay.encounter_id}::VARCHAR AS source_id,
               {quote(feed)} || '|' || {lay.local_id}::VARCHAR AS record_key,
               {lay.encounter_type}::VARCHAR AS encounter_type,
               NULL::VARCHAR AS code_system, NULL::VARCHAR AS code, NULL::VARCHAR AS description,
               nullif({org}::VARCHAR, '') AS organisation_code,
               {start} AS start_date, {end} AS end_date,
               CASE WHEN {start} IS NULL THEN 'unparseable date' END AS bad_reason,
               {quote(feed)} AS feed
        FROM {rel}
    """


def events_sql(
    feed: str, lay: Layout, folder: Path, table: str, tables: Mapping[Path, str]
) -> str | None:
    """One clinical table of a feed in the hub's staging shape (``stage_<table>``)."""
    if not lay.events:
        return None
    path = folder / f"{table}.{lay.ext}"
    if not path.is_file():
        return None
    rel = relation(path, tables)
    id_col = f"{table[:-1]}_id"
    enc = lay.encounter_id if lay.encounter_id != "attendance_id" else "encounter_id"
    coded = (
        "code_system::VARCHAR AS code_system, code::VARCHAR AS code, "
        "description::VARCHAR AS description"
    )
    dates = {
        "conditions": ("onset_date", "NULL::DATE AS end_date"),
        "observations": ("observed_date", None),
        "medications": ("start_date", "end_date"),
        "procedures": ("procedure_date", None),
    }[table]
    first = f"{_iso(dates[0])} AS {dates[0]}"
    second = ""
    if dates[1] == "end_date":
        second = f", {_iso('end_date')} AS end_date"
    elif dates[1]:
        second = f", {dates[1]}"
    value = (
        ", try_cast(value AS DOUBLE) AS value, NULL::VARCHAR AS value_text, unit::VARCHAR AS unit"
        if table == "observations"
        else ""
    )
    bad = f"CASE WHEN {_iso(dates[0])} IS NULL THEN 'unparseable date' END"
    if table == "observations":
        bad = (
            "CASE WHEN value IS NOT NULL AND try_cast(value AS DOUBLE) IS NULL "
            f"THEN 'unparseable number' ELSE {bad} END"
        )
    return f"""
        SELECT {_keyed(feed, id_col)} AS id, {id_col}::VARCHAR AS source_id,
               {quote(feed)} || '|' || {lay.local_id}::VARCHAR AS record_key,
               {_keyed(feed, enc)} AS encounter_id, {coded}{value}, {first}{second},
               {bad} AS bad_reason, {quote(feed)} AS feed
        FROM {rel}
    """
