"""The data dictionary: every research table and column of a release, in words.

The warehouse schema (``connectors/schema.py``) says what the columns are; this says what
they mean, in which unit, and from which source field, for researchers choosing what to
ask for. The OMOP CDM v5.4-shaped views follow the OMOP documentation; their columns
that the hub fills are described here, the rest are ``0`` or empty (no vocabulary is
bundled) and say so.
"""

from __future__ import annotations

from typing import Final

_CODED: Final = {
    "person_id": "the person's pseudonym (joins to patients.person_id)",
    "code_system": "coding system of 'code': SNOMED CT, ICD-10, BNF, LOINC, RxNorm, CVX, dm+d",
    "code": "the clinical code as recorded (see the codelists and the codes in use)",
    "description": "the code's term as recorded at source",
    "encounter_id": "the encounter (visit) the record belongs to, if any",
    "source_system": "which connector loaded the row: native, synthea or fhir",
}

TABLES: Final[dict[str, tuple[str, dict[str, str]]]] = {
    "patients": (
        "One row per person: demographics, registration and death. No direct identifier: "
        "the person key is a keyed pseudonym; birth is reduced to year and month, place "
        "to local authority and deprivation decile.",
        {
            "person_id": "the person's pseudonym in this hub (stable across releases)",
            "year_of_birth": "year of birth (calendar year)",
            "month_of_birth": "month of birth (1 to 12)",
            "sex": "administrative sex: F, M or U (unknown)",
            "ethnicity": "ethnic group (ONS 2021 high-level categories)",
            "local_authority": "local authority district of residence (ONS LAD 2021 code)",
            "imd_decile": "Index of Multiple Deprivation 2019 decile: 1 most, 10 least deprived",
            "practice_code": "registered GP practice (ODS code)",
            "registration_start": "date of registration with the practice",
            "registration_end": "date registration ended (empty while registered)",
            "death_date": "date of death (empty if alive at extraction)",
            "source_system": _CODED["source_system"],
        },
    ),
    "organisations": (
        "GP practices and NHS trusts that records refer to (organisations, not people).",
        {
            "organisation_code": "ODS code",
            "name": "organisation name",
            "kind": "gp_practice or trust",
            "local_authority": "local authority district (ONS LAD 2021 code)",
            "source_system": _CODED["source_system"],
        },
    ),
    "encounters": (
        "Contacts with services: GP consultations, outpatient visits, A&E attendances and "
        "inpatient stays. One row per encounter.",
        {
            "encounter_id": "the encounter's key",
            "encounter_type": "gp, outpatient, ae, inpatient (Synthea: wellness, ambulatory, "
            "emergency, urgentcare, ...)",
            "organisation_code": "where it happened (ODS code)",
            "start_date": "date the encounter started",
            "end_date": "date it ended (inpatient stays: discharge date)",
        },
    ),
    "conditions": (
        "Diagnoses: SNOMED CT in primary care, ICD-10 in hospital episodes.",
        {
            "condition_id": "the record's key",
            "onset_date": "date of onset or first record",
            "end_date": "date resolved (empty if ongoing)",
        },
    ),
    "observations": (
        "Measurements and findings: BMI, blood pressure, HbA1c, cholesterol, smoking "
        "status. One row per recorded value.",
        {
            "observation_id": "the record's key",
            "value": "the numeric value, in 'unit' (empty for a coded finding)",
            "value_text": "a coded or text value (e.g. smoking status)",
            "unit": "UCUM unit of 'value': kg/m2, mm[Hg], mmol/mol (HbA1c), mmol/L",
            "observed_date": "date measured",
        },
    ),
    "medications": (
        "Prescriptions: BNF chemical substance codes (generator) or RxNorm (Synthea).",
        {
            "medication_id": "the record's key",
            "start_date": "date first prescribed or dispensed",
            "end_date": "date stopped (empty if ongoing)",
        },
    ),
    "procedures": (
        "Procedures and referrals (including referral to the NHS Diabetes Prevention Programme).",
        {"procedure_id": "the record's key", "procedure_date": "date performed or referred"},
    ),
    "immunizations": (
        "Vaccinations given.",
        {"immunization_id": "the record's key", "immunization_date": "date given"},
    ),
    "allergies": (
        "Allergies and intolerances.",
        {
            "allergy_id": "the record's key",
            "category": "food, medication, environment or biologic",
            "start_date": "date recorded",
            "end_date": "date resolved (empty if current)",
        },
    ),
    "devices": (
        "Implanted or used medical devices.",
        {
            "device_id": "the record's key",
            "start_date": "date first used or implanted",
            "end_date": "date removed (empty if current)",
        },
    ),
    "care_plans": (
        "Care plans.",
        {
            "care_plan_id": "the record's key",
            "reason_code": "the condition the plan addresses (SNOMED CT)",
            "start_date": "date started",
            "end_date": "date ended (empty if current)",
        },
    ),
    # OMOP CDM v5.4-shaped views over the tables above
    "person": ("OMOP view of 'patients'.", {"gender_concept_id": "8507 male, 8532 female"}),
    "observation_period": (
        "OMOP view: the span each person is observed (registration, else first to last encounter).",
        {},
    ),
    "visit_occurrence": (
        "OMOP view of 'encounters'.",
        {"visit_concept_id": "9201 inpatient, 9202 outpatient, 9203 emergency, 581477 office"},
    ),
    "condition_occurrence": ("OMOP view of 'conditions'.", {}),
    "drug_exposure": ("OMOP view of 'medications' and 'immunizations'.", {}),
    "measurement": ("OMOP view of 'observations'.", {}),
    "procedure_occurrence": ("OMOP view of 'procedures'.", {}),
    "death": ("OMOP view: date of death of the people who died.", {}),
}

_OMOP: Final = {
    "person",
    "observation_period",
    "visit_occurrence",
    "condition_occurrence",
    "drug_exposure",
    "measurement",
    "procedure_occurrence",
    "death",
}


def table_description(table: str) -> str:
    found = TABLES.get(table)
    return found[0] if found else "(not described)"


def column_description(table: str, column: str) -> str:
    """What a column means, in words.

    >>> column_description("observations", "unit")[:9]
    'UCUM unit'
    >>> column_description("measurement", "value_as_number")
    'OMOP CDM v5.4 measurement.value_as_number'
    """
    words = TABLES.get(table, ("", {}))[1].get(column) or _CODED.get(column)
    if words:
        return words
    if table in _OMOP:
        if column.endswith("_concept_id"):
            return f"OMOP concept id: 0 (no standard vocabulary is bundled) unless stated; {column}"
        return f"OMOP CDM v5.4 {table}.{column}"
    return "(not described)"
