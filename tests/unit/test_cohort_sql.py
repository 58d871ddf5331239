"""The SQL the hub runs for a cohort is total and person-local, whatever the data.

Three red-team breaks, each with the property that closes it:

1. a data value made a run fail or not (``max(...) + 1`` overflowing inside an
   aggregating subquery, DuckDB refusing ``TRY()`` around aggregates): the hardened SQL,
   run on data with extreme values, never raises, and every other person's row is the
   same with and without the target's records;
2. a NULL semi-join key (``NOT IN`` over the nullable side of a LEFT JOIN) let one
   person's missing record empty everyone's rows: with and without the target's
   records, the cohorts differ in at most the target's row;
3. ``SELECT DISTINCT person_id, value + 0`` was taken for one row per person.
"""

from __future__ import annotations

import json
from typing import Any

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from governance.cohorts import cohort_runnable
from governance.privacy import cohort_sql
from governance.sql.policy import PolicyError

TABLES = {
    "patients": "person_id VARCHAR, sex VARCHAR, year_of_birth INTEGER, "
    "month_of_birth INTEGER, practice_code VARCHAR, imd_decile INTEGER",
    "conditions": "person_id VARCHAR, code VARCHAR, onset_date DATE",
    "observations": "person_id VARCHAR, code VARCHAR, value DOUBLE, num BIGINT, "
    "text VARCHAR, observed_date DATE",
}
TARGET = ("t", "F", 1915, 2, "M88048", 3)
OTHERS = [("a", "M", 1950, 1, "X", 5), ("b", "F", 1960, 3, "Y", 7), ("c", "F", 1915, 2, "Z", 1)]
T2D = "44054006"
AT_TARGET = (
    "pp.year_of_birth = 1915 AND pp.month_of_birth = 2 AND pp.sex = 'F' "
    "AND pp.practice_code = 'M88048'"
)


def _db(patients, conditions=(), observations=()) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    for table, columns in TABLES.items():
        con.execute(f"CREATE TABLE {table} ({columns})")
    for table, rows in (
        ("patients", patients),
        ("conditions", conditions),
        ("observations", observations),
    ):
        for row in rows:
            marks = ", ".join("?" for _ in row)
            con.execute(f"INSERT INTO {table} VALUES ({marks})", list(row))
    return con


def _tree(con: duckdb.DuckDBPyConnection, sql: str) -> dict[str, Any]:
    text = con.execute("SELECT json_serialize_sql(?)", [sql]).fetchall()[0][0]
    parsed = json.loads(text)
    assert not parsed.get("error"), parsed
    node: dict[str, Any] = parsed["statements"][0]["node"]
    return node


def _catalogue(con: duckdb.DuckDBPyConnection) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for t, c, d in con.execute(
        "SELECT table_name, column_name, data_type FROM duckdb_columns() WHERE NOT internal"
    ).fetchall():
        out.setdefault(t, {})[c] = d
    return out


def _hardened(con: duckdb.DuckDBPyConnection, node: dict[str, Any]) -> str:
    tree = cohort_sql.statement_json(cohort_sql.hardened_tree(node))
    inner = con.execute("SELECT json_deserialize_sql(?::JSON)", [tree]).fetchall()[0][0]
    return cohort_sql.wrap_sql(str(inner))


def _runnable(con: duckdb.DuckDBPyConnection, sql: str) -> str:
    """The SQL the hub runs (``Cohorts.prepare``'s; PolicyError when refused)."""
    return cohort_runnable(con, _tree(con, sql), _catalogue(con))


def _rows(con: duckdb.DuckDBPyConnection, sql: str) -> dict[Any, tuple[Any, ...]]:
    rows = con.execute(sql).fetchall()
    out = {r[0]: r for r in rows}
    assert len(out) == len(rows)
    return out


def _neighbours(sql: str, with_target, without_target) -> None:
    """Run on both releases (must not raise): only the target's row may differ."""
    full, minus = _db(*with_target), _db(*without_target)
    runnable = _runnable(full, sql)
    before, after = _rows(full, runnable), _rows(minus, runnable)
    before.pop("t", None)
    after.pop("t", None)
    assert before == after, sql


