"""Governance state on a real SQLite store: audit log, ledger, people, projects."""

from __future__ import annotations

import datetime as dt
import multiprocessing
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from governance.access.projects import authorize
from governance.audit.events import AuditEvent
from governance.audit.log import verify_export
from governance.errors import (
    AccessDenied,
    AuditUnavailable,
    BudgetExhausted,
    Conflict,
    InvalidRequest,
    Unauthenticated,
)
from governance.facade import Governance

TODAY = dt.date.today()
NEXT_YEAR = TODAY + dt.timedelta(days=365)


@pytest.fixture
def gov(tmp_path) -> Governance:
    return Governance.open(tmp_path / "hub", create_keys=True)


def add(gov, user_id, role, *, expires=NEXT_YEAR):
    user, key = gov.people.add(
        user_id=user_id,
        name=user_id.title(),
        role=role,
        organisation="University of Birmingham",
        organisation_type="university",
        accreditation_expires=expires,
        actor="cli:test",
    )
    return user, key


@pytest.fixture
def approved(gov):
    researcher, _ = add(gov, "ana", "researcher")
    steward, _ = add(gov, "sam", "steward")
    add(gov, "mo", "modeller")
    project = gov.projects.request(
        requester=researcher,
        title="DPP outcomes",
        purpose="Who benefits from the DPP",
        lay_summary="We study a prevention programme.",
        grants={"patients": ["person_id", "sex"], "observations": ["code", "value"]},
        days=180,
        members=["mo"],
    )
    project = gov.projects.approve(
        project.project_id,
        steward=steward,
        epsilon=1.0,
        delta=1e-6,
        trainers=["mo"],
        grants={"patients": ["person_id"]},
    )
    return gov, project, researcher, steward


def sql(gov, query, *params):
    con = sqlite3.connect(gov.store.path)
    try:
        with con:
            return con.execute(query, params).fetchall()
    finally:
        con.close()


# --------------------------------------------------------------------------- audit
def test_every_append_verifies_and_checkpoints_are_signed(gov):
    gov.audit.checkpoint_every = 10
    for i in range(35):
        gov.audit.record(
            AuditEvent(action="query.dummy", actor="ana", project="p-1", query_text=f"SELECT {i}")
        )
    report = gov.audit.verify()
    assert report.ok and report.entries == 35 and report.checkpoints == 3


def test_an_edit_in_the_store_is_found_and_named(gov):
    for i in range(20):
        gov.audit.record(AuditEvent(action="query.dummy", actor="ana", query_text=f"SELECT {i}"))
    sql(gov, "UPDATE audit_entries SET body = replace(body, 'SELECT 7', 'SELECT 8') WHERE seq = 8")
    report = gov.audit.verify()
    assert not report.ok and report.first_bad == 8 and "edited" in report.reason


def test_hiding_an_entry_by_editing_its_index_columns_is_found(gov):
    for _ in range(5):
        gov.audit.record(
            AuditEvent(action="query.dummy", actor="ana", decision="denied", reason="x")
        )
    sql(gov, "UPDATE audit_entries SET decision = 'allowed' WHERE seq = 3")
    report = gov.audit.verify()
    assert not report.ok and report.first_bad == 3


@pytest.mark.parametrize("where, first_bad", [("seq = 10", 10), ("seq >= 18", 18)])
def test_deleting_entries_in_the_middle_or_at_the_end_is_found(gov, where, first_bad):
    for i in range(20):
        gov.audit.record(AuditEvent(action="query.dummy", actor="ana", query_text=f"SELECT {i}"))
    sql(gov, f"DELETE FROM audit_entries WHERE {where}")
    report = gov.audit.verify()
    assert not report.ok and report.first_bad == first_bad


def test_a_forged_key_does_not_verify(gov):
    gov.audit.record(AuditEvent(action="steward.sign_in", actor="ana"))
    other = Ed25519PrivateKey.generate().public_key()
    report = gov.audit.verify(other)
    assert not report.ok and "signature" in report.reason


def test_an_export_verifies_without_the_store_and_fails_when_tampered(gov):
    for i in range(12):
        gov.audit.record(
            AuditEvent(action="query.dummy", actor="ana", query_text=f"SELECT {i}\nFROM x")
        )
    lines = list(gov.audit.export())
    key = gov.audit.signer.public_key
    assert verify_export(iter(lines), key) == (True, "verified 12 entries")
    tampered = [line.replace("SELECT 3", "SELECT 4") for line in lines]
    ok, message = verify_export(iter(tampered), key)
    assert not ok and "entry 4" in message


