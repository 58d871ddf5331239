"""Every coded value the generator can write, numbered, so rows carry small integers.

Rows refer to a concept or a unit by its index here; the writers turn indices into
dictionary-encoded string columns without building one Python string per row.
"""

from __future__ import annotations

from typing import Final

from synthetic_data import reference as ref

# Codes that no vocabulary holds, used only by defect injection ("unknown code")
UNKNOWN_CODES: Final = (
    ref.Concept(ref.SNOMED, "99999999999", "Unknown concept"),
    ref.Concept(ref.SNOMED, "ABC-123", "Malformed code"),
    ref.Concept(ref.ICD10, "Z99.99X", "Malformed code"),
    ref.Concept(ref.BNF, "9999999ZZ", "Unknown medicine"),
)

CONCEPTS: Final[tuple[ref.Concept, ...]] = (
    *(c.snomed for c in ref.CONDITIONS),
    *(c.icd10 for c in ref.CONDITIONS),
    *ref.ADMISSION_REASONS,
    ref.ACUTE_MI,
    *(m.concept for m in ref.MEASURES),
    *ref.SMOKING_STATUS,
    *ref.MEDICINES,
    ref.DPP_REFERRAL,
    *UNKNOWN_CODES,
)
CONCEPT_INDEX: Final = {c: i for i, c in enumerate(CONCEPTS)}


def index_of(concept: ref.Concept) -> int:
    return CONCEPT_INDEX[concept]


SNOMED_CONDITION: Final = tuple(index_of(c.snomed) for c in ref.CONDITIONS)
ICD10_CONDITION: Final = tuple(index_of(c.icd10) for c in ref.CONDITIONS)
ADMISSION_REASON: Final = tuple(index_of(c) for c in ref.ADMISSION_REASONS)
MEASURE: Final = tuple(index_of(m.concept) for m in ref.MEASURES)
SMOKING: Final = tuple(index_of(c) for c in ref.SMOKING_STATUS)
MEDICINE: Final = tuple(index_of(c) for c in ref.MEDICINES)
UNKNOWN: Final = tuple(index_of(c) for c in UNKNOWN_CODES)

# Units: those of the measures, then wrong ones used only by defect injection
UNITS: Final = (*(m.unit for m in ref.MEASURES), "mg/dL", "%", "lb", "cm")
MEASURE_UNIT: Final = tuple(UNITS.index(m.unit) for m in ref.MEASURES)
WRONG_UNITS: Final = tuple(range(len(ref.MEASURES), len(UNITS)))

# Values outside these ranges are impossible (not merely unusual) for each measure;
# clean generated values always fall inside, and the quality gate uses the same ranges.
PLAUSIBLE_RANGES: Final = {
    "bmi": (10.0, 80.0),
    "systolic_bp": (60.0, 260.0),
    "diastolic_bp": (30.0, 160.0),
    "hba1c": (15.0, 200.0),
    "cholesterol": (1.0, 20.0),
    "egfr": (2.0, 200.0),
}
