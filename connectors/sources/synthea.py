"""Connector for Synthea's CSV export.

Every file of the export loads. The clinical files map into the warehouse tables with
their code systems kept (SNOMED CT, LOINC for observations, RxNorm for medications and
some allergies, CVX for immunizations); the rest (claims, payers, supplies, imaging
studies, ...) load as source-specific tables named ``synthea_<file>`` with the person
pseudonymised and identifying columns left out. Files may be truncated: references to
missing people are quarantined, references to missing encounters are kept as they are
(the quality gate reports them).

Direct identifiers (SSN, driver's licence, passport, names, address, coordinates, birth
place, exact birth date) go to the vault only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

import duckdb

from connectors.errors import SourceError
from connectors.staging import SourceFiles, quote, relation_sql

SOURCE = "synthea"
VERSION = "1.0"

PATIENT_IDENTIFIERS: Final = (
    "SSN", "DRIVERS", "PASSPORT", "PREFIX", "FIRST", "MIDDLE", "LAST", "SUFFIX", "MAIDEN",
    "BIRTHDATE", "BIRTHPLACE", "ADDRESS", "CITY", "ZIP", "LAT", "LON", "FIPS",
)  # fmt: skip

# other files: which column names the person, and which columns never leave the vault
EXTRA_FILES: Final = {
    "supplies": ("PATIENT", ()),
    "imaging_studies": ("PATIENT", ("SERIES_UID", "INSTANCE_UID")),
    "payer_transitions": ("PATIENT", ("MEMBERID", "OWNER_NAME")),
    "claims": ("PATIENTID", ()),
    "claims_transactions": ("PATIENTID", ("MEMBERID",)),
    "patient_expenses": ("PATIENT_ID", ()),
}
# files that name no person; providers are clinicians, so their names stay out too
UNLINKED_FILES: Final = {"payers": (), "providers": ("NAME", "ADDRESS", "LAT", "LON")}


def _columns(con: duckdb.DuckDBPyConnection, path: Path) -> list[str]:
    rel = con.sql(f"SELECT * FROM read_csv({quote(str(path))}, all_varchar = true) LIMIT 0")
    return [c.upper() for c in rel.columns]


def discover(src: Path) -> SourceFiles:
    if not (src / "patients.csv").exists():
        raise SourceError(f"{src} has no patients.csv: not a Synthea CSV export")
    files = SourceFiles(kind="csv")
    for path in sorted(src.glob("*.csv")):
        files.tables[path.stem.lower()] = [path]
    return files


def stage(con: duckdb.DuckDBPyConnection, src: Path) -> SourceFiles:
    files = discover(src)
    cols = {name: _columns(con, paths[0]) for name, paths in files.tables.items()}

    def rel(name: str) -> str:
        return relation_sql(files.tables[name], "csv")

    def has(name: str, col: str) -> bool:
        return col in cols.get(name, [])

    def col(name: str, column: str) -> str:
        return f'hub_blank("{column}")' if has(name, column) else "NULL::VARCHAR"

    def bad_dates(name: str, *columns: str) -> str:
        checks = [f'hub_bad_date("{c}")' for c in columns if has(name, c)]
        if not checks:
            return "NULL::VARCHAR"
        return f"CASE WHEN {' OR '.join(checks)} THEN 'unparseable date' END"

    identifiers = ", ".join(
        f"'{c.lower()}', hub_blank(\"{c}\")" for c in PATIENT_IDENTIFIERS if has("patients", c)
    )
    con.execute(
        f"""
        CREATE TEMP VIEW stage_patients AS
        SELECT hub_blank("ID") AS source_patient_id, NULL::VARCHAR AS nhs_number,
               hub_date("BIRTHDATE") AS birth_date,
               {col("patients", "GENDER")} AS sex,
               concat_ws(' / ', {col("patients", "RACE")}, {col("patients", "ETHNICITY")})
                   AS ethnicity,
               {col("patients", "COUNTY")} AS local_authority,
               NULL::INTEGER AS imd_decile, NULL::VARCHAR AS practice_code,
               NULL::DATE AS registration_start, NULL::DATE AS registration_end,
               hub_date({col("patients", "DEATHDATE")}) AS death_date,
               json_object({identifiers})::VARCHAR AS identifiers,
               {bad_dates("patients", "BIRTHDATE", "DEATHDATE")} AS bad_reason,
               filename AS source_file, file_row_number AS source_row
        FROM {rel("patients")}
        """
    )
    if "organizations" in files.tables:
        con.execute(
            f"""
            CREATE TEMP VIEW stage_organisations AS
            SELECT hub_blank("ID") AS organisation_code, {col("organizations", "NAME")} AS name,
                   'provider' AS kind, {col("organizations", "CITY")} AS local_authority
            FROM {rel("organizations")}
            """
        )

    def system(name: str, default: str) -> str:
        if has(name, "SYSTEM"):
            return f"coalesce(hub_code_system(hub_blank(\"SYSTEM\")), '{default}')"
        return f"'{default}'"

    # rows without an Id get a deterministic one from their whole content
    def row_id(name: str) -> str:
        if has(name, "ID"):
            return 'hub_id(hub_blank("ID"))'
        listed = ", ".join(f'"{c}"' for c in cols[name])
        return f"hub_id(concat_ws('|', {listed}))"

    coded = 'hub_blank("CODE") AS code, hub_blank("DESCRIPTION") AS description'
    specs = {
        "encounters": (
            "encounters",
            f"{col('encounters', 'ENCOUNTERCLASS')} AS encounter_type, 'SNOMED CT' AS code_system, "
            f"{coded}, {col('encounters', 'ORGANIZATION')} AS organisation_code, "
            'hub_date("START") AS start_date, hub_date("STOP") AS end_date',
            ("START", "STOP"),
        ),
        "conditions": (
            "conditions",
            f"{system('conditions', 'SNOMED CT')} AS code_system, {coded}, "
            'hub_date("START") AS onset_date, hub_date("STOP") AS end_date',
            ("START", "STOP"),
        ),
        "observations": (
            "observations",
            # Synthea's own summary scores (QALY, DALY, QOLS) are not LOINC codes
            "CASE WHEN \"CODE\" IN ('QALY', 'DALY', 'QOLS') THEN 'Synthea' ELSE 'LOINC' END "
            f"AS code_system, {coded}, "
            "CASE WHEN coalesce(\"TYPE\", 'numeric') = 'numeric' "
            'THEN try_cast("VALUE" AS DOUBLE) END AS value, '
            "CASE WHEN coalesce(\"TYPE\", 'numeric') <> 'numeric' THEN hub_blank(\"VALUE\") END "
            f"AS value_text, {col('observations', 'UNITS')} AS unit, "
            'hub_date("DATE") AS observed_date',
            ("DATE",),
        ),
        "medications": (
            "medications",
            f"'RxNorm' AS code_system, {coded}, "
            'hub_date("START") AS start_date, hub_date("STOP") AS end_date',
            ("START", "STOP"),
        ),
        "procedures": (
            "procedures",
            f"{system('procedures', 'SNOMED CT')} AS code_system, {coded}, "
            'hub_date("START") AS procedure_date',
            ("START",),
        ),
        "immunizations": (
            "immunizations",
            f"'CVX' AS code_system, {coded}, hub_date(\"DATE\") AS immunization_date",
            ("DATE",),
        ),
        "allergies": (
            "allergies",
            f"{system('allergies', 'SNOMED CT')} AS code_system, {coded}, "
            f"{col('allergies', 'CATEGORY')} AS category, "
            'hub_date("START") AS start_date, hub_date("STOP") AS end_date',
            ("START", "STOP"),
        ),
        "devices": (
            "devices",
            f"'SNOMED CT' AS code_system, {coded}, "
            'hub_date("START") AS start_date, hub_date("STOP") AS end_date',
            ("START", "STOP"),
        ),
        "careplans": (
            "care_plans",
            f"'SNOMED CT' AS code_system, {coded}, "
            f"{col('careplans', 'REASONCODE')} AS reason_code, "
            'hub_date("START") AS start_date, hub_date("STOP") AS end_date',
            ("START", "STOP"),
        ),
    }
    for name, (target, body, dates) in specs.items():
        if name not in files.tables:
            continue
        encounter = 'hub_id(hub_blank("ENCOUNTER"))' if has(name, "ENCOUNTER") else "NULL::BIGINT"
        encounter_col = "" if name == "encounters" else f"{encounter} AS encounter_id, "
        source_id = 'hub_blank("ID")' if has(name, "ID") else "NULL::VARCHAR"
        number_check = (
            "WHEN coalesce(\"TYPE\", 'numeric') = 'numeric' AND hub_bad_number(\"VALUE\") "
            "THEN 'unparseable number' "
            if name == "observations"
            else ""
        )
        date_checks = " OR ".join(f'hub_bad_date("{c}")' for c in dates if has(name, c))
        con.execute(
            f"""
            CREATE TEMP VIEW stage_{target} AS
            SELECT {row_id(name)} AS id, {source_id} AS source_id,
                   hub_blank("PATIENT") AS source_patient_id, {encounter_col}{body},
                   CASE {number_check}WHEN {date_checks or "false"} THEN 'unparseable date'
                   END AS bad_reason,
                   filename AS source_file, file_row_number AS source_row
            FROM {rel(name)}
            """
        )
    for name, (patient_col, secret) in EXTRA_FILES.items():
        if name not in files.tables:
            continue
        keep = [
            c for c in cols[name]
            if c not in secret and c != patient_col and c not in ("FILENAME",)
        ]  # fmt: skip
        listed = ", ".join(f'hub_blank("{c}") AS "{c.lower()}"' for c in keep)
        con.execute(
            f"""
            CREATE TEMP VIEW stage_extra_synthea_{name} AS
            SELECT hub_blank("{patient_col}") AS source_patient_id, {listed},
                   filename AS source_file, file_row_number AS source_row
            FROM {rel(name)}
            """
        )
    for name, secret in UNLINKED_FILES.items():
        if name in files.tables:
            listed = ", ".join(
                f'hub_blank("{c}") AS "{c.lower()}"' for c in cols[name] if c not in secret
            )
            con.execute(
                f"""CREATE TEMP VIEW stage_unlinked_synthea_{name} AS
                    SELECT {listed} FROM {rel(name)}"""
            )
    return files
