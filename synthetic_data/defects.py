"""Inject realistic data-quality defects and record every defective row in a manifest.

With rate ``r``, each row of each table is picked with probability ``r`` and given one
defect kind suited to its table (below); duplicates add a copy of the picked row. The
manifest lists ``(table, row_key, defect, column)`` for every injected row, where
``row_key`` is the row's primary key (for a duplicate, the key both copies share), so a
quality gate can be scored against it exactly.

Kinds:

==========================  ============================================================
``missing_required``        a required field (date of birth, sex, code, date) is null
``invalid_nhs_check_digit`` an NHS number whose Modulus-11 check digit is wrong
``impossible_value``        a measurement outside ``catalogue.PLAUSIBLE_RANGES``
``wrong_unit``              a unit that does not belong to the measurement's code
``unknown_code``            a code that is in no vocabulary, or malformed
``date_before_birth``       an event dated before the person was born
``date_after_death``        an event dated after the person died
``end_before_start``        an encounter or medicine course that ends before it starts
``orphan_event``            an event whose person does not exist
``duplicate_row``           an exact copy of another row
==========================  ============================================================
"""

from __future__ import annotations

from typing import Final

import numpy as np

from synthetic_data import catalogue as cat
from synthetic_data.simulate import NULL, Columns, Int

KINDS: Final = (
    "missing_required",
    "invalid_nhs_check_digit",
    "impossible_value",
    "wrong_unit",
    "unknown_code",
    "date_before_birth",
    "date_after_death",
    "end_before_start",
    "orphan_event",
    "duplicate_row",
)

_TABLE_KINDS: Final = {
    "patients": ("missing_required", "invalid_nhs_check_digit", "duplicate_row"),
    "encounters": (
        "missing_required", "date_before_birth", "date_after_death", "end_before_start",
        "orphan_event", "duplicate_row",
    ),
    "conditions": (
        "missing_required", "unknown_code", "date_before_birth", "date_after_death",
        "orphan_event", "duplicate_row",
    ),
    "observations": (
        "missing_required", "impossible_value", "wrong_unit", "unknown_code",
        "date_before_birth", "date_after_death", "orphan_event", "duplicate_row",
    ),
    "medications": (
        "missing_required", "unknown_code", "date_before_birth", "date_after_death",
        "end_before_start", "orphan_event", "duplicate_row",
    ),
    "procedures": (
        "missing_required", "unknown_code", "date_before_birth", "date_after_death",
        "orphan_event", "duplicate_row",
    ),
}  # fmt: skip
_DATE_COLUMN: Final = {
    "encounters": "start_date",
    "conditions": "onset_date",
    "observations": "observed_date",
    "medications": "start_date",
    "procedures": "procedure_date",
}
_KEY: Final = {
    "patients": "patient_id",
    "encounters": "encounter_id",
    "conditions": "condition_id",
    "observations": "observation_id",
    "medications": "medication_id",
    "procedures": "procedure_id",
}
ORPHAN_ID_BASE: Final = 9_000_000_000


