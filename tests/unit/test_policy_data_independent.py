"""The SQL policy's verdict depends on the SQL, the grants and the schema, never the data.

A red-team found that rule 4's plan (``EXPLAIN``) was made on the real release: DuckDB's
optimiser replaced a filter that the table's min/max statistics proved false with an
empty result, so a whole-row reference (``t::VARCHAR``, which reads every column) was
refused for ungranted columns only when the filter could match. Bisecting the filter's
bound read a patient's exact birth year or lab value from refusals that spent nothing.
The plan is now made on the schema alone (``governance.sql.engine.Planner``).
"""

from __future__ import annotations

import duckdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from governance.sql import policy
from governance.sql.engine import Planner
from governance.sql.mistakes import PolicyError, QueryMistake

GRANTS = {"patients": ["person_id", "sex", "year_of_birth"], "labs": ["person_id", "value"]}
SCHEMA = (
    "CREATE TABLE patients (person_id BIGINT, sex VARCHAR, year_of_birth INTEGER, "
    "ethnicity VARCHAR); CREATE TABLE labs (person_id BIGINT, value DOUBLE, note VARCHAR); "
    "CREATE VIEW lab_people AS SELECT l.person_id, l.value, p.ethnicity FROM labs l "
    "JOIN patients p USING (person_id)"
)
QUERIES = (
    "SELECT count(*) FROM patients t WHERE year_of_birth < {y} AND length(t::VARCHAR) > 0",
    "SELECT count(*) FROM patients t WHERE year_of_birth > {y} AND t IS NOT NULL",
    "SELECT sex, count(*) FROM patients t WHERE year_of_birth = {y} GROUP BY sex "
    "HAVING min(length(t::VARCHAR)) > 0",
    "SELECT count(*) FROM labs l WHERE value > {y} AND l::VARCHAR <> ''",
    "SELECT count(*) FROM patients WHERE year_of_birth < {y}",
)


def _release(tmp_path_factory: pytest.TempPathFactory, low: int, rows: int) -> str:
    path = tmp_path_factory.mktemp("release") / "r.duckdb"
    con = duckdb.connect(str(path))
    con.execute(SCHEMA)
    con.execute(
        f"INSERT INTO patients SELECT range, 'F', {low} + range % 50, 'x' FROM range({rows})"
    )
    con.execute(f"INSERT INTO labs SELECT range, {low} + range % 7, 'n' FROM range({rows})")
    con.close()
    return str(path)


@pytest.fixture(scope="module")
def releases(tmp_path_factory):
    """Three releases of one schema: born from 1915, from 1960, and nobody at all."""
    paths = [
        _release(tmp_path_factory, 1915, 500),
        _release(tmp_path_factory, 1960, 500),
        _release(tmp_path_factory, 1915, 0),
    ]
    cons = [duckdb.connect(p, read_only=True) for p in paths]
    yield cons, [Planner(c) for c in cons]
    for c in cons:
        c.close()


def _verdict(con, planner, sql):
    try:
        checked = policy.check(con, sql, granted=GRANTS, real=True, planner=planner)
    except (PolicyError, QueryMistake) as exc:
        return ("refused", str(exc))
    return ("accepted", tuple(sorted((t, tuple(sorted(c))) for t, c in checked.columns.items())))


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(QUERIES), st.integers(min_value=1800, max_value=2100))
def test_a_refusal_says_the_same_whatever_the_release_holds(releases, template, year):
    cons, planners = releases
    sql = template.format(y=year)
    verdicts = {_verdict(c, p, sql) for c, p in zip(cons, planners, strict=True)}
    assert len(verdicts) == 1, verdicts


def test_a_whole_row_reference_is_refused_even_where_statistics_prove_no_row_matches(
    releases,
):
    cons, planners = releases
    # nobody in the first release was born before 1915: the old check let this through
    sql = QUERIES[0].format(y=1915)
    kind, message = _verdict(cons[0], planners[0], sql)
    assert kind == "refused" and "ethnicity" in message and "granted_columns" in message


def test_a_planner_without_the_data_sees_the_release_schema_and_views(releases):
    cons, planners = releases
    columns = policy.plan_columns(
        cons[0], "SELECT count(*) FROM lab_people WHERE value > 1", planner=planners[0]
    )
    # as on the release itself, a view's plan reads its tables
    assert columns == {
        "labs": frozenset({"person_id", "value"}),
        "patients": frozenset({"person_id"}),
    }
