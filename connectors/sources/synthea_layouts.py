"""The Synthea CSV layouts the hub reads, by their documented column names.

Synthea's CSV export changed its columns between releases (see the Synthea wiki,
"CSV File Data Dictionary"). Each layout below lists a release's header for every file
the hub reads; every column is classified by meaning:

* a *field* the hub maps into its schema (``FIELDS``: one meaning, the spellings it has
  had across releases, e.g. a procedure's date ``START`` in 2.x-2021 and 3.x, ``DATE``
  before);
* an *identifying* column (``IDENTIFYING``: names, SSN, licence, passport, address,
  telecom, identifiers), kept out of every research table whatever its spelling
  (``OWNER_NAME`` and ``OWNERNAME`` are both a policy-holder's name);
* a *withheld* column, known and deliberately not published (costs, free text).

A field that holds a source record's id or a reference to one (``source_id``) is
published only as the hub's keyed id, so that it still joins (a claim's appointment to
its encounter) but cannot be traced back to the export.

A column that is none of these is unknown: it is dropped and counted in the manifest.
A file whose header lacks a field the hub needs is refused, naming the file, the field
and the spellings expected, never a value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

# documented headers, per release line (upper case; Synthea writes "Id" in some files)
LAYOUTS: Final[dict[str, dict[str, str]]] = {
    "2.x-2018": {
        "patients": "ID,BIRTHDATE,DEATHDATE,SSN,DRIVERS,PASSPORT,PREFIX,FIRST,LAST,SUFFIX,MAIDEN,"
        "MARITAL,RACE,ETHNICITY,GENDER,BIRTHPLACE,ADDRESS,CITY,STATE,ZIP",
        "encounters": "ID,START,STOP,PATIENT,PROVIDER,ENCOUNTERCLASS,CODE,DESCRIPTION,COST,"
        "REASONCODE,REASONDESCRIPTION",
        "conditions": "START,STOP,PATIENT,ENCOUNTER,CODE,DESCRIPTION",
        "observations": "DATE,PATIENT,ENCOUNTER,CODE,DESCRIPTION,VALUE,UNITS,TYPE",
        "medications": "START,STOP,PATIENT,ENCOUNTER,CODE,DESCRIPTION,COST,DISPENSES,TOTALCOST,"
        "REASONCODE,REASONDESCRIPTION",
        "procedures": "DATE,PATIENT,ENCOUNTER,CODE,DESCRIPTION,COST,REASONCODE,REASONDESCRIPTION",
        "immunizations": "DATE,PATIENT,ENCOUNTER,CODE,DESCRIPTION,COST",
        "allergies": "START,STOP,PATIENT,ENCOUNTER,CODE,DESCRIPTION",
        "careplans": "ID,START,STOP,PATIENT,ENCOUNTER,CODE,DESCRIPTION,REASONCODE,REASONDESCRIPTION",
        "imaging_studies": "ID,DATE,PATIENT,ENCOUNTER,BODYSITE_CODE,BODYSITE_DESCRIPTION,"
        "MODALITY_CODE,MODALITY_DESCRIPTION,SOP_CODE,SOP_DESCRIPTION",
        "organizations": "ID,NAME,ADDRESS,CITY,STATE,ZIP,PHONE,UTILIZATION",
        "providers": "ID,ORGANIZATION,NAME,GENDER,SPECIALITY,ADDRESS,CITY,STATE,ZIP,UTILIZATION",
    },
    "2.x-2019": {
        "patients": "ID,BIRTHDATE,DEATHDATE,SSN,DRIVERS,PASSPORT,PREFIX,FIRST,LAST,SUFFIX,MAIDEN,"
        "MARITAL,RACE,ETHNICITY,GENDER,BIRTHPLACE,ADDRESS,CITY,STATE,COUNTY,ZIP,LAT,LON,"
        "HEALTHCARE_EXPENSES,HEALTHCARE_COVERAGE",
        "encounters": "ID,START,STOP,PATIENT,ORGANIZATION,PROVIDER,PAYER,ENCOUNTERCLASS,CODE,"
        "DESCRIPTION,BASE_ENCOUNTER_COST,TOTAL_CLAIM_COST,PAYER_COVERAGE,REASONCODE,"
        "REASONDESCRIPTION",
        "conditions": "START,STOP,PATIENT,ENCOUNTER,CODE,DESCRIPTION",
        "observations": "DATE,PATIENT,ENCOUNTER,CODE,DESCRIPTION,VALUE,UNITS,TYPE",
        "medications": "START,STOP,PATIENT,PAYER,ENCOUNTER,CODE,DESCRIPTION,BASE_COST,"
        "PAYER_COVERAGE,DISPENSES,TOTALCOST,REASONCODE,REASONDESCRIPTION",
        "procedures": "DATE,PATIENT,ENCOUNTER,CODE,DESCRIPTION,BASE_COST,REASONCODE,"
        "REASONDESCRIPTION",
        "immunizations": "DATE,PATIENT,ENCOUNTER,CODE,DESCRIPTION,BASE_COST",
        "allergies": "START,STOP,PATIENT,ENCOUNTER,CODE,DESCRIPTION",
        "careplans": "ID,START,STOP,PATIENT,ENCOUNTER,CODE,DESCRIPTION,REASONCODE,REASONDESCRIPTION",
        "devices": "START,STOP,PATIENT,ENCOUNTER,CODE,DESCRIPTION,UDI",
        "supplies": "DATE,PATIENT,ENCOUNTER,CODE,DESCRIPTION,QUANTITY",
        "imaging_studies": "ID,DATE,PATIENT,ENCOUNTER,SERIES_UID,BODYSITE_CODE,"
        "BODYSITE_DESCRIPTION,MODALITY_CODE,MODALITY_DESCRIPTION,INSTANCE_UID,SOP_CODE,"
        "SOP_DESCRIPTION,PROCEDURE_CODE",
        "payer_transitions": "PATIENT,START_YEAR,END_YEAR,PAYER,OWNERSHIP",
        "payers": "ID,NAME,ADDRESS,CITY,STATE_HEADQUARTERED,ZIP,PHONE,AMOUNT_COVERED,"
        "AMOUNT_UNCOVERED,REVENUE,COVERED_ENCOUNTERS,UNCOVERED_ENCOUNTERS,COVERED_MEDICATIONS,"
        "UNCOVERED_MEDICATIONS,COVERED_PROCEDURES,UNCOVERED_PROCEDURES,COVERED_IMMUNIZATIONS,"
        "UNCOVERED_IMMUNIZATIONS,UNIQUE_CUSTOMERS,QOLS_AVG,MEMBER_MONTHS",
        "organizations": "ID,NAME,ADDRESS,CITY,STATE,ZIP,LAT,LON,PHONE,REVENUE,UTILIZATION",
        "providers": "ID,ORGANIZATION,NAME,GENDER,SPECIALITY,ADDRESS,CITY,STATE,ZIP,LAT,LON,"
        "UTILIZATION",
    },
}
LAYOUTS["2.x-2021"] = {
    **LAYOUTS["2.x-2019"],
    "observations": "DATE,PATIENT,ENCOUNTER,CATEGORY,CODE,DESCRIPTION,VALUE,UNITS,TYPE",
    "procedures": "START,STOP,PATIENT,ENCOUNTER,CODE,DESCRIPTION,BASE_COST,REASONCODE,"
    "REASONDESCRIPTION",
    "allergies": "START,STOP,PATIENT,ENCOUNTER,CODE,SYSTEM,DESCRIPTION,TYPE,CATEGORY,REACTION1,"
    "DESCRIPTION1,SEVERITY1,REACTION2,DESCRIPTION2,SEVERITY2",
    "payer_transitions": "PATIENT,MEMBERID,START_YEAR,END_YEAR,PAYER,SECONDARY_PAYER,OWNERSHIP,"
    "OWNERNAME",
    "claims": "ID,PATIENTID,PROVIDERID,PRIMARYPATIENTINSURANCEID,SECONDARYPATIENTINSURANCEID,"
    "DEPARTMENTID,PATIENTDEPARTMENTID,DIAGNOSIS1,DIAGNOSIS2,DIAGNOSIS3,DIAGNOSIS4,DIAGNOSIS5,"
    "DIAGNOSIS6,DIAGNOSIS7,DIAGNOSIS8,REFERRINGPROVIDERID,APPOINTMENTID,CURRENTILLNESSDATE,"
    "SERVICEDATE,SUPERVISINGPROVIDERID,STATUS1,STATUS2,STATUSP,OUTSTANDING1,OUTSTANDING2,"
    "OUTSTANDINGP,LASTBILLEDDATE1,LASTBILLEDDATE2,LASTBILLEDDATEP,HEALTHCARECLAIMTYPEID1,"
    "HEALTHCARECLAIMTYPEID2",
    "claims_transactions": "ID,CLAIMID,CHARGEID,PATIENTID,TYPE,AMOUNT,METHOD,FROMDATE,TODATE,"
    "PLACEOFSERVICE,PROCEDURECODE,MODIFIER1,MODIFIER2,DIAGNOSISREF1,DIAGNOSISREF2,"
    "DIAGNOSISREF3,DIAGNOSISREF4,UNITS,DEPARTMENTID,NOTES,UNITAMOUNT,TRANSFEROUTID,"
    "TRANSFERTYPE,PAYMENTS,ADJUSTMENTS,TRANSFERS,OUTSTANDING,APPOINTMENTID,LINENOTE,"
    "PATIENTINSURANCEID,FEESCHEDULEID,PROVIDERID,SUPERVISINGPROVIDERID",
}
LAYOUTS["3.x"] = {
    **LAYOUTS["2.x-2021"],
    "patients": "ID,BIRTHDATE,DEATHDATE,SSN,DRIVERS,PASSPORT,PREFIX,FIRST,MIDDLE,LAST,SUFFIX,"
    "MAIDEN,MARITAL,RACE,ETHNICITY,GENDER,BIRTHPLACE,ADDRESS,CITY,STATE,COUNTY,FIPS,ZIP,LAT,"
    "LON,HEALTHCARE_EXPENSES,HEALTHCARE_COVERAGE,INCOME",
    "conditions": "START,STOP,PATIENT,ENCOUNTER,SYSTEM,CODE,DESCRIPTION",
    "procedures": "START,STOP,PATIENT,ENCOUNTER,SYSTEM,CODE,DESCRIPTION,BASE_COST,REASONCODE,"
    "REASONDESCRIPTION",
    "payer_transitions": "PATIENT,MEMBERID,START_DATE,END_DATE,PAYER,SECONDARY_PAYER,"
    "PLAN_OWNERSHIP,OWNER_NAME",
    "payers": "ID,NAME,OWNERSHIP,ADDRESS,CITY,STATE_HEADQUARTERED,ZIP,PHONE,AMOUNT_COVERED,"
    "AMOUNT_UNCOVERED,REVENUE,COVERED_ENCOUNTERS,UNCOVERED_ENCOUNTERS,COVERED_MEDICATIONS,"
    "UNCOVERED_MEDICATIONS,COVERED_PROCEDURES,UNCOVERED_PROCEDURES,COVERED_IMMUNIZATIONS,"
    "UNCOVERED_IMMUNIZATIONS,UNIQUE_CUSTOMERS,QOLS_AVG,MEMBER_MONTHS",
    "providers": "ID,ORGANIZATION,NAME,GENDER,SPECIALITY,ADDRESS,CITY,STATE,ZIP,LAT,LON,"
    "ENCOUNTERS,PROCEDURES",
    "patient_expenses": "PATIENT_ID,YEAR,PAYER_ID,HEALTHCARE_EXPENSES,INSURANCE_COSTS,"
    "COVERED_COSTS",
}

# identifying columns by meaning, whatever the release spells them
IDENTIFYING: Final[dict[str, dict[str, str]]] = {
    "patients": {
        "SSN": "ssn", "DRIVERS": "licence", "PASSPORT": "passport", "PREFIX": "name_prefix",
        "FIRST": "name", "MIDDLE": "name", "LAST": "name", "SUFFIX": "name_suffix",
        "MAIDEN": "name", "ADDRESS": "address", "BIRTHDATE": "birth_date",
        "BIRTHPLACE": "birthplace", "CITY": "place", "STATE": "place", "ZIP": "place",
        "FIPS": "place", "LAT": "coordinate", "LON": "coordinate",
    },
    "payer_transitions": {"OWNER_NAME": "name", "OWNERNAME": "name", "MEMBERID": "identifier"},
    "claims_transactions": {"PATIENTINSURANCEID": "identifier"},
    # not a patient's, but identifying of a study, a device, a clinician or a site
    "imaging_studies": {"SERIES_UID": "study_uid", "INSTANCE_UID": "study_uid"},
    "devices": {"UDI": "device_uid"},
    "organizations": {"ADDRESS": "site", "ZIP": "site", "LAT": "site", "LON": "site",
                      "PHONE": "site", "STATE": "site"},
    "providers": {"NAME": "clinician", "ADDRESS": "site", "CITY": "site", "ZIP": "site",
                  "LAT": "site", "LON": "site"},
    "payers": {"ADDRESS": "site", "CITY": "site", "ZIP": "site", "PHONE": "site"},
}  # fmt: skip
# meanings whose values the identifier scan looks for in everything published (a city,
# state or ZIP alone is an everyday value: "place" is vaulted, not scanned; a birthplace
# is "City  State  Country", looked for only as those words together)
SCANNED_MEANINGS: Final = frozenset(
    {"name", "ssn", "licence", "passport", "address", "telecom", "identifier", "birthplace",
     "coordinate"}
)  # fmt: skip
# which identifying columns of patients.csv are whole-name parts (for full-name matching)
NAME_PARTS: Final = ("PREFIX", "FIRST", "MIDDLE", "LAST", "SUFFIX")


@dataclass(frozen=True)
class Field:
    """One meaning the hub reads from a file, and every spelling it has had."""

    name: str
    spellings: tuple[str, ...]
    required: bool = True
    # the field holds a source record's id or a reference to one (an encounter, claim,
    # payer, provider, organisation): published only as the hub's keyed id (``hub_id``)
    source_id: bool = False
    # a side table's date or time: published as a DATE (the day, as every event of the
    # warehouse), or only its year; never the export's text, which Synthea writes to the
    # second (a newborn's first payer, claim and expense rows hold their birth instant)
    kind: str = "text"  # "text", "date" or "year"


def _f(
    name: str, *spellings: str, required: bool = True, source_id: bool = False, kind: str = "text"
) -> Field:
    return Field(name, spellings, required, source_id, kind)


def _id(name: str, *spellings: str) -> Field:
    """An optional field holding a source id or a reference to one."""
    return Field(name, spellings, required=False, source_id=True)


_EVENT = (_f("patient", "PATIENT"), _f("encounter", "ENCOUNTER", required=False))
_CODED = (
    _f("code", "CODE"),
    _f("description", "DESCRIPTION", required=False),
    _f("system", "SYSTEM", required=False),
)
_SPAN = (_f("start", "START"), _f("stop", "STOP", required=False))

# what the hub reads from each file, by meaning
FIELDS: Final[dict[str, tuple[Field, ...]]] = {
    "patients": (
        _f("id", "ID"), _f("birth_date", "BIRTHDATE"), _f("death_date", "DEATHDATE", required=False),
        _f("sex", "GENDER"), _f("race", "RACE", required=False),
        _f("ethnicity", "ETHNICITY", required=False), _f("county", "COUNTY", required=False),
    ),
    "encounters": (
        _f("id", "ID"), _f("patient", "PATIENT"), _f("start", "START", "DATE"),
        _f("stop", "STOP", required=False), _f("class", "ENCOUNTERCLASS", required=False),
        _f("code", "CODE", required=False), _f("description", "DESCRIPTION", required=False),
        _f("organisation", "ORGANIZATION", required=False),
    ),
    "conditions": (*_EVENT, *_CODED, *_SPAN),
    "observations": (
        *_EVENT, *_CODED, _f("date", "DATE"), _f("value", "VALUE", required=False),
        _f("units", "UNITS", required=False), _f("type", "TYPE", required=False),
        _f("category", "CATEGORY", required=False),
    ),
    "medications": (*_EVENT, *_CODED, *_SPAN),
    "procedures": (*_EVENT, *_CODED, _f("start", "START", "DATE"), _f("stop", "STOP", required=False)),
    "immunizations": (*_EVENT, *_CODED, _f("date", "DATE")),
    "allergies": (*_EVENT, *_CODED, *_SPAN, _f("category", "CATEGORY", required=False)),
    "devices": (*_EVENT, *_CODED, *_SPAN),
    "careplans": (
        _f("id", "ID", required=False), *_EVENT, *_CODED, *_SPAN,
        _f("reason_code", "REASONCODE", required=False),
    ),
    "organizations": (_f("id", "ID"), _f("name", "NAME", required=False),
                      _f("city", "CITY", required=False)),
    # source-specific tables: published under the hub's own column names
    "supplies": (
        _f("patient", "PATIENT"), _id("encounter", "ENCOUNTER"),
        _f("date", "DATE", required=False, kind="date"), _f("code", "CODE", required=False),
        _f("description", "DESCRIPTION", required=False),
        _f("quantity", "QUANTITY", required=False),
    ),
    "imaging_studies": (
        _f("patient", "PATIENT"), _id("imaging_study_id", "ID"),
        _id("encounter", "ENCOUNTER"), _f("date", "DATE", required=False, kind="date"),
        _f("bodysite_code", "BODYSITE_CODE", required=False),
        _f("bodysite_description", "BODYSITE_DESCRIPTION", required=False),
        _f("modality_code", "MODALITY_CODE", required=False),
        _f("modality_description", "MODALITY_DESCRIPTION", required=False),
        _f("sop_code", "SOP_CODE", required=False),
        _f("sop_description", "SOP_DESCRIPTION", required=False),
        _f("procedure_code", "PROCEDURE_CODE", required=False),
    ),
    "payer_transitions": (
        _f("patient", "PATIENT"),
        _f("start", "START_DATE", "START_YEAR", required=False, kind="year"),
        _f("end", "END_DATE", "END_YEAR", required=False, kind="year"), _id("payer", "PAYER"),
        _id("secondary_payer", "SECONDARY_PAYER"),
        _f("ownership", "PLAN_OWNERSHIP", "OWNERSHIP", required=False),
    ),
    "claims": (
        _f("patient", "PATIENTID"), _id("claim_id", "ID"), _id("provider_id", "PROVIDERID"),
        _id("primary_payer_id", "PRIMARYPATIENTINSURANCEID"),
        _id("secondary_payer_id", "SECONDARYPATIENTINSURANCEID"),
        _f("department_id", "DEPARTMENTID", required=False),  # a department code
        *(_f(f"diagnosis{i}", f"DIAGNOSIS{i}", required=False) for i in range(1, 9)),
        _id("appointment_id", "APPOINTMENTID"),  # the claim's encounter
        _f("current_illness_date", "CURRENTILLNESSDATE", required=False, kind="date"),
        _f("service_date", "SERVICEDATE", required=False, kind="date"),
        _f("status1", "STATUS1", required=False), _f("status2", "STATUS2", required=False),
        _f("statusp", "STATUSP", required=False),
        _f("outstanding1", "OUTSTANDING1", required=False),
        _f("outstanding2", "OUTSTANDING2", required=False),
        _f("outstandingp", "OUTSTANDINGP", required=False),
        _f("claim_type1", "HEALTHCARECLAIMTYPEID1", required=False),
        _f("claim_type2", "HEALTHCARECLAIMTYPEID2", required=False),
    ),
    "claims_transactions": (
        _f("patient", "PATIENTID"), _id("transaction_id", "ID"), _id("claim_id", "CLAIMID"),
        _f("charge_id", "CHARGEID", required=False),  # the line's number in its claim
        _f("type", "TYPE", required=False), _f("amount", "AMOUNT", required=False),
        _f("method", "METHOD", required=False),
        _f("from_date", "FROMDATE", required=False, kind="date"),
        _f("to_date", "TODATE", required=False, kind="date"),
        _id("place_of_service", "PLACEOFSERVICE"),  # an organisation
        _f("procedure_code", "PROCEDURECODE", required=False),
        _f("units", "UNITS", required=False), _f("unit_amount", "UNITAMOUNT", required=False),
        _f("payments", "PAYMENTS", required=False),
        _f("adjustments", "ADJUSTMENTS", required=False),
        _f("transfers", "TRANSFERS", required=False),
        _f("outstanding", "OUTSTANDING", required=False), _id("provider_id", "PROVIDERID"),
    ),
    "patient_expenses": (
        _f("patient", "PATIENT_ID"), _f("year", "YEAR", required=False, kind="year"),
        _id("payer_id", "PAYER_ID"),
        _f("healthcare_expenses", "HEALTHCARE_EXPENSES", required=False),
        _f("insurance_costs", "INSURANCE_COSTS", required=False),
        _f("covered_costs", "COVERED_COSTS", required=False),
    ),
    # files that name no person: organisations' and clinicians' names stay out
    "payers": (
        _f("payer_id", "ID", source_id=True), _f("name", "NAME", required=False),
        _f("ownership", "OWNERSHIP", required=False),
        _f("state_headquartered", "STATE_HEADQUARTERED", required=False),
    ),
    "providers": (
        _f("provider_id", "ID", source_id=True), _id("organisation_id", "ORGANIZATION"),
        _f("gender", "GENDER", required=False), _f("speciality", "SPECIALITY", required=False),
        _f("state", "STATE", required=False),
    ),
}  # fmt: skip

PERSON_LINKED: Final = ("supplies", "imaging_studies", "payer_transitions", "claims",
                        "claims_transactions", "patient_expenses")  # fmt: skip
UNLINKED: Final = ("payers", "providers")


def known_columns(file: str) -> frozenset[str]:
    """Every column any supported release documents for ``file``."""
    out: set[str] = set()
    for layout in LAYOUTS.values():
        out.update(layout.get(file, "").split(","))
    for f in FIELDS.get(file, ()):
        out.update(f.spellings)
    out.update(IDENTIFYING.get(file, {}))
    out.discard("")
    return frozenset(out)


def match_layout(file: str, header: list[str]) -> str | None:
    """The release line whose documented header for ``file`` is closest to ``header``.

    Where several release lines document the same header, the span is named
    (``2.x-2019 to 3.x``).
    """
    present = {h.upper() for h in header}
    scores: list[tuple[int, str]] = []
    for version, layout in LAYOUTS.items():
        documented = layout.get(file)
        if documented:
            cols = set(documented.split(","))
            scores.append((len(cols & present) * 2 - len(cols - present), version))
    if not scores:
        return None
    best = max(score for score, _ in scores)
    tied = [version for score, version in scores if score == best]
    return tied[0] if len(tied) == 1 else f"{tied[0]} to {tied[-1]}"
