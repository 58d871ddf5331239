"""Exact outputs through the service: each attack class of issue 13, finding 6, and review.

Every attack here was answered before the fix (a table reached the steward marked only
"rounded", or a tracker went unflagged); each test now shows what a user sees instead.
"""

from __future__ import annotations

import pytest

from governance.errors import AccessDenied, Conflict, InvalidRequest, PolicyViolation
from governance.facade import Governance
from tests.homes import add_people, approved_project, publish

GRANTS = {
    "patients": ["person_id", "sex", "year_of_birth", "imd_decile"],
    "conditions": ["person_id", "code", "onset_date", "condition_id"],
    "observations": ["person_id", "code", "value"],
}


@pytest.fixture(scope="module")
def hub(population_3k, tmp_path_factory):
    home = tmp_path_factory.mktemp("exact") / "hub"
    publish(population_3k, home)
    gov = Governance.open(home, create_keys=True, query_timeout_s=20)
    who = add_people(gov, ana="researcher", sam="steward", tess="steward")
    projects = {
        name: approved_project(
            gov,
            who["ana"],
            who["sam"],
            GRANTS,
            epsilon=1.0,
            title=name,
            output_reviewers=reviewers,
            sdc_threshold=threshold,
        )
        for name, reviewers, threshold in (("one", 1, 7), ("two", 2, 7), ("strict", 1, 10))
    }
    cur = gov.queries.engine(gov.queries.release_for("real")).cursor()
    target = cur.execute(
        "SELECT person_id FROM observations GROUP BY person_id ORDER BY count(*) DESC LIMIT 1"
    ).fetchall()[0][0]
    cur.close()
    return gov, projects, who, int(target)


def _exact(gov, who, pid, sql):
    return gov.queries.run(who["ana"], pid, sql=sql, target="real", mode="exact")


def _output(gov, who, answer):
    return gov.outputs.output(who["sam"], answer["output_id"])


