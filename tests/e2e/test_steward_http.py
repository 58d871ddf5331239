"""The steward dashboard over plain HTTP: sessions, cookies, CSRF, roles, audit entries.

Against a live `hub serve` (``steward_hub``), except the session lifetime and restart
tests, which build the app in-process over the same hub home to control its clock.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from http.cookies import SimpleCookie

import httpx
import pytest
from fastapi.testclient import TestClient

from governance.facade import Governance
from hub.app import create_app
from hub.steward.sessions import COOKIE, IDLE_S, MAX_S, SessionStore
from tests.e2e.steward_fixtures import StewardHub, csrf_of, steward_hub  # noqa: F401

PAGES = ["/", "/audit", "/projects", "/outputs", "/models", "/budgets", "/quality", "/audit/1"]


def key_id(key: str) -> str:
    return key.split("_")[1]


def cookie_of(response: httpx.Response) -> SimpleCookie:
    jar: SimpleCookie = SimpleCookie()
    jar.load(response.headers["set-cookie"])
    return jar


def post(client: httpx.Client, path: str, page: str, **data: object) -> httpx.Response:
    """A form post the way the page's own form sends it (with its CSRF token)."""
    token = csrf_of(client.get(page).text)
    return client.post(path, data={"csrf_token": token, **data})


def flashes(client: httpx.Client, page: str) -> str:
    return client.get(page).text


def test_sign_in_sets_a_strict_short_lived_cookie_and_strict_headers(steward_hub):  # noqa: F811
    with steward_hub.browser() as client:
        page = client.get("/steward/sign-in")
        assert page.status_code == 200
        anonymous = cookie_of(page)[COOKIE]
        response = client.post(
            "/steward/sign-in",
            data={"key": steward_hub.keys["sam"], "csrf_token": csrf_of(page.text)},
        )
        assert response.status_code == 303 and response.headers["location"] == "/steward/"
        morsel = cookie_of(response)[COOKIE]
        assert morsel["httponly"] and morsel["samesite"].lower() == "strict"
        assert morsel["path"] == "/steward" and int(morsel["max-age"]) == MAX_S
        assert morsel.value != anonymous.value  # a new session on sign-in (no fixation)
        for path in PAGES:
            answer = client.get("/steward" + path)
            assert answer.status_code == 200, path
            assert answer.headers["content-type"].startswith("text/html")
            csp = answer.headers["content-security-policy"]
            assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
            assert answer.headers["x-frame-options"] == "DENY"
            assert answer.headers["cache-control"] == "no-store"
            assert not re.search(r'(src|href)="(https?:)?//', answer.text)  # no CDN
        # the dashboard is not the API: it stays out of the OpenAPI schema
        schema = httpx.get(steward_hub.url + "/openapi.json").json()
        assert not [p for p in schema["paths"] if p.startswith("/steward")]


def test_pages_and_forms_need_a_session(steward_hub):  # noqa: F811
    with steward_hub.browser() as client:
        for path in [*PAGES, "/audit/export.csv", "/quality/real/release-0001/docs/index.html"]:
            answer = client.get("/steward" + path)
            assert answer.status_code == 303, path
            assert answer.headers["location"] == "/steward/sign-in"
        pid = steward_hub.projects["doomed"]
        refused = client.post(f"/steward/projects/{pid}/reject", data={"reason": "no reason"})
        assert refused.status_code == 303
        assert client.get("/steward/static/steward.css").status_code == 200


@pytest.mark.parametrize("who", ["ana", "mo", "root"])
def test_other_roles_are_refused_and_the_refusal_is_audited(steward_hub, who):  # noqa: F811
    with steward_hub.browser() as client:
        page = client.get("/steward/sign-in")
        response = client.post(
            "/steward/sign-in",
            data={"key": steward_hub.keys[who], "csrf_token": csrf_of(page.text)},
        )
        assert response.status_code == 403
        assert "for data stewards" in response.text
        assert client.get("/steward/audit").status_code == 303  # still not signed in
    entry = steward_hub.audit(actor=who, action="steward.sign_in")[0]
    assert entry["decision"] == "denied" and entry["key_id"] == key_id(steward_hub.keys[who])
    assert steward_hub.keys[who] not in str(entry)  # the key itself is never recorded