def inject(
    tables: dict[str, Columns], rate: float, rng: np.random.Generator, population: int
) -> Columns:
    """Mutate ``tables`` in place; return the manifest columns."""
    manifest: dict[str, list[np.ndarray]] = {"table": [], "row_key": [], "defect": [], "column": []}

    def record(table: str, keys: Int, defect: str, column: str) -> None:
        manifest["table"].append(np.full(keys.size, table, dtype=object))
        manifest["row_key"].append(keys)
        manifest["defect"].append(np.full(keys.size, defect, dtype=object))
        manifest["column"].append(np.full(keys.size, column, dtype=object))

    patients = tables["patients"]
    dob = patients["date_of_birth"].copy()
    death = patients["date_of_death"]
    for table, kinds in _TABLE_KINDS.items():
        cols = tables[table]
        key = cols[_KEY[table]]
        picked = np.nonzero(rng.random(key.size) < rate)[0]
        kind = rng.integers(0, len(kinds), picked.size)
        who = cols.get("_patient")
        duplicates: list[Int] = []
        for k, name in enumerate(kinds):
            rows = picked[kind == k]
            if rows.size == 0:
                continue
            if name in ("impossible_value", "wrong_unit"):
                # smoking status rows carry no value or unit: give them an unknown code
                coded = cols["unit"][rows] == -1
                _apply("unknown_code", cols, table, rows[coded], rng, dob, death, who, population)
                record(table, key[rows[coded]], "unknown_code", "code")
                rows = rows[~coded]
            if name == "date_after_death":
                assert who is not None
                dead = death[who[rows]] != NULL
                _before_birth(cols, table, rows[~dead], dob[who[rows[~dead]]], rng)
                record(table, key[rows[~dead]], "date_before_birth", _DATE_COLUMN[table])
                rows = rows[dead]
            column = _apply(name, cols, table, rows, rng, dob, death, who, population)
            if name == "duplicate_row":
                duplicates.append(rows)
            record(table, key[rows], name, column)
        if duplicates:
            rows = np.sort(np.concatenate(duplicates))
            for c, values in cols.items():
                cols[c] = np.concatenate([values, values[rows]])
    if not manifest["table"]:
        return {k: np.array([], dtype=object if k != "row_key" else np.int64) for k in manifest}
    return {k: np.concatenate(v) for k, v in manifest.items()}


def _before_birth(cols: Columns, table: str, rows: Int, dob: Int, rng: np.random.Generator) -> None:
    date = _DATE_COLUMN[table]
    shift = rng.integers(1, 3651, rows.size)
    cols[date][rows] = dob - shift
    if "end_date" in cols:
        end = cols["end_date"]
        # keep end on or after start so the row carries one defect only
        end[rows] = np.where(end[rows] == NULL, NULL, np.maximum(end[rows], dob - shift))


def _apply(
    name: str, cols: Columns, table: str, rows: Int, rng: np.random.Generator,
    dob: Int, death: Int, who: Int | None, population: int,
) -> str:  # fmt: skip
    n = rows.size
    if name == "missing_required":
        if table == "patients":
            column = "date_of_birth"
            cols["date_of_birth"][rows] = NULL
            return column
        if table == "encounters":
            cols["start_date"][rows] = NULL
            return "start_date"
        cols["concept"][rows] = -1
        return "code"
    if name == "invalid_nhs_check_digit":
        nhs = cols["nhs_number"]
        wrong = (nhs[rows] % 10 + rng.integers(1, 10, n)) % 10
        nhs[rows] = nhs[rows] // 10 * 10 + wrong
        return "nhs_number"
    if name == "impossible_value":
        cols["value"][rows] = rng.choice([-5.0, 0.0, 999.0, 2500.0], n)
        return "value"
    if name == "wrong_unit":
        cols["unit"][rows] = rng.choice(cat.WRONG_UNITS, n)
        return "unit"
    if name == "unknown_code":
        cols["concept"][rows] = rng.choice(cat.UNKNOWN, n)
        return "code"
    if name == "date_before_birth":
        assert who is not None
        _before_birth(cols, table, rows, dob[who[rows]], rng)
        return _DATE_COLUMN[table]
    if name == "date_after_death":
        assert who is not None
        date = _DATE_COLUMN[table]
        cols[date][rows] = death[who[rows]] + rng.integers(1, 366, n)
        if "end_date" in cols:
            cols["end_date"][rows] = np.where(
                cols["end_date"][rows] == NULL, NULL, cols[date][rows]
            )
        return date
    if name == "end_before_start":
        start = cols["start_date"]
        cols["end_date"][rows] = start[rows] - rng.integers(1, 366, n)
        return "end_date"
    if name == "orphan_event":
        cols["patient_id"][rows] = population * 10**10 + ORPHAN_ID_BASE + rng.integers(0, 10**8, n)
        return "patient_id"
    if name == "duplicate_row":
        return "*"
    raise ValueError(f"unknown defect kind {name!r}")