@pytest.mark.parametrize(
    "sql, rule",
    [
        ("SELECT sex, count(*), max(year_of_birth) FROM patients GROUP BY sex", "single_value"),
        ("SELECT count(*), arg_max(year_of_birth, person_id) FROM patients", "single_value"),
        ("SELECT count(*), bool_or(year_of_birth = 1950) FROM patients", "single_value"),
        ("SELECT count(*), median(value) FROM observations", "single_value"),
        ("SELECT count(*), stddev(value) FROM observations", "unknown_aggregate"),
        ("SELECT count(*) > 0 AS exists_bit FROM patients WHERE year_of_birth = 1950", "expression"),
        ("SELECT count(*) + 1000 FROM patients WHERE year_of_birth = 1950", "expression"),
        ("SELECT count(*), sum(value) / 3 FROM observations", "expression"),
        # person keys by another name: aliases, derived tables, CTEs, expressions of one
        ("SELECT p, count(*) FROM (SELECT person_id AS p FROM patients) d GROUP BY p", "person_key"),
        ("WITH w AS (SELECT person_id + 0 AS k FROM patients) SELECT k, count(*) FROM w GROUP BY k",
         "person_key"),
        ("SELECT x, count(*) FROM (SELECT person_id FROM patients) d(x) GROUP BY x", "person_key"),
        ("SELECT k, count(*) FROM (SELECT 'x' || CAST(person_id AS VARCHAR) AS k FROM patients) d"
         " GROUP BY k", "person_key"),
        ("SELECT condition_id, count(*) FROM conditions GROUP BY condition_id", "person_key"),
        ("SELECT count(*), sum(person_id) FROM patients", "person_key"),
        ("SELECT count(*) FROM (SELECT year_of_birth AS person_id FROM patients) d",
         "person_alias"),
        ("SELECT count(*) FROM patients p WHERE EXISTS (SELECT 1 FROM conditions c "
         "WHERE c.person_id = 5 AND c.code = '35489007')", "subquery"),
        ("SELECT sex, count(*) FROM patients GROUP BY sex HAVING count(*) < 3", "having"),
        ("SELECT count(*) FROM (SELECT p.person_id FROM patients p, conditions c) d",
         "derived_join"),
        ("SELECT sum(value) FROM observations", "needs_count"),
        # two figures of one output over different rows differ by one person (a
        # red-team's differencing inside one output, which no ledger of populations sees)
        ("SELECT count(*) AS n, count(*) FILTER (WHERE person_id <> 5) AS d FROM patients",
         "conditional_aggregate"),
        ("SELECT count(*) AS n, sum(CASE WHEN person_id = 5 THEN 0 ELSE value END) AS s "
         "FROM observations", "conditional_aggregate"),
        ("SELECT count(*) AS n, sum(x) AS s FROM (SELECT CASE WHEN person_id = 5 THEN 0 "
         "ELSE value END AS x, person_id FROM observations) d", "conditional_aggregate"),
        ("WITH w AS (SELECT person_id, value * (person_id <> 5)::INT AS v FROM observations) "
         "SELECT count(*) AS n, sum(v) AS s FROM w", "conditional_aggregate"),
        ("SELECT count(*) AS n, count(o.value) AS v FROM patients p LEFT JOIN (SELECT "
         "person_id, value FROM observations WHERE person_id <> 5) o USING (person_id)",
         "outer_join_aggregate"),
        # the same condition hidden by other spellings of a computed column
        ("SELECT count(*) AS n, sum(value) AS s FROM (SELECT * REPLACE (CASE WHEN "
         "person_id = 5 THEN 0 ELSE value END AS value) FROM observations) d",
         "conditional_aggregate"),
        ("SELECT count(*) AS n, sum(w) AS s FROM (SELECT * RENAME (v AS w) FROM (SELECT "
         "person_id, value * (person_id <> 5)::INT AS v FROM observations) a) d",
         "conditional_aggregate"),
        ("SELECT count(*) AS n, sum(\"abs(\"\"value\"\")\") AS s FROM (SELECT person_id, abs(value) "
         "FROM observations) d", "conditional_aggregate"),
        ("SELECT count(*) AS n, count(TRY_CAST(value AS TINYINT)) AS c FROM observations",
         "conditional_aggregate"),
        # a positional join pads the shorter side with NULLs: count(q.x) then leaves out
        # whoever the other side's WHERE dropped
        ("SELECT count(*) AS n, count(q.year_of_birth) AS m FROM (SELECT person_id FROM "
         "patients) p POSITIONAL JOIN (SELECT person_id, year_of_birth FROM patients WHERE "
         "person_id <> 5) q", "join"),
        ("SELECT count(*) AS n FROM patients p ASOF JOIN conditions c ON "
         "p.person_id = c.person_id AND p.year_of_birth >= year(c.onset_date)", "join"),
        # one person's rows paired with everybody's: a difference of N rows per person
        # that no rounding hides, while every cell's people are everyone (red team)
        ("SELECT count(*) AS n FROM patients p CROSS JOIN patients q WHERE "
         "q.year_of_birth = 1950", "join"),
        ("SELECT count(*) AS n FROM patients p, conditions c WHERE p.person_id = c.person_id",
         "join"),
        ("SELECT count(*) AS n FROM patients p JOIN patients q ON p.year_of_birth = "
         "q.year_of_birth", "join"),
        ("SELECT count(*) AS n FROM patients p JOIN conditions c ON p.person_id = "
         "c.person_id OR p.sex = 'F'", "join"),
        ("SELECT count(*) AS n FROM patients p JOIN conditions c ON p.person_id = "
         "c.person_id JOIN patients q ON q.year_of_birth = p.year_of_birth", "join"),
        ("SELECT count(*) AS n FROM (SELECT person_id, sex FROM patients) p NATURAL JOIN "
         "(SELECT person_id, code FROM conditions) c", "join"),
        ("SELECT count(*) AS n FROM patients p JOIN (SELECT person_id, year_of_birth FROM "
         "patients) q ON p.person_id < q.person_id", "join"),
        # a CTE named like a table without person_id passed for nobody's rows; an alias
        # so named hid a table of people the same way (red team, second round)
        ("WITH organisations AS (SELECT imd_decile AS d FROM patients WHERE "
         "year_of_birth = 1950) SELECT d, count(*) AS n FROM organisations, patients "
         "GROUP BY d", "cte_name"),
        ("SELECT count(*) AS n FROM patients AS organisations CROSS JOIN patients q "
         "WHERE q.year_of_birth = 1950", "join"),
        # LIMIT lets a one-person group take the only place, then be left out
        ("SELECT year_of_birth = 1950 AS k, count(*) AS n FROM patients GROUP BY ALL "
         "ORDER BY 1 DESC LIMIT 1", "limit"),
        ("SELECT sex, count(*) AS n FROM patients GROUP BY sex OFFSET 1", "limit"),
        # decoys chosen to cover exactly 12 birth years, and one person a 13th
        ("SELECT sex, count(*) AS n, count(DISTINCT year_of_birth) AS y FROM patients "
         "GROUP BY sex", "distinct_values"),
        ("SELECT count(*) AS n, sum(value) AS n FROM observations", "duplicate_names"),
    ],
)  # fmt: skip
def test_outputs_that_can_carry_one_persons_value_are_refused_before_anything_runs(hub, sql, rule):
    gov, projects, who, _ = hub
    before = len(gov.outputs.pending(who["sam"]))
    with pytest.raises(PolicyViolation, match=f"exact_{rule}"):
        _exact(gov, who, projects["one"], sql)
    assert len(gov.outputs.pending(who["sam"])) == before  # nothing reached the steward
    denied = gov.audit.entries(project=projects["one"], decision="denied", limit=1)
    assert f"exact_{rule}" in denied[0]["reason"]


