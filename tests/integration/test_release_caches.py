"""Per-release caches: repeated SQL is checked once, and no answer is ever stale.

A published release never changes, so the hub keeps the checked parse of repeated SQL,
the column catalogue and the release it read. What a researcher would notice if a cache
were keyed wrongly: another project's grants letting a query through, a catalogue or an
answer naming the old release after a new one is published.
"""

from __future__ import annotations

import pytest

from connectors import releases
from governance.errors import HubError, PolicyViolation
from governance.facade import Governance
from governance.sql import policy
from tests.homes import add_people, approved_project, publish

WIDE = {"patients": ["person_id", "sex", "year_of_birth"]}
NARROW = {"patients": ["person_id", "sex"]}
SQL = "SELECT year_of_birth, count(*) AS n FROM patients GROUP BY year_of_birth"


@pytest.fixture
def hub(population_3k, tmp_path):
    home = tmp_path / "hub"
    publish(population_3k, home)
    publish(population_3k, home / "dummy")
    gov = Governance.open(home, create_keys=True, query_timeout_s=10)
    who = add_people(gov, ana="researcher", sam="steward")
    wide = approved_project(gov, who["ana"], who["sam"], WIDE)
    narrow = approved_project(gov, who["ana"], who["sam"], NARROW)
    return gov, who, wide, narrow, population_3k


def test_repeated_sql_is_checked_once_per_release_and_grants(hub):
    gov, who, wide, narrow, _ = hub
    service = gov.queries
    first = service.run(who["ana"], wide, sql=SQL, target="dummy")
    engine = service.engine(service.release_for("dummy"))
    misses = engine._checks.misses
    again = service.run(who["ana"], wide, sql=SQL, target="dummy")
    assert engine._checks.misses == misses and engine._checks.hits >= 1
    assert again["rows"] == first["rows"] and again["columns"] == first["columns"]
    # the same text under another project's (narrower) grants is checked afresh: refused
    with pytest.raises(PolicyViolation, match="year_of_birth"):
        service.run(who["ana"], narrow, sql=SQL, target="dummy")
    # and a refusal is never cached as an acceptance, nor the other way round
    with pytest.raises(PolicyViolation, match="year_of_birth"):
        service.run(who["ana"], narrow, sql=SQL, target="dummy")
    assert service.run(who["ana"], wide, sql=SQL, target="dummy")["rows"] == first["rows"]


def test_a_cached_check_hands_each_caller_its_own_parse_tree(hub):
    gov = hub[0]
    service = gov.queries
    engine = service.engine(service.release_for("real"))
    cur = engine.cursor()
    try:
        one = engine.check(cur, SQL, granted=WIDE, real=True)
        one.node["select_list"].clear()  # a compiler that changed its tree...
        two = engine.check(cur, SQL, granted=WIDE, real=True)
    finally:
        cur.close()
    assert two.node["select_list"]  # ...changes nobody else's
    assert two.tables == frozenset({"patients"})


VERDICTS = (
    SQL,
    "SELECT sex, count(*) AS n FROM patients WHERE year_of_birth > 1950 GROUP BY sex",
    "SELECT sex, count(*) AS n FROM patients WHERE ethnicity IS NOT NULL GROUP BY sex",
    "SELECT sex, count(*) AS n FROM patients p JOIN encounters e USING (person_id) GROUP BY 1",
    "SELECT sex, count(*) AS n FROM no_such_table GROUP BY sex",
    "SELECT sex, count(*) AS n FROM patients WHERE imd_decile < 3 GROUP BY sex",
)


@pytest.mark.parametrize("sql", VERDICTS)
def test_the_engines_kept_names_give_every_verdict_a_fresh_check_gives(hub, sql):
    """The engine reads the release's table and column names once; a new text checked
    with them is accepted or refused, and for the same reason, as when they are read
    again for it (a filter on a hidden column, a table not granted, an unknown name)."""
    gov = hub[0]
    service = gov.queries
    engine = service.engine(service.release_for("real"))
    cur = engine.cursor()
    try:
        engine.check(cur, "SELECT sex, count(*) AS n FROM patients GROUP BY sex",
                     granted=WIDE, real=True)  # fmt: skip
        outcomes = []
        for check in (
            lambda: engine.check(cur, sql, granted=WIDE, real=True),
            lambda: policy.check(cur, sql, granted=WIDE, real=True),
        ):
            try:
                outcomes.append(("accepted", sorted(check().columns.items())))
            except HubError as exc:
                outcomes.append((type(exc).__name__, str(exc)))
    finally:
        cur.close()
    assert outcomes[0] == outcomes[1]
    assert (outcomes[0][0] == "accepted") == (sql in (SQL, VERDICTS[1]))


