"""Reference data for a West Midlands-like population and the codes its records use.

Figures are rounded from public sources and are meant to be plausible, not exact:

* population by local authority and ethnicity (ONS Census 2021, the seven WMCA
  constituent authorities; ethnicity at the five-group level);
* deprivation: share of each authority's people in each IMD 2019 decile, rounded from
  the English Indices of Deprivation LSOA tables;
* age structure: ONS mid-year estimates for the West Midlands region, 5-year bands;
* recorded prevalence targets: NHS England QOF 2023-24 (England, all registered ages
  unless stated) and, for non-diabetic hyperglycaemia, the NHS Diabetes Prevention
  Programme's register figures.

Codes: SNOMED CT for primary-care diagnoses, observations and procedures; ICD-10 for
hospital episodes; BNF chemical-substance codes for medicines (dm+d VMP identifiers are
not bundled, so BNF is used throughout and the gap is documented in the README).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

# --- places ---------------------------------------------------------------------------

LOCAL_AUTHORITIES: Final = (
    "Birmingham",
    "Coventry",
    "Dudley",
    "Sandwell",
    "Solihull",
    "Walsall",
    "Wolverhampton",
)
# ONS LAD 2021 codes, same order
LOCAL_AUTHORITY_CODES: Final = (
    "E08000025",
    "E08000026",
    "E08000027",
    "E08000028",
    "E08000029",
    "E08000030",
    "E08000031",
)
# Census 2021 usual residents, thousands
LOCAL_AUTHORITY_POPULATION: Final = (1145, 345, 323, 341, 216, 284, 263)

# postcode districts (outward codes) used for each authority
POSTCODE_DISTRICTS: Final[dict[str, tuple[str, ...]]] = {
    "Birmingham": tuple(
        f"B{n}" for n in (*range(1, 39), 42, 43, 44, 45, 46, 47, 48, 73, 74, 75, 76)
    ),
    "Coventry": ("CV1", "CV2", "CV3", "CV4", "CV5", "CV6", "CV7"),
    "Dudley": ("DY1", "DY2", "DY3", "DY5", "DY6", "DY8", "DY9", "B62", "B63"),
    "Sandwell": ("B64", "B65", "B66", "B67", "B68", "B69", "B70", "B71", "DY4", "WS10"),
    "Solihull": ("B90", "B91", "B92", "B93", "B94", "B37", "B40", "CV7"),
    "Walsall": ("WS1", "WS2", "WS3", "WS4", "WS5", "WS6", "WS8", "WS9"),
    "Wolverhampton": ("WV1", "WV2", "WV3", "WV4", "WV6", "WV10", "WV11", "WV14"),
}
# letters allowed in the two-letter unit of an inward code
INWARD_LETTERS: Final = "ABDEFGHJLNPQRSTUWXYZ"

ETHNIC_GROUPS: Final = (
    "Asian, Asian British or Asian Welsh",
    "Black, Black British, Black Welsh, Caribbean or African",
    "Mixed or Multiple ethnic groups",
    "White",
    "Other ethnic group",
)
ASIAN, BLACK, MIXED, WHITE, OTHER = range(5)
# Census 2021 TS021, percent by authority, order of ETHNIC_GROUPS
ETHNICITY_BY_AUTHORITY: Final = (
    (31.0, 11.0, 4.8, 48.6, 4.6),
    (18.5, 8.9, 3.5, 65.5, 3.6),
    (9.9, 2.0, 2.6, 84.6, 0.9),
    (25.9, 9.1, 4.0, 57.4, 3.6),
    (9.6, 2.0, 3.0, 84.1, 1.3),
    (19.6, 3.8, 3.2, 71.6, 1.8),
    (22.7, 9.2, 5.0, 59.6, 3.5),
)
# IMD 2019 decile shares (1 = most deprived), percent by authority
IMD_DECILES_BY_AUTHORITY: Final = (
    (43, 14, 9, 7, 6, 5, 5, 4, 4, 3),
    (19, 15, 12, 11, 10, 9, 8, 7, 5, 4),
    (14, 13, 13, 12, 11, 10, 9, 7, 6, 5),
    (33, 22, 15, 11, 8, 5, 3, 2, 1, 0),
    (8, 5, 5, 6, 7, 9, 11, 14, 16, 19),
    (29, 15, 11, 10, 9, 7, 6, 5, 4, 4),
    (35, 19, 12, 10, 8, 6, 4, 3, 2, 1),
)

# --- age -------------------------------------------------------------------------------

# West Midlands region, percent of residents in 5-year bands 0-4 ... 85-89, 90-99
AGE_BANDS_PERCENT: Final = (
    6.2, 6.4, 6.4, 6.0, 6.6, 6.8, 6.8, 6.4, 6.1, 6.2,
    6.6, 6.4, 5.6, 4.9, 4.7, 3.3, 2.3, 1.3, 0.7,
)  # fmt: skip
# share of the population born during a 10-year window (about 12 births per 1,000 a year)
BIRTHS_PER_PERSON_YEAR: Final = 0.012

# --- organisations ----------------------------------------------------------------------

# NHS acute trusts serving the area: ODS code, name, authority they mainly serve
ACUTE_TRUSTS: Final = (
    ("RRK", "University Hospitals Birmingham NHS Foundation Trust", "Birmingham"),
    ("RXK", "Sandwell and West Birmingham Hospitals NHS Trust", "Sandwell"),
    ("RKB", "University Hospitals Coventry and Warwickshire NHS Trust", "Coventry"),
    ("RNA", "The Dudley Group NHS Foundation Trust", "Dudley"),
    ("RBK", "Walsall Healthcare NHS Trust", "Walsall"),
    ("RL4", "The Royal Wolverhampton NHS Trust", "Wolverhampton"),
)
# which trust each authority's residents mostly attend (Solihull: UHB)
TRUST_FOR_AUTHORITY: Final = (0, 2, 3, 1, 0, 4, 5)
# GP practices per authority (about one per 7,000 residents)
PRACTICES_PER_AUTHORITY: Final = (160, 50, 45, 50, 28, 42, 40)

# --- clinical codes ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Concept:
    system: str
    code: str
    display: str


SNOMED: Final = "SNOMED CT"
ICD10: Final = "ICD-10"
BNF: Final = "BNF"

# FHIR system URIs for each code system
SYSTEM_URIS: Final = {
    SNOMED: "http://snomed.info/sct",
    ICD10: "http://hl7.org/fhir/sid/icd-10",
    BNF: "https://bnf.nice.org.uk",
}


@dataclass(frozen=True, slots=True)
class Condition:
    key: str
    snomed: Concept
    icd10: Concept


CONDITIONS: Final = (
    Condition(
        "hypertension",
        Concept(SNOMED, "38341003", "Hypertensive disorder, systemic arterial"),
        Concept(ICD10, "I10", "Essential (primary) hypertension"),
    ),
    Condition(
        "prediabetes",
        Concept(SNOMED, "714628002", "Prediabetes"),
        Concept(ICD10, "R73.0", "Abnormal glucose tolerance test"),
    ),
    Condition(
        "type2_diabetes",
        Concept(SNOMED, "44054006", "Diabetes mellitus type 2"),
        Concept(ICD10, "E11.9", "Type 2 diabetes mellitus without complications"),
    ),
    Condition(
        "chd",
        Concept(SNOMED, "53741008", "Coronary arteriosclerosis"),
        Concept(ICD10, "I25.1", "Atherosclerotic heart disease"),
    ),
    Condition(
        "stroke",
        Concept(SNOMED, "230690007", "Cerebrovascular accident"),
        Concept(ICD10, "I63.9", "Cerebral infarction, unspecified"),
    ),
    Condition(
        "ckd",
        Concept(SNOMED, "433144002", "Chronic kidney disease stage 3"),
        Concept(ICD10, "N18.3", "Chronic kidney disease, stage 3"),
    ),
    Condition(
        "copd",
        Concept(SNOMED, "13645005", "Chronic obstructive lung disease"),
        Concept(ICD10, "J44.9", "Chronic obstructive pulmonary disease, unspecified"),
    ),
    Condition(
        "asthma",
        Concept(SNOMED, "195967001", "Asthma"),
        Concept(ICD10, "J45.9", "Asthma, unspecified"),
    ),
    Condition(
        "depression",
        Concept(SNOMED, "35489007", "Depressive disorder"),
        Concept(ICD10, "F32.9", "Depressive episode, unspecified"),
    ),
)
CONDITION_INDEX: Final = {c.key: i for i, c in enumerate(CONDITIONS)}
HYP, PRE, T2D, CHD, STROKE, CKD, COPD, ASTHMA, DEPRESSION = range(len(CONDITIONS))

# Primary reasons for hospital admissions not driven by the tracked conditions
ADMISSION_REASONS: Final = (
    Concept(ICD10, "R07.4", "Chest pain, unspecified"),
    Concept(ICD10, "J18.9", "Pneumonia, unspecified"),
    Concept(ICD10, "N39.0", "Urinary tract infection, site not specified"),
    Concept(ICD10, "K80.2", "Calculus of gallbladder without cholecystitis"),
    Concept(ICD10, "R10.4", "Other and unspecified abdominal pain"),
    Concept(ICD10, "S72.0", "Fracture of neck of femur"),
    Concept(ICD10, "K35.8", "Acute appendicitis, other and unspecified"),
    Concept(ICD10, "R55", "Syncope and collapse"),
)
ACUTE_MI: Final = Concept(ICD10, "I21.9", "Acute myocardial infarction, unspecified")


@dataclass(frozen=True, slots=True)
class Measure:
    key: str
    concept: Concept
    unit: str
    decimals: int


MEASURES: Final = (
    Measure("bmi", Concept(SNOMED, "60621009", "Body mass index"), "kg/m2", 1),
    Measure("systolic_bp", Concept(SNOMED, "271649006", "Systolic blood pressure"), "mm[Hg]", 0),
    Measure("diastolic_bp", Concept(SNOMED, "271650006", "Diastolic blood pressure"), "mm[Hg]", 0),
    Measure(
        "hba1c",
        Concept(SNOMED, "999791000000106", "Haemoglobin A1c level - IFCC standardised"),
        "mmol/mol",
        0,
    ),
    Measure(
        "cholesterol",
        Concept(SNOMED, "1005671000000105", "Serum cholesterol level"),
        "mmol/L",
        1,
    ),
    Measure(
        "egfr",
        Concept(
            SNOMED,
            "1011481000000105",
            "eGFR (estimated glomerular filtration rate) using creatinine CKD-EPI "
            "equation per 1.73 square metres",
        ),
        "mL/min/1.73m2",
        0,
    ),
)
BMI, SBP, DBP, HBA1C, CHOL, EGFR = range(len(MEASURES))
SMOKING_STATUS: Final = (
    Concept(SNOMED, "266919005", "Never smoked tobacco"),
    Concept(SNOMED, "8517006", "Ex-smoker"),
    Concept(SNOMED, "77176002", "Smoker"),
)
NEVER, EX_SMOKER, SMOKER = range(3)

MEDICINES: Final = (
    Concept(BNF, "0601022B0", "Metformin hydrochloride"),
    Concept(BNF, "0212000B0", "Atorvastatin"),
    Concept(BNF, "0206020A0", "Amlodipine"),
    Concept(BNF, "0205051R0", "Ramipril"),
    Concept(BNF, "0209000A0", "Aspirin (antiplatelet)"),
    Concept(BNF, "0301011R0", "Salbutamol"),
    Concept(BNF, "0302000C0", "Beclometasone dipropionate (inhaled)"),
    Concept(BNF, "0301020Q0", "Tiotropium"),
    Concept(BNF, "0403030Q0", "Sertraline hydrochloride"),
    Concept(BNF, "0403030D0", "Citalopram hydrobromide"),
)
(
    METFORMIN,
    ATORVASTATIN,
    AMLODIPINE,
    RAMIPRIL,
    ASPIRIN,
    SALBUTAMOL,
    BECLOMETASONE,
    TIOTROPIUM,
    SERTRALINE,
    CITALOPRAM,
) = range(len(MEDICINES))

DPP_REFERRAL: Final = Concept(
    SNOMED, "1025321000000109", "Referral to NHS Diabetes Prevention Programme"
)

ENCOUNTER_TYPES: Final = ("gp", "ae", "outpatient", "inpatient")
GP, AE, OUTPATIENT, INPATIENT = range(len(ENCOUNTER_TYPES))
# FHIR Encounter.class codes (v3 ActCode) for each encounter type
ENCOUNTER_CLASS: Final = ("AMB", "EMER", "AMB", "IMP")

# --- recorded prevalence targets ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PrevalenceTarget:
    condition: str
    min_age: int
    percent: float
    source: str


# Recorded prevalence at the end of the window among registered people of min_age or
# more. The generator is tuned to land within +-35% (relative) of these on 50k people.
PREVALENCE_TARGETS: Final = (
    PrevalenceTarget("hypertension", 0, 14.8, "QOF 2023-24 HYP001, all ages"),
    PrevalenceTarget("type2_diabetes", 17, 7.7, "QOF 2023-24 DM017, 17+ (all types)"),
    PrevalenceTarget("prediabetes", 18, 6.5, "NDH register, NHS DPP 2023, 18+"),
    PrevalenceTarget("chd", 0, 3.0, "QOF 2023-24 CHD001, all ages"),
    PrevalenceTarget("stroke", 0, 1.9, "QOF 2023-24 STIA001, all ages"),
    PrevalenceTarget("ckd", 18, 4.1, "QOF 2023-24 CKD005, 18+"),
    PrevalenceTarget("copd", 0, 1.9, "QOF 2023-24 COPD015, all ages"),
    PrevalenceTarget("asthma", 6, 6.5, "QOF 2023-24 AST005, 6+"),
    PrevalenceTarget("depression", 18, 13.2, "QOF 2023-24 DEP003, 18+ (since 2006)"),
)