def test_counts_sums_and_means_are_released_by_what_they_compute(hub):
    gov, projects, who, _ = hub
    answer = _exact(
        gov, who, projects["one"],
        "SELECT sex, count(*) AS n, round(avg(year_of_birth), 3) AS mean_yob, "
        "CAST(sum(imd_decile) AS BIGINT) AS s FROM patients GROUP BY sex",
    )  # fmt: skip
    out = _output(gov, who, answer)
    assert answer["status"] == "pending_review" and not out["manifest"].get("failed")
    for _sex, n, mean_yob, s in out["result"]["rows"]:
        assert n % 5 == 0 and s % 5 == 0  # counts and sums rounded
        assert mean_yob == round(mean_yob, 1)  # means to one decimal
    assert out["manifest"]["sum_rules"]["p_percent"] == 10.0


def test_a_sum_one_person_dominates_is_redacted_not_rounded(hub):
    gov, projects, who, _ = hub
    cur = gov.queries.engine(gov.queries.release_for("real")).cursor()
    # the person with the most systolic blood pressure readings (about 130 mmHg each),
    # beside nine people with one cholesterol reading each (about 5 mmol/L): a cell of ten
    # people whose sum is nearly all one person's
    big = cur.execute(
        "SELECT person_id FROM observations WHERE code = '271649006' GROUP BY person_id "
        "ORDER BY sum(value) DESC, person_id LIMIT 1"
    ).fetchall()[0][0]
    small = [
        r[0]
        for r in cur.execute(
            "SELECT person_id FROM observations WHERE code = '1005671000000105' "
            "GROUP BY person_id HAVING count(*) = 1 ORDER BY person_id LIMIT 9"
        ).fetchall()
    ]
    cur.close()
    answer = _exact(
        gov, who, projects["one"],
        "SELECT count(DISTINCT person_id) AS n, sum(value) AS s FROM observations "
        f"WHERE (code = '271649006' AND person_id = {big}) OR (code = '1005671000000105' "
        f"AND person_id IN ({', '.join(map(str, small))}))",
    )  # fmt: skip
    out = _output(gov, who, answer)
    assert out["result"]["rows"][0][0] == 10  # ten people: the count is fine
    assert out["result"]["rows"][0][1] is None  # the sum is nearly one person's: redacted
    assert out["manifest"]["cells"][0]["rule"] in ("p_percent", "dominance")


