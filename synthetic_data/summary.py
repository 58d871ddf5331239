"""Summaries of a generated population, computed with DuckDB straight from its files.

Used by ``hub demo``, the realism tests and the benchmark; reads Parquet or CSV output.
Everything here is aggregate: counts and percentages, never a row.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import duckdb

from synthetic_data import reference as ref


@dataclass(frozen=True)
class Prevalence:
    condition: str
    min_age: int
    target_percent: float
    percent: float
    by_imd_decile: tuple[float, ...]  # deciles 1 (most deprived) .. 10
    source: str


@dataclass(frozen=True)
class StudySummary:
    index_events: int
    referred_percent: float
    complete_follow_up: int
    true_effect_risk: float  # mean p1 - p0 over everyone indexed (percentage points)
    naive_effect_risk: float  # observed risk difference, referred vs not (pp)
    best_decile_effect: float  # mean effect among the 10% with most benefit (pp)
    worst_decile_effect: float  # ... and among the 10% with least


TABLES = ("patients", "encounters", "conditions", "observations", "medications", "procedures")


def _relation(con: duckdb.DuckDBPyConnection, folder: Path) -> duckdb.DuckDBPyRelation:
    if parquet := sorted(str(p) for p in folder.glob("*.parquet")):
        return con.read_parquet(parquet)
    if csv := sorted(str(p) for p in folder.glob("*.csv")):
        return con.read_csv(csv)
    raise FileNotFoundError(f"no Parquet or CSV files under {folder}")


def connect(folder: Path) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with a view per table of a generated population."""
    con = duckdb.connect()
    for table in TABLES:
        _relation(con, folder / table).create_view(table)
    if (folder / "ground_truth").is_dir():
        _relation(con, folder / "ground_truth").create_view("ground_truth")
    return con


def row_counts(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    return {t: len(con.table(t)) for t in TABLES}


def window_end(folder: Path) -> str:
    manifest = json.loads((folder / "manifest.json").read_text())
    return str(manifest["window"]["end_exclusive"])


def prevalence(con: duckdb.DuckDBPyConnection, end: str) -> list[Prevalence]:
    """Recorded prevalence at the end of the window, overall and by IMD decile."""
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE registered AS
        SELECT patient_id, imd_decile,
               date_diff('year', date_of_birth, $end::DATE - 1) AS age
        FROM patients
        WHERE registration_start < $end::DATE
          AND registration_end IS NULL AND date_of_death IS NULL
          AND date_of_birth IS NOT NULL
        """,
        {"end": end},
    )
    out = []
    for target in ref.PREVALENCE_TARGETS:
        condition = ref.CONDITIONS[ref.CONDITION_INDEX[target.condition]]
        rows = con.execute(
            """
            WITH cases AS (
                SELECT DISTINCT patient_id FROM conditions
                WHERE code = $code AND onset_date < $end::DATE
            )
            SELECT r.imd_decile, count(*) AS n, count(c.patient_id) AS k
            FROM registered r LEFT JOIN cases c USING (patient_id)
            WHERE r.age >= $min_age
            GROUP BY ALL ORDER BY 1
            """,
            {"code": condition.snomed.code, "end": end, "min_age": target.min_age},
        ).fetchall()
        n = sum(r[1] for r in rows)
        k = sum(r[2] for r in rows)
        by = {int(r[0]): 100.0 * r[2] / r[1] for r in rows if r[1]}
        out.append(
            Prevalence(
                condition=target.condition,
                min_age=target.min_age,
                target_percent=target.percent,
                percent=100.0 * k / n if n else 0.0,
                by_imd_decile=tuple(by.get(d, float("nan")) for d in range(1, 11)),
                source=target.source,
            )
        )
    return out


def study(con: duckdb.DuckDBPyConnection) -> StudySummary | None:
    try:
        row = con.execute(
            """
            WITH g AS (
                SELECT *, ntile(10) OVER (ORDER BY effect_risk_t2d_2y) AS benefit_decile
                FROM ground_truth
            )
            SELECT count(*),
                   100 * avg(referred::INT),
                   count(*) FILTER (follow_up_complete),
                   100 * avg(effect_risk_t2d_2y),
                   100 * (avg(CASE WHEN referred THEN t2d_2y_treated::INT END)
                          - avg(CASE WHEN NOT referred THEN t2d_2y_untreated::INT END)),
                   100 * avg(effect_risk_t2d_2y) FILTER (benefit_decile = 1),
                   100 * avg(effect_risk_t2d_2y) FILTER (benefit_decile = 10)
            FROM g
            """
        ).fetchall()[0]
    except duckdb.CatalogException:
        return None
    if row is None or not row[0]:
        return None
    return StudySummary(
        index_events=int(row[0]),
        referred_percent=float(row[1]),
        complete_follow_up=int(row[2]),
        true_effect_risk=float(row[3]),
        naive_effect_risk=float(row[4]),
        best_decile_effect=float(row[5]),
        worst_decile_effect=float(row[6]),
    )
