"""Governed queries end to end below HTTP: dummy rows, DP answers, exact outputs for review."""

from __future__ import annotations

import pytest

from governance.errors import (
    AccessDenied,
    BudgetExhausted,
    Conflict,
    InvalidRequest,
    NotFound,
    PolicyViolation,
    QueryError,
)
from governance.facade import Governance
from synthetic_data.generator import SynthConfig, generate
from tests.homes import add_people, approved_project, publish

GRANTS = {
    "patients": ["person_id", "sex", "year_of_birth", "imd_decile"],
    "conditions": ["person_id", "code", "onset_date"],
    "observations": ["person_id", "code", "value"],
}


@pytest.fixture(scope="module")
def hub(population_3k, tmp_path_factory):
    home = tmp_path_factory.mktemp("queries") / "hub"
    publish(population_3k, home)
    dummy_src = generate(
        SynthConfig(patients=500, seed=99, dummy=True), tmp_path_factory.mktemp("dummy") / "d"
    ).out
    publish(dummy_src, home / "dummy")
    gov = Governance.open(home, create_keys=True, query_timeout_s=10)
    people = add_people(gov, ana="researcher", bob="researcher", sam="steward", tess="steward")
    pid = approved_project(gov, people["ana"], people["sam"], GRANTS, epsilon=3.0)
    return gov, gov.queries, pid, people


def test_dummy_queries_return_rows_from_the_dummy_release(hub):
    _, service, pid, who = hub
    result = service.run(
        who["ana"], pid, sql="SELECT sex, year_of_birth FROM patients LIMIT 5", target="dummy"
    )
    assert result["release"] == "release-0001" and len(result["rows"]) == 5
    stored = service.get(who["ana"], pid, result["query_id"])
    assert stored["status"] == "done" and stored["target"] == "dummy"


def test_dp_answers_spend_budget_report_noise_and_use_the_declared_domain(hub):
    gov, service, pid, who = hub
    before = gov.ledger.state(pid).epsilon_spent
    answer = service.run(
        who["ana"],
        pid,
        sql="SELECT sex, count(*) AS n FROM patients GROUP BY sex",
        target="real",
        mode="dp",
        epsilon=0.5,
    )
    assert [r[0] for r in answer["rows"]] == ["F", "M"]
    assert answer["epsilon_spent"] == pytest.approx(0.5)
    assert gov.ledger.state(pid).epsilon_spent == pytest.approx(before + 0.5)
    assert answer["noise_scale"]["n"] == pytest.approx(2.0)  # patients: 1 row per person, eps 0.5
    assert abs(sum(r[1] for r in answer["rows"]) - 3000) < 60
    mean = service.run(
        who["ana"],
        pid,
        sql="SELECT avg(value) FROM observations WHERE code = '60621009'",
        target="real",
        mode="dp",
        epsilon=0.5,
        rows_per_person=2,  # a few BMI readings each: a small k keeps the noise small
    )
    assert 15 < mean["rows"][0][0] < 45
    with pytest.raises(PolicyViolation, match="declared domain"):
        service.run(
            who["ana"],
            pid,
            sql="SELECT code, count(*) FROM conditions GROUP BY code",
            target="real",
            mode="dp",
            epsilon=0.1,
        )
    for bad in (-1, 0, float("nan"), float("inf"), 1e-320):
        with pytest.raises(InvalidRequest):
            service.run(
                who["ana"],
                pid,
                sql="SELECT count(*) FROM patients",
                target="real",
                mode="dp",
                epsilon=bad,
            )


def test_the_budget_runs_out_long_before_averaging_helps(hub):
    gov, service, pid, who = hub
    remaining = gov.ledger.state(pid).epsilon_remaining
    runs = 0
    with pytest.raises(BudgetExhausted):
        for _ in range(1000):
            service.run(
                who["ana"],
                pid,
                sql="SELECT count(*) FROM patients",
                target="real",
                mode="dp",
                epsilon=0.2,
            )
            runs += 1
    assert runs == int(remaining / 0.2 + 1e-9)
    assert gov.ledger.state(pid).epsilon_spent <= 3.0 + 1e-9