def test_unknown_keys_and_forged_sign_in_forms_are_refused(steward_hub):  # noqa: F811
    with steward_hub.browser() as client:
        page = client.get("/steward/sign-in")
        token = csrf_of(page.text)
        bad = client.post("/steward/sign-in", data={"key": "hub_nope", "csrf_token": token})
        assert bad.status_code == 401 and "That key is not valid." in bad.text
        for data in (
            {"key": steward_hub.keys["sam"]},
            {"key": steward_hub.keys["sam"], "csrf_token": "x" * 43},
        ):
            forged = client.post("/steward/sign-in", data=data)
            assert forged.status_code == 403 and "sign-in form has expired" in forged.text
    with steward_hub.browser() as stranger:  # a token from someone else's sign-in page
        forged = stranger.post(
            "/steward/sign-in", data={"key": steward_hub.keys["sam"], "csrf_token": token}
        )
        assert forged.status_code == 403


def test_posts_without_this_sessions_csrf_token_are_refused(steward_hub):  # noqa: F811
    pid = steward_hub.projects["doomed"]
    with steward_hub.sign_in("tess") as other:
        foreign = csrf_of(other.get("/steward/projects").text)
    with steward_hub.sign_in("sam") as sam:
        for data in ({}, {"csrf_token": ""}, {"csrf_token": "forged"}, {"csrf_token": foreign}):
            refused = sam.post(
                f"/steward/projects/{pid}/reject", data={**data, "reason": "not like this"}
            )
            assert refused.status_code == 403, data
            assert "security token" in refused.text
        assert sam.post("/steward/audit/verify").status_code == 403
        assert sam.post("/steward/sign-out").status_code == 403
        assert sam.get("/steward/projects").status_code == 200  # still signed in
    with steward_hub.api("tess") as tess:
        assert tess.get(f"/projects/{pid}").json()["status"] == "requested"
    refusals = steward_hub.audit(actor="sam", action="steward.form")
    assert len(refusals) >= 6 and all(e["decision"] == "denied" for e in refusals)


def test_dashboard_decisions_are_audited_as_the_api_audits_them(steward_hub):  # noqa: F811
    ui, api = steward_hub.projects["to_suspend"], steward_hub.projects["to_suspend_api"]
    reason = "Consent question raised by the data controller"
    with steward_hub.sign_in("sam") as sam:
        done = post(sam, f"/steward/projects/{ui}/suspend", "/steward/projects", reason=reason)
        assert done.status_code == 303 and done.headers["location"] == "/steward/projects"
        assert f"Project {ui} suspended." in sam.get("/steward/projects").text
    with steward_hub.api("sam") as client:
        assert client.post(f"/projects/{api}/suspend", json={"reason": reason}).status_code == 200
    (by_ui,) = steward_hub.audit(project=ui, action="project.suspend")
    (by_api,) = steward_hub.audit(project=api, action="project.suspend")
    same = {"seq", "time", "hash", "prev_hash", "project", "request_id"}
    assert {k: v for k, v in by_ui.items() if k not in same} == {
        k: v for k, v in by_api.items() if k not in same
    }
    assert by_ui["key_id"] == key_id(steward_hub.keys["sam"]) and by_ui["role"] == "steward"


