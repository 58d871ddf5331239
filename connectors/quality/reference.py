"""Clinical reference data for plausibility and conformance checks.

Ranges are *impossible-value* bounds, not normal ranges: a value outside them is an
error in the record, not an unusual patient. Units are UCUM-style as the sources write
them. Sources: NICE guidance and UK laboratory reporting (HbA1c IFCC mmol/mol, eGFR per
1.73 m2), LOINC for Synthea's codes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True)
class Measure:
    code_system: str
    code: str
    name: str
    unit: str
    low: float
    high: float


MEASURES: Final = (
    Measure("SNOMED CT", "60621009", "BMI", "kg/m2", 10.0, 80.0),
    Measure("SNOMED CT", "271649006", "systolic BP", "mm[Hg]", 60.0, 260.0),
    Measure("SNOMED CT", "271650006", "diastolic BP", "mm[Hg]", 30.0, 160.0),
    Measure("SNOMED CT", "999791000000106", "HbA1c", "mmol/mol", 15.0, 200.0),
    Measure("SNOMED CT", "1005671000000105", "total cholesterol", "mmol/L", 1.0, 20.0),
    Measure("SNOMED CT", "1011481000000105", "eGFR", "mL/min/1.73m2", 2.0, 200.0),
    Measure("LOINC", "39156-5", "BMI", "kg/m2", 10.0, 80.0),
    Measure("LOINC", "8480-6", "systolic BP", "mm[Hg]", 60.0, 260.0),
    Measure("LOINC", "8462-4", "diastolic BP", "mm[Hg]", 30.0, 160.0),
    Measure("LOINC", "4548-4", "HbA1c", "%", 3.0, 20.0),
    Measure("LOINC", "2093-3", "total cholesterol", "mg/dL", 40.0, 800.0),
    Measure("LOINC", "29463-7", "body weight", "kg", 0.3, 400.0),
    Measure("LOINC", "8302-2", "body height", "cm", 20.0, 250.0),
)

# UCUM units converted to a measured code's one unit when a load is built: (from, to) ->
# (scale, offset), value_to = value_from * scale + offset. FHIR's vital-signs profile
# allows a weight in [lb_av] or g and a height in [in_i]; HbA1c comes as NGSP % or IFCC
# mmol/mol (the IFCC-NGSP master equation); cholesterol in mg/dL or mmol/L
CONVERSIONS: Final = {
    ("[lb_av]", "kg"): (0.45359237, 0.0), ("g", "kg"): (0.001, 0.0),
    ("[oz_av]", "kg"): (0.028349523125, 0.0),
    ("[in_i]", "cm"): (2.54, 0.0), ("m", "cm"): (100.0, 0.0), ("mm", "cm"): (0.1, 0.0),
    ("[ft_i]", "cm"): (30.48, 0.0),
    ("%", "mmol/mol"): (10.929, -10.929 * 2.15), ("mmol/mol", "%"): (0.09148, 2.152),
    ("mg/dL", "mmol/L"): (1 / 38.67, 0.0), ("mmol/L", "mg/dL"): (38.67, 0.0),
}  # fmt: skip

# impossible-value bounds by unit, for numeric observations whose code has no range of
# its own: a value outside them is impossible whatever was measured in that unit
UNIT_RANGES: Final = {
    "cm": (0.0, 300.0), "m": (0.0, 3.0), "mm": (0.0, 3000.0), "[in_i]": (0.0, 120.0),
    "kg": (0.0, 700.0), "g": (0.0, 700_000.0), "[lb_av]": (0.0, 1500.0),
    "kg/m2": (0.0, 250.0), "mm[Hg]": (0.0, 400.0), "/min": (0.0, 400.0),
    "Cel": (10.0, 50.0), "[degF]": (50.0, 122.0), "%": (0.0, 100.0),
    "mg/dL": (0.0, 10_000.0), "mmol/L": (0.0, 1_000.0), "mmol/mol": (0.0, 300.0),
    "g/dL": (0.0, 100.0), "g/L": (0.0, 1_000.0), "fL": (0.0, 1_000.0), "pg": (0.0, 1_000.0),
    "10*3/uL": (0.0, 10_000.0), "10*6/uL": (0.0, 100.0), "10*9/L": (0.0, 10_000.0),
    "pH": (0.0, 14.0), "a": (0.0, 130.0), "mo": (0.0, 1_560.0), "d": (0.0, 47_000.0),
    "{score}": (-1_000.0, 1_000.0), "{#}": (0.0, 100_000.0), "/[HPF]": (0.0, 10_000.0),
    "mL/min/1.73m2": (0.0, 300.0), "U/L": (0.0, 100_000.0), "ng/mL": (0.0, 1_000_000.0),
}  # fmt: skip
# bounds for a numeric value whose code and unit are both unknown: what no record holds
ANY_UNIT_RANGE: Final = (-1_000_000.0, 1_000_000_000.0)

# code formats per code system (a code in the wrong shape is unknown to any vocabulary)
CODE_FORMATS: Final = {
    # concept ids: partition digits 00 or 10 before the check digit
    "SNOMED CT": r"^[1-9][0-9]{2,14}[01]0[0-9]$",
    "ICD-10": r"^[A-Z][0-9]{2}(\.[0-9]{1,2}|X)?$",
    "ICD-10-CM": r"^[A-Z][0-9][0-9A-Z](\.[0-9A-Z]{1,4})?$",
    "LOINC": r"^[0-9]{1,7}-[0-9]$",
    "RxNorm": r"^[0-9]{1,8}$",
    "CVX": r"^[0-9]{1,3}$",
    # BNF: chapters 01-15 (medicines) and 18-23 (preparations, appliances)
    "BNF": r"^(0[1-9]|1[0-5]|1[89]|2[0-3])[0-9]{5}[0-9A-Z]{2}([0-9A-Z]{6})?$",
    "dm+d": r"^[0-9]{6,18}$",
}

# conditions possible for one recorded sex only
FEMALE_ONLY: Final = {
    ("SNOMED CT", "72892002"),  # normal pregnancy
    ("SNOMED CT", "77386006"),  # pregnancy
    ("SNOMED CT", "289908002"),  # pregnancy (finding)
}
FEMALE_ONLY_ICD10_PREFIX: Final = "O"  # ICD-10 chapter XV: pregnancy and childbirth
MALE_ONLY: Final = {
    ("SNOMED CT", "399068003"),  # malignant tumour of prostate
    ("SNOMED CT", "126906006"),  # neoplasm of prostate
    ("SNOMED CT", "266569009"),  # benign prostatic hyperplasia
    ("ICD-10", "C61"),
    ("ICD-10", "N40"),
}

EARLIEST_BIRTH_YEAR: Final = 1900
MAX_AGE_YEARS: Final = 120
