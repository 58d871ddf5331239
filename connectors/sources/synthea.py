"""Connector for Synthea's CSV export, layouts 2.x (2018) to 3.x.

Every file is read in the one CSV dialect of ``connectors.staging``; each column is
looked up by its documented name in ``synthea_layouts`` and classified by meaning. Only
the fields the hub maps are read: the clinical files fill the warehouse tables with
their code systems kept (SNOMED CT, LOINC, RxNorm, CVX); supplies, imaging studies,
payer transitions, claims and expenses fill ``synthea_<file>`` tables under the hub's
own column names, the person pseudonymised. Identifying columns (names, SSN, licence,
passport, address, member ids, whatever the release spells them) go to the vault or
nowhere; unknown columns and files are dropped and counted in the manifest (a column
named only when Synthea documents its name). Ids and references to other records
(encounters, claims, payers, providers, organisations) are published as the hub's keyed
ids (``hub_id``), never as the export's. All files of one table must share one header.

Files may be truncated: references to missing people are quarantined, references to
missing encounters are kept as they are (the quality gate reports them). Rows of files
without an ``Id`` column (procedures, observations, ...) are keyed by their position in
their file: Synthea repeats identical rows for genuinely repeated events.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import duckdb

from connectors.errors import SourceError
from connectors.sources import synthea_layouts as layouts
from connectors.staging import (
    NOTE_SUFFIXES,
    SourceFiles,
    csv_header,
    describe,
    read_csv_table,
    split_name,
)

SOURCE = "synthea"
VERSION = "2.0"

# Synthea file -> warehouse table
EVENT_FILES: Final = {
    "encounters": "encounters", "conditions": "conditions", "observations": "observations",
    "medications": "medications", "procedures": "procedures", "immunizations": "immunizations",
    "allergies": "allergies", "devices": "devices", "careplans": "care_plans",
}  # fmt: skip
READ_FILES: Final = frozenset(layouts.FIELDS)
# every column name some Synthea file documents: the only header names the manifest gives
KNOWN_COLUMNS: Final = frozenset().union(*(layouts.known_columns(f) for f in layouts.FIELDS))
# a column name recorded in the manifest must look like one: anything else may be data
_COLUMN_NAME = re.compile(r"[A-Z][A-Z0-9_]{0,39}")
# files whose identifying values the identifier scan looks for
SCANNED_FILES: Final = ("patients", "payer_transitions", "claims_transactions")


@dataclass
class Header:
    """A file's header resolved against the known layouts: positions by column name."""

    file: str
    positions: dict[str, int]
    width: int
    layout: str | None
    unknown: list[str] = field(default_factory=list)
    unnamed: int = 0

    def has(self, column: str) -> bool:
        return column in self.positions

    def column(self, field_name: str) -> str | None:
        """The positional column (``c3``) that holds a field, or None."""
        for f in layouts.FIELDS[self.file]:
            if f.name == field_name:
                for spelling in f.spellings:
                    if spelling in self.positions:
                        return f"c{self.positions[spelling]}"
        return None

    def raw(self, column: str) -> str | None:
        return f"c{self.positions[column]}" if column in self.positions else None


def resolve_header(file: str, path: Path) -> Header:
    names = [n.upper() for n in csv_header(path)]
    known = layouts.known_columns(file)
    positions: dict[str, int] = {}
    for i, name in enumerate(names):
        if name in known:
            if name in positions:
                raise SourceError(f"{describe(path)}: column {name} appears twice")
            positions[name] = i
    for f in layouts.FIELDS[file]:
        if f.required and not any(s in positions for s in f.spellings):
            expected = " or ".join(f.spellings)
            raise SourceError(
                f"{describe(path)}: no {expected} column ({f.name}); expected the Synthea "
                f"{file} header of a 2.x or 3.x export"
            )
    header = Header(file, positions, len(names), layouts.match_layout(file, names))
    for name in names:
        if name in known:
            continue
        if _COLUMN_NAME.fullmatch(name):
            header.unknown.append(name)
        else:
            header.unnamed += 1
    return header


