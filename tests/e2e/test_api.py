"""The HTTP API against a live `hub serve`: modes, the role matrix, the redteam cases."""

from __future__ import annotations

import concurrent.futures
import json

import httpx
import pytest

from hub.client import HubClient
from hub.client import HubError as ClientError


def test_docs_health_and_the_public_register(live_hub):
    assert httpx.get(live_hub.url + "/docs").status_code == 200
    assert httpx.get(live_hub.url + "/openapi.json").json()["info"]["title"] == "Health data hub"
    register = live_hub.client().get("/public/projects").json()["projects"]
    assert {p["project_id"] for p in register} == set(live_hub.projects.values())
    assert all("members" not in p and p["lay_summary"] for p in register)


def test_dummy_dp_and_exact_modes_through_the_python_client(live_hub):
    pid = live_hub.projects["ana"]
    hub = HubClient(live_hub.url, live_hub.keys["ana"], project=pid)
    rows = hub.query("SELECT sex, year_of_birth FROM patients LIMIT 3")
    assert len(rows) == 3 and list(rows.columns) == ["sex", "year_of_birth"]
    noisy = hub.query(
        "SELECT sex, count(*) AS n FROM patients GROUP BY sex",
        target="real",
        mode="dp",
        epsilon=0.5,
    )
    assert list(noisy["sex"]) == ["F", "M"] and noisy.attrs["epsilon_spent"] == pytest.approx(0.5)
    assert noisy.attrs["ci95_half_width"]["n"] > 0
    pending = hub.query(
        "SELECT sex, count(*) AS n FROM patients GROUP BY sex", target="real", mode="exact"
    )
    assert pending.attrs["status"] == "pending_review"
    output_id = pending.attrs["output_id"]
    with pytest.raises(ClientError) as early:
        hub.download(output_id)
    assert early.value.status == 409
    steward = HubClient(live_hub.url, live_hub.keys["sam"])
    listed = {o["output_id"]: o for o in steward.outputs()}
    assert listed[output_id]["manifest"]["rules"]["redaction_threshold"] == 7
    steward.approve_output(output_id)
    table = hub.download(output_id)
    assert sorted(table["sex"]) == ["F", "M"] and all(n % 5 == 0 for n in table["n"])
    csv_text = (
        live_hub.client("ana").get(f"/outputs/{output_id}/download", params={"format": "csv"}).text
    )
    assert csv_text.splitlines()[0] == "sex,n"


def test_authors_cannot_review_their_own_outputs_and_rejections_need_a_reason(live_hub):
    pid = live_hub.projects["ana"]
    ana = live_hub.client("ana")
    out = ana.post(
        f"/projects/{pid}/queries",
        json={"sql": "SELECT count(*) AS n FROM conditions", "target": "real", "mode": "exact"},
    ).json()
    sam, tess = live_hub.client("sam"), live_hub.client("tess")
    assert (
        tess.post(f"/outputs/{out['output_id']}/reject", json={"reason": "no"}).status_code == 422
    )
    assert (
        tess.post(
            f"/outputs/{out['output_id']}/reject", json={"reason": "too detailed for release"}
        ).status_code
        == 200
    )
    assert sam.post(f"/outputs/{out['output_id']}/approve").status_code == 409


