"""A cast over a source column gives NULL on a bad value, never an error.

DuckDB 2.0's ``type_pushdown`` optimizer pushes ``try_cast`` into the CSV reader, which
then raises on the value instead (``connectors.staging.harden_connection``).
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from connectors.staging import harden_connection, quote


@pytest.mark.parametrize(
    ("value", "type_"),
    [("31/03/2015", "DATE"), ("12a", "INTEGER"), ("yesterday", "TIMESTAMP"), ("1e", "DOUBLE")],
)
def test_try_cast_over_a_csv_column_is_null_on_a_hardened_connection(tmp_path, value, type_):
    path = tmp_path / "t.csv"
    path.write_text(f"id,v\n1,2015-03-31\n2,{value}\n")
    con = duckdb.connect()
    try:
        harden_connection(con)
        rows = con.execute(
            f"SELECT id, try_cast(v AS {type_}) IS NULL FROM read_csv({quote(str(path))}, "
            "header = true, all_varchar = true) ORDER BY id"
        ).fetchall()
    finally:
        con.close()
    assert rows[1] == ("2", True)
    if type_ in ("DATE", "TIMESTAMP"):
        assert rows[0] == ("1", False)


def test_hardening_keeps_the_optimizers_already_disabled(tmp_path: Path):
    con = duckdb.connect()
    try:
        con.execute("SET disabled_optimizers = 'late_materialization'")
        harden_connection(con)
        harden_connection(con)  # twice: no harm
        setting = con.execute("SELECT current_setting('disabled_optimizers')").fetchall()[0][0]
    finally:
        con.close()
    disabled = {n.strip() for n in setting.split(",")}
    assert "late_materialization" in disabled
    known = {r[0] for r in duckdb.sql("SELECT name FROM duckdb_optimizers()").fetchall()}
    assert "type_pushdown" in disabled or "type_pushdown" not in known