def discover(src: Path) -> SourceFiles:
    if not src.is_dir():
        raise SourceError(
            f"{describe(src)} is not a folder: --format synthea reads the folder of a "
            "Synthea CSV export (patients.csv, encounters.csv, ...)"
        )
    files = SourceFiles(kind="csv")
    found: dict[str, list[Path]] = {}
    for path in sorted(src.iterdir()):
        # any case of the extension, gzip-compressed or not: Conditions.CSV, conditions.csv.gz
        stem, suffix, _compression = split_name(path)
        if suffix == ".csv" and stem.lower() in READ_FILES:
            found.setdefault(stem.lower(), []).append(path)
        elif path.is_dir() and not path.is_symlink():
            files.ignored["folders"] = files.ignored.get("folders", 0) + 1
        elif suffix not in NOTE_SUFFIXES:  # README.md, SOURCE.md: notes, not data
            # never dropped silently: counted, never named (a name can be data)
            files.ignored["files"] = files.ignored.get("files", 0) + 1
    if "patients" not in found:
        raise SourceError(
            f"{describe(src)} has no patients.csv (or patients.csv.gz): not a Synthea CSV export"
        )
    for stem, paths in found.items():
        for path in paths:
            files.add(stem, path)  # a FIFO, link or device is refused by name
    return files


def _same_header(files: SourceFiles, name: str) -> Header:
    """The header of every file of one table, which must be the same in each.

    The files of a table are read by position, with the first file's header: a second
    file (``patients.csv`` beside ``Patients.csv``) whose columns are in another order,
    or are others, would publish one field as another (a birthplace as an ethnicity).
    Such an export is refused, naming both files, never a value.
    """
    paths = files.tables[name]
    header = resolve_header(name, paths[0])
    first = [n.upper() for n in csv_header(paths[0])]
    for path in paths[1:]:
        other = [n.upper() for n in csv_header(path)]
        if other != first:
            why = (
                "the same columns in another order"
                if sorted(other) == sorted(first)
                else "different columns"
            )
            raise SourceError(
                f"{describe(paths[0], files.labels[paths[0]])} and "
                f"{describe(path, files.labels[path])} are both Synthea {name} files but "
                f"their headers differ ({why}); the files of one table are read with one "
                "header, so the load is refused: remove or merge one of them"
            )
    return header


def stage(con: duckdb.DuckDBPyConnection, src: Path) -> SourceFiles:
    files = discover(src)
    headers = {name: _same_header(files, name) for name in files.tables}
    for name, header in headers.items():
        target = {**EVENT_FILES, "organizations": "organisations"}.get(name, name)
        if name in layouts.PERSON_LINKED or name in layouts.UNLINKED:
            target = f"synthea_{name}"
        read_csv_table(con, files=files, table=name, width=header.width, target=target)
    _patients(con, headers["patients"])
    _identifying_values(con, headers)
    if "organizations" in headers:
        h = headers["organizations"]
        con.execute(
            f"""
            CREATE TEMP VIEW stage_organisations AS
            SELECT {_keyed(h.column("id"))}::VARCHAR AS organisation_code,
                   {_text(h, "name")} AS name, 'provider' AS kind,
                   {_text(h, "city")} AS local_authority
            FROM raw_organizations
            """
        )
    for name, target in EVENT_FILES.items():
        if name in headers:
            _events(con, headers[name], target)
    for name in layouts.PERSON_LINKED:
        if name in headers:
            _side_table(con, headers[name], linked=True)
    for name in layouts.UNLINKED:
        if name in headers:
            _side_table(con, headers[name], linked=False)
    files.ignored.update(_column_report(headers))
    files.layouts = {name: h.layout or "unknown" for name, h in sorted(headers.items())}
    p = headers["patients"]
    files.unguaranteed["patients"] = [
        f for f, present in (("local_authority", p.column("county")),
                             ("ethnicity", p.column("race") or p.column("ethnicity")))
        if not present
    ]  # fmt: skip
    return files


def _text(h: Header, field_name: str) -> str:
    column = h.column(field_name)
    return f"hub_blank({column})" if column else "NULL::VARCHAR"


def _keyed(column: str | None) -> str:
    """A source id (or a reference to one) as the hub's keyed id: never the id itself."""
    return f"hub_id(hub_blank({column}))" if column else "NULL::BIGINT"