def test_exact_outputs_wait_for_a_steward_and_flag_differencing(hub):
    _, service, pid, who = hub
    first = service.run(
        who["ana"],
        pid,
        sql="SELECT count(*) AS n FROM conditions WHERE code = '44054006'",
        target="real",
        mode="exact",
    )
    assert first["status"] == "pending_review"
    # the same population less one person: the difference would reveal that person
    cur = service.engine(service.release_for("real")).cursor()
    person = cur.execute(
        "SELECT min(person_id) FROM conditions WHERE code = '44054006'"
    ).fetchall()[0][0]
    cur.close()
    second = service.run(
        who["ana"],
        pid,
        sql=f"SELECT count(*) AS n FROM conditions WHERE code = '44054006' AND person_id <> {person}",
        target="real",
        mode="exact",
    )
    pending = {o["output_id"]: o for o in service.pending(who["sam"])}
    flags = pending[second["output_id"]]["manifest"]["differencing"]
    assert (
        flags
        and flags[0]["with_output"] == first["output_id"]
        and flags[0]["people_in_difference"] == 1
    )
    with pytest.raises(AccessDenied, match="stewards"):
        service.review(who["ana"], first["output_id"], approve=True)
    with pytest.raises(Conflict, match="only approved"):
        service.download(who["ana"], first["output_id"])
    reviewed = service.review(who["sam"], first["output_id"], approve=True)
    assert reviewed["status"] == "approved"
    body = service.download(who["ana"], first["output_id"])
    assert body["rows"][0][0] % 5 == 0
    rejected = service.review(
        who["tess"], second["output_id"], approve=False, reason="differencing with the first output"
    )
    assert rejected["status"] == "rejected"


def test_small_cells_are_redacted_and_suppressed_in_exact_outputs(hub):
    _, service, pid, who = hub
    out = service.run(
        who["ana"],
        pid,
        sql="SELECT imd_decile, sex, count(*) AS n FROM patients WHERE year_of_birth > 2014 GROUP BY ALL",
        target="real",
        mode="exact",
    )
    item = {o["output_id"]: o for o in service.pending(who["sam"])}[out["output_id"]]
    published = [row[2] for row in item["result"]["rows"] if row[2] is not None]
    assert all(n > 7 and n % 5 == 0 for n in published)
    assert item["manifest"]["rules"] == {"redaction_threshold": 7, "rounding_multiple": 5}


def test_refusals_are_audited_and_strangers_see_nothing(hub):
    gov, service, pid, who = hub
    with pytest.raises(PolicyViolation):
        service.run(
            who["ana"],
            pid,
            sql="SELECT * FROM read_csv('/etc/passwd')",
            target="real",
            mode="exact",
        )
    denied = gov.audit.entries(project=pid, decision="denied", limit=50)
    assert any("no_table_functions" in (e.get("reason") or "") for e in denied)
    with pytest.raises(NotFound):
        service.run(who["bob"], pid, sql="SELECT count(*) FROM patients", target="dummy")
    with pytest.raises(AccessDenied):
        service.run(who["sam"], pid, sql="SELECT count(*) FROM patients", target="dummy")
    assert all("passwd" not in str(e.get("result_sha256")) for e in denied)


def test_queries_use_the_shipped_codelists_in_every_mode(hub):
    gov, service, pid, who = hub
    sql = (
        "SELECT count(DISTINCT person_id) AS people FROM conditions "
        "WHERE code IN codelist('type2-diabetes-snomed')"
    )
    exact_code = "SELECT count(DISTINCT person_id) FROM conditions WHERE code = '44054006'"
    dummy = service.run(who["ana"], pid, sql=sql, target="dummy")
    same = service.run(who["ana"], pid, sql=exact_code, target="dummy")
    assert dummy["rows"] == same["rows"] and dummy["rows"][0][0] > 0
    fresh = gov.projects.request(
        requester=who["ana"].user, title="t", purpose="p", lay_summary="l", grants=GRANTS, days=30
    )
    gov.projects.approve(fresh.project_id, steward=who["sam"].user, epsilon=1.0, delta=1e-6)
    dp = service.run(who["ana"], fresh.project_id, sql=sql, target="real", mode="dp", epsilon=0.5)
    assert dp["status"] == "done" and dp["rows"][0][0] > 0
    # the audit log keeps the query as the researcher wrote it
    entry = gov.audit.entries(action="query.real.dp", limit=1)[0]
    assert "codelist('type2-diabetes-snomed')" in entry["query_text"]


def test_an_unknown_codelist_is_a_mistake_with_the_closest_names(hub):
    _, service, pid, who = hub
    with pytest.raises(QueryError, match="did you mean 'type2-diabetes-snomed'"):
        service.run(
            who["ana"],
            pid,
            sql="SELECT count(*) FROM conditions WHERE code IN codelist('type2-diabetes-snomd')",
            target="dummy",
        )


def test_the_catalogue_lists_the_codelists_with_their_terms(hub):
    _, service, pid, who = hub
    lists = service.catalogue(who["ana"], pid)["codelists"]
    assert {"depression-snomed", "depression-icd10", "prediabetes-snomed"} <= set(lists)
    assert lists["asthma-icd10"] == {
        "system": "ICD-10",
        "codes": [
            {"code": "J45.9", "term": "Asthma, unspecified"},
            {"code": "J46", "term": "Status asthmaticus"},
        ],
    }