def test_a_count_of_one_persons_many_rows_is_redacted(hub):
    gov, projects, who, target = hub
    answer = _exact(
        gov, who, projects["one"],
        f"SELECT count(*) AS n FROM observations WHERE person_id = {target}",
    )  # fmt: skip
    out = _output(gov, who, answer)
    assert out["result"]["rows"] == [[None]]
    assert out["manifest"]["cells"][0]["rule"] == "small_count"


def test_a_join_that_repeats_one_persons_rows_for_everyone_is_refused(hub):
    gov, projects, who, target = hub
    before = len(gov.outputs.pending(who["sam"]))
    with pytest.raises(PolicyViolation, match="exact_join") as refused:
        _exact(
            gov, who, projects["one"],
            "SELECT p.sex, count(*) AS n, sum(o.value) AS s FROM patients p JOIN observations o "
            f"ON TRUE WHERE o.person_id = {target} GROUP BY p.sex",
        )  # fmt: skip
    assert "person_id" in str(refused.value)  # the message says how to join
    assert len(gov.outputs.pending(who["sam"])) == before


def _year_with_two_halves(gov, *, first: bool) -> tuple[int, int]:
    """A birth year with at least 12 people on each side of IMD decile 5 (the first or
    the last such year), and a person born then (the lowest or the highest id)."""
    pick, order = ("min", "") if first else ("max", " DESC")
    cur = gov.queries.engine(gov.queries.release_for("real")).cursor()
    year, target = cur.execute(
        f"SELECT year_of_birth, {pick}(person_id) FROM patients GROUP BY 1 HAVING "
        "count(*) FILTER (WHERE imd_decile > 5) >= 12 AND "
        f"count(*) FILTER (WHERE coalesce(imd_decile, 0) <= 5) >= 12 ORDER BY 1{order} LIMIT 1"
    ).fetchall()[0]
    cur.close()
    return year, target


def test_a_tracker_built_from_three_outputs_is_flagged(hub):
    gov, projects, who, _ = hub
    pid = projects["strict"]
    year, target = _year_with_two_halves(gov, first=True)
    # A: everyone born in the target's year; B and C: its two halves by deprivation, each
    # less the target. No two outputs differ by few people, but A − B − C is one person
    a = _exact(gov, who, pid, f"SELECT count(*) AS n FROM patients WHERE year_of_birth = {year}")
    b = _exact(
        gov, who, pid,
        f"SELECT count(*) AS n FROM patients WHERE year_of_birth = {year} "
        f"AND coalesce(imd_decile, 0) <= 5 "
        f"AND person_id <> {target}",
    )  # fmt: skip
    c = _exact(
        gov, who, pid,
        f"SELECT count(*) AS n FROM patients WHERE year_of_birth = {year} "
        f"AND coalesce(imd_decile, 0) > 5 "
        f"AND person_id <> {target}",
    )  # fmt: skip
    flags = _output(gov, who, c)["manifest"]["differencing"]
    trackers = [f for f in flags if f["rule"] == "tracker"]
    assert trackers and set(trackers[0]["with_outputs"]) == {a["output_id"], b["output_id"]}
    assert trackers[0]["people_in_difference"] == 1
    # each pair alone differs by far more than the threshold: the pair check saw nothing
    assert not [f for f in flags if f["rule"] == "differencing"]


