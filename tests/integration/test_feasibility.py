"""Feasibility specs through the DP query path: neighbour property, charge, audit, policy.

The neighbour test follows tests/integration/test_dp_neighbours.py: for every spec
Hypothesis draws, the plans the service compiled are run (before noise) on the release
D and on D minus one person (the person with the most rows, and a person with diabetes
and a statin, whom the drawn specs tend to single out), with the same salt; each noised
vector moves by at most the sensitivity the answer declares.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from governance.errors import AccessDenied, BudgetExhausted, InvalidRequest
from governance.facade import Governance
from governance.feasibility import EPSILON, FEASIBILITY_GRANTS, parse_spec
from governance.feasibility.compile import compile_spec
from governance.privacy import dp_query, dp_sql
from governance.privacy import mechanism as dp
from governance.sql import policy as sql_policy
from synthetic_data.generator import SynthConfig, generate
from tests.homes import add_people, heaviest_person, publish

AS_OF = "2024-12-31"
STATIN = "0212000B0"
T2D = "type2-diabetes-snomed"
BENEFIT = "Faster recruitment to diabetes trials for the region's patients, sooner."


def _company_user(gov, user_id, organisation, role="researcher"):
    _, key = gov.people.add(
        user_id=user_id, name=user_id, role=role, organisation=organisation,
        organisation_type="life_science_company",
        accreditation_expires=dt.date.today() + dt.timedelta(days=30), actor="cli:test",
    )  # fmt: skip
    return gov.people.authenticate(key)


def _company_project(gov, who, steward, *, epsilon=100.0, expires_in=90):
    project = gov.projects.request(
        requester=who.user, title="feasibility", purpose="trial feasibility",
        lay_summary="how many people could join a diabetes trial", grants=FEASIBILITY_GRANTS,
        days=60, public_benefit=BENEFIT, daa_reference="DAA-2025/007",
        daa_expires=dt.date.today() + dt.timedelta(days=expires_in),
    )  # fmt: skip
    gov.projects.approve(project.project_id, steward=steward.user, epsilon=epsilon, delta=0)
    return project.project_id


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("feasibility")
    src = generate(SynthConfig(patients=400, seed=31), root / "src").out
    home = root / "hub"
    result = publish(src, home)
    gov = Governance.open(home, create_keys=True)
    people = add_people(gov, sam="steward")
    cara = _company_user(gov, "cara", "Acme Bio")
    pid = _company_project(gov, cara, people["sam"])
    con = gov.queries.engine(gov.queries.release_for("real")).cursor()
    tables, most = heaviest_person(con)
    target = con.execute(
        "SELECT person_id FROM medications WHERE code = $c AND person_id IN (SELECT "
        "person_id FROM encounters WHERE encounter_type <> 'gp') ORDER BY person_id LIMIT 1",
        {"c": STATIN},
    ).fetchall()[0][0]
    con.close()
    neighbours = {}
    for name, person in (("most_rows", most), ("statin", target)):
        copy = root / f"without_{name}.duckdb"
        shutil.copy(result.release.path, copy)
        c = duckdb.connect(str(copy))
        for t in tables:
            c.execute(f"DELETE FROM {t} WHERE person_id = $p", {"p": person})
        c.close()
        neighbours[name] = duckdb.connect(str(copy), read_only=True)
    full = gov.queries.engine(gov.queries.release_for("real")).cursor()
    yield {"gov": gov, "pid": pid, "cara": cara, "sam": people["sam"], "full": full,
           "neighbours": neighbours}  # fmt: skip
    full.close()
    for c in neighbours.values():
        c.close()


def _plans(world, spec):
    """The plans the service compiles for ``spec`` (same parser, catalogue and compiler)."""
    compiled = compile_spec(spec)
    engine = world["gov"].queries.engine(world["gov"].queries.release_for("real"))
    cur = engine.cursor()
    try:
        return [
            dp_query.compile_plan(
                sql_policy.parse(cur, sql), engine.catalogue(cur), rows_per_person=k
            )
            for sql, k in (
                (compiled.areas_sql, None),
                (compiled.sites_sql, compiled.sites_rows_per_person),
            )
        ]
    finally:
        cur.close()


@st.composite
def specs(draw):
    """Specs from the fixed shape: any mix of population, conditions, medicines, labs."""

    def criterion():
        kind = draw(st.sampled_from(["condition", "medication", "lab"]))
        c: dict = {"kind": kind}
        if kind == "condition":
            if draw(st.booleans()):
                c["codelist"] = draw(st.sampled_from([T2D, "hypertension-snomed", "ckd-snomed"]))
            else:
                c["codes"] = draw(st.sampled_from([["44054006"], ["38341003", "59621000"]]))
        elif kind == "medication":
            c["codes"] = draw(st.sampled_from([[STATIN], ["0601022B0", "0206020A0"]]))
        else:
            c["codes"] = draw(st.sampled_from([["999791000000106"], ["271649006"]]))
            c["min"] = draw(st.sampled_from([0, 40, 120]))
            c["max"] = c["min"] + draw(st.sampled_from([20, 100]))
        window = draw(st.sampled_from([None, "days", "dates"]))
        if window == "days":
            c["within_days"] = draw(st.sampled_from([90, 365, 3650]))
        elif window == "dates":
            c["from"], c["to"] = "2020-01-01", AS_OF
        return c

    spec: dict = {"as_of": AS_OF, "seen_within_days": draw(st.sampled_from([30, 365]))}
    population = {}
    if draw(st.booleans()):
        population["sex"] = draw(st.sampled_from([["F"], ["M"], ["F", "M"]]))
    if draw(st.booleans()):
        lo = draw(st.integers(0, 90))
        population["age"] = [lo, lo + draw(st.integers(0, 40))]
    spec["population"] = population
    spec["include"] = [criterion() for _ in range(draw(st.integers(0 if population else 1, 3)))]
    spec["exclude"] = [criterion() for _ in range(draw(st.integers(0, 2)))]
    return spec


@settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(specs())
def test_every_spec_moves_each_count_by_at_most_its_sensitivity_without_one_person(world, data):
    spec = parse_spec(data)
    answer = world["gov"].feasibility.run(world["cara"], world["pid"], spec)
    assert answer["status"] == "done"
    for plan, part in zip(_plans(world, spec), ("areas", "sites"), strict=True):
        comps = dp_sql.components(plan)
        for c in comps:  # the sensitivity the answer declares is the one the noise used
            assert answer["noise"][part][c.name]["sensitivity"] == c.sensitivity
        on_d = dp.bounded_answers(world["full"], plan, salt="fixedsalt")
        for name, con in world["neighbours"].items():
            on_n = dp.bounded_answers(con, plan, salt="fixedsalt")
            for c in comps:
                change = sum(abs(a - b) for a, b in zip(on_d[c.name], on_n[c.name], strict=True))
                assert change <= c.sensitivity, (name, part, c.name, data, change)
    world.setdefault("nonzero", 0)
    world["nonzero"] += any(r["eligible"] > 0 for r in answer["areas"])


def test_the_sites_sensitivity_is_the_number_of_trusts_and_areas_one(world):
    spec = parse_spec({"as_of": AS_OF, "include": [{"kind": "condition", "codelist": T2D}]})
    areas, sites = _plans(world, spec)
    assert [c.sensitivity for c in dp_sql.components(areas)] == [1, 1]
    assert [c.sensitivity for c in dp_sql.components(sites)] == [6, 6]
    # someone seen at several trusts moves several sites' counts, within that bound
    on_d = dp.bounded_answers(world["full"], sites, salt="s")
    on_n = dp.bounded_answers(world["neighbours"]["most_rows"], sites, salt="s")
    assert sum(abs(a - b) for a, b in zip(on_d["eligible"], on_n["eligible"], strict=True)) <= 6


def test_a_run_is_charged_once_audited_and_stored_with_its_spec(world):
    gov, pid = world["gov"], world["pid"]
    before = gov.ledger.state(pid).epsilon_spent
    data = {"title": "T2D on a statin", "as_of": AS_OF,
            "include": [{"kind": "condition", "codelist": T2D},
                        {"kind": "medication", "codes": [STATIN]}]}  # fmt: skip
    answer = gov.feasibility.run(world["cara"], pid, parse_spec(data))
    assert gov.ledger.state(pid).epsilon_spent == pytest.approx(before + EPSILON)
    assert answer["epsilon_spent"] == pytest.approx(EPSILON)
    assert [r["code"] for r in answer["sites"]] == ["RRK", "RXK", "RKB", "RNA", "RBK", "RL4"]
    assert len(answer["areas"]) == 7
    for row in answer["sites"] + answer["areas"]:
        lo, hi = row["eligible_ci95"]
        assert lo <= row["eligible"] <= hi or row["eligible"] == 0
    stored = gov.feasibility.get(world["cara"], pid, answer["run_id"])
    assert stored == json.loads(json.dumps(answer))
    assert stored["spec"]["include"][0]["codelist"] == T2D and stored["spec"]["as_of"] == AS_OF
    entry = gov.audit.entries(project=pid, action="feasibility.run", limit=1)[0]
    assert entry["target"] == answer["run_id"] and entry["epsilon"] == pytest.approx(EPSILON)
    # the audit entry carries the spec's hash and no count
    # (compared as values: a small noisy count, "1", is also a digit of "spend_id": 31)
    details = entry.get("details") or {}
    details = json.loads(details) if isinstance(details, str) else details
    counts = {row["eligible"] for row in answer["sites"] + answer["areas"]}
    assert not [
        k
        for k, v in details.items()
        if "eligible" in k or (k != "spend_id" and isinstance(v, int) and v in counts)
    ]
    assert entry.get("query_sha256") or entry.get("query_text")


def test_a_spec_the_project_cannot_afford_is_refused_before_anything_is_read(world):
    gov = world["gov"]
    pid = _company_project(gov, world["cara"], world["sam"], epsilon=0.5)
    spec = parse_spec({"as_of": AS_OF, "population": {"sex": "F"}})
    with pytest.raises(BudgetExhausted):
        gov.feasibility.run(world["cara"], pid, spec)
    assert gov.ledger.state(pid).epsilon_spent == 0


def test_a_project_without_the_grants_is_told_which_columns_it_lacks(world):
    gov = world["gov"]
    project = gov.projects.request(
        requester=world["cara"].user, title="narrow", purpose="p", lay_summary="l",
        grants={"patients": ["person_id", "sex"]}, days=30, public_benefit=BENEFIT,
        daa_reference="DAA-9", daa_expires=dt.date.today() + dt.timedelta(days=9),
    )  # fmt: skip
    gov.projects.approve(project.project_id, steward=world["sam"].user, epsilon=5, delta=0)
    with pytest.raises(AccessDenied, match="encounters: person_id, encounter_type"):
        gov.feasibility.run(
            world["cara"], project.project_id, parse_spec({"population": {"sex": "F"}})
        )
    assert gov.ledger.state(project.project_id).epsilon_spent == 0


def test_another_company_cannot_run_or_read_the_project(world):
    gov = world["gov"]
    eve = _company_user(gov, "eve", "Beta Pharma")
    spec = parse_spec({"population": {"sex": "M"}})
    with pytest.raises(Exception) as err:
        gov.feasibility.run(eve, world["pid"], spec)
    assert type(err.value).__name__ == "NotFound"
    assert world["pid"] not in [p.project_id for p in gov.projects.visible_to(eve.user)]
    # nor can cara bring a Beta Pharma user into an Acme project
    with pytest.raises(InvalidRequest, match="must belong to Acme Bio"):
        gov.projects.request(
            requester=world["cara"].user, title="t", purpose="p", lay_summary="l",
            grants={"patients": ["person_id"]}, days=10, members=["eve"],
            public_benefit=BENEFIT, daa_reference="DAA-1",
            daa_expires=dt.date.today() + dt.timedelta(days=9),
        )  # fmt: skip


def test_the_drawn_specs_found_people(world):
    """The property above ran over specs that matched someone (not vacuous)."""
    assert world.get("nonzero", 0) >= 10, world.get("nonzero")