def test_reviews_and_rejections_through_the_dashboard(steward_hub):  # noqa: F811
    women, model = steward_hub.outputs["women"], steward_hub.outputs["to_release"]
    pid = steward_hub.projects["to_reject"]
    with steward_hub.sign_in("tess") as tess:
        short = post(tess, f"/steward/outputs/{women}/reject", "/steward/outputs", reason="no")
        assert short.status_code == 303
        assert "give a reason for the rejection" in tess.get("/steward/outputs").text
        post(tess, f"/steward/outputs/{women}/approve", "/steward/outputs", reason="")
        post(
            tess,
            f"/steward/outputs/{model}/approve",
            "/steward/models",
            reason="MI audit at chance",
            return_to="models",
        )
        assert f"Output {model} approved" in tess.get("/steward/models").text
        again = post(tess, f"/steward/outputs/{women}/approve", "/steward/outputs")
        assert again.status_code == 303
        assert "is already approved" in tess.get("/steward/outputs").text
        post(
            tess,
            f"/steward/projects/{pid}/reject",
            "/steward/projects",
            reason="Purpose is not specific enough",
        )
    with steward_hub.api("mo") as mo:
        card = mo.get(f"/outputs/{model}/download").json()
        assert card["artifact_sha256"] == "ab" * 32
    decisions = {
        (e["action"], e["decision"]) for e in steward_hub.audit(actor="tess", role="steward")
    }
    assert {
        ("output.reject", "denied"),
        ("output.approve", "allowed"),
        ("output.approve", "denied"),
        ("project.reject", "allowed"),
    } <= decisions


def test_bad_approvals_come_back_as_messages_and_change_nothing(steward_hub):  # noqa: F811
    pid = steward_hub.projects["doomed"]
    grants = ["patients.sex", "patients.person_id"]
    with steward_hub.sign_in("sam") as sam:
        for fields, message in (
            ({"epsilon": "nan"}, "epsilon must be a finite number"),
            ({"epsilon": "-1"}, "budget:"),
            ({"epsilon": "1", "days": "0"}, "days must be 1 to 3650"),
            (
                {"epsilon": "1", "grant": [*grants, "patients.nhs_number"]},
                "identifier columns are never granted",
            ),
            ({"epsilon": "1", "grant": [*grants, "patients.ethnicity"]}, "can only narrow"),
            (
                {"epsilon": "1", "grant": [*grants, "patients.sexx"]},
                "has no column &#39;sexx&#39;; did you mean &#39;sex&#39;?",
            ),
            ({"epsilon": "1", "grant": []}, "grant at least one column"),
        ):
            data = {"grant": grants, "days": "30", **fields}
            post(sam, f"/steward/projects/{pid}/approve", "/steward/projects", **data)
            assert message in sam.get("/steward/projects").text, fields
    with steward_hub.api("tess") as tess:
        assert tess.get(f"/projects/{pid}").json()["status"] == "requested"


def test_the_audit_log_filters_pages_exports_and_escapes(steward_hub):  # noqa: F811
    with steward_hub.sign_in("sam") as sam:
        first = sam.get("/steward/audit").text
        assert "Audit chain verified" in first and "Older entries" in first
        older = sam.get("/steward/audit", params={"before": 10}).text
        assert 'href="/steward/audit/9"' in older and 'href="/steward/audit/10"' not in older
        denied = sam.get("/steward/audit", params={"decision": "denied", "role": "researcher"})
        assert "<code>query.real.dp</code>" in denied.text
        assert "<code>query.real.exact</code>" not in denied.text
        assert sam.get("/steward/audit", params={"decision": "maybe"}).status_code == 422
        assert sam.get("/steward/audit", params={"since": "yesterday"}).status_code == 422
        (entry,) = [
            e for e in steward_hub.audit(actor="ana") if "<script>" in e.get("query_text", "")
        ]
        detail = sam.get(f"/steward/audit/{entry['seq']}").text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in detail and "<script>alert" not in detail
        assert entry["hash"] in detail and entry["query_sha256"] in detail
        assert sam.get("/steward/audit/999999").status_code == 404
        export = sam.get(
            "/steward/audit/export.csv", params={"action": "project.request", "actor": "bob"}
        )
        assert export.headers["content-disposition"].startswith("attachment;")
        rows = list(csv.DictReader(io.StringIO(export.text)))
        assert rows and {r["actor"] for r in rows} == {"bob"}
        assert {r["action"] for r in rows} == {"project.request"}
        formula = [r["target"] for r in rows if "HYPERLINK" in r["target"]]
        assert formula == ['\'=HYPERLINK("http://example.org") statin study']
    reads = steward_hub.audit(actor="sam", action="audit.read")
    assert any(e.get("details") == '{"format":"csv"}' for e in reads)
    assert any(e.get("target") == f"entry {entry['seq']}" for e in reads)