# ---------------------------------------------------------------- 1: no value raises
R1 = f"""SELECT p.person_id, true AS y, 0.5 AS x, q.boom AS z FROM patients p JOIN (
 SELECT c.person_id, max(CASE WHEN c.code = '{T2D}' AND {AT_TARGET}
   THEN 9223372036854775807 ELSE 0 END) + 1 AS boom
 FROM conditions c JOIN patients pp ON pp.person_id = c.person_id GROUP BY c.person_id) q
 ON p.person_id = q.person_id"""

PER_PERSON = "FROM observations o GROUP BY o.person_id"
ATTACKS = [
    R1,
    # arithmetic over aggregates, in the select list and in HAVING
    f"SELECT o.person_id, max(o.num) + 1 AS a, count(*) * 9223372036854775807 AS b, "
    f"-min(o.num) - 2 AS c, max(o.value) * 1e308 AS d {PER_PERSON} "
    f"HAVING max(o.num) * 2 > 0 OR count(*) * 9223372036854775807 > 0 OR true",
    # aggregates that overflow or fail on extreme inputs (HUGEINT, DECIMAL(38), dates)
    f"SELECT o.person_id, sum(CAST(o.num AS HUGEINT) * 18446744073709551615) AS h, "
    f"avg(CAST(o.num AS DECIMAL(38, 0)) * 1000000000000000000) AS a, "
    f"median(o.num) AS m, quantile_cont(o.value, 0.3) AS q, stddev(o.value) AS s, "
    f"var_pop(o.num) AS v, sum(o.value) AS f {PER_PERSON}",
    # text read as a truth value: WHERE, AND, NOT, FILTER, bool_or, a join's condition
    "SELECT p.person_id FROM patients p WHERE p.person_id IN "
    "(SELECT o.person_id FROM observations o WHERE o.text)",
    "SELECT p.person_id FROM patients p WHERE p.person_id IN "
    "(SELECT o.person_id FROM observations o WHERE o.code = 'x' AND NOT o.text)",
    f"SELECT o.person_id, count(*) FILTER (WHERE o.text) AS n, bool_or(o.text) AS b, "
    f"bool_and(o.text OR o.text) AS c {PER_PERSON}",
    "SELECT p.person_id, q.n FROM patients p LEFT JOIN (SELECT person_id, count(*) AS n "
    "FROM observations GROUP BY person_id) q ON q.person_id = p.person_id AND q.n > 0 "
    "WHERE p.person_id IN (SELECT o.person_id FROM observations o JOIN patients pp "
    "ON pp.person_id = o.person_id AND o.text)",
    # scalar functions over extreme values, dates read as TIMESTAMP for date parts
    f"SELECT o.person_id, max(date_part('dow', o.observed_date)) AS d, "
    f"max(week(o.observed_date)) AS w, max(date_diff('month', o.observed_date, "
    f"o.observed_date + to_days(o.num))) AS m, max(regexp_matches(o.text, o.text)) AS r, "
    f"max(epoch(o.observed_date + to_days(o.num))) AS e, max(length(o.text) // o.num) AS l, "
    f"max(CAST(o.text AS INTEGER)) AS i, max(nullif(o.text, o.num)) AS n {PER_PERSON}",
]

EXTREMES = st.one_of(
    st.sampled_from([2**63 - 1, -(2**63) + 1, 2**31 - 1, -(2**31), 0, -1, 1]),
    st.integers(-(2**63) + 1, 2**63 - 1),
)
TEXTS = st.one_of(
    st.sampled_from(["maybe", "true", "false", "", "(", "%", "\\", "era", "9" * 30]),
    st.text(max_size=8),
)
FLOATS = st.floats(allow_nan=True, allow_infinity=True)
DATES = st.dates()


