"""A life-science company through a live `hub serve`: its commercial project, a feasibility
spec answered the day the project is approved, two stewards per exact output, and
another company that sees none of it."""

from __future__ import annotations

import datetime as dt

import httpx

from governance.facade import Governance
from governance.feasibility import EPSILON, FEASIBILITY_GRANTS
from tests.e2e.steward_fixtures import csrf_of

BENEFIT = "Faster recruitment to type 2 diabetes trials for people in the region."
SPEC_TOML = """
title = "T2D, 40-80, no CKD"
as_of = 2024-12-31
[population]
age = [40, 80]
[[include]]
kind = "condition"
codelist = "type2-diabetes-snomed"
[[exclude]]
kind = "condition"
codelist = "ckd-snomed"
"""


def _company_keys(live_hub):
    gov = Governance.open(live_hub.home)
    keys = {}
    for user_id, org in (("cara", "Acme Bio"), ("dev", "Acme Bio"), ("eve", "Beta Pharma")):
        _, keys[user_id] = gov.people.add(
            user_id=user_id, name=user_id, role="researcher", organisation=org,
            organisation_type="life_science_company",
            accreditation_expires=dt.date.today() + dt.timedelta(days=30), actor="cli:test",
        )  # fmt: skip
    live_hub.keys.update(keys)


def test_a_company_runs_feasibility_the_day_its_project_is_approved(live_hub):
    _company_keys(live_hub)
    cara, sam, tess, eve = (live_hub.client(u) for u in ("cara", "sam", "tess", "eve"))
    request = {
        "title": "Diabetes trial feasibility", "purpose": "Site selection for a phase III trial",
        "lay_summary": "How many people could join a diabetes trial, and where",
        "grants": FEASIBILITY_GRANTS, "days": 90,
    }  # fmt: skip
    # a commercial project states its public benefit and a dated agreement, or is refused
    refused = cara.post("/projects", json=request)
    assert refused.status_code == 422
    assert "public_benefit, daa_reference, daa_expires" in refused.json()["detail"]
    expires = (dt.date.today() + dt.timedelta(days=180)).isoformat()
    terms = {"public_benefit": BENEFIT, "daa_reference": "DAA-2025/042", "daa_expires": expires}
    made = cara.post("/projects", json={**request, **terms, "members": ["dev"]})
    assert made.status_code == 201, made.text
    pid = made.json()["project_id"]
    assert made.json()["commercial"] is True
    # members from another company are refused
    mixed = cara.post("/projects", json={**request, **terms, "members": ["eve"]})
    assert mixed.status_code == 422 and "must belong to Acme Bio" in mixed.json()["detail"]
    approved = sam.post(f"/projects/{pid}/approve", json={"epsilon": 3.0, "delta": 0.0})
    assert approved.status_code == 200 and approved.json()["output_reviewers"] == 2

    # a spec off the fixed shape: a clear 422 naming the key, nothing spent
    bad = cara.post(f"/projects/{pid}/feasibility", json={"spec": {"include": [], "age": 3}})
    assert bad.status_code == 422 and "unknown key 'age' in the spec" in bad.json()["detail"]
    assert cara.get(f"/projects/{pid}").json()["budget"]["epsilon_spent"] == 0

    answer = cara.post(f"/projects/{pid}/feasibility", json={"spec_toml": SPEC_TOML})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["status"] == "done" and body["epsilon_spent"] == EPSILON
    assert [s["code"] for s in body["sites"]] == ["RRK", "RXK", "RKB", "RNA", "RBK", "RL4"]
    assert {a["code"] for a in body["areas"]} >= {"Birmingham", "Coventry"}
    birmingham = next(a for a in body["areas"] if a["code"] == "Birmingham")
    lo, hi = birmingham["eligible_ci95"]
    assert 0 <= lo <= birmingham["eligible"] <= hi and birmingham["eligible"] > 0
    assert cara.get(f"/projects/{pid}").json()["budget"]["epsilon_remaining"] == 3.0 - EPSILON
    # the spec is stored with the answer, for audit, and the steward sees the run
    stored = cara.get(f"/projects/{pid}/feasibility/{body['run_id']}").json()
    assert stored["spec"]["title"] == "T2D, 40-80, no CKD" and stored["sites"] == body["sites"]
    assert [r["run_id"] for r in sam.get(f"/projects/{pid}/feasibility").json()["runs"]] == [
        body["run_id"]
    ]
    audit = sam.get("/audit", params={"project": pid, "action": "feasibility.run"}).json()
    assert any(e.get("target") == body["run_id"] for e in audit["entries"])
    # ... and on the dashboard: the spec beside the project's purpose and the answer
    with httpx.Client(base_url=live_hub.url, timeout=60) as browser:
        form = browser.get("/steward/sign-in")
        signed = browser.post(
            "/steward/sign-in",
            data={"key": live_hub.keys["sam"], "csrf_token": csrf_of(form.text)},
        )
        assert signed.status_code == 303
        page = browser.get("/steward/feasibility").text
    card = page[page.index(f'id="run-{body["run_id"]}"') :]
    assert "T2D, 40-80, no CKD" in card and "Site selection for a phase III trial" in card
    assert "commercial</span>" in card and "ckd-snomed" in card
    birmingham_row = card[card.index('<th scope="row">Birmingham</th>') :].split("</tr>")[0]
    assert f"<td>{birmingham['eligible']:,}</td>" in birmingham_row

    # the other company never sees the project, its runs or its answers
    assert eve.get(f"/projects/{pid}").status_code == 404
    assert eve.get(f"/projects/{pid}/feasibility/{body['run_id']}").status_code == 404
    assert (
        eve.post(f"/projects/{pid}/feasibility", json={"spec_toml": SPEC_TOML}).status_code == 404
    )
    assert pid not in {p["project_id"] for p in eve.get("/projects").json()["projects"]}

    # exact outputs need two distinct stewards
    sql = "SELECT sex, count(*) AS n FROM patients GROUP BY sex"
    exact = cara.post(
        f"/projects/{pid}/queries", json={"sql": sql, "target": "real", "mode": "exact"}
    ).json()
    output_id = exact["output_id"]
    first = sam.post(f"/outputs/{output_id}/approve", json={"reason": "fine"})
    assert first.status_code == 200, first.text
    status = cara.get(f"/projects/{pid}/queries/{exact['query_id']}").json()["status"]
    assert status == "pending_review"
    assert tess.post(f"/outputs/{output_id}/approve", json={"reason": "fine"}).status_code == 200
    assert cara.get(f"/projects/{pid}/queries/{exact['query_id']}").json()["status"] == "approved"

    # the public register shows the terms and the flag; the policy is public too
    public = live_hub.client()
    shown = next(
        p for p in public.get("/public/projects").json()["projects"] if p["project_id"] == pid
    )
    assert shown["commercial"] is True and shown["public_benefit"] == BENEFIT
    assert (
        shown["data_access_agreement"] == "DAA-2025/042" and shown["agreement_expires"] == expires
    )
    assert shown["feasibility_runs"] == 1
    policy = public.get("/public/policy").json()["organisation_types"]
    assert "train" not in policy["life_science_company"]["access"]
    page = public.get(live_hub.url + "/register").text
    assert "DAA-2025/042" in page and "commercial" in page