def test_sign_out_and_revoked_keys_end_the_session(steward_hub):  # noqa: F811
    with steward_hub.sign_in("sam") as sam:
        out = post(sam, "/steward/sign-out", "/steward/")
        assert out.status_code == 303 and "signed_out=1" in out.headers["location"]
        assert sam.get("/steward/").status_code == 303
    with steward_hub.sign_in("viv") as viv:
        assert viv.get("/steward/").status_code == 200
        gov = Governance.open(steward_hub.home)
        gov.people.revoke(user_id="viv", actor="cli:test")
        assert viv.get("/steward/").status_code == 303


def test_data_docs_are_served_only_from_inside_the_release(steward_hub):  # noqa: F811
    base = "/steward/quality/real/release-0001/docs/"
    with steward_hub.sign_in("tess") as tess:
        index = tess.get(base + "index.html")
        assert index.status_code == 200 and "Data Docs" in index.text
        policy = index.headers["content-security-policy"]
        assert "sandbox" in policy and "default-src 'none'" in policy
        for path in (
            "%2e%2e/%2e%2e/%2e%2e/keys/audit_signing.key",
            "..%2f..%2f..%2fkeys%2faudit_signing.key",
            "../release-0001.json",
            "nothing.html",
        ):
            assert tess.get(base + path).status_code == 404, path
        assert tess.get("/steward/quality/real/release-9999/docs/index.html").status_code == 404
        assert tess.get("/steward/quality/other/release-0001/docs/index.html").status_code == 422


def _in_process(home, store: SessionStore | None = None) -> TestClient:
    app = create_app(Governance.open(home))
    if store is not None:
        app.state.steward_sessions = store
    return TestClient(app, follow_redirects=False)


def _signed_in(client: TestClient, key: str) -> None:
    token = csrf_of(client.get("/steward/sign-in").text)
    assert (
        client.post("/steward/sign-in", data={"key": key, "csrf_token": token}).status_code == 303
    )