def _patients(con: duckdb.DuckDBPyConnection, h: Header) -> None:
    vault = ", ".join(
        f"'{c.lower()}', hub_blank({h.raw(c)})" for c in layouts.IDENTIFYING["patients"] if h.has(c)
    )
    birth, death = h.column("birth_date"), h.column("death_date")
    dates = " OR ".join(f"hub_bad_date({c})" for c in (birth, death) if c)
    con.execute(
        f"""
        CREATE TEMP VIEW stage_patients AS
        SELECT hub_blank({h.column("id")}) AS source_patient_id, NULL::VARCHAR AS nhs_number,
               hub_date({birth}) AS birth_date, {_text(h, "sex")} AS sex,
               nullif(concat_ws(' / ', {_text(h, "race")}, {_text(h, "ethnicity")}), '')
                   AS ethnicity,
               {_text(h, "county")} AS local_authority,
               NULL::INTEGER AS imd_decile, NULL::VARCHAR AS practice_code,
               NULL::DATE AS registration_start, NULL::DATE AS registration_end,
               hub_date({death or "NULL::VARCHAR"}) AS death_date,
               json_object({vault})::VARCHAR AS identifiers,
               CASE WHEN {dates} THEN 'unparseable date' END AS bad_reason,
               filename AS source_file, file_row_number AS source_row
        FROM raw_patients
        """
    )


def _identifying_values(con: duckdb.DuckDBPyConnection, headers: dict[str, Header]) -> None:
    """``stage_identifying_values``: what the identifier scan must never find published."""
    parts = ["SELECT NULL::VARCHAR AS meaning, NULL::VARCHAR AS value WHERE false"]
    for name in SCANNED_FILES:
        h = headers.get(name)
        if h is None:
            continue
        for column, meaning in layouts.IDENTIFYING.get(name, {}).items():
            if meaning in layouts.SCANNED_MEANINGS and h.has(column):
                parts.append(f"SELECT '{meaning}', hub_blank({h.raw(column)}) FROM raw_{name}")
    p = headers["patients"]
    cols = {c: f"hub_blank({p.raw(c)})" for c in layouts.NAME_PARTS if p.has(c)}
    combos = [
        ("FIRST", "LAST"), ("FIRST", "MIDDLE", "LAST"), ("PREFIX", "FIRST", "LAST"),
        ("PREFIX", "FIRST", "MIDDLE", "LAST"), ("FIRST", "LAST", "SUFFIX"), ("PREFIX", "LAST"),
    ]  # fmt: skip
    for combo in combos:
        if all(c in cols for c in combo):
            listed = ", ".join(cols[c] for c in combo)
            parts.append(f"SELECT 'name', concat_ws(' ', {listed}) FROM raw_patients")
    con.execute("CREATE TEMP VIEW stage_identifying_values AS " + " UNION ALL ".join(parts))


def _system(h: Header, default: str) -> str:
    column = h.column("system")
    if column:
        return f"coalesce(hub_code_system(hub_blank({column})), '{default}')"
    return f"'{default}'"


