"""Declared domains, bounds and DP sources of the research tables (for DP queries and
`/v1/datasets`).

DP group keys come from these declared domains, never from the data; sums and means
clamp to these declared bounds. They describe the schema (categories that exist in
the population, possible value ranges), not any patient, so publishing them leaks
nothing. A column without a declaration can be filtered on but not grouped by or
summed in DP mode.

**DP sources** are the tables and views a DP query may read, with the steward's
contribution bounds. Every row of a source belongs to exactly one person (its
``person_id``) and is computed from that person's rows only; a column whose value
depends on other people's rows (a running number over everyone) is excluded. A
*person-level* source has at most one row per person (``patients`` is checked unique by
the quality gate; ``person``, ``death`` and ``observation_period`` are views with one row
per patient), so its rows-per-person bound is 1 and no truncation runs. Event tables
let a query choose its bound k up to the steward's maximum.

>>> source("patients").max_rows_per_person, source("conditions").default_rows_per_person
(1, 10)
>>> source("encounters").max_rows_per_person
200
>>> source("organisations") is None
True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

ETHNIC_GROUPS: Final = (
    "Asian, Asian British or Asian Welsh",
    "Black, Black British, Black Welsh, Caribbean or African",
    "Mixed or Multiple ethnic groups",
    "White",
    "Other ethnic group",
)
LOCAL_AUTHORITIES: Final = (
    "Birmingham", "Coventry", "Dudley", "Sandwell", "Solihull", "Walsall", "Wolverhampton",
)  # fmt: skip

# the region's NHS acute trusts (ODS code: name), public reference data: the sites of
# hospital encounters a DP query (and a feasibility spec) may count by
ACUTE_TRUSTS: Final = {
    "RRK": "University Hospitals Birmingham NHS Foundation Trust",
    "RXK": "Sandwell and West Birmingham Hospitals NHS Trust",
    "RKB": "University Hospitals Coventry and Warwickshire NHS Trust",
    "RNA": "The Dudley Group NHS Foundation Trust",
    "RBK": "Walsall Healthcare NHS Trust",
    "RL4": "The Royal Wolverhampton NHS Trust",
}

DOMAINS: Final[dict[str, dict[str, tuple[Any, ...]]]] = {
    "patients": {
        "sex": ("F", "M"),
        "imd_decile": tuple(range(1, 11)),
        "ethnicity": ETHNIC_GROUPS,
        "local_authority": LOCAL_AUTHORITIES,
    },
    "person": {"gender_concept_id": (8507, 8532, 0)},
    "encounters": {
        "encounter_type": ("gp", "ae", "outpatient", "inpatient"),
        "organisation_code": tuple(ACUTE_TRUSTS),
    },
}

BOUNDS: Final[dict[str, dict[str, tuple[float, float]]]] = {
    "patients": {"year_of_birth": (1900.0, 2030.0), "imd_decile": (1.0, 10.0)},
    "observations": {"value": (0.0, 300.0)},
}


@dataclass(frozen=True)
class Source:
    """A table or view DP queries may read, and its steward-set contribution bounds."""

    name: str
    person_level: bool = False  # at most one row per person: k = 1, no truncation
    default_rows_per_person: int = 10
    max_rows_per_person: int = 50
    excluded_columns: frozenset[str] = frozenset()  # values that depend on other people


def _person_level(name: str, excluded: frozenset[str] = frozenset()) -> Source:
    return Source(name, True, 1, 1, excluded)


EVENT_TABLES: Final = (
    "encounters", "conditions", "observations", "medications", "procedures",
    "immunizations", "allergies", "devices", "care_plans",
    # OMOP views: one row per event row, renamed (drug_exposure is medications and
    # immunizations, each row still one person's)
    "visit_occurrence", "condition_occurrence", "drug_exposure", "measurement",
    "procedure_occurrence",
)  # fmt: skip

SOURCES: Final[dict[str, Source]] = {
    "patients": _person_level("patients"),
    "person": _person_level("person"),
    "death": _person_level("death"),
    # observation_period_id is a row_number() over everyone: it depends on other people
    "observation_period": _person_level("observation_period", frozenset({"observation_period_id"})),
    **{name: Source(name) for name in EVENT_TABLES},
    # where people have many rows (synthetic data: encounters median 25 a person, 99th
    # centile 131; observations 17 and 57), the steward allows a larger k, and the default
    # sits near the 99th centile so that row counts are not biased by truncation
    # (benchmarks/dp_accuracy.py: encounter rows at k = 50 are 14.6% low, at 200 1.1%)
    **{
        name: Source(name, default_rows_per_person=150, max_rows_per_person=200)
        for name in ("encounters", "visit_occurrence")
    },
    **{
        name: Source(name, default_rows_per_person=60, max_rows_per_person=100)
        for name in ("observations", "measurement")
    },
}

# kept for callers that only need the default bound
ROWS_PER_PERSON: Final = {name: s.default_rows_per_person for name, s in SOURCES.items()}
DEFAULT_ROWS_PER_PERSON: Final = 10


def source(table: str) -> Source | None:
    """The DP source declared for ``table``, or None (not readable in DP mode)."""
    return SOURCES.get(table.lower())


def describe(table: str, columns: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """Column descriptions for `/v1/datasets`: name, type, declared domain and bounds."""
    out = []
    for name, dtype in columns:
        entry: dict[str, Any] = {"name": name, "type": dtype}
        if name in DOMAINS.get(table, {}):
            entry["domain"] = list(DOMAINS[table][name])
        if name in BOUNDS.get(table, {}):
            entry["bounds"] = list(BOUNDS[table][name])
        out.append(entry)
    return out