def test_a_new_release_is_served_at_once_never_a_stale_catalogue_or_answer(hub):
    gov, who, wide, narrow, population = hub
    service = gov.queries
    before = service.catalogue(who["ana"], wide)
    assert before["release"] == "release-0001"
    assert service.catalogue(who["ana"], wide) == before  # served again, the same
    names = [c["name"] for c in before["tables"]["patients"]["columns"]]
    assert "year_of_birth" in names
    shown = service.catalogue(who["ana"], narrow)["tables"]["patients"]["columns"]
    narrow_names = [c["name"] for c in shown]
    assert "year_of_birth" not in narrow_names  # the grants are part of the key
    dp = {"target": "real", "mode": "dp", "epsilon": 0.1}
    light = "SELECT sex, count(*) AS n FROM patients GROUP BY sex"
    assert service.run(who["ana"], wide, sql=light, **dp)["release"] == "release-0001"

    publish(population, gov.home)  # release-0002 becomes current
    assert releases.get_release(gov.home).id == "release-0002"
    assert service.catalogue(who["ana"], wide)["release"] == "release-0002"
    assert service.run(who["ana"], wide, sql=light, **dp)["release"] == "release-0002"
    # an earlier release is still read by id, and says which it is
    old = releases.get_release(gov.home, "release-0001")
    assert old.id == "release-0001" and not old.current and old.number == 1
    with pytest.raises(releases.ReleaseError):
        releases.get_release(gov.home, "../release-0001")


def test_a_repeated_dp_query_is_bound_once_and_noised_afresh_each_time(hub):
    gov, who, wide, _, _ = hub
    service = gov.queries
    sql = "SELECT sex, count(*) AS n FROM patients GROUP BY sex"
    dp = {"target": "real", "mode": "dp", "epsilon": 0.2}
    first = service.run(who["ana"], wide, sql=sql, **dp)
    engine = service.engine(service.release_for("real"))
    misses = engine._bound.misses
    answers = [service.run(who["ana"], wide, sql=sql, **dp) for _ in range(6)]
    assert engine._bound.misses == misses  # the statements' binding was checked once
    # every answer is charged and noised again: the same query does not give one answer
    spent = [a["epsilon_spent"] for a in [first, *answers]]
    assert spent == [0.2] * 7
    assert len({str(a["rows"]) for a in [first, *answers]}) > 1
    assert first["epsilon_remaining"] - answers[-1]["epsilon_remaining"] == pytest.approx(1.2)


def test_an_exact_output_counts_every_person_behind_it_once(hub):
    gov, who, wide, _, _ = hub
    service = gov.queries
    sql = "SELECT sex, count(*) AS n FROM patients WHERE year_of_birth < 1960 GROUP BY sex"
    done = service.run(who["ana"], wide, sql=sql, target="real", mode="exact")
    output = gov.outputs.output(who["sam"], done["output_id"])
    expected = service.run(
        who["ana"],
        wide,
        sql="SELECT count(*) AS n FROM patients WHERE year_of_birth < 1960",
        target="real",
        mode="exact",
    )
    total = gov.outputs.output(who["sam"], expected["output_id"])
    assert output["manifest"]["population"] == total["manifest"]["population"] > 0
    # the same people, so the two outputs differ by nobody: no differencing flag
    assert total["manifest"]["differencing"] == []


def test_a_projects_repeated_query_reuses_its_own_answers_never_another_projects(hub):
    """What a project read from an immutable release is kept for its own next identical
    query (the answers are the same; only the time differs); another project reading
    the same SQL reads the release itself, so its timing says nothing of the first's."""
    gov, who, wide, narrow, _ = hub
    service = gov.queries
    light = "SELECT sex, count(*) AS n FROM patients GROUP BY sex"
    first = service.run(who["ana"], wide, sql=light, target="dummy")
    dummy = service.engine(service.release_for("dummy"))
    hits, misses = dummy._kept.hits, dummy._kept.misses
    again = service.run(who["ana"], wide, sql=light, target="dummy")
    assert (dummy._kept.hits, dummy._kept.misses) == (hits + 1, misses)
    assert again["rows"] == first["rows"] and again["query_id"] != first["query_id"]
    other = service.run(who["ana"], narrow, sql=light, target="dummy")
    assert (dummy._kept.hits, dummy._kept.misses) == (hits + 1, misses + 1)
    assert other["rows"] == first["rows"]
    # each request is still audited and stored on its own
    ids = {e["target"] for e in gov.audit.entries(action="query.dummy", limit=10)}
    assert {first["query_id"], again["query_id"], other["query_id"]} <= ids

    exact = "SELECT sex, count(*) AS n FROM patients WHERE year_of_birth < 1970 GROUP BY sex"
    outputs = [
        gov.outputs.output(who["sam"], service.run(who["ana"], wide, sql=exact,
                                                    target="real", mode="exact")["output_id"])
        for _ in range(2)
    ]  # fmt: skip
    one, two = (o["manifest"] for o in outputs)
    assert outputs[0]["result"] == outputs[1]["result"]
    assert one["population"] == two["population"] > 0
    assert two["differencing"] == []  # checked again: the same people, nobody isolated