def test_sessions_end_when_idle_too_long_or_too_old_and_on_restart(steward_hub):  # noqa: F811
    now = [0.0]
    store = SessionStore(clock=lambda: now[0])
    client = _in_process(steward_hub.home, store)
    _signed_in(client, steward_hub.keys["tess"])
    assert client.get("/steward/").status_code == 200
    now[0] += IDLE_S + 1  # idle too long
    assert client.get("/steward/").status_code == 303
    _signed_in(client, steward_hub.keys["tess"])
    for _ in range(int(MAX_S // (IDLE_S / 2)) + 1):
        now[0] += IDLE_S / 2  # busy, but the session is older than an hour
        client.get("/steward/")
    assert client.get("/steward/").status_code == 303
    _signed_in(client, steward_hub.keys["tess"])
    restarted = _in_process(steward_hub.home)  # the same hub home, a new server process
    restarted.cookies = client.cookies
    assert restarted.get("/steward/").status_code == 303
    assert len(store) == 1  # expired sessions were dropped, not kept


def test_the_audit_log_shows_one_line_per_request_with_every_denial_explained(steward_hub):  # noqa: F811
    ana = steward_hub.api("ana")
    project = ana.post(
        "/projects",
        json={"title": "Audit lines", "purpose": "p", "lay_summary": "l",
              "grants": {"patients": ["person_id", "sex"]}, "days": 30},
    ).json()["project_id"]  # fmt: skip
    with steward_hub.api("tess") as tess:
        approved = tess.post(f"/projects/{project}/approve", json={"epsilon": 1.0})
        assert approved.status_code == 200, approved.text
    dp = ana.post(
        f"/projects/{project}/queries",
        json={"sql": "SELECT count(*) FROM patients", "target": "real", "mode": "dp",
              "epsilon": 0.01},
    )  # fmt: skip
    assert dp.status_code == 200, dp.text
    refused = ana.post("/projects/p-00000000/approve", json={"epsilon": 1.0})
    assert refused.status_code in (403, 404)
    rid = dp.headers["x-request-id"]
    entries = [e for e in steward_hub.audit(actor="ana") if e.get("request_id") == rid]
    assert sorted(e["action"] for e in entries) == [
        "budget.commit", "budget.reserve", "query.real.dp"
    ]  # fmt: skip
    with steward_hub.sign_in("sam") as sam:
        page = sam.get("/steward/audit", params={"actor": "ana"}).text
    outcome = next(e for e in entries if e["action"] == "query.real.dp")
    row = page.split(f'href="/steward/audit/{outcome["seq"]}"', 1)[1].split("</tr>", 1)[0]
    assert "with" in row and "budget.reserve" in row and "budget.commit" in row
    # the budget entries are not rows of their own
    for e in entries:
        if e["action"] != "query.real.dp":
            assert f'aria-label="Entry {e["seq"]} in full"' not in page
    # a refusal that reached no governed action says why, not only its HTTP status
    generic = [
        e for e in steward_hub.audit(actor="ana")
        if e["action"] == "api.post" and e.get("decision") == "denied"
    ]  # fmt: skip
    assert generic and all(": " in e["reason"] for e in generic)
    assert any("only stewards" in e["reason"] or "no project" in e["reason"] for e in generic)


def test_each_release_has_a_page_of_its_checks_in_the_hubs_own_words(steward_hub):  # noqa: F811
    with steward_hub.sign_in("sam") as sam:
        overview = sam.get("/steward/quality").text
        assert 'href="/steward/quality/real/release-0001"' in overview
        page = sam.get("/steward/quality/real/release-0001")
        assert page.status_code == 200
        text = page.text
        assert "Every person appears once (primary key)." in text
        assert "conformance.patients.person_id.unique" in text
        for category in ("Conformance", "Completeness", "Plausibility"):
            assert f">{category}</h2>" in text
        assert sam.get("/steward/quality/real/release-9999").status_code == 404


def test_a_companys_project_carries_the_commercial_flag_on_every_page(steward_hub):  # noqa: F811
    gov = Governance.open(steward_hub.home)
    user, _ = gov.people.add(
        user_id="cora", name="Cora", role="researcher", organisation="Acme Bio",
        organisation_type="life_science_company",
        accreditation_expires=dt.date(2100, 1, 1),
        actor="cli:test",
    )  # fmt: skip
    project = gov.projects.request(
        requester=user, title="Acme feasibility", purpose="site selection",
        lay_summary="where a trial could recruit", grants={"patients": ["person_id", "sex"]},
        days=30, public_benefit="Trials of new medicines reach the region's patients sooner.",
        daa_reference="DAA-77", daa_expires="2099-01-01",
    )  # fmt: skip
    with steward_hub.sign_in() as browser:
        page = browser.get("/steward/projects").text
        card = page[page.index(f"<code>{project.project_id}</code>") :][:2000]
        assert 'class="badge commercial"' in card and "DAA-77" in card
        assert "two stewards" in card
        audit = browser.get("/steward/audit", params={"project": project.project_id}).text
        assert 'class="badge commercial"' in audit