def test_a_tracker_split_across_worker_processes_is_flagged_by_either(hub):
    """Two workers (two ledgers on one home, as ``hub serve --workers 2`` runs): each
    reads the outputs the other stored since it last looked, once, and flags the tracker
    whichever of them receives its last part."""
    gov, projects, who, _ = hub
    pid = projects["strict"]
    other = Governance.open(gov.home, query_timeout_s=20)  # a second worker's process
    year, target = _year_with_two_halves(gov, first=False)
    base = f"SELECT count(*) AS n FROM patients WHERE year_of_birth = {year}"
    a = _exact(gov, who, pid, base)
    b = _exact(
        other, who, pid, f"{base} AND coalesce(imd_decile, 0) <= 5 AND person_id <> {target}"
    )
    c = _exact(gov, who, pid, f"{base} AND coalesce(imd_decile, 0) > 5 AND person_id <> {target}")
    trackers = [
        f for f in _output(gov, who, c)["manifest"]["differencing"] if f["rule"] == "tracker"
    ]
    assert {a["output_id"], b["output_id"]} in [set(f["with_outputs"]) for f in trackers]
    # and the second worker has read what the first stored since: C and the target
    d = _exact(other, who, pid, f"{base} AND (coalesce(imd_decile, 0) > 5 OR person_id = {target})")
    pairs = [f for f in _output(gov, who, d)["manifest"]["differencing"]]
    assert [f["people_in_difference"] for f in pairs if f["with_outputs"] == [c["output_id"]]] == [
        1
    ]


def test_the_projects_own_threshold_applies_to_differencing(hub):
    gov, projects, who, _ = hub
    pid = projects["strict"]  # threshold 10
    first = _exact(gov, who, pid, "SELECT count(*) AS n FROM patients WHERE year_of_birth < 1960")
    cur = gov.queries.engine(gov.queries.release_for("real")).cursor()
    nine = [
        r[0]
        for r in cur.execute(
            "SELECT person_id FROM patients WHERE year_of_birth < 1960 ORDER BY person_id LIMIT 9"
        ).fetchall()
    ]
    cur.close()
    answer = _exact(
        gov, who, pid,
        "SELECT count(*) AS n FROM patients WHERE year_of_birth < 1960 AND person_id NOT IN "
        f"({', '.join(map(str, nine))})",
    )  # fmt: skip
    flags = _output(gov, who, answer)["manifest"]["differencing"]
    pair = [f for f in flags if f["with_outputs"] == [first["output_id"]]]
    assert [f["people_in_difference"] for f in pair] == [9]  # 9 > 7, but not > 10


def test_a_failure_after_reading_data_goes_to_the_steward_not_the_researcher(hub):
    gov, projects, who, target = hub
    answer = _exact(
        gov, who, projects["one"],
        "SELECT count(*) AS n FROM patients WHERE CAST(CASE WHEN person_id = "
        f"{target} THEN 'x' ELSE '1' END AS INTEGER) = 1",
    )  # fmt: skip
    assert answer["status"] == "pending_review"  # the same as any other exact query
    out = _output(gov, who, answer)
    assert out["manifest"]["failed"] is True and out["result"]["rows"] == []
    with pytest.raises(Conflict, match="failed"):
        gov.outputs.review(who["sam"], answer["output_id"], decision="approve")
    gov.outputs.review(
        who["sam"], answer["output_id"], decision="return", reason="the cast fails; fix it"
    )
    query = gov.queries.get(who["ana"], projects["one"], answer["query_id"])
    assert query["status"] == "returned" and query["output"]["reasons"] == [
        "the cast fails; fix it"
    ]


def test_before_a_decision_a_researcher_sees_the_same_whatever_the_data_held(hub):
    """A red-team read a patient's deprivation decile in three free exact queries: the
    researcher's view showed at once whether a query had failed, and how many of its
    cells were small, suppressed or rounded (all written after the data is read)."""
    gov, projects, who, target = hub
    views = []
    for sql in (
        # fails only for one person's row; a population with a small cell; an empty one
        "SELECT count(*) AS n FROM patients WHERE CAST(CASE WHEN person_id = "
        f"{target} THEN 'x' ELSE '1' END AS INTEGER) = 1",
        f"SELECT sex, count(*) AS n FROM patients WHERE person_id = {target} GROUP BY sex",
        "SELECT sex, count(*) AS n FROM patients WHERE year_of_birth < 1000 GROUP BY sex",
        "SELECT sex, count(*) AS n FROM patients GROUP BY sex",
    ):
        answer = _exact(gov, who, projects["one"], sql)
        seen = gov.outputs.output(who["ana"], answer["output_id"])
        query = gov.queries.get(who["ana"], projects["one"], answer["query_id"])
        assert query["output"] == seen
        views.append(
            {k: v for k, v in seen.items() if k not in ("output_id", "query_id", "created_at")}
        )
    assert all(v == views[0] for v in views), [
        {k: x for k, x in v.items() if x != views[0].get(k)} for v in views
    ]
    assert views[0]["disclosure"] == {"rules": {"redaction_threshold": 7, "rounding_multiple": 5}}


