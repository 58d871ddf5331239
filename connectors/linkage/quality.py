"""How well a batch was linked: match rates per feed, and against a generator's truth.

Match rates need no truth: for each feed, the share of its records linked to a known
record, by NHS number, probabilistically, or left as a new person.

Against truth (``truth/records.parquet`` beside generated feeds: which generated person
each record belongs to), linkage is scored on record pairs. Two records are a *true
pair* if they belong to the same person and a *linked pair* if the linkage gave them the
same person. Precision = true linked pairs / linked pairs, recall = true linked pairs /
true pairs, counted from the contingency table of (linked person, true person) so that
no pair is ever listed. By group (sex, ethnic group, age band, IMD decile), recall counts
the true pairs of the group's people and precision the linked pairs whose first record's
true person is in the group. Linkage error is known to fall unevenly on minority ethnic
groups (Hagger-Johnson et al. 2017; Harron et al. 2017), which biases research results
unless it is measured.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from connectors.staging import harden_connection, quote

GROUPS = {
    "sex": "t.sex",
    "ethnic_group": "t.ethnicity",
    "age_band": (
        "CASE WHEN 2025 - t.birth_year < 18 THEN '0-17' WHEN 2025 - t.birth_year < 40 "
        "THEN '18-39' WHEN 2025 - t.birth_year < 65 THEN '40-64' ELSE '65+' END"
    ),
    "imd_decile": "t.imd_decile::VARCHAR",
}


def match_rates(assignments: pa.Table) -> dict[str, dict[str, Any]]:
    """Per feed: records, and the share linked by each method."""
    con = duckdb.connect()
    try:
        con.register("a", assignments)
        rows = con.execute(
            """SELECT split_part(record_key, '|', 1) AS feed, method, count(*) AS n
               FROM a GROUP BY ALL ORDER BY ALL"""
        ).fetchall()
    finally:
        con.close()
    out: dict[str, dict[str, Any]] = {}
    for feed, method, n in rows:
        entry = out.setdefault(feed, {"records": 0, "by": {}})
        entry["records"] += n
        entry["by"][method] = n
    for entry in out.values():
        total = entry["records"]
        entry["share"] = {m: round(n / total, 6) for m, n in entry["by"].items()}
    return out


def against_truth(assignments: pa.Table, truth_dir: Path) -> dict[str, Any]:
    """Pairwise precision, recall and F1 overall and by group (see the module doc)."""
    records = truth_dir / "records.parquet"
    people = truth_dir / "people.parquet"
    con = duckdb.connect()
    try:
        harden_connection(con)  # it reads files beside the source
        con.register("a", assignments)
        con.execute(
            f"""CREATE TABLE joined AS
                SELECT a.person AS linked, r.patient_id AS truth
                FROM a JOIN read_parquet({quote(str(records))}) r
                  ON a.record_key = r.feed || '|' || r.local_id"""
        )
        con.execute(f"CREATE TABLE people AS SELECT * FROM read_parquet({quote(str(people))})")
        overall = _scores(con, "TRUE")
        by: dict[str, dict[str, Any]] = {}
        for name, expr in GROUPS.items():
            values = con.execute(
                f"SELECT DISTINCT {expr} FROM people t WHERE {expr} IS NOT NULL ORDER BY 1"
            ).fetchall()
            by[name] = {str(v[0]): _scores(con, f"({expr}) = {quote(str(v[0]))}") for v in values}
    finally:
        con.close()
    return {**overall, "by_group": by}


def _scores(con: duckdb.DuckDBPyConnection, where: str) -> dict[str, Any]:
    row = con.execute(
        f"""
        WITH j AS (
            SELECT j.* FROM joined j JOIN people t ON t.patient_id = j.truth WHERE {where}
        ), cells AS (SELECT linked, truth, count(*) AS n FROM j GROUP BY ALL),
        linked AS (SELECT linked, count(*) AS n FROM joined GROUP BY ALL),
        truth AS (SELECT truth, count(*) AS n FROM j GROUP BY ALL)
        SELECT (SELECT sum(n * (n - 1) / 2) FROM cells),
               (SELECT sum(c.n * (l.n - 1) / 2.0) FROM cells c JOIN linked l USING (linked)),
               (SELECT sum(n * (n - 1) / 2) FROM truth),
               (SELECT count(*) FROM truth)
        """
    ).fetchall()[0]
    assert row is not None
    true_linked, linked_pairs, true_pairs, people = (float(v or 0) for v in row)
    precision = true_linked / linked_pairs if linked_pairs else 1.0
    recall = true_linked / true_pairs if true_pairs else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "people": int(people),
        "true_pairs": int(true_pairs),
        "linked_pairs": round(linked_pairs, 1),
        "precision": round(precision, 6),
        "recall": round(recall, 6),
        "f1": round(f1, 6),
    }