ROUTES = [
    ("GET", "/health", None),
    ("GET", "/public/projects", None),
    ("GET", "/me", None),
    ("GET", "/datasets?project_id={ana}", None),
    (
        "POST",
        "/projects",
        {
            "title": "t",
            "purpose": "p",
            "lay_summary": "l",
            "grants": {"patients": ["sex"]},
            "days": 30,
        },
    ),
    ("GET", "/projects/{ana}", None),
    ("POST", "/projects/{ana}/approve", {"epsilon": 1.0}),
    (
        "POST",
        "/projects/{ana}/queries",
        {"sql": "SELECT count(*) FROM patients", "target": "dummy"},
    ),
    ("GET", "/outputs", None),
    ("GET", "/audit", None),
    ("GET", "/audit/verify", None),
    ("GET", "/quality/releases/release-0001", None),
    ("POST", "/projects/{ana}/reject", {"reason": "x"}),
    ("POST", "/projects/{ana}/suspend", {"reason": "x"}),
    ("GET", "/projects/{ana}/queries/q-000000000000", None),
    ("POST", "/outputs/o-000000000000/approve", None),
    ("POST", "/outputs/o-000000000000/reject", {"reason": "not releasable"}),
    ("GET", "/outputs/o-000000000000/download", None),
]
# expected status by caller: none (no key), ana (member researcher), bob (other researcher),
# sam (steward), mo (modeller), root (admin)
EXPECTED = {
    "/health": dict(none=200, ana=200, bob=200, sam=200, mo=200, root=200),
    "/public/projects": dict(none=200, ana=200, bob=200, sam=200, mo=200, root=200),
    "/me": dict(none=401, ana=200, bob=200, sam=200, mo=200, root=200),
    "/datasets?project_id={ana}": dict(none=401, ana=200, bob=404, sam=200, mo=404, root=200),
    "/projects": dict(none=401, ana=201, bob=201, sam=403, mo=403, root=403),
    "/projects/{ana}": dict(none=401, ana=200, bob=404, sam=200, mo=404, root=200),
    "/projects/{ana}/approve": dict(none=401, ana=403, bob=403, sam=409, mo=403, root=403),
    "/projects/{ana}/queries": dict(none=401, ana=200, bob=404, sam=403, mo=404, root=403),
    "/outputs": dict(none=401, ana=403, bob=403, sam=200, mo=403, root=403),
    "/audit": dict(none=401, ana=403, bob=403, sam=200, mo=403, root=403),
    "/audit/verify": dict(none=401, ana=403, bob=403, sam=200, mo=403, root=403),
    "/quality/releases/release-0001": dict(none=401, ana=403, bob=403, sam=200, mo=403, root=200),
    # a steward passes the role check and then meets the body rule (422) or the missing thing (404)
    "/projects/{ana}/reject": dict(none=401, ana=403, bob=403, sam=422, mo=403, root=403),
    "/projects/{ana}/suspend": dict(none=401, ana=403, bob=403, sam=422, mo=403, root=403),
    "/projects/{ana}/queries/q-000000000000": dict(
        none=401, ana=404, bob=404, sam=404, mo=404, root=404
    ),
    "/outputs/o-000000000000/approve": dict(none=401, ana=403, bob=403, sam=404, mo=403, root=403),
    "/outputs/o-000000000000/reject": dict(none=401, ana=403, bob=403, sam=404, mo=403, root=403),
    "/outputs/o-000000000000/download": dict(none=401, ana=404, bob=404, sam=404, mo=404, root=404),
}


@pytest.mark.parametrize("method, path, body", ROUTES, ids=[f"{m} {p}" for m, p, _ in ROUTES])
@pytest.mark.parametrize("who", ["none", "ana", "bob", "sam", "mo", "root"])
def test_every_route_for_every_role(live_hub, method, path, body, who):
    client = live_hub.client(None if who == "none" else who)
    url = path.format(ana=live_hub.projects["ana"])
    response = client.request(method, url, json=body)
    assert response.status_code == EXPECTED[path][who], response.text
    if response.status_code >= 400:
        assert response.headers["content-type"].startswith("application/problem+json")
        problem = response.json()
        assert (
            problem["status"] == response.status_code
            and problem["code"]
            and "Traceback" not in response.text
        )


ESCAPES = [
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM read_text('/etc/passwd')",
    "SELECT * FROM glob('/*')",
    "SELECT * FROM '/etc/passwd'",
    "COPY (SELECT 1) TO '/tmp/hub-leak.csv'",
    "ATTACH '/tmp/hub-other.duckdb'",
    "INSTALL httpfs",
    "SELECT * FROM 'https://example.org/x.parquet'",
    "SET enable_external_access = true",
    "PRAGMA threads = 64",
    "SELECT 1; DROP TABLE patients",
    "SELECT nhs_number FROM patients",
    "SELECT given_name, count(*) FROM patients GROUP BY ALL",
    "SELECT * FROM patients",
    "SELECT person_id, count(*) FROM conditions GROUP BY person_id",
]


@pytest.mark.parametrize("sql", ESCAPES)
def test_redteam_sql_is_refused_before_anything_runs(live_hub, sql):
    pid = live_hub.projects["ana"]
    response = live_hub.client("ana").post(
        f"/projects/{pid}/queries", json={"sql": sql, "target": "real", "mode": "exact"}
    )
    # a governance refusal (422) or, for a name the release does not have, a mistake (400)
    assert (response.status_code, response.json()["code"]) in (
        (422, "policy_violation"),
        (400, "query_error"),
    ), response.text
    assert "passwd" not in response.json()["detail"].replace("'/etc/passwd'", "")
    import pathlib

    assert not pathlib.Path("/tmp/hub-leak.csv").exists()
    assert live_hub.client().get("/health").status_code == 200