def test_a_full_disk_refuses_writes_and_nothing_half_happens(gov, approved, monkeypatch):
    gov, project, _, _ = approved
    before = gov.audit.verify().entries
    con = gov.store.cached()
    # SQLite's page limit stands in for a full disk: the next page cannot be written
    pages = con.execute("PRAGMA page_count").fetchone()[0]
    con.execute(f"PRAGMA max_page_count = {pages}")
    with pytest.raises(AuditUnavailable):
        for _ in range(200):
            gov.ledger.reserve(project.project_id, epsilon=0.001, purpose="x" * 2000, actor="ana")
    con.execute("PRAGMA max_page_count = 1073741823")
    report = gov.audit.verify()
    assert report.ok
    spends = len(gov.ledger.history(project.project_id))
    # every spend that happened has its audit entry: reserve entries == spends
    assert len(gov.audit.entries(action="budget.reserve", limit=10_000)) == spends
    assert report.entries == before + spends


def test_a_process_killed_while_appending_leaves_a_verifiable_log(tmp_path):
    home = tmp_path / "hub"
    Governance.open(home, create_keys=True)
    script = (
        "import sys\nfrom pathlib import Path\nfrom governance.facade import Governance\n"
        "from governance.audit.events import AuditEvent\n"
        f"g = Governance.open(Path({str(home)!r}))\n"
        "i = 0\nwhile True:\n    g.audit.record(AuditEvent(action='query.dummy', actor='ana', query_text=str(i)))\n"
        "    print(i, flush=True)\n    i += 1\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    acknowledged = 0
    deadline = time.time() + 30
    while acknowledged < 300 and time.time() < deadline:
        proc.stdout.readline()
        acknowledged += 1
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    report = Governance.open(home).audit.verify()
    assert report.ok, report.reason
    assert report.entries >= acknowledged  # every acknowledged append survived


# -------------------------------------------------------------------------- ledger
def test_fifty_threads_never_overspend(approved):
    gov, project, _, _ = approved
    results: list[str] = []
    barrier = threading.Barrier(50)

    def spend():
        barrier.wait()
        try:
            gov.ledger.reserve(project.project_id, epsilon=0.1, purpose="dp query", actor="ana")
            results.append("ok")
        except BudgetExhausted:
            results.append("refused")

    threads = [threading.Thread(target=spend) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count("ok") == 10 and results.count("refused") == 40
    state = gov.ledger.state(project.project_id)
    assert state.epsilon_spent == pytest.approx(1.0) and state.epsilon_spent <= 1.0 + 1e-9
    allowed = gov.audit.entries(action="budget.reserve", decision="allowed", limit=1000)
    denied = gov.audit.entries(action="budget.reserve", decision="denied", limit=1000)
    assert len(allowed) == 10 and len(denied) == 40


def _spend_in_process(home: str, project_id: str, n: int, queue) -> None:
    gov = Governance.open(Path(home))
    ok = 0
    for _ in range(n):
        try:
            gov.ledger.reserve(project_id, epsilon=0.05, purpose="dp query", actor="ana")
            ok += 1
        except BudgetExhausted:
            pass
    queue.put(ok)


def test_several_processes_never_overspend(approved):
    gov, project, _, _ = approved
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [
        ctx.Process(target=_spend_in_process, args=(str(gov.home), project.project_id, 10, queue))
        for _ in range(4)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    successes = sum(queue.get(timeout=5) for _ in procs)
    assert successes == 20  # 1.0 / 0.05
    assert gov.ledger.state(project.project_id).epsilon_spent == pytest.approx(1.0)
    assert gov.audit.verify().ok


def test_commit_refund_and_a_crashed_reservation_that_keeps_counting(approved):
    gov, project, _, _ = approved
    a = gov.ledger.reserve(project.project_id, epsilon=0.4, purpose="training", actor="mo")
    gov.ledger.commit(a, epsilon=0.3, actor="mo")
    b = gov.ledger.reserve(project.project_id, epsilon=0.2, purpose="query", actor="ana")
    gov.ledger.refund(b, actor="ana", reason="query failed before running")
    gov.ledger.reserve(project.project_id, epsilon=0.5, purpose="training that crashed", actor="mo")
    state = gov.ledger.state(project.project_id)
    assert state.epsilon_spent == pytest.approx(0.8)
    with pytest.raises(Conflict):
        gov.ledger.commit(a, actor="mo")
    with pytest.raises(
        BudgetExhausted, match=r"epsilon runs out: asked 0.25, 0.2 left \(short by 0.05\)"
    ):
        gov.ledger.reserve(project.project_id, epsilon=0.25, purpose="q", actor="ana")
    with pytest.raises(InvalidRequest):
        gov.ledger.reserve(project.project_id, epsilon=float("nan"), purpose="q", actor="ana")


# ------------------------------------------------------------------ people, roles
def test_keys_authenticate_until_revoked_or_rotated(gov):
    _, key = add(gov, "ana", "researcher")
    assert gov.people.authenticate(key).user.user_id == "ana"
    for bad in (None, "", "hub_nope", key[:-1] + ("A" if key[-1] != "A" else "B"), "Bearer " + key):
        with pytest.raises(Unauthenticated):
            gov.people.authenticate(bad)
    new = gov.people.rotate_key(user_id="ana", actor="cli:test")
    with pytest.raises(Unauthenticated):
        gov.people.authenticate(key)
    assert gov.people.authenticate(new).user.user_id == "ana"
    gov.people.revoke(user_id="ana", actor="cli:test")
    with pytest.raises(Unauthenticated):
        gov.people.authenticate(new)
    stored = sql(gov, "SELECT secret_sha256 FROM api_keys")
    assert all(new.split("_")[-1] not in row[0] for row in stored)  # only hashes stored


STATES = ["requested", "approved", "rejected", "suspended", "closed"]


@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("member", [True, False])
@pytest.mark.parametrize("accredited", [True, False])
@pytest.mark.parametrize("expired", [True, False])
def test_access_matrix(approved, state, member, accredited, expired):
    _, project, researcher, _ = approved
    from dataclasses import replace

    p = replace(
        project,
        status=state,
        expires_at=TODAY - dt.timedelta(days=1) if expired else project.expires_at,
    )
    u = replace(
        researcher,
        user_id="ana" if member else "stranger",
        accreditation_expires=NEXT_YEAR if accredited else TODAY - dt.timedelta(days=1),
    )
    allowed = state == "approved" and member and accredited and not expired
    if allowed:
        authorize(p, u)
    else:
        with pytest.raises(AccessDenied) as refused:
            authorize(p, u)
        assert str(refused.value)  # always a reason


def test_only_named_trainers_may_train(approved):
    gov, project, researcher, _ = approved
    authorize(project, gov.people.get("mo"), train=True)
    with pytest.raises(AccessDenied, match="train"):
        authorize(project, researcher, train=True)


def test_project_lifecycle_and_role_rules(approved):
    gov, project, researcher, steward = approved
    assert project.granted == {"patients": ["person_id"]}  # narrowed at approval
    assert project.sdc_threshold == 7 and project.sdc_rounding == 5
    with pytest.raises(AccessDenied, match="only stewards"):
        gov.projects.suspend(project.project_id, steward=researcher, reason="because I can")
    suspended = gov.projects.suspend(
        project.project_id, steward=steward, reason="ethics review pending"
    )
    with pytest.raises(InvalidRequest, match="narrow"):
        gov.projects.approve(
            project.project_id,
            steward=steward,
            epsilon=1,
            delta=0,
            grants={"medications": ["code"]},
        )
    with pytest.raises(AccessDenied, match="suspended"):
        authorize(suspended, researcher)
    resumed = gov.projects.approve(project.project_id, steward=steward, epsilon=2.0, delta=1e-6)
    authorize(resumed, researcher)
    closed = gov.projects.close(project.project_id, steward=steward, reason="study finished")
    with pytest.raises(Conflict):
        gov.projects.approve(closed.project_id, steward=steward, epsilon=1, delta=0)
    other = gov.projects.request(
        requester=researcher,
        title="t",
        purpose="p",
        lay_summary="l",
        grants={"patients": ["sex"]},
        days=30,
    )
    rejected = gov.projects.reject(other.project_id, steward=steward, reason="purpose too vague")
    assert rejected.decision_reason == "purpose too vague"
    actions = [e["action"] for e in gov.audit.entries(limit=100)]
    for action in (
        "project.request",
        "project.approve",
        "project.suspend",
        "project.close",
        "project.reject",
    ):
        assert action in actions
    with pytest.raises(AccessDenied, match="lapsed"):
        lapsed, _ = add(gov, "old", "researcher", expires=TODAY - dt.timedelta(days=1))
        gov.projects.request(
            requester=lapsed,
            title="t",
            purpose="p",
            lay_summary="l",
            grants={"patients": ["sex"]},
            days=30,
        )


def test_a_reservation_not_fsynced_alone_is_made_durable_by_the_next_commit(approved):
    """A DP query's reservation and the write probe skip their own fsync; the commit that
    answers is fsynced, and so makes them durable. Whatever happens in between, the
    store's connection is left fsyncing every later commit."""
    gov, project, _, _ = approved
    full = 2  # PRAGMA synchronous: FULL
    spend = gov.ledger.reserve(
        project.project_id, epsilon=0.1, purpose="q-1", actor="ana", durable=False
    )
    assert gov.store.cached().execute("PRAGMA synchronous").fetchone()[0] == full
    gov.audit.ensure_writable()
    with pytest.raises(RuntimeError), gov.store.transaction(durable=False):
        raise RuntimeError("a failure inside the transaction")
    assert gov.store.cached().execute("PRAGMA synchronous").fetchone()[0] == full
    gov.ledger.commit(spend, epsilon=0.1, actor="ana")
    # what another process reads: the spend committed, with its reserve and commit entries
    con = sqlite3.connect(gov.store.path)
    try:
        state = con.execute("SELECT state FROM budget_spends WHERE spend_id = ?", (spend,))
        assert state.fetchone()[0] == "committed"
    finally:
        con.close()
    assert [e["action"] for e in gov.audit.entries(project=project.project_id, limit=2)] == [
        "budget.commit",
        "budget.reserve",
    ]
    assert gov.audit.verify().ok
