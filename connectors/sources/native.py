"""Connector for the hub's own generator output (``hub synth``): Parquet or CSV.

Parquet columns arrive typed; CSV is read as text (``all_varchar``) so that a value of
the wrong type is caught per row (quarantined as unparseable) instead of failing the
whole file or being silently coerced.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

import duckdb

from connectors.errors import SourceError
from connectors.staging import (
    SourceFiles,
    csv_header,
    describe,
    quote,
    read_csv_table,
    relation_sql,
)

SOURCE = "native"
VERSION = "1.0"
TABLES = ("patients", "encounters", "conditions", "observations", "medications", "procedures")
IDENTIFIERS = (
    "nhs_number", "given_name", "family_name", "address_line", "town", "postcode",
    "date_of_birth",
)  # fmt: skip


# the columns read from each table (an allow-list: anything else in a file is ignored)
COLUMNS: Final = {
    "patients": ("patient_id", "nhs_number", "date_of_birth", "sex", "ethnicity",
                 "local_authority", "imd_decile", "practice_code", "registration_start",
                 "registration_end", "date_of_death", "given_name", "family_name",
                 "address_line", "town", "postcode"),
    "encounters": ("encounter_id", "patient_id", "encounter_type", "organisation_code",
                   "start_date", "end_date"),
    "conditions": ("condition_id", "patient_id", "encounter_id", "code_system", "code",
                   "description", "onset_date"),
    "observations": ("observation_id", "patient_id", "encounter_id", "code_system", "code",
                     "description", "value", "unit", "observed_date"),
    "medications": ("medication_id", "patient_id", "encounter_id", "code_system", "code",
                    "description", "start_date", "end_date"),
    "procedures": ("procedure_id", "patient_id", "encounter_id", "code_system", "code",
                   "description", "procedure_date"),
    "organisations": ("organisation_code", "name", "kind", "local_authority"),
}  # fmt: skip
# identifying values the identifier scan looks for (by meaning)
SCANNED: Final = {"nhs_number": "identifier", "given_name": "name", "family_name": "name",
                  "address_line": "address"}  # fmt: skip


def discover(src: Path) -> SourceFiles:
    if not src.is_dir():
        raise SourceError(f"{describe(src)} is not a folder of generator output")
    files = SourceFiles()
    for ext in ("parquet", "csv"):
        for table in TABLES:
            folder = src / table
            found = sorted(folder.glob(f"*.{ext}")) if folder.is_dir() else []
            for path in found:
                files.add(table, path)
                files.kind = ext
        orgs = src / f"organisations.{ext}"
        if orgs.exists() or orgs.is_symlink():
            files.add("organisations", orgs)
    if "patients" not in files.tables:
        raise SourceError(
            f"{describe(src)} holds no patients/*.parquet or patients/*.csv: not a generator "
            "output (use --format synthea or fhir for other sources)"
        )
    return files


def _read(con: duckdb.DuckDBPyConnection, files: SourceFiles, table: str) -> str:
    """The table's files as one relation with its allow-listed columns, or a refusal."""
    first = files.tables[table][0]
    if files.kind == "csv":
        names = [n.strip() for n in csv_header(first)]
        read_csv_table(con, files=files, table=table, width=len(names), target=table)
        listed = ", ".join(f'c{names.index(c)} AS "{c}"' for c in COLUMNS[table] if c in names)
        present = set(names)
        relation = f"(SELECT {listed}, filename, file_row_number FROM raw_{table})"
    else:
        present = {
            r[0]
            for r in con.execute(
                f"DESCRIBE SELECT * FROM read_parquet({quote(str(first))})"
            ).fetchall()
        }
        relation = relation_sql(files, table)
    for column in COLUMNS[table]:
        if column not in present:
            raise SourceError(f"{describe(first)} ({table}): no {column} column")
    return relation


