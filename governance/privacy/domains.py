"""Declared domains and bounds of the research tables, for DP queries and `/v1/datasets`.

DP group keys come from these declared domains, never from the data; sums and means
clamp to these declared bounds. They describe the schema (categories that exist in
the population, possible value ranges), not any patient, so publishing them leaks
nothing. A column without a declaration can be filtered on but not grouped by or
summed in DP mode.
"""

from __future__ import annotations

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

DOMAINS: Final[dict[str, dict[str, tuple[Any, ...]]]] = {
    "patients": {
        "sex": ("F", "M"),
        "imd_decile": tuple(range(1, 11)),
        "ethnicity": ETHNIC_GROUPS,
        "local_authority": LOCAL_AUTHORITIES,
    },
    "encounters": {"encounter_type": ("gp", "ae", "outpatient", "inpatient")},
}

BOUNDS: Final[dict[str, dict[str, tuple[float, float]]]] = {
    "patients": {"year_of_birth": (1900.0, 2030.0), "imd_decile": (1.0, 10.0)},
    "observations": {"value": (0.0, 300.0)},
}

# rows one person may contribute to a DP answer from each table (contribution bound)
ROWS_PER_PERSON: Final = {"patients": 1}
DEFAULT_ROWS_PER_PERSON: Final = 10


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