def test_mistakes_and_refusals_have_different_codes_and_say_where(live_hub):
    pid = live_hub.projects["ana"]
    ana = live_hub.client("ana")

    def ask(sql: str) -> tuple[int, str, str]:
        r = ana.post(f"/projects/{pid}/queries", json={"sql": sql, "target": "dummy"})
        return r.status_code, r.json()["code"], r.json()["detail"]

    status, code, detail = ask("SELECT sex, count(*) FROM patients WHERE year_of_brith > 1950")
    assert (status, code) == (400, "query_error")
    assert "'year_of_brith' (line 1, column 42); did you mean 'year_of_birth'?" in detail
    status, code, detail = ask("SELECT sex, count(*)\nFORM patients GROUP BY sex")
    assert (status, code) == (400, "query_error") and "(line 2, column 6)" in detail
    status, code, detail = ask("SELECT count(*) FROM medications")  # exists, not granted
    assert (status, code) == (422, "policy_violation") and "not granted" in detail


def test_a_query_that_would_exhaust_memory_fails_cleanly(live_hub):
    pid = live_hub.projects["ana"]
    ana = live_hub.client("ana")
    huge = ana.post(
        f"/projects/{pid}/queries",
        json={
            "sql": "SELECT a.sex, b.sex, c.sex FROM patients a, patients b, patients c ORDER BY 1",
            "target": "dummy",
        },
    )
    assert huge.status_code == 422 and huge.json()["code"] == "query_failed"
    assert live_hub.client().get("/health").status_code == 200


def test_a_runaway_query_times_out_and_the_server_stays_healthy(live_hub):
    pid = live_hub.projects["ana"]
    ana = live_hub.client("ana")
    slow = ana.post(
        f"/projects/{pid}/queries",
        json={
            "sql": "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT count(*) FROM r",
            "target": "dummy",
        },
    )
    assert slow.status_code == 422 and "longer than" in slow.json()["detail"]
    assert (
        ana.post(
            f"/projects/{pid}/queries",
            json={"sql": "SELECT count(*) FROM patients", "target": "dummy"},
        ).status_code
        == 200
    )


@pytest.mark.parametrize("epsilon", [-1, 0, 1e-320, 1e6])
def test_nonsense_epsilons_get_a_422(live_hub, epsilon):
    pid = live_hub.projects["ana"]
    response = live_hub.client("ana").post(
        f"/projects/{pid}/queries",
        json={
            "sql": "SELECT count(*) FROM patients",
            "target": "real",
            "mode": "dp",
            "epsilon": epsilon,
        },
    )
    assert response.status_code == 422


def test_nan_and_infinity_epsilons_get_a_422(live_hub):
    pid = live_hub.projects["ana"]
    for raw in ("NaN", "Infinity", "-Infinity"):
        body = (
            '{"sql": "SELECT count(*) FROM patients", "target": "real", "mode": "dp", "epsilon": '
            + raw
            + "}"
        )
        response = live_hub.client("ana").post(
            f"/projects/{pid}/queries", content=body, headers={"content-type": "application/json"}
        )
        assert response.status_code == 422, raw


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer nope"},
        {"Authorization": "Basic abc"},
        {"Authorization": "Bearer hub_000000000000_" + "A" * 43},
    ],
)
def test_missing_or_bad_keys_are_401(live_hub, headers):
    assert httpx.get(live_hub.url + "/v1/me", headers=headers).status_code == 401


def test_a_revoked_key_is_401(live_hub):
    assert live_hub.client("gone").get("/me").status_code == 401


def test_extra_fields_huge_bodies_and_garbage_are_4xx(live_hub):
    pid = live_hub.projects["ana"]
    ana = live_hub.client("ana")
    assert (
        ana.post(
            f"/projects/{pid}/queries",
            json={"sql": "SELECT 1", "target": "dummy", "role": "steward"},
        ).status_code
        == 422
    )
    big = ana.post(
        f"/projects/{pid}/queries",
        content=b'{"sql": "' + b"x" * 10_000_000 + b'"}',
        headers={"content-type": "application/json"},
    )
    assert big.status_code == 413
    for garbage in (
        b'{"sql": "SELECT\x00 1", "target": "dummy"}',
        b"\xff\xfe\xfd",
        b"[" * 5000 + b"]" * 5000,
    ):
        r = ana.post(
            f"/projects/{pid}/queries",
            content=garbage,
            headers={"content-type": "application/json"},
        )
        assert 400 <= r.status_code < 500, (garbage[:20], r.status_code)


def test_another_projects_query_is_not_found(live_hub):
    ana_pid, bob_pid = live_hub.projects["ana"], live_hub.projects["bob"]
    bob_query = (
        live_hub.client("bob")
        .post(
            f"/projects/{bob_pid}/queries",
            json={"sql": "SELECT count(*) FROM patients", "target": "dummy"},
        )
        .json()
    )
    assert (
        live_hub.client("ana")
        .get(f"/projects/{bob_pid}/queries/{bob_query['query_id']}")
        .status_code
        == 404
    )
    assert (
        live_hub.client("ana")
        .get(f"/projects/{ana_pid}/queries/{bob_query['query_id']}")
        .status_code
        == 404
    )