def stage(con: duckdb.DuckDBPyConnection, src: Path) -> SourceFiles:
    files = discover(src)
    typed = files.kind == "parquet"
    relations = {table: _read(con, files, table) for table in files.tables}

    def rel(table: str) -> str:
        return relations[table]

    def date(col: str) -> str:
        return col if typed else f"hub_date({col})"

    def bad_dates(*cols: str) -> str:
        if typed:
            return "NULL::VARCHAR"
        checks = " OR ".join(f"hub_bad_date({c})" for c in cols)
        return f"CASE WHEN {checks} THEN 'unparseable date' END"

    def bigint(col: str) -> str:
        return col if typed else f"try_cast({col} AS BIGINT)"

    scanned = " UNION ALL ".join(
        f"SELECT '{meaning}' AS meaning, {column}::VARCHAR AS value FROM {rel('patients')}"
        for column, meaning in SCANNED.items()
    )
    full_name = (
        "SELECT 'name', concat_ws(' ', given_name::VARCHAR, family_name::VARCHAR) "
        f"FROM {rel('patients')}"
    )
    con.execute(f"CREATE TEMP VIEW stage_identifying_values AS {scanned} UNION ALL {full_name}")
    identifiers = ", ".join(f"'{c}', {c}::VARCHAR" for c in IDENTIFIERS)
    con.execute(
        f"""
        CREATE TEMP VIEW stage_patients AS
        SELECT {bigint("patient_id")}::VARCHAR AS source_patient_id,
               regexp_replace(nhs_number::VARCHAR, '[\\s-]', '', 'g') AS nhs_number,
               {date("date_of_birth")} AS birth_date,
               sex::VARCHAR AS sex, ethnicity::VARCHAR AS ethnicity,
               local_authority::VARCHAR AS local_authority,
               try_cast(imd_decile AS INTEGER) AS imd_decile,
               practice_code::VARCHAR AS practice_code,
               {date("registration_start")} AS registration_start,
               {date("registration_end")} AS registration_end,
               {date("date_of_death")} AS death_date,
               json_object({identifiers})::VARCHAR AS identifiers,
               {bad_dates("date_of_birth", "registration_start", "registration_end", "date_of_death")}
                   AS bad_reason,
               filename AS source_file, file_row_number AS source_row
        FROM {rel("patients")}
        """
    )
    if "organisations" in files.tables:
        con.execute(
            f"""
            CREATE TEMP VIEW stage_organisations AS
            SELECT organisation_code::VARCHAR AS organisation_code, name::VARCHAR AS name,
                   kind::VARCHAR AS kind, local_authority::VARCHAR AS local_authority
            FROM {rel("organisations")}
            """
        )
    coded = "code_system::VARCHAR AS code_system, code::VARCHAR AS code, description::VARCHAR AS description"
    specs = {
        "encounters": (
            "encounter_id",
            f"encounter_type::VARCHAR AS encounter_type, NULL::VARCHAR AS code_system, "
            f"NULL::VARCHAR AS code, NULL::VARCHAR AS description, "
            f"organisation_code::VARCHAR AS organisation_code, "
            f"{date('start_date')} AS start_date, {date('end_date')} AS end_date",
            ("start_date", "end_date"),
        ),
        "conditions": (
            "condition_id",
            f"{bigint('encounter_id')} AS encounter_id, {coded}, "
            f"{date('onset_date')} AS onset_date, NULL::DATE AS end_date",
            ("onset_date",),
        ),
        "observations": (
            "observation_id",
            f"{bigint('encounter_id')} AS encounter_id, {coded}, "
            f"{'value' if typed else 'try_cast(value AS DOUBLE)'} AS value, "
            f"NULL::VARCHAR AS value_text, unit::VARCHAR AS unit, "
            f"{date('observed_date')} AS observed_date",
            ("observed_date",),
        ),
        "medications": (
            "medication_id",
            f"{bigint('encounter_id')} AS encounter_id, {coded}, "
            f"{date('start_date')} AS start_date, {date('end_date')} AS end_date",
            ("start_date", "end_date"),
        ),
        "procedures": (
            "procedure_id",
            f"{bigint('encounter_id')} AS encounter_id, {coded}, "
            f"{date('procedure_date')} AS procedure_date",
            ("procedure_date",),
        ),
    }
    for table, (id_col, columns, dates) in specs.items():
        if table not in files.tables:
            continue
        bad = bad_dates(*dates)
        if not typed and table == "observations":
            bad = f"CASE WHEN hub_bad_number(value) THEN 'unparseable number' ELSE {bad} END"
        con.execute(
            f"""
            CREATE TEMP VIEW stage_{table} AS
            SELECT {bigint(id_col)} AS id, {id_col}::VARCHAR AS source_id,
                   {bigint("patient_id")}::VARCHAR AS source_patient_id,
                   {columns}, {bad} AS bad_reason,
                   filename AS source_file, file_row_number AS source_row
            FROM {rel(table)}
            """
        )
    return files