@pytest.mark.parametrize("attack", range(len(ATTACKS)))
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(num=EXTREMES, value=FLOATS, text=TEXTS, day=DATES, t2d=st.booleans())
def test_no_value_makes_a_cohort_raise_or_change_another_persons_row(
    attack, num, value, text, day, t2d
):
    others_obs = [("a", "x", 1.5, 7, "true", "2020-01-01"), ("b", "x", 2.0, 3, "no", None)]
    mine = ("t", "x", value, num, text, day)
    conditions = [("a", T2D, "2020-01-01"), ("c", T2D, "2020-01-01")]
    mine_c = [("t", T2D if t2d else "1", "2020-01-01")]
    with_target = ([TARGET, *OTHERS], conditions + mine_c, [*others_obs, mine, mine])
    without = (OTHERS, conditions, others_obs)
    _neighbours(ATTACKS[attack], with_target, without)


def test_the_red_team_overflow_no_longer_answers_yes_or_no():
    """R1 ran, or failed with 409 no_answer, as the target had type 2 diabetes: now it
    runs either way and only the target's own row holds the overflow (as NULL)."""
    for t2d in (True, False):
        con = _db([TARGET, *OTHERS], [("a", T2D, None), ("t", T2D if t2d else "1", None)])
        rows = _rows(con, _runnable(con, R1))
        assert rows["a"][3] == 1
        assert rows["t"][3] == (None if t2d else 1)


def test_what_is_computed_over_aggregates_runs_in_an_outer_select_under_try():
    con = _db([TARGET, *OTHERS])
    sql = _runnable(
        con,
        "SELECT c.person_id, count(*) * 2 AS n, max(c.onset_date) AS last "
        "FROM conditions c GROUP BY c.person_id HAVING count(*) > 1",
    )
    assert "TRY((hub_grouped.hub_value_" in sql
    assert "TRY((count_star()" not in sql and "TRY(count_star()" not in sql
    # sum and avg over DOUBLE (numbers only), so they cannot overflow
    sql = _runnable(con, f"SELECT o.person_id, sum(o.num) AS s {PER_PERSON}")
    assert "sum(TRY((o.num + TRY_CAST(0 AS DOUBLE))))" in sql


def test_dates_cannot_be_averaged_and_intervals_cannot_be_returned():
    """avg(date) and median(date) fail on extreme dates: refused when DuckDB binds (the
    hub's EXPLAIN, before any data); an INTERVAL past Python's range fails when the row
    is read, so a cohort may not return one (Cohorts.prepare, before any data)."""
    con = _db([TARGET])
    for agg in ("avg", "median"):
        sql = _runnable(con, f"SELECT o.person_id, {agg}(o.observed_date) AS d {PER_PERSON}")
        with pytest.raises(duckdb.BinderException):
            con.execute(f"EXPLAIN {sql}")
    sql = _runnable(con, "SELECT p.person_id, to_days(p.imd_decile) AS gap FROM patients p")
    kinds = [str(r[1]) for r in con.execute(f"DESCRIBE {sql}").fetchall()]
    with pytest.raises(PolicyError) as refused:
        cohort_sql.check_result_types(kinds)
    assert refused.value.rule == "cohort_types"


@pytest.mark.parametrize(
    ("sql", "rule"),
    [
        ("SELECT p.person_id FROM patients p WHERE like_escape(p.sex, 'F', p.sex)",
         "cohort_functions"),
        ("SELECT p.person_id, date_part(p.sex, DATE '2000-01-01') AS d FROM patients p",
         "cohort_functions"),
        ("SELECT p.person_id, date_trunc('era', DATE '2000-01-01') AS d FROM patients p",
         "cohort_functions"),
        ("SELECT p.person_id, date_diff('timezone', DATE '2000-01-01', DATE '2000-01-02') "
         "AS d FROM patients p", "cohort_functions"),
        # an aggregate's top-n count is checked only when a group receives a row: the
        # run failed exactly when one person's row reached it (a red-team yes/no answer)
        (f"SELECT pp.person_id FROM patients pp WHERE pp.person_id NOT IN (SELECT "
         f"person_id FROM patients pp WHERE {AT_TARGET} GROUP BY person_id "
         "HAVING max(year_of_birth, 0) IS NULL)", "cohort_aggregate"),
        (f"SELECT o.person_id, min(o.num, 100000000) AS m {PER_PERSON}", "cohort_aggregate"),
        (f"SELECT o.person_id, arg_max(o.num, o.value, -1) AS m {PER_PERSON}",
         "cohort_aggregate"),
        (f"SELECT o.person_id, max_by(o.num, o.value, 0) AS m {PER_PERSON}", "cohort_aggregate"),
        (f"SELECT o.person_id, quantile_cont(o.value, 2) AS m {PER_PERSON}", "cohort_aggregate"),
        (f"SELECT o.person_id, quantile_disc(o.value, o.value) AS m {PER_PERSON}",
         "cohort_aggregate"),
        (f"SELECT o.person_id, count(o.value, o.num) AS m {PER_PERSON}", "cohort_aggregate"),
    ],
)  # fmt: skip
def test_errors_that_try_does_not_catch_are_refused(sql, rule):
    con = _db([TARGET])
    with pytest.raises(PolicyError) as refused:
        _runnable(con, sql)
    assert refused.value.rule == rule


