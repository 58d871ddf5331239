"""Reliability of a live `hub serve`: one audit outcome entry per response, a full audit
store refusing work with 503 and recovering, `kill -9` under load, and (slow) the load
benchmark's checks on a small release.
"""

from __future__ import annotations

import json
import resource
import shutil
import sqlite3
from pathlib import Path

import httpx
import pytest

from benchmarks import load
from benchmarks.api import free_port, start_server
from governance.audit.events import SUPPORTING_ACTIONS


def _entries(home: Path) -> list[dict]:
    con = sqlite3.connect(home / "governance" / "governance.sqlite3")
    try:
        return [
            json.loads(b) for (b,) in con.execute("SELECT body FROM audit_entries ORDER BY seq")
        ]
    finally:
        con.close()


def _count(home: Path, table: str) -> int:
    con = sqlite3.connect(home / "governance" / "governance.sqlite3")
    try:
        return int(con.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
    finally:
        con.close()


def _copy(home: Path, dest: Path) -> Path:
    shutil.copytree(home, dest)
    return dest


def test_every_authenticated_response_has_exactly_one_audit_outcome_entry(live_hub):
    ana, sam, bob = live_hub.client("ana"), live_hub.client("sam"), live_hub.client("bob")
    anon = live_hub.client()
    p = live_hub.projects["ana"]
    responses = [
        ana.get("/me"),
        ana.get("/datasets", params={"project_id": p}),
        ana.get(f"/projects/{p}"),
        ana.post(f"/projects/{p}/queries", json={"sql": "SELECT sex FROM patients LIMIT 3"}),
        ana.post(
            f"/projects/{p}/queries",
            json={
                "sql": "SELECT sex, count(*) AS n FROM patients GROUP BY sex",
                "target": "real",
                "mode": "dp",
                "epsilon": 0.01,
            },
        ),
        ana.post(
            f"/projects/{p}/queries",
            json={
                "sql": "SELECT sex, count(*) AS n FROM patients GROUP BY sex",
                "target": "real",
                "mode": "exact",
            },
        ),
        ana.post(f"/projects/{p}/queries", json={"sql": "SELECT * FROM read_csv('/etc/passwd')"}),
        ana.post(f"/projects/{p}/queries", json={"sql": "SELECT 1", "role": "steward"}),
        ana.get("/audit"),  # a researcher on a steward route
        bob.get(f"/projects/{p}"),  # not bob's project
        bob.post(f"/projects/{p}/queries", json={"sql": "SELECT 1"}),
        sam.get("/outputs"),
        sam.get("/audit", params={"limit": 5}),
        sam.get("/audit/verify"),
        sam.post("/outputs/o-000000000000/approve", json={}),
    ]
    dp, exact = responses[4], responses[5]
    assert dp.status_code == 200 and exact.status_code == 200
    query = ana.get(f"/projects/{p}/queries/{dp.json()['query_id']}")
    approved = sam.post(f"/outputs/{exact.json()['output_id']}/approve", json={})
    responses += [query, approved]
    anonymous = [anon.get("/health"), anon.get("/public/projects"), anon.get("/me")]
    entries = _entries(live_hub.home)
    outcomes: dict[str, list[dict]] = {}
    supporting: dict[str, list[str]] = {}
    for e in entries:
        if "request_id" in e:
            if e["action"] in SUPPORTING_ACTIONS:
                supporting.setdefault(e["request_id"], []).append(e["action"])
            else:
                outcomes.setdefault(e["request_id"], []).append(e)
    for r in responses:
        rid = r.headers["x-request-id"]
        found = outcomes.get(rid, [])
        assert len(found) == 1, (r.request.url, r.status_code, found)
        assert found[0]["decision"] == ("allowed" if r.status_code < 400 else "denied")
    # the dp query's ledger entries carry its request id; its outcome records the spend
    dp_id = dp.headers["x-request-id"]
    assert supporting[dp_id] == ["budget.reserve", "budget.commit"]
    assert outcomes[dp_id][0]["action"] == "query.real.dp"
    assert outcomes[dp_id][0]["epsilon"] == dp.json()["epsilon_spent"]
    # reads that no governed action audits get a generic entry naming the route
    me = outcomes[responses[0].headers["x-request-id"]][0]
    assert (me["action"], me["target"], me["actor"]) == ("api.get", "/v1/me", "ana")
    # nobody's key, nobody's entry: anonymous traffic cannot grow the log
    for r in anonymous:
        assert r.headers["x-request-id"] not in outcomes


def test_an_unwritable_audit_store_refuses_queries_with_503_and_service_resumes(
    small_home, tmp_path
):
    """The server's own file-size limit is lowered to one byte (RLIMIT_FSIZE, as a full
    disk): no write to the audit store can succeed, so nothing may run."""
    home = _copy(small_home, tmp_path / "hub")
    setup = load.prepare(home)
    port = free_port()
    proc = start_server(home, port)
    url = f"http://127.0.0.1:{port}/v1"
    p = setup.projects["r1"]
    headers = {"Authorization": f"Bearer {setup.keys['r1']}"}
    queries = [
        {"sql": "SELECT sex, count(*) AS n FROM patients GROUP BY sex", "target": "dummy"},
        {"sql": "SELECT sex, count(*) AS n FROM patients GROUP BY sex", "target": "real",
         "mode": "dp", "epsilon": 0.1},
        {"sql": "SELECT sex, count(*) AS n FROM patients GROUP BY sex", "target": "real",
         "mode": "exact"},
    ]  # fmt: skip
    try:
        with httpx.Client(base_url=url, headers=headers, timeout=60) as c:
            assert c.post(f"/projects/{p}/queries", json=queries[0]).status_code == 200
            entries, stored = len(_entries(home)), _count(home, "queries")
            spends, outputs = _count(home, "budget_spends"), _count(home, "outputs")
            files = sorted((home / "outputs").rglob("*"))
            # the server and every worker process it started (`hub serve --workers`)
            tree = load.process_tree(proc.pid)
            soft, hard = resource.prlimit(proc.pid, resource.RLIMIT_FSIZE)
            for pid in tree:
                resource.prlimit(pid, resource.RLIMIT_FSIZE, (1, hard))
            try:
                for body in queries:
                    r = c.post(f"/projects/{p}/queries", json=body)
                    assert r.status_code == 503, r.text
                    assert r.headers["content-type"].startswith("application/problem+json")
                    assert r.json()["code"] == "audit_unavailable"
                    assert "x-request-id" in r.headers
                assert c.get("/me").status_code == 503  # even a read needs its entry
                assert proc.poll() is None  # the server is still up
            finally:
                for pid in tree:
                    resource.prlimit(pid, resource.RLIMIT_FSIZE, (soft, hard))
            # nothing ran: no entry, no stored query, no spend, no output, no file
            assert len(_entries(home)) == entries
            assert _count(home, "queries") == stored
            assert _count(home, "budget_spends") == spends
            assert _count(home, "outputs") == outputs
            assert sorted((home / "outputs").rglob("*")) == files
            # and once the store is writable again, service resumes where it left off
            for body in queries:
                assert c.post(f"/projects/{p}/queries", json=body).status_code == 200
            verify = c.get("/audit/verify", headers={"Authorization": f"Bearer {setup.keys['s0']}"})
            assert verify.json()["ok"] is True
    finally:
        proc.terminate()
        proc.wait(10)


def test_kill_9_under_load_loses_no_acknowledged_audit_entry_or_spend(small_home, tmp_path):
    home = _copy(small_home, tmp_path / "hub")
    result = load.crash(home, seconds=6, clients=16)
    checks = result["checks"]
    assert result["responses_before_kill"] > 0
    # the killed server's workers stop too, instead of serving on as orphans
    assert result["workers_before_kill"] >= 1 and result["workers_left_15s_after_kill"] == 0
    assert checks["violations"] == []  # one outcome entry per response, no overspend, ...
    assert checks["matched_outcome_entries"] == checks["responses"]
    assert "verified" in checks["audit_verify"]
    assert checks["partial_files"] == 0
    assert result["responses_after_restart"] > 0
    assert not any(s.startswith("5") for s in result["statuses_after_restart"])


@pytest.mark.slow
def test_load_benchmark_checks_hold_on_a_small_release(small_home, tmp_path):
    summary, _records = load.load(_copy(small_home, tmp_path / "hub"), seconds=20)
    checks = summary["checks"]
    assert checks["violations"] == []
    assert checks["matched_outcome_entries"] == checks["responses"] == summary["requests"]
    assert {"dummy", "dp", "exact", "audit.read", "output.approve"} <= set(summary["by_kind"])
    assert "budget_exhausted" in summary["codes"]  # the small budget ran out, and held
    assert all(
        checks["epsilon_spent"][p] <= checks["budgets"][p] + 1e-9 for p in checks["epsilon_spent"]
    )
