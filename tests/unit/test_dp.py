"""DP aggregates: the sensitivity used is true, OpenDP certifies the ε, noise is unbiased."""

from __future__ import annotations

import duckdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from governance.errors import InvalidRequest
from governance.privacy import mechanism as dp

DOMAIN = ("F", "M")


def table(con, people):
    con.execute("CREATE OR REPLACE TABLE obs (person_id BIGINT, sex VARCHAR, value DOUBLE)")
    rows = [(pid, sex, v) for pid, sex, values in people for v in values]
    if rows:
        con.executemany("INSERT INTO obs VALUES (?, ?, ?)", rows)


QUERY = dp.DpQuery(
    table="obs",
    aggregates=(
        dp.Aggregate("count"),
        dp.Aggregate("count_persons"),
        dp.Aggregate("sum", "value", (0.0, 50.0)),
    ),
    group_by="sex",
    domain=DOMAIN,
    max_rows_per_person=3,
)

people = st.lists(
    st.tuples(
        st.integers(1, 10**6),
        st.sampled_from(DOMAIN),
        st.lists(st.floats(-100, 200), min_size=1, max_size=6),
    ),
    max_size=15,
    unique_by=lambda p: p[0],
)


@settings(max_examples=60, deadline=None)
@given(people, st.sampled_from(DOMAIN), st.lists(st.floats(-1000, 1000), min_size=1, max_size=200))
def test_adding_one_person_with_many_events_moves_the_answer_by_at_most_the_sensitivity(
    base, sex, events
):
    con = duckdb.connect()
    table(con, base)
    before = dp.true_answers(con, QUERY, salt="s")
    table(con, [*base, (10**7, sex, events)])
    after = dp.true_answers(con, QUERY, salt="s")
    for i, agg in enumerate(QUERY.aggregates):
        change = sum(abs(after.get(g, (0, 0, 0))[i] - before.get(g, (0, 0, 0))[i]) for g in DOMAIN)
        assert change <= dp.sensitivity(agg, k=3, groups=len(DOMAIN)) + 1e-9


def test_opendp_certifies_no_more_than_the_budget_and_reports_the_noise():
    con = duckdb.connect()
    table(con, [(i, "F" if i % 2 else "M", [30.0] * 5) for i in range(200)])
    answer = dp.release(con, QUERY, epsilon=1.0, salt="s")
    assert answer.epsilon <= 1.0 + 1e-9 and answer.epsilon > 0.99
    assert answer.groups == list(DOMAIN)
    assert answer.scales["count"] == pytest.approx(3 / (1 / 3))
    assert answer.ci95["count"] == pytest.approx(answer.scales["count"] * 2.9957, rel=1e-3)


def test_groups_come_from_the_declared_domain_not_the_data():
    con = duckdb.connect()
    table(con, [(1, "F", [1.0]), (2, "X-rare-category", [1.0])])
    q = dp.DpQuery(
        table="obs", aggregates=(dp.Aggregate("count"),), group_by="sex", domain=("F", "M")
    )
    answer = dp.release(con, q, epsilon=1.0, salt="s")
    assert answer.groups == ["F", "M"]  # the rare category never shows, even by absence


def test_averaging_repeats_does_not_remove_the_noise_scale():
    con = duckdb.connect()
    table(con, [(i, "F", [10.0]) for i in range(100)])
    q = dp.DpQuery(
        table="obs", aggregates=(dp.Aggregate("mean", "value", (0.0, 20.0)),), max_rows_per_person=1
    )
    answers = [
        dp.release(con, q, epsilon=1.0, salt=str(i)).values["mean_value"][0] for i in range(300)
    ]
    mean = sum(answers) / len(answers)
    assert abs(mean - 10.0) < 1.0  # unbiased-ish: each answer is honest
    assert max(answers) - min(answers) > 0.5  # but every single answer is noisy


def test_bad_specs_are_refused():
    con = duckdb.connect()
    table(con, [(1, "F", [1.0])])
    with pytest.raises(InvalidRequest):
        dp.release(
            con,
            dp.DpQuery(table="obs", aggregates=(dp.Aggregate("sum", "value"),)),
            epsilon=1,
            salt="s",
        )
    with pytest.raises(InvalidRequest):
        dp.release(
            con,
            dp.DpQuery(table="obs", aggregates=(dp.Aggregate("count"),), group_by="sex"),
            epsilon=1,
            salt="s",
        )