def test_concurrent_dp_queries_never_overspend(live_hub):
    pid = live_hub.projects["bob"]  # budget 1.0 in total
    spent = live_hub.client("sam").get(f"/projects/{pid}").json()["budget"]["epsilon_spent"]
    budget_left = 1.0 - spent
    expected = int(budget_left / 0.3 + 1e-9)

    def ask(_):
        with live_hub.client("bob") as c:
            return c.post(
                f"/projects/{pid}/queries",
                json={
                    "sql": "SELECT count(*) FROM patients",
                    "target": "real",
                    "mode": "dp",
                    "epsilon": 0.3,
                },
            ).status_code

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        codes = list(pool.map(ask, range(20)))
    assert codes.count(200) == expected and codes.count(403) == 20 - expected
    budget = live_hub.client("sam").get(f"/projects/{pid}").json()["budget"]
    assert budget["epsilon_spent"] <= 1.0 + 1e-9


def test_every_query_is_in_the_audit_log_without_result_rows(live_hub):
    pid = live_hub.projects["ana"]
    ana = live_hub.client("ana")
    for body in (
        {"sql": "SELECT count(*) AS n FROM patients", "target": "dummy"},
        {
            "sql": "SELECT count(*) AS n FROM patients",
            "target": "real",
            "mode": "dp",
            "epsilon": 0.01,
        },
        {"sql": "SELECT count(*) AS n FROM patients", "target": "real", "mode": "exact"},
        {"sql": "SELECT * FROM read_csv('/etc/passwd')", "target": "real", "mode": "exact"},
    ):
        ana.post(f"/projects/{pid}/queries", json=body)
    sam = live_hub.client("sam")
    entries = sam.get("/audit", params={"project": live_hub.projects["ana"], "limit": 1000}).json()[
        "entries"
    ]
    actions = {e["action"] for e in entries}
    assert {"query.dummy", "query.real.dp", "query.real.exact"} <= actions
    assert any(e["decision"] == "denied" and "rule:" in (e.get("reason") or "") for e in entries)
    assert all("rows" not in e for e in entries)
    assert sam.get("/audit/verify").json()["ok"]
    filtered = sam.get("/audit", params={"text": "read_csv"}).json()["entries"]
    assert filtered and all("read_csv" in e["query_text"] for e in filtered)
    assert json.dumps(entries).count("/etc/passwd") >= 1  # query text is kept, escaped, as evidence


def test_a_streamed_body_without_a_length_is_cut_off_too(live_hub):
    pid = live_hub.projects["ana"]

    def chunks():
        yield b'{"sql": "'
        for _ in range(200):
            yield b"x" * 10_000
        yield b'", "target": "dummy"}'

    response = live_hub.client("ana").post(
        f"/projects/{pid}/queries", content=chunks(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413 and response.json()["code"] == "too_large"


def test_a_query_that_fails_in_the_engine_is_audited_too(live_hub):
    pid = live_hub.projects["ana"]
    sql = "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT count(*) FROM r -- audited"
    assert (
        live_hub.client("ana")
        .post(f"/projects/{pid}/queries", json={"sql": sql, "target": "dummy"})
        .status_code
        == 422
    )
    entries = (
        live_hub.client("sam")
        .get("/audit", params={"text": "-- audited", "limit": 10})
        .json()["entries"]
    )
    assert entries and entries[0]["decision"] == "denied" and "longer than" in entries[0]["reason"]


@pytest.mark.parametrize(
    "grants, reason",
    [
        ({"patients": ["sex", "nhs_number"]}, "identifier columns are never granted"),
        ({"patients": ["sex", "given_name"]}, "identifier columns are never granted"),
        ({"patient": ["sex"]}, "the release has no table 'patient'; did you mean 'patients'?"),
        (
            {"patients": ["imd_decil"]},
            "table patients has no column 'imd_decil'; did you mean 'imd_decile'?",
        ),
        ({"_quarantine": ["reason"]}, "the release has no table '_quarantine'"),
    ],
)
def test_a_project_request_for_what_cannot_be_granted_is_refused_with_the_reason(
    live_hub, grants, reason
):
    response = live_hub.client("ana").post(
        "/projects",
        json={"title": "t", "purpose": "p", "lay_summary": "l", "grants": grants, "days": 30},
    )
    assert response.status_code == 422 and reason in response.json()["detail"], response.text
