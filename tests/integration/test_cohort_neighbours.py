"""Neighbour property test for training cohorts: for every cohort SQL the compiler
accepts, removing one person from the release removes at most that person's row and
changes no other row (the privacy unit DP-SGD's ε is stated for)."""

from __future__ import annotations

import json
import shutil

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors import releases
from connectors.ingest import ingest
from connectors.secrets import resolve_keys
from governance.cohorts import cohort_runnable
from governance.sql.policy import PolicyError

PIECES = {
    "source": [
        "patients p",
        "(SELECT person_id, count(*) AS n, max(onset_date) AS last FROM conditions "
        "GROUP BY person_id) p",
        "conditions p",
        "(SELECT person_id, max(onset_date) OVER () AS last FROM conditions) p",
        "(SELECT max(observed_date) AS last, min(person_id) AS person_id FROM observations) p",
        "patients p USING SAMPLE 50%",
    ],
    "join": [
        "",
        "LEFT JOIN (SELECT person_id, bool_or(code = '44054006') AS t2d FROM conditions "
        "GROUP BY person_id) c ON c.person_id = p.person_id",
        "JOIN (SELECT person_id, count(*) AS k FROM observations GROUP BY person_id) c "
        "ON c.person_id = p.person_id AND c.k > 2",
        "CROSS JOIN (SELECT max(observed_date) AS last FROM observations) c",
        "JOIN conditions c ON c.person_id = p.person_id",
        "LEFT JOIN (SELECT person_id FROM conditions) c ON true",
        # arithmetic over aggregates (select list and HAVING) that overflows for people
        # with many records: computed in an outer SELECT under TRY, never an error
        "LEFT JOIN (SELECT person_id, count(*) * 9223372036854775807 + max(value) AS boom "
        "FROM observations GROUP BY person_id HAVING count(*) * 9223372036854775807 > 0 "
        "OR true) c ON c.person_id = p.person_id",
        "JOIN (SELECT DISTINCT person_id, value + 0 FROM observations) c "
        "ON c.person_id = p.person_id",
    ],
    "where": [
        "",
        "WHERE p.person_id IN (SELECT person_id FROM conditions WHERE code = '44054006')",
        "WHERE p.person_id IN (SELECT min(person_id) FROM conditions)",
        "WHERE EXISTS (SELECT 1 FROM patients x WHERE x.imd_decile = 1)",
        "WHERE p.person_id IS NOT NULL",
        # a semi-join key from the nullable side of a LEFT JOIN, picked out at the removed
        # person: NOT IN must not turn NULL for everyone
        "WHERE NOT (p.person_id IN (SELECT o.person_id FROM patients pp LEFT JOIN "
        "conditions o ON pp.person_id = o.person_id AND o.code = '44054006' "
        "WHERE pp.person_id = '{heavy}'))",
        "WHERE p.person_id NOT IN (SELECT o.person_id FROM patients pp LEFT JOIN "
        "conditions o ON pp.person_id = o.person_id AND o.code = '0' "
        "WHERE pp.person_id = '{heavy}')",
    ],
}


@pytest.fixture(scope="module")
def releases_pair(population_3k, tmp_path_factory):
    home = tmp_path_factory.mktemp("cohorts") / "hub"
    ingest(population_3k, fmt="native", home=home, keys=resolve_keys(home, create=True))
    path = releases.get_release(home).path
    con = duckdb.connect(str(path), read_only=True)
    heavy = con.execute(
        "SELECT person_id FROM observations GROUP BY 1 ORDER BY count(*) DESC LIMIT 1"
    ).fetchall()[0][0]
    con.close()
    minus = tmp_path_factory.mktemp("minus") / "minus.duckdb"
    shutil.copy(path, minus)
    out = duckdb.connect(str(minus))
    for (table,) in out.execute(
        "SELECT table_name FROM duckdb_columns() WHERE column_name = 'person_id' "
        "AND NOT internal AND schema_name = 'main'"
    ).fetchall():
        kind = out.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE table_name = ?", [table]
        ).fetchall()[0][0]
        if kind:
            out.execute(f'DELETE FROM "{table}" WHERE person_id = ?', [heavy])
    out.close()
    return duckdb.connect(str(path), read_only=True), duckdb.connect(str(minus)), heavy


