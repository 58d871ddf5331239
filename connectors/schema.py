"""The warehouse schema every connector maps into, and the OMOP CDM v5.4-shaped views.

Research tables hold no direct identifier: the person key is the keyed pseudonym
``person_id``; birth is reduced to year and month; places to local authority and IMD
decile. Every coded row keeps its source code system (``code_system``).

OMOP views carry ``*_concept_id = 0`` where no standard concept vocabulary (Athena) is
bundled, and keep the source code in ``*_source_value`` with its vocabulary in an extra
``*_source_vocabulary_id`` column (a hub extension). Gender, visit and type concepts
are the standard OMOP ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

SCHEMA_VERSION: Final = "1.0"

PATIENT_COLUMNS: Final = (
    ("person_id", "BIGINT"),
    ("year_of_birth", "INTEGER"),
    ("month_of_birth", "INTEGER"),
    ("sex", "VARCHAR"),
    ("ethnicity", "VARCHAR"),
    ("local_authority", "VARCHAR"),
    ("imd_decile", "INTEGER"),
    ("practice_code", "VARCHAR"),
    ("registration_start", "DATE"),
    ("registration_end", "DATE"),
    ("death_date", "DATE"),
    ("source_system", "VARCHAR"),
)

ORGANISATION_COLUMNS: Final = (
    ("organisation_code", "VARCHAR"),
    ("name", "VARCHAR"),
    ("kind", "VARCHAR"),
    ("local_authority", "VARCHAR"),
    ("source_system", "VARCHAR"),
)

_CODED = (("code_system", "VARCHAR"), ("code", "VARCHAR"), ("description", "VARCHAR"))


@dataclass(frozen=True)
class EventTable:
    name: str
    id_column: str
    columns: tuple[tuple[str, str], ...]  # besides id, person_id and source_system


EVENT_TABLES: Final = (
    EventTable(
        "encounters",
        "encounter_id",
        (
            ("encounter_type", "VARCHAR"),
            *_CODED,
            ("organisation_code", "VARCHAR"),
            ("start_date", "DATE"),
            ("end_date", "DATE"),
        ),
    ),
    EventTable(
        "conditions",
        "condition_id",
        (("encounter_id", "BIGINT"), *_CODED, ("onset_date", "DATE"), ("end_date", "DATE")),
    ),
    EventTable(
        "observations",
        "observation_id",
        (
            ("encounter_id", "BIGINT"),
            *_CODED,
            ("value", "DOUBLE"),
            ("value_text", "VARCHAR"),
            ("unit", "VARCHAR"),
            ("observed_date", "DATE"),
        ),
    ),
    EventTable(
        "medications",
        "medication_id",
        (("encounter_id", "BIGINT"), *_CODED, ("start_date", "DATE"), ("end_date", "DATE")),
    ),
    EventTable(
        "procedures",
        "procedure_id",
        (("encounter_id", "BIGINT"), *_CODED, ("procedure_date", "DATE")),
    ),
    EventTable(
        "immunizations",
        "immunization_id",
        (("encounter_id", "BIGINT"), *_CODED, ("immunization_date", "DATE")),
    ),
    EventTable(
        "allergies",
        "allergy_id",
        (
            ("encounter_id", "BIGINT"),
            *_CODED,
            ("category", "VARCHAR"),
            ("start_date", "DATE"),
            ("end_date", "DATE"),
        ),
    ),
    EventTable(
        "devices",
        "device_id",
        (("encounter_id", "BIGINT"), *_CODED, ("start_date", "DATE"), ("end_date", "DATE")),
    ),
    EventTable(
        "care_plans",
        "care_plan_id",
        (
            ("encounter_id", "BIGINT"),
            *_CODED,
            ("reason_code", "VARCHAR"),
            ("start_date", "DATE"),
            ("end_date", "DATE"),
        ),
    ),
)
EVENT_TABLE: Final = {t.name: t for t in EVENT_TABLES}

QUARANTINE_DDL: Final = """
CREATE TABLE _quarantine (
    table_name VARCHAR NOT NULL,
    source_file VARCHAR,
    source_row BIGINT,
    source_id VARCHAR,   -- an event's source id; never a patient identifier
    reason VARCHAR NOT NULL
)
"""

# OMOP vocabulary_id for each code system name used in the warehouse
VOCABULARY_SQL: Final = """
CASE code_system
    WHEN 'SNOMED CT' THEN 'SNOMED' WHEN 'ICD-10' THEN 'ICD10' WHEN 'ICD-10-CM' THEN 'ICD10CM'
    WHEN 'LOINC' THEN 'LOINC' WHEN 'RxNorm' THEN 'RxNorm' WHEN 'CVX' THEN 'CVX'
    WHEN 'BNF' THEN 'BNF' WHEN 'dm+d' THEN 'dm+d' ELSE code_system END