def test_aggregates_with_their_own_arguments_still_work():
    con = _db([TARGET], observations=[("t", "x", 1.0, 1, "a", "2021-03-04")])
    sql = _runnable(
        con,
        f"SELECT o.person_id, max(o.num) AS a, arg_max(o.value, o.observed_date) AS b, "
        f"quantile_cont(o.value, 0.5) AS c, count(*) AS d, count(o.text) AS e {PER_PERSON}",
    )
    assert con.execute(sql).fetchall() == [("t", 1, 1.0, 1.0, 1, 1)]


def test_constant_date_parts_still_work():
    con = _db([TARGET], observations=[("t", "x", 1.0, 1, "a", "2021-03-04")])
    sql = _runnable(
        con,
        "SELECT o.person_id, max(date_part('year', o.observed_date)) AS y, "
        "max(date_trunc('month', o.observed_date)) AS m, max(dayofweek(o.observed_date)) "
        "AS w, max(date_diff('day', DATE '2021-01-01', o.observed_date)) AS d "
        "FROM observations o GROUP BY o.person_id",
    )
    row = _rows(con, sql)["t"]
    assert row[1] == 2021 and str(row[2]).startswith("2021-03-01") and row[4] == 62


# ---------------------------------------------------------------- 2: semi-join keys
R2 = f"""SELECT p.person_id, p.sex = 'F' AS y, p.imd_decile AS x FROM patients p
WHERE NOT (p.person_id IN (SELECT o.person_id FROM patients pp LEFT JOIN conditions o
   ON pp.person_id = o.person_id AND o.code = '{T2D}' WHERE {AT_TARGET}))"""

NULLABLE = (
    f"SELECT o.person_id FROM patients pp LEFT JOIN conditions o ON pp.person_id = "
    f"o.person_id AND o.code = '{T2D}' WHERE pp.person_id = 't'"
)
SEMI_JOINS = [
    R2,
    f"SELECT p.person_id FROM patients p WHERE p.person_id NOT IN ({NULLABLE})",
    f"SELECT p.person_id FROM patients p WHERE NOT (p.person_id = ANY ({NULLABLE}))",
    f"SELECT p.person_id FROM patients p WHERE p.person_id <> ALL ({NULLABLE})",
    f"SELECT p.person_id FROM patients p WHERE p.imd_decile > 2 OR p.person_id NOT IN "
    f"({NULLABLE} GROUP BY o.person_id HAVING count(*) > 0)",
    f"SELECT p.person_id FROM patients p WHERE p.person_id NOT IN (SELECT DISTINCT "
    f"o.person_id FROM patients pp LEFT JOIN conditions o ON o.person_id = pp.person_id "
    f"AND o.code = '{T2D}' WHERE pp.person_id = 't')",
    f"SELECT p.person_id FROM patients p WHERE NOT (p.person_id IN (SELECT q.person_id "
    f"FROM ({NULLABLE}) q))",
]