def _runnable(con: duckdb.DuckDBPyConnection, sql: str) -> str | None:
    """The SQL the service runs for ``sql`` (``cohorts.cohort_runnable``, what
    ``Cohorts.prepare`` keeps), or None if a cohort rule refuses it."""
    text = con.execute("SELECT json_serialize_sql(?)", [sql]).fetchall()[0][0]
    tree = json.loads(text)
    if tree.get("error"):
        return None
    catalogue: dict[str, dict[str, str]] = {}
    for t, c, d in con.execute(
        "SELECT table_name, column_name, data_type FROM duckdb_columns() WHERE NOT internal"
    ).fetchall():
        catalogue.setdefault(t, {})[c] = d
    try:
        return cohort_runnable(con, tree["statements"][0]["node"], catalogue)
    except PolicyError:
        return None


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    source=st.sampled_from(PIECES["source"]),
    join=st.sampled_from(PIECES["join"]),
    where=st.sampled_from(PIECES["where"]),
    extra=st.sampled_from(["", ", p.person_id AS pid2", ", 1 // 0 AS boom", ", c.boom"]),
)
def test_removing_one_person_changes_only_that_persons_row(
    releases_pair, source, join, where, extra
):
    full, minus, heavy = releases_pair
    sql = f"SELECT p.person_id{extra} FROM {source} {join} {where}".replace("{heavy}", str(heavy))
    runnable = _runnable(full, sql)
    if runnable is None:
        return  # refused before anything runs
    before = {r[0]: r for r in full.execute(runnable).fetchall()}
    after = {r[0]: r for r in minus.execute(runnable).fetchall()}
    assert len(before) == len(full.execute(runnable).fetchall())  # one row per person
    assert heavy not in after
    before.pop(heavy, None)
    assert before == after


def test_the_example_cohorts_are_accepted_and_the_everyone_max_is_refused(releases_pair):
    from models.examples import EXAMPLES

    full, _, _ = releases_pair
    for name in ("dpp_cohort.sql", "dpp_effect_cohort.sql"):
        assert _runnable(full, (EXAMPLES / name).read_text()) is not None
    old = (
        "SELECT p.person_id FROM patients p CROSS JOIN (SELECT max(observed_date) AS d "
        "FROM observations) w WHERE DATE '2015-01-01' + INTERVAL 760 DAY <= w.d"
    )
    assert _runnable(full, old) is None


def test_joins_on_the_person_run_as_hash_joins_and_other_comparisons_stay_total(releases_pair):
    """A cohort's person joins must scale with the region: ``a.person_id = b.person_id``
    (two person keys of one type, which cannot raise) stays bare in the SQL the hub runs,
    so DuckDB hash-joins it; inside TRY() it was a nested-loop join, quadratic in the rows
    (the who-benefits cohort of 400,000 people ran for minutes). Every other comparison,
    in a join's condition or not, is still made total."""
    from models.examples import EXAMPLES

    full, _, _ = releases_pair
    sql = _runnable(full, (EXAMPLES / "dpp_effect_cohort.sql").read_text())
    assert sql is not None
    plan = "\n".join(str(r[1]) for r in full.execute(f"EXPLAIN {sql}").fetchall())
    assert "Hash Join" in plan
    assert "Nl Join" not in plan and "Nested Loop Join" not in plan
    assert "(p.person_id = i.person_id)" in sql and "TRY((p.person_id" not in sql
    assert "TRY((code = '714628002'))" in sql  # not a person join: still guarded
    # a non-key comparison beside the person equality stays guarded, and the rest of
    # the cohort still cannot raise on the data (an overflowing product is NULL)
    guarded = _runnable(
        full,
        "SELECT p.person_id, c.k * 9223372036854775807 AS big FROM patients p JOIN "
        "(SELECT person_id, count(*) AS k FROM observations GROUP BY person_id) c "
        "ON c.person_id = p.person_id AND c.k > p.imd_decile",
    )
    assert guarded is not None and "TRY((c.k > p.imd_decile))" in guarded
    assert full.execute(guarded).fetchall()


def test_person_keys_of_different_types_keep_the_join_guarded():
    """Were person_id a number in one source and text in another, comparing them would
    cast text to a number on the data, which can raise: the join then stays in TRY()."""
    con = duckdb.connect()
    con.execute("CREATE TABLE patients (person_id BIGINT, sex VARCHAR)")
    con.execute("CREATE TABLE conditions (person_id VARCHAR, code VARCHAR)")
    con.execute("INSERT INTO patients VALUES (1, 'F')")
    con.execute("INSERT INTO conditions VALUES ('x', 'a')")
    sql = _runnable(
        con,
        "SELECT p.person_id, c.n FROM patients p LEFT JOIN (SELECT person_id, count(*) AS n "
        "FROM conditions GROUP BY person_id) c ON c.person_id = p.person_id",
    )
    assert sql is not None and "TRY((c.person_id = p.person_id))" in sql
    assert con.execute(sql).fetchall() == [(1, None)]  # 'x' is no number: no error