def test_researchers_learn_each_decision_with_its_reason(hub):
    gov, projects, who, _ = hub
    pid = projects["one"]
    sql = "SELECT sex, count(*) AS n FROM patients GROUP BY sex"
    approved, rejected, returned = (_exact(gov, who, pid, sql) for _ in range(3))
    gov.outputs.review(who["sam"], approved["output_id"], decision="approve")
    gov.outputs.review(who["sam"], rejected["output_id"], decision="reject", reason="not needed")
    with pytest.raises(InvalidRequest, match="reason"):
        gov.outputs.review(who["sam"], returned["output_id"], decision="return")
    gov.outputs.review(
        who["sam"], returned["output_id"], decision="return", reason="band the ages first"
    )
    mine = {o["output_id"]: o for o in gov.outputs.find(who["ana"], project_id=pid)}
    assert mine[approved["output_id"]]["status"] == "approved"
    assert mine[approved["output_id"]]["download_url"].endswith("/download")
    assert mine[rejected["output_id"]]["reasons"] == ["not needed"]
    assert mine[rejected["output_id"]]["download_url"] is None
    assert mine[returned["output_id"]]["status"] == "returned"
    assert "result" not in mine[returned["output_id"]]  # no table before approval
    statuses = {q["query_id"]: q["status"] for q in gov.queries.find(who["ana"], pid)}
    assert statuses[approved["query_id"]] == "approved"
    assert statuses[rejected["query_id"]] == "rejected"
    with pytest.raises(AccessDenied):
        gov.outputs.review(who["ana"], returned["output_id"], decision="approve")


def test_two_independent_reviewers_when_the_project_asks_for_them(hub):
    gov, projects, who, _ = hub
    answer = _exact(gov, who, projects["two"], "SELECT count(*) AS n FROM patients")
    first = gov.outputs.review(who["sam"], answer["output_id"], decision="approve")
    assert first["status"] == "pending" and len(first["reviews"]) == 1
    with pytest.raises(Conflict, match="another steward"):
        gov.outputs.review(who["sam"], answer["output_id"], decision="approve")
    with pytest.raises(Conflict, match="only approved"):
        gov.outputs.download(who["ana"], answer["output_id"])
    second = gov.outputs.review(who["tess"], answer["output_id"], decision="approve")
    assert second["status"] == "approved"
    assert gov.outputs.download(who["ana"], answer["output_id"])["rows"][0][0] % 5 == 0


def test_a_join_on_person_id_is_answered_like_any_table(hub):
    gov, projects, who, _ = hub
    answer = _exact(
        gov, who, projects["one"],
        "SELECT p.imd_decile, count(DISTINCT p.person_id) AS people FROM patients p "
        "JOIN conditions c USING (person_id) WHERE c.code = '44054006' GROUP BY ALL",
    )  # fmt: skip
    out = _output(gov, who, answer)
    assert not out["manifest"].get("failed") and out["manifest"]["population"] > 0
    published = [row[1] for row in out["result"]["rows"] if row[1] is not None]
    assert published and all(n > 7 and n % 5 == 0 for n in published)


def test_stewards_deciding_at_once_get_one_decision_and_clear_refusals(hub):
    import concurrent.futures

    gov, projects, who, _ = hub
    answer = _exact(gov, who, projects["one"], "SELECT count(*) AS n FROM patients")

    def decide(i: int) -> str:
        steward = who["sam"] if i % 2 else who["tess"]
        decision = "approve" if i % 3 else "return"
        try:
            gov.outputs.review(
                steward, answer["output_id"], decision=decision, reason="checked by two"
            )
        except Conflict:
            return "conflict"
        return "decided"

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(decide, range(16)))
    assert results.count("decided") == 1 and results.count("conflict") == 15
    assert len(gov.outputs.output(who["sam"], answer["output_id"])["reviews"]) == 1