@settings(max_examples=40, deadline=None)
@given(
    attack=st.sampled_from(SEMI_JOINS),
    codes=st.lists(st.sampled_from([T2D, "1", None]), min_size=4, max_size=4),
    target_codes=st.lists(st.sampled_from([T2D, "1", None]), max_size=2),
)
def test_one_persons_records_change_at_most_their_own_row(attack, codes, target_codes):
    people = [*OTHERS, ("d", "M", 1915, 2, "M88048", 2)]
    conditions = [(p[0], c, None) for p, c in zip(people, codes, strict=True)]
    mine = [("t", c, None) for c in target_codes]
    _neighbours(attack, ([TARGET, *people], conditions + mine), (people, conditions))


def test_the_red_team_not_in_no_longer_empties_the_cohort():
    for t2d in (True, False):
        con = _db([TARGET, *OTHERS], [("t", T2D if t2d else "1", None)])
        assert set(_rows(con, _runnable(con, R2))) == ({"a", "b", "c"} | ({"t"} - {t2d and "t"}))


def test_every_semi_join_drops_null_keys():
    con = _db([TARGET])
    sql = _runnable(con, f"SELECT p.person_id FROM patients p WHERE p.person_id IN ({NULLABLE})")
    assert "(o.person_id IS NOT NULL)" in sql


@pytest.mark.parametrize(
    "where",
    [
        "EXISTS (SELECT 1 FROM conditions o WHERE o.person_id = p.person_id)",
        "NOT EXISTS (SELECT 1 FROM conditions o WHERE o.person_id = p.person_id)",
        "p.person_id = (SELECT min(o.person_id) FROM conditions o)",
        "p.person_id <> ANY (SELECT o.person_id FROM conditions o)",
        "p.person_id > ALL (SELECT o.person_id FROM conditions o)",
        "CASE WHEN p.person_id IN (SELECT o.person_id FROM conditions o) THEN true END",
        "(p.person_id IN (SELECT o.person_id FROM conditions o)) IS NULL",
        "p.sex IN (SELECT o.code FROM conditions o)",
        "p.person_id IN (SELECT o.person_id, o.code FROM conditions o)",
        "p.person_id IN (SELECT o.person_id FROM conditions o, patients x)",
    ],
)
def test_other_three_valued_subqueries_are_refused(where):
    con = _db([TARGET])
    with pytest.raises(PolicyError) as refused:
        _runnable(con, f"SELECT p.person_id FROM patients p WHERE {where}")
    assert refused.value.rule.startswith("cohort_")


def test_semi_joins_need_person_keys_of_one_type():
    con = duckdb.connect()
    con.execute("CREATE TABLE patients (person_id BIGINT, sex VARCHAR)")
    con.execute("CREATE TABLE conditions (person_id VARCHAR, code VARCHAR)")
    with pytest.raises(PolicyError) as refused:
        _runnable(
            con,
            "SELECT p.person_id FROM patients p WHERE p.person_id IN "
            "(SELECT c.person_id FROM conditions c)",
        )
    assert refused.value.rule == "cohort_subquery"


# ---------------------------------------------------------------- 3: DISTINCT
@pytest.mark.parametrize(
    "sql",
    [
        "SELECT DISTINCT o.person_id, o.value + 0 FROM observations o",
        "SELECT DISTINCT o.person_id, o.value FROM observations o",
        "SELECT DISTINCT o.person_id, o.value + 0 AS v FROM observations o",
        "SELECT DISTINCT o.person_id, 1 FROM observations o",
    ],
)
def test_distinct_proves_one_row_per_person_only_when_every_item_is_a_key(sql):
    con = _db([TARGET])
    with pytest.raises(PolicyError) as refused:
        _runnable(con, sql)
    assert refused.value.rule == "cohort_one_row_per_person"


def test_distinct_person_keys_are_still_one_row_per_person():
    con = _db([TARGET], observations=[("t", "x", 1.0, 1, "a", None)] * 3)
    sql = _runnable(con, "SELECT DISTINCT o.person_id FROM observations o")
    assert list(_rows(con, sql)) == ["t"]