"""

EHR: Final = 32817  # OMOP type concept "EHR"

OMOP_VIEWS: Final = {
    "person": """
        SELECT person_id,
               CASE sex WHEN 'M' THEN 8507 WHEN 'F' THEN 8532 ELSE 0 END AS gender_concept_id,
               year_of_birth, month_of_birth, NULL::INTEGER AS day_of_birth,
               NULL::TIMESTAMP AS birth_datetime, 0 AS race_concept_id,
               0 AS ethnicity_concept_id, NULL::BIGINT AS location_id,
               NULL::BIGINT AS provider_id, NULL::BIGINT AS care_site_id,
               NULL::VARCHAR AS person_source_value, sex AS gender_source_value,
               0 AS gender_source_concept_id, ethnicity AS race_source_value,
               0 AS race_source_concept_id, NULL::VARCHAR AS ethnicity_source_value,
               0 AS ethnicity_source_concept_id
        FROM patients""",
    "observation_period": f"""
        WITH spans AS (
            SELECT person_id, min(d) AS first_date, max(d) AS last_date FROM (
                SELECT person_id, start_date AS d FROM encounters
                UNION ALL SELECT person_id, coalesce(end_date, start_date) FROM encounters
            ) GROUP BY person_id
        )
        SELECT row_number() OVER (ORDER BY p.person_id) AS observation_period_id, p.person_id,
               coalesce(p.registration_start, s.first_date) AS observation_period_start_date,
               coalesce(p.registration_end, p.death_date, s.last_date)
                   AS observation_period_end_date,
               {EHR} AS period_type_concept_id
        FROM patients p LEFT JOIN spans s USING (person_id)
        WHERE coalesce(p.registration_start, s.first_date) IS NOT NULL""",
    "visit_occurrence": f"""
        SELECT encounter_id AS visit_occurrence_id, person_id,
               CASE encounter_type
                   WHEN 'inpatient' THEN 9201 WHEN 'ae' THEN 9203 WHEN 'emergency' THEN 9203
                   WHEN 'outpatient' THEN 9202 WHEN 'gp' THEN 581477 WHEN 'wellness' THEN 581477
                   WHEN 'ambulatory' THEN 9202 WHEN 'urgentcare' THEN 9203 ELSE 0 END
                   AS visit_concept_id,
               start_date AS visit_start_date, NULL::TIMESTAMP AS visit_start_datetime,
               coalesce(end_date, start_date) AS visit_end_date,
               NULL::TIMESTAMP AS visit_end_datetime, {EHR} AS visit_type_concept_id,
               NULL::BIGINT AS provider_id, NULL::BIGINT AS care_site_id,
               encounter_type AS visit_source_value, 0 AS visit_source_concept_id,
               0 AS admitted_from_concept_id, NULL::VARCHAR AS admitted_from_source_value,
               0 AS discharged_to_concept_id, NULL::VARCHAR AS discharged_to_source_value,
               NULL::BIGINT AS preceding_visit_occurrence_id
        FROM encounters""",
    "condition_occurrence": f"""
        SELECT condition_id AS condition_occurrence_id, person_id, 0 AS condition_concept_id,
               onset_date AS condition_start_date, NULL::TIMESTAMP AS condition_start_datetime,
               end_date AS condition_end_date, NULL::TIMESTAMP AS condition_end_datetime,
               {EHR} AS condition_type_concept_id, 0 AS condition_status_concept_id,
               NULL::VARCHAR AS stop_reason, NULL::BIGINT AS provider_id,
               encounter_id AS visit_occurrence_id, NULL::BIGINT AS visit_detail_id,
               code AS condition_source_value, 0 AS condition_source_concept_id,
               NULL::VARCHAR AS condition_status_source_value,
               {VOCABULARY_SQL} AS condition_source_vocabulary_id
        FROM conditions""",
    "drug_exposure": f"""
        SELECT medication_id AS drug_exposure_id, person_id, 0 AS drug_concept_id,
               start_date AS drug_exposure_start_date,
               NULL::TIMESTAMP AS drug_exposure_start_datetime,
               coalesce(end_date, start_date) AS drug_exposure_end_date,
               NULL::TIMESTAMP AS drug_exposure_end_datetime, end_date AS verbatim_end_date,
               {EHR} AS drug_type_concept_id, NULL::VARCHAR AS stop_reason,
               NULL::INTEGER AS refills, NULL::DOUBLE AS quantity,
               NULL::INTEGER AS days_supply, NULL::VARCHAR AS sig, 0 AS route_concept_id,
               NULL::VARCHAR AS lot_number, NULL::BIGINT AS provider_id,
               encounter_id AS visit_occurrence_id, NULL::BIGINT AS visit_detail_id,
               code AS drug_source_value, 0 AS drug_source_concept_id,
               NULL::VARCHAR AS route_source_value, NULL::VARCHAR AS dose_unit_source_value,
               {VOCABULARY_SQL} AS drug_source_vocabulary_id
        FROM medications
        UNION ALL
        SELECT immunization_id, person_id, 0, immunization_date, NULL, immunization_date,
               NULL, NULL, {EHR}, NULL, NULL, NULL, NULL, NULL, 0, NULL, NULL, encounter_id,
               NULL, code, 0, NULL, NULL, {VOCABULARY_SQL}
        FROM immunizations""",
    "measurement": f"""
        SELECT observation_id AS measurement_id, person_id, 0 AS measurement_concept_id,
               observed_date AS measurement_date, NULL::TIMESTAMP AS measurement_datetime,
               NULL::VARCHAR AS measurement_time, {EHR} AS measurement_type_concept_id,
               0 AS operator_concept_id, value AS value_as_number,
               0 AS value_as_concept_id, 0 AS unit_concept_id, NULL::DOUBLE AS range_low,
               NULL::DOUBLE AS range_high, NULL::BIGINT AS provider_id,
               encounter_id AS visit_occurrence_id, NULL::BIGINT AS visit_detail_id,
               code AS measurement_source_value, 0 AS measurement_source_concept_id,
               unit AS unit_source_value, 0 AS unit_source_concept_id,
               coalesce(value_text, value::VARCHAR) AS value_source_value,
               {VOCABULARY_SQL} AS measurement_source_vocabulary_id
        FROM observations""",
    "procedure_occurrence": f"""
        SELECT procedure_id AS procedure_occurrence_id, person_id,
               0 AS procedure_concept_id, procedure_date,
               NULL::TIMESTAMP AS procedure_datetime, NULL::DATE AS procedure_end_date,
               NULL::TIMESTAMP AS procedure_end_datetime,
               {EHR} AS procedure_type_concept_id, 0 AS modifier_concept_id,
               NULL::INTEGER AS quantity, NULL::BIGINT AS provider_id,
               encounter_id AS visit_occurrence_id, NULL::BIGINT AS visit_detail_id,
               code AS procedure_source_value, 0 AS procedure_source_concept_id,
               NULL::VARCHAR AS modifier_source_value,
               {VOCABULARY_SQL} AS procedure_source_vocabulary_id
        FROM procedures""",
    "death": f"""
        SELECT person_id, death_date, NULL::TIMESTAMP AS death_datetime,
               {EHR} AS death_type_concept_id, 0 AS cause_concept_id,
               NULL::VARCHAR AS cause_source_value, 0 AS cause_source_concept_id
        FROM patients WHERE death_date IS NOT NULL""",
}


def create_table_sql(name: str, columns: tuple[tuple[str, str], ...]) -> str:
    cols = ", ".join(f"{c} {t}" for c, t in columns)
    return f"CREATE TABLE {name} ({cols})"


def event_columns(table: EventTable) -> tuple[tuple[str, str], ...]:
    return (
        (table.id_column, "BIGINT"),
        ("person_id", "BIGINT"),
        *table.columns,
        ("source_system", "VARCHAR"),
    )