def test_half_written_population_files_are_swept_only_when_old(hub, tmp_path):
    import os
    import time

    from governance.outputs.disclosure_ledger import sweep_partials
    from governance.queries import QueryService

    gov, *_ = hub
    folder = gov.outputs.outputs_dir / "p-sweep"
    folder.mkdir()
    old, running = folder / ".o-old.population.parquet.partial", folder / ".o-new.parquet.partial"
    old.write_bytes(b"x")
    running.write_bytes(b"x")
    os.utime(old, (time.time() - 120, time.time() - 120))
    QueryService(gov)  # building a service (as `hub train` does) touches nothing
    assert old.exists() and running.exists()
    assert sweep_partials(gov.outputs.outputs_dir, older_than_s=30) == 1
    assert not old.exists() and running.exists()  # another process may be writing it


def test_outputs_over_the_same_people_that_differ_in_one_persons_rows_are_flagged(hub):
    """A filter that adds one person's other records (``... OR <one person>``) leaves the
    people behind the output unchanged, so a ledger of people saw nothing; the ledger
    keys each person with how many rows they give, so the pair is flagged."""
    gov, projects, who, target = hub
    pid = projects["one"]
    cur = gov.queries.engine(gov.queries.release_for("real")).cursor()
    code = cur.execute(
        f"SELECT code FROM observations WHERE person_id = {target} GROUP BY code "
        "ORDER BY count(*) LIMIT 1"
    ).fetchall()[0][0]
    cur.close()
    base = (
        "SELECT count(*) AS n FROM patients p JOIN observations o ON o.person_id = "
        f"p.person_id WHERE o.code = '{code}'"
    )
    first = _exact(gov, who, pid, base)
    second = _exact(gov, who, pid, f"{base} OR p.person_id = {target}")
    flags = _output(gov, who, second)["manifest"]["differencing"]
    pair = [f for f in flags if f["with_outputs"] == [first["output_id"]]]
    assert pair and pair[0]["rule"] == "differencing" and pair[0]["people_in_difference"] == 1


def test_an_output_with_more_rows_than_the_engine_returns_fails_for_the_steward(hub):
    """Rows cut at the engine's limit before disclosure control would decide which
    small groups show: such an output fails instead."""
    gov, projects, who, _ = hub
    answer = _exact(
        gov, who, projects["one"],
        "SELECT p.year_of_birth, p.sex, p.imd_decile, o.code, o.value, count(*) AS n "
        "FROM patients p JOIN observations o USING (person_id) GROUP BY ALL",
    )  # fmt: skip
    out = _output(gov, who, answer)
    assert answer["status"] == "pending_review" and out["manifest"]["failed"] is True


def _unique_person(gov):
    """A person alone in their (year of birth, sex, decile), and the release's keys."""
    cur = gov.queries.engine(gov.queries.release_for("real")).cursor()
    rows = cur.execute(
        "SELECT any_value(person_id), year_of_birth, sex, imd_decile FROM patients "
        "WHERE imd_decile IS NOT NULL GROUP BY ALL HAVING count(*) = 1 ORDER BY 2"
    ).fetchall()
    cur.close()
    return rows


def test_a_mean_whose_other_people_share_one_value_is_redacted(hub):
    """A red team filled a cell with people whose value a key fixed (born in one year)
    plus one chosen person: the mean was that year in every cell but theirs."""
    gov, projects, who, _ = hub
    _person, year, sex, decile = _unique_person(gov)[-1]
    decoys = year - 30
    answer = _exact(
        gov, who, projects["one"],
        f"SELECT year_of_birth = {decoys} OR (year_of_birth = {year} AND sex = '{sex}' AND "
        f"imd_decile = {decile}) AS k, count(*) AS n, avg(year_of_birth) AS mean_yob "
        "FROM patients GROUP BY 1",
    )  # fmt: skip
    out = _output(gov, who, answer)
    rows = {r[0]: r for r in out["result"]["rows"]}
    assert rows[True][2] is None  # the decoys' year and one person's: redacted
    assert rows[False][2] is not None  # everyone else's mean is released
    rules = {c["rule"] for c in out["manifest"]["cells"]}
    assert "known_others" in rules