def _events(con: duckdb.DuckDBPyConnection, h: Header, target: str) -> None:
    c = h.column
    coded = f"{_text(h, 'code')} AS code, {_text(h, 'description')} AS description"
    start, stop = c("start"), c("stop")

    def date(column: str | None) -> str:
        return f"hub_date({column})" if column else "NULL::DATE"

    bodies = {
        "encounters": f"{_text(h, 'class')} AS encounter_type, 'SNOMED CT' AS code_system, "
        f"{coded}, {_keyed(c('organisation'))}::VARCHAR AS organisation_code, "
        f"{date(start)} AS start_date, {date(stop)} AS end_date",
        "conditions": f"{_system(h, 'SNOMED CT')} AS code_system, {coded}, "
        f"{date(start)} AS onset_date, {date(stop)} AS end_date",
        "observations": (
            # Synthea's own summary scores (QALY, DALY, QOLS) are not LOINC codes
            f"CASE WHEN {c('code')} IN ('QALY', 'DALY', 'QOLS') THEN 'Synthea' ELSE 'LOINC' END "
            f"AS code_system, {coded}, "
            f"CASE WHEN {_numeric(h)} THEN try_cast({c('value') or 'NULL'} AS DOUBLE) END AS value, "
            f"CASE WHEN NOT {_numeric(h)} THEN hub_blank({c('value') or 'NULL'}) END AS value_text, "
            f"{_text(h, 'units')} AS unit, {date(c('date'))} AS observed_date"
        ),
        "medications": f"'RxNorm' AS code_system, {coded}, "
        f"{date(start)} AS start_date, {date(stop)} AS end_date",
        "procedures": f"{_system(h, 'SNOMED CT')} AS code_system, {coded}, "
        f"{date(start)} AS procedure_date",
        "immunizations": f"'CVX' AS code_system, {coded}, {date(c('date'))} AS immunization_date",
        "allergies": f"{_system(h, 'SNOMED CT')} AS code_system, {coded}, "
        f"{_text(h, 'category')} AS category, {date(start)} AS start_date, "
        f"{date(stop)} AS end_date",
        "devices": f"'SNOMED CT' AS code_system, {coded}, "
        f"{date(start)} AS start_date, {date(stop)} AS end_date",
        "care_plans": f"'SNOMED CT' AS code_system, {coded}, "
        f"{_text(h, 'reason_code')} AS reason_code, {date(start)} AS start_date, "
        f"{date(stop)} AS end_date",
    }
    dated = [x for x in (start, stop, c("date")) if x]
    checks = [f"hub_bad_date({x})" for x in dated]
    number_check = ""
    if target == "observations" and c("value"):
        number_check = (
            f"WHEN {_numeric(h)} AND hub_bad_number({c('value')}) THEN 'unparseable number' "
        )
    encounter = c("encounter")
    encounter_col = (
        ""
        if target == "encounters"
        else f"{'hub_id(hub_blank(' + encounter + '))' if encounter else 'NULL::BIGINT'} AS encounter_id, "
    )
    ident = c("id")
    # without an Id, a row is its position in its file: identical rows are real repeats
    row_id = (
        f"hub_id(hub_blank({ident}))" if ident else "hub_id(filename || ':' || file_row_number)"
    )
    con.execute(
        f"""
        CREATE TEMP VIEW stage_{target} AS
        SELECT {row_id} AS id, {f"hub_blank({ident})" if ident else "NULL::VARCHAR"} AS source_id,
               hub_blank({c("patient")}) AS source_patient_id, {encounter_col}{bodies[target]},
               CASE {number_check}WHEN {" OR ".join(checks) or "false"} THEN 'unparseable date'
               END AS bad_reason,
               filename AS source_file, file_row_number AS source_row
        FROM raw_{h.file}
        """
    )


def _numeric(h: Header) -> str:
    kind = h.column("type")
    # "numeric", "Numeric", " NUMERIC ": exporters differ in case and padding
    return f"coalesce(lower(trim({kind})), 'numeric') = 'numeric'" if kind else "true"


def _side_table(con: duckdb.DuckDBPyConnection, h: Header, *, linked: bool) -> None:
    """Supplies, claims, payers, ...: only their allow-listed fields, under hub names."""
    listed = [
        f"{_side_value(h, f)} AS {f.name}"
        for f in layouts.FIELDS[h.file]
        if f.name != "patient" and h.column(f.name)
    ]
    if linked:
        con.execute(
            f"""
            CREATE TEMP VIEW stage_extra_synthea_{h.file} AS
            SELECT hub_blank({h.column("patient")}) AS source_patient_id,
                   {", ".join(listed) or "NULL::VARCHAR AS nothing"},
                   filename AS source_file, file_row_number AS source_row
            FROM raw_{h.file}
            """
        )
    else:
        con.execute(
            f"""CREATE TEMP VIEW stage_unlinked_synthea_{h.file} AS
                SELECT {", ".join(listed)} FROM raw_{h.file}"""
        )


def _side_value(h: Header, f: layouts.Field) -> str:
    """A side table's field as published: a keyed id, a DATE, a year, or text."""
    if f.source_id:
        return _keyed(h.column(f.name))
    column = h.column(f.name)
    if f.kind == "date":
        return f"hub_date({column})"
    if f.kind == "year":  # '2015', '2015-03-01' or '2015-03-01T08:45:50Z': the year alone
        text = f"trim({column})"
        return (
            f"CASE WHEN regexp_matches({text}, '^[0-9]{{4}}([^0-9]|$)') "
            f"THEN CAST(left({text}, 4) AS INTEGER) END"
        )
    return _text(h, f.name)


def _column_report(headers: dict[str, Header]) -> dict[str, int]:
    """Unknown columns, counted per file; named only when the name is one the connector
    knows (a column some Synthea file documents, misplaced): any other header cell may
    be data (a patient's name, an SSN) and is only counted."""
    out: dict[str, int] = {}
    for name, h in sorted(headers.items()):
        unknown = h.unnamed
        for column in h.unknown:
            if column in KNOWN_COLUMNS:
                out[f"column {name}.{column}"] = 1
            else:
                unknown += 1
        if unknown:
            out[f"columns of {name} unknown to the connector"] = unknown
    return out
