"""Per-source access, as the engine enforces it: a project of a release built from feeds
reads only the rows of the feeds its data controllers approved (``governance.sql.scope``).

Checked on real DuckDB release files with random feeds, people and approvals: every
table keeps exactly its approved feeds' rows, a person is visible exactly when an
approved feed holds a record of them, a detail one feed supplied is withheld unless that
feed is approved, and no query form reads around the filter.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors import schema
from governance.errors import PolicyViolation
from governance.sql.engine import Engine

FEEDS = ("gp-a", "trust-x", "ae", "deaths")


def _release(path: Path, records: list[tuple[int, str]], details: dict[int, str]) -> None:
    """patients 1..n; one condition row per (person, feed) record; registration details
    supplied by ``details[person]``'s feed."""
    con = duckdb.connect(str(path))
    people = sorted({p for p, _ in records})
    con.execute(schema.create_table_sql("patients", schema.PATIENT_COLUMNS))
    con.execute(
        "CREATE TABLE conditions (condition_id BIGINT, person_id BIGINT, code VARCHAR, "
        "source_system VARCHAR)"
    )
    con.execute("CREATE TABLE organisations (organisation_code VARCHAR, source_system VARCHAR)")
    con.execute(
        "CREATE TABLE _person_sources (person_id BIGINT, source_system VARCHAR, supplies VARCHAR)"
    )
    for p in people:
        con.execute(
            "INSERT INTO patients (person_id, year_of_birth, month_of_birth, sex, "
            "practice_code, source_system) VALUES (?, 1960, 1, 'F', ?, 'feeds')",
            [p, "P1" if p in details else None],
        )
        if p in details:
            con.execute(
                "INSERT INTO _person_sources VALUES (?, ?, 'registration')",
                [p, "feeds:" + details[p]],
            )
    for i, (p, feed) in enumerate(records):
        con.execute("INSERT INTO conditions VALUES (?, ?, 'X', ?)", [i, p, "feeds:" + feed])
        con.execute("INSERT INTO _person_sources VALUES (?, ?, 'record')", [p, "feeds:" + feed])
    con.execute("INSERT INTO organisations VALUES ('O1', 'feeds')")
    con.execute(f"CREATE VIEW person AS {schema.OMOP_VIEWS['person']}")
    con.close()


records_st = st.lists(
    st.tuples(st.integers(1, 12), st.sampled_from(FEEDS)), min_size=1, max_size=30
).map(lambda r: sorted(set(r)))


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(records=records_st, approved=st.sets(st.sampled_from(FEEDS)), data=st.data())
def test_a_project_reads_exactly_its_approved_feeds(tmp_path_factory, records, approved, data):
    people = sorted({p for p, _ in records})
    details = {
        p: data.draw(st.sampled_from([f for q, f in records if q == p]))
        for p in people
        if data.draw(st.booleans())
    }
    path = tmp_path_factory.mktemp("rel") / "release-0007.duckdb"
    _release(path, records, details)
    engine = Engine(path).scoped(frozenset("feeds:" + f for f in approved))
    cur = engine.cursor()
    try:
        rows = cur.execute("SELECT person_id, source_system FROM conditions").fetchall()
        assert sorted(rows) == sorted((p, "feeds:" + f) for p, f in records if f in approved)
        # the unqualified name and main.<name> both reach the filtered view
        assert cur.execute("SELECT count(*) FROM main.conditions").fetchall()[0][0] == len(rows)
        visible = {p for p, f in records if f in approved}
        patients = dict(cur.execute("SELECT person_id, practice_code FROM patients").fetchall())
        assert set(patients) == visible
        for p, practice in patients.items():
            # the GP detail shows only when the feed that supplied it is approved
            assert (practice is not None) == (details.get(p) in approved)
        # the OMOP view is built again over the filtered patients
        assert {r[0] for r in cur.execute("SELECT person_id FROM person").fetchall()} == visible
        # reference data is not filtered
        assert cur.execute("SELECT count(*) FROM organisations").fetchall()[0][0] == 1
    finally:
        cur.close()
        engine.close()


def test_the_policy_refuses_a_name_that_would_read_around_the_filter(tmp_path):
    path = tmp_path / "release-0001.duckdb"
    _release(path, [(1, "gp-a"), (2, "ae")], {})
    engine = Engine(path).scoped(frozenset({"feeds:ae"}))
    granted = {"conditions": ["person_id", "code"]}
    cur = engine.cursor()
    try:
        for sql in (
            'SELECT count(*) FROM "release-0001".main.conditions',
            "SELECT count(*) FROM temp.main.conditions",
        ):
            with pytest.raises(PolicyViolation):
                engine.check(cur, sql, granted=granted, real=True)
        # the policy judges the query as granted, not the hub's filtering views (which
        # read source_system, a column this project was not granted)
        checked = engine.check(cur, "SELECT count(*) FROM conditions", granted=granted, real=True)
        assert checked.tables == frozenset({"conditions"})
        assert cur.execute(checked.sql).fetchall() == [(1,)]
    finally:
        cur.close()
        engine.close()


def test_a_release_from_feeds_without_per_person_sources_is_refused(tmp_path):
    path = tmp_path / "release-0001.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE conditions (person_id BIGINT, source_system VARCHAR)")
    con.close()
    with pytest.raises(ValueError, match="per-person sources"):
        Engine(path).scoped(frozenset({"feeds:ae"}))