def test_a_difference_hidden_by_people_whose_values_are_null_is_flagged(hub):
    """Padding a sum with rows whose value is NULL: B's people were the target plus
    many others, so no pair differed by few people, yet the sums differed by the
    target's values alone (a red-team find: an HbA1c total to within 5). Each
    aggregate's people are now those it counts: the sums' people differ by one."""
    gov, projects, who, _ = hub
    pid = projects["one"]
    cur = gov.queries.engine(gov.queries.release_for("real")).cursor()
    numeric = cur.execute(
        "SELECT code FROM observations GROUP BY code HAVING count(value) = count(*) "
        "ORDER BY count(DISTINCT person_id) DESC LIMIT 1"
    ).fetchall()[0][0]
    empty = cur.execute(
        "SELECT code FROM observations GROUP BY code HAVING count(value) = 0 "
        "ORDER BY count(DISTINCT person_id) DESC LIMIT 1"
    ).fetchall()[0][0]
    target = cur.execute(
        "SELECT min(o.person_id) FROM observations o JOIN patients p USING (person_id) "
        f"WHERE o.code = '{numeric}' AND p.imd_decile = 6"
    ).fetchall()[0][0]
    cur.close()
    sixth = "o.person_id IN (SELECT person_id FROM patients WHERE imd_decile = 6)"
    a = _exact(
        gov, who, pid,
        f"SELECT count(*) AS n, sum(o.value) AS s FROM observations o "
        f"WHERE o.code = '{numeric}' AND {sixth} AND o.person_id <> {target}",
    )  # fmt: skip
    b = _exact(
        gov, who, pid,
        f"SELECT count(*) AS n, sum(o.value) AS s FROM observations o "
        f"WHERE (o.code = '{numeric}' AND {sixth}) OR (o.code = '{empty}' AND o.person_id IN "
        "(SELECT person_id FROM patients WHERE imd_decile >= 9))",
    )  # fmt: skip
    flags = _output(gov, who, b)["manifest"]["differencing"]
    assert [f["people_in_difference"] for f in flags if f["with_outputs"] == [a["output_id"]]] == [
        1
    ]


def test_a_left_out_row_takes_its_people_out_of_the_outputs_population(hub):
    """A total, then the same people grouped by a key true for one person only: that
    row is left out, but its person stayed in the population, so the two outputs looked
    like the same people and the total minus the shown row was the person's value (a
    red-team find). Left-out rows' people are no longer in what the ledger compares."""
    gov, projects, who, _ = hub
    pid = projects["one"]
    cur = gov.queries.engine(gov.queries.release_for("real")).cursor()
    sex, year = cur.execute(
        "SELECT sex, year_of_birth FROM patients WHERE imd_decile = 3 GROUP BY ALL "
        "HAVING count(*) = 1 ORDER BY ALL LIMIT 1"
    ).fetchall()[0]
    cur.close()
    total = _exact(
        gov, who, pid,
        "SELECT count(*) AS n, sum(year_of_birth) AS s FROM patients WHERE imd_decile = 3",
    )  # fmt: skip
    grouped = _exact(
        gov, who, pid,
        f"SELECT (sex = '{sex}' AND year_of_birth = {year}) AS k, count(*) AS n, "
        "sum(year_of_birth) AS s FROM patients WHERE imd_decile = 3 GROUP BY ALL",
    )  # fmt: skip
    flags = _output(gov, who, grouped)["manifest"]["differencing"]
    assert [
        f["people_in_difference"] for f in flags if f["with_outputs"] == [total["output_id"]]
    ] == [1]