# ---------------------------------------------------------------- ordinary cohorts
ORDINARY = [
    "SELECT p.person_id, p.sex, p.imd_decile <= 3 AS deprived, coalesce(c.n, 0) AS n "
    "FROM patients p LEFT JOIN (SELECT person_id, count(*) AS n FROM conditions "
    "GROUP BY person_id) c ON c.person_id = p.person_id WHERE p.year_of_birth < 1990",
    "SELECT c.person_id, count(*) * 2 + 1 AS n, max(c.onset_date) AS last, "
    "sum(CASE WHEN c.code = '44054006' THEN 1 ELSE 0 END) AS k, "
    "bool_or(c.code = '44054006') AS t2d, count(*) FILTER (WHERE c.code <> '1') AS f "
    "FROM conditions c GROUP BY c.person_id HAVING count(*) >= 1 AND max(c.code) > '0'",
    "SELECT DISTINCT p.person_id FROM patients p JOIN conditions c ON c.person_id = "
    "p.person_id WHERE p.person_id IN (SELECT person_id FROM conditions WHERE code = "
    "'44054006') AND NOT (p.person_id IN (SELECT person_id FROM conditions WHERE code = '1'))",
]


@pytest.mark.parametrize("sql", ORDINARY)
def test_ordinary_cohorts_give_the_same_rows_as_written(sql):
    conditions = [
        ("t", T2D, "2020-01-01"),
        ("t", "2", "2021-01-01"),
        ("a", "1", "2019-05-01"),
        ("b", T2D, None),
    ]
    con = _db([TARGET, *OTHERS], conditions)
    assert _rows(con, _runnable(con, sql)) == _rows(con, cohort_sql.wrap_sql(sql))


def test_group_by_position_keeps_its_meaning_when_split():
    """The checker never accepts GROUP BY 1 as the person key, but the rewrite spells
    positions out so that splitting a SELECT cannot silently regroup it."""
    con = _db([TARGET, *OTHERS], [("t", "1", None), ("t", "2", None), ("a", "1", None)])
    sql = "SELECT c.person_id, count(*) + 1 AS n FROM conditions c GROUP BY 1"
    assert _rows(con, _hardened(con, _tree(con, sql))) == _rows(con, cohort_sql.wrap_sql(sql))


def test_the_example_cohorts_give_the_same_rows_as_written():
    from models.examples import EXAMPLES

    con = duckdb.connect()
    con.execute(
        "CREATE TABLE patients (person_id VARCHAR, sex VARCHAR, ethnicity VARCHAR, "
        "imd_decile INTEGER, year_of_birth INTEGER, registration_end DATE, death_date DATE)"
    )
    con.execute("CREATE TABLE conditions (person_id VARCHAR, code VARCHAR, onset_date DATE)")
    con.execute(
        "CREATE TABLE observations (person_id VARCHAR, code VARCHAR, value DOUBLE, "
        "observed_date DATE)"
    )
    con.execute("CREATE TABLE procedures (person_id VARCHAR, code VARCHAR, procedure_date DATE)")
    con.execute(
        "INSERT INTO patients VALUES ('a', 'F', 'W', 2, 1960, NULL, NULL), "
        "('b', 'M', 'A', 8, 1970, NULL, NULL)"
    )
    con.execute(
        "INSERT INTO conditions VALUES ('a', '714628002', '2016-01-01'), "
        "('a', '44054006', '2017-01-01'), ('b', '714628002', '2018-06-01')"
    )
    con.execute(
        "INSERT INTO observations VALUES ('a', '999791000000106', 44, '2015-12-01'), "
        "('a', '999791000000106', 40, '2016-12-01'), ('b', '60621009', 31, '2018-01-01')"
    )
    con.execute("INSERT INTO procedures VALUES ('a', '1025321000000109', '2016-02-01')")
    for name in ("dpp_cohort.sql", "dpp_effect_cohort.sql"):
        sql = (EXAMPLES / name).read_text()
        expected = _rows(con, cohort_sql.wrap_sql(sql))
        assert expected and _rows(con, _runnable(con, sql)) == expected
