"""Load, crash and consistency of a live `hub serve` (issue 9).

32 concurrent clients drive a real `hub serve` process for a bounded time with a mix of
dummy, DP and exact queries from several projects, query and project reads, project
requests and approvals, output reviews and audit reads. Afterwards the hub's own
stores are checked against what the clients saw:

- no response was a 5xx;
- every response has exactly one audit *outcome entry* carrying its ``X-Request-ID``
  (entries that record ledger changes, ``budget.*``, are supporting entries of the same
  request), allowed for a 2xx, denied otherwise;
- no project's spent ε (committed plus reserved) exceeds its budget, and the ledger
  equals the audited spends (per spend: the ε of its last ledger entry in the log);
- `hub audit verify` passes; every output population file is readable; the release
  files are byte-for-byte unchanged.

``crash`` runs the same load, ``kill -9``s the server in the middle, restarts it and runs
the same checks over the responses the clients did receive.

    python -m benchmarks.load [PATIENTS] [SECONDS]
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import os
import random
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import httpx
import pyarrow.parquet as pq

from benchmarks.api import free_port, fresh_home, start_server
from connectors import releases
from governance.audit.events import SUPPORTING_ACTIONS
from governance.facade import Governance

CLIENTS = 32
RESTART_QUERY_TIMEOUT_S = 3.0
STEWARD_CLIENTS = 4
BUDGETS = (0.3, 5.0, 5.0, 5.0)  # the first project runs out during a run
GRANTS = {
    "patients": ["person_id", "sex", "year_of_birth", "imd_decile", "ethnicity"],
    "conditions": ["person_id", "code", "onset_date"],
    "observations": ["person_id", "code", "value"],
}
DUMMY_SQL = (
    "SELECT sex, count(*) AS n FROM patients GROUP BY sex",
    "SELECT imd_decile, count(*) AS n FROM patients GROUP BY imd_decile ORDER BY 1",
    "SELECT sex, year_of_birth FROM patients LIMIT 50",
    "SELECT code, count(*) AS n FROM conditions GROUP BY code ORDER BY n DESC LIMIT 10",
    "SELECT p.sex, count(*) AS n FROM conditions c JOIN patients p USING (person_id) "
    "WHERE c.code = '44054006' GROUP BY p.sex",
)
DP_SQL = (
    "SELECT sex, count(*) AS n FROM patients GROUP BY sex",
    "SELECT imd_decile, count(*) AS n FROM patients GROUP BY imd_decile",
    "SELECT count(DISTINCT person_id) AS people FROM conditions WHERE code = '44054006'",
)
EXACT_SQL = "SELECT sex, count(*) AS n FROM patients WHERE imd_decile = {d} GROUP BY sex"
KINDS = (
    "dummy",
    "dp",
    "exact",
    "query.get",
    "project.get",
    "project.request",
    "audit.read",
    "outputs.list",
    "output.approve",
    "project.approve",
)


@dataclasses.dataclass(frozen=True)
class Setup:
    home: Path
    keys: dict[str, str]
    researchers: list[str]
    stewards: list[str]
    projects: dict[str, str]  # researcher → project id
    budgets: dict[str, float]  # project id → ε


@dataclasses.dataclass(frozen=True)
class Record:
    kind: str
    who: str
    status: int | None  # None: no response (connection refused or reset)
    request_id: str | None
    code: str | None
    start: float
    ms: float


def prepare(home: Path, *, researchers: int = 4, stewards: int = 2) -> Setup:
    """Users and approved projects on a hub home that holds a real and a dummy release."""
    gov = Governance.open(home, create_keys=True)
    until = dt.date.today() + dt.timedelta(days=30)
    keys: dict[str, str] = {}
    users = {}
    names = [f"r{i}" for i in range(researchers)] + [f"s{i}" for i in range(stewards)]
    for name in names:
        user, key = gov.people.add(
            user_id=name,
            name=name.upper(),
            role="researcher" if name.startswith("r") else "steward",
            organisation="UoB",
            organisation_type="university",
            accreditation_expires=until,
            actor="bench",
        )
        keys[name], users[name] = key, user
    projects, budgets = {}, {}
    for i in range(researchers):
        owner = f"r{i}"
        p = gov.projects.request(
            requester=users[owner],
            title=f"load {owner}",
            purpose="load test",
            lay_summary="load test",
            grants=GRANTS,
            days=30,
        )
        eps = BUDGETS[i % len(BUDGETS)]
        gov.projects.approve(p.project_id, steward=users["s0"], epsilon=eps, delta=1e-6)
        projects[owner], budgets[p.project_id] = p.project_id, eps
    return Setup(
        home,
        keys,
        [n for n in names if n.startswith("r")],
        [n for n in names if n.startswith("s")],
        projects,
        budgets,
    )


class Driver:
    """Client threads issuing the mixed workload until a deadline or ``stop``."""

    def __init__(self, url: str, setup: Setup, *, clients: int = CLIENTS, seed: int = 9) -> None:
        self.url = url
        self.setup = setup
        self.clients = clients
        self.seed = seed
        self.stop = threading.Event()
        self.records: list[Record] = []
        self._lock = threading.Lock()
        self._requested: list[str] = []  # projects requested, awaiting approval
        self._queries: dict[str, list[str]] = defaultdict(list)

    def run(self, seconds: float) -> list[Record]:
        deadline = time.perf_counter() + seconds
        threads = [
            threading.Thread(target=self._client, args=(i, deadline), daemon=True)
            for i in range(self.clients)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return self.records

    def _call(
        self, c: httpx.Client, kind: str, who: str, method: str, path: str, **kw: Any
    ) -> httpx.Response | None:
        t = time.perf_counter()
        try:
            r = c.request(method, path, **kw)
        except httpx.HTTPError:
            rec = Record(kind, who, None, None, None, t, (time.perf_counter() - t) * 1000)
            with self._lock:
                self.records.append(rec)
            return None
        ms = (time.perf_counter() - t) * 1000
        code = None
        if r.status_code >= 400 and r.headers.get("content-type", "").startswith(
            "application/problem+json"
        ):
            code = r.json().get("code")
        with self._lock:
            self.records.append(
                Record(kind, who, r.status_code, r.headers.get("x-request-id"), code, t, ms)
            )
        return r

    def _client(self, i: int, deadline: float) -> None:
        rng = random.Random(self.seed * 1000 + i)
        stewards = self.setup.stewards
        researchers = self.setup.researchers
        # one client in eight is a steward (4 of 32), at least one
        steward_clients = max(1, self.clients * STEWARD_CLIENTS // CLIENTS)
        who = (
            stewards[i % len(stewards)]
            if i < steward_clients
            else researchers[i % len(researchers)]
        )
        headers = {"Authorization": f"Bearer {self.setup.keys[who]}"}
        with httpx.Client(base_url=self.url, headers=headers, timeout=120) as c:
            while time.perf_counter() < deadline and not self.stop.is_set():
                if who in stewards:
                    self._steward(c, who, rng)
                else:
                    self._researcher(c, who, rng)

    def _researcher(self, c: httpx.Client, who: str, rng: random.Random) -> None:
        project = self.setup.projects[who]
        path = f"/projects/{project}/queries"
        roll = rng.random()
        if roll < 0.42:
            r = self._call(
                c,
                "dummy",
                who,
                "POST",
                path,
                json={"sql": rng.choice(DUMMY_SQL), "target": "dummy"},
            )
        elif roll < 0.72:
            body = {
                "sql": rng.choice(DP_SQL),
                "target": "real",
                "mode": "dp",
                "epsilon": rng.choice((0.01, 0.02, 0.05)),
            }
            r = self._call(c, "dp", who, "POST", path, json=body)
        elif roll < 0.78:
            sql = EXACT_SQL.format(d=rng.randint(1, 10))
            r = self._call(
                c, "exact", who, "POST", path, json={"sql": sql, "target": "real", "mode": "exact"}
            )
        elif roll < 0.88:
            with self._lock:
                known = list(self._queries[project][-20:])
            if known:
                self._call(c, "query.get", who, "GET", f"{path}/{rng.choice(known)}")
            return
        elif roll < 0.95:
            self._call(c, "project.get", who, "GET", f"/projects/{project}")
            return
        else:
            body = {
                "title": "follow-up",
                "purpose": "load test",
                "lay_summary": "load test",
                "grants": {"patients": ["person_id", "sex"]},
                "days": 30,
            }
            r = self._call(c, "project.request", who, "POST", "/projects", json=body)
            if r is not None and r.status_code == 201:
                with self._lock:
                    self._requested.append(r.json()["project_id"])
            return
        if r is not None and r.status_code == 200 and "query_id" in r.json():
            with self._lock:
                self._queries[project].append(r.json()["query_id"])

    def _steward(self, c: httpx.Client, who: str, rng: random.Random) -> None:
        roll = rng.random()
        if roll < 0.4:
            self._call(c, "audit.read", who, "GET", "/audit", params={"limit": 50})
        elif roll < 0.8:
            r = self._call(c, "outputs.list", who, "GET", "/outputs")
            if r is not None and r.status_code == 200 and r.json()["outputs"]:
                pending = r.json()["outputs"]
                output = rng.choice(pending[:5])["output_id"]
                self._call(c, "output.approve", who, "POST", f"/outputs/{output}/approve", json={})
        else:
            with self._lock:
                project = self._requested.pop() if self._requested else None
            if project is not None:
                self._call(
                    c,
                    "project.approve",
                    who,
                    "POST",
                    f"/projects/{project}/approve",
                    json={"epsilon": 1.0},
                )


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def release_digests(home: Path) -> dict[str, str]:
    out = {}
    for h in (home, home / "dummy"):
        for release in releases.list_releases(h):
            out[str(release.path)] = _sha256(release.path)
    return out


def check(setup: Setup, records: list[Record], digests: dict[str, str]) -> dict[str, Any]:
    """What the hub's stores say against what the clients saw; ``violations`` lists breaks."""
    home = setup.home
    violations: list[str] = []
    con = sqlite3.connect(home / "governance" / "governance.sqlite3")
    try:
        bodies = [json.loads(b) for (b,) in con.execute("SELECT body FROM audit_entries")]
        spends = {
            r[0]: (r[1], r[2], r[3])
            for r in con.execute("SELECT spend_id, project_id, state, epsilon FROM budget_spends")
        }
        totals = dict(con.execute("SELECT project_id, epsilon_total FROM projects").fetchall())
    finally:
        con.close()
    outcomes: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for b in bodies:
        if b.get("request_id") and b["action"] not in SUPPORTING_ACTIONS:
            outcomes[b["request_id"]].append(b)
    responded = [r for r in records if r.status is not None]
    server_errors = [r for r in responded if r.status is not None and r.status >= 500]
    if server_errors:
        violations.append(f"{len(server_errors)} responses were 5xx")
    matched = 0
    for r in responded:
        if r.request_id is None:
            violations.append(f"a {r.kind} response had no X-Request-ID")
            continue
        found = outcomes.get(r.request_id, [])
        if len(found) != 1:
            violations.append(f"{r.kind} {r.request_id}: {len(found)} outcome entries")
            continue
        expected = "allowed" if r.status is not None and r.status < 400 else "denied"
        if found[0]["decision"] != expected:
            violations.append(f"{r.kind} {r.request_id}: {r.status} audited {found[0]['decision']}")
            continue
        matched += 1
    seen = {r.request_id for r in responded}
    unanswered = [rid for rid in outcomes if rid not in seen]
    # the budget: spent (committed + reserved) within the total, and equal to the audit
    spent: dict[str, float] = defaultdict(float)
    for project, state, eps in spends.values():
        if state in ("reserved", "committed"):
            spent[project] += eps
    for project, eps in spent.items():
        if eps > totals[project] + 1e-9:
            violations.append(f"{project} spent ε {eps} of {totals[project]}")
    audited: dict[int, float] = {}
    for b in bodies:  # in seq order: the last ledger entry of a spend is its state
        if b["action"] in SUPPORTING_ACTIONS and b.get("decision") == "allowed":
            spend_id = json.loads(b.get("details", "{}")).get("spend_id")
            audited[spend_id] = 0.0 if b["action"] == "budget.refund" else b["epsilon"]
    ledger = {
        sid: (eps if state in ("reserved", "committed") else 0.0)
        for sid, (_, state, eps) in spends.items()
    }
    if set(ledger) != set(audited) or any(abs(ledger[s] - audited[s]) > 1e-12 for s in ledger):
        violations.append("the ledger differs from the audited spends")
    verify = subprocess.run(
        [sys.executable, "-m", "hub.cli", "audit", "verify"],
        env={**os.environ, "HUB_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    if verify.returncode != 0:
        violations.append("hub audit verify failed: " + verify.stdout[-300:] + verify.stderr[-300:])
    unreadable = 0
    population_files = list((home / "outputs").rglob("*.population.parquet"))
    for f in population_files:
        try:
            pq.read_metadata(f)
        except Exception:
            unreadable += 1
    if unreadable:
        violations.append(f"{unreadable} output population files cannot be read")
    partial = list((home / "outputs").rglob("*.partial"))
    changed = [p for p, d in digests.items() if _sha256(Path(p)) != d]
    if changed:
        violations.append(f"release files changed: {changed}")
    return {
        "responses": len(responded),
        "no_response": len(records) - len(responded),
        "matched_outcome_entries": matched,
        "entries": len(bodies),
        "outcome_entries_without_response": len(unanswered),
        "spends": len(ledger),
        "epsilon_spent": {p: round(e, 6) for p, e in sorted(spent.items())},
        "budgets": {p: totals[p] for p in sorted(spent)},
        "audit_verify": " ".join((verify.stdout + verify.stderr).split())[-200:],
        "population_files": len(population_files),
        "partial_files": len(partial),
        "release_files_checked": len(digests),
        "violations": violations[:20],
        "violation_count": len(violations),
    }


def summarise(records: list[Record], seconds: float) -> dict[str, Any]:
    responded = [r for r in records if r.status is not None]
    by_kind: dict[str, Any] = {}
    for kind in KINDS:
        ms = [r.ms for r in responded if r.kind == kind]
        if not ms:
            continue
        by_kind[kind] = {
            "n": len(ms),
            "p50_ms": round(statistics.median(ms), 1),
            "p95_ms": round(_pct(ms, 0.95), 1),
            "p99_ms": round(_pct(ms, 0.99), 1),
            "statuses": dict(
                sorted(Counter(str(r.status) for r in responded if r.kind == kind).items())
            ),
        }
    ms = [r.ms for r in responded]
    return {
        "seconds": round(seconds, 1),
        "requests": len(responded),
        "throughput_rps": round(len(responded) / seconds, 1),
        "p50_ms": round(statistics.median(ms), 1) if ms else None,
        "p95_ms": round(_pct(ms, 0.95), 1),
        "p99_ms": round(_pct(ms, 0.99), 1),
        "by_kind": by_kind,
        "codes": dict(sorted(Counter(r.code for r in responded if r.code).items())),
    }


def load(
    home: Path, *, seconds: float, clients: int = CLIENTS
) -> tuple[dict[str, Any], list[Record]]:
    """Prepare people and projects on ``home``, serve it, drive it, check it."""
    setup = prepare(home)
    digests = release_digests(home)
    port = free_port()
    proc = start_server(home, port)
    try:
        driver = Driver(f"http://127.0.0.1:{port}/v1", setup, clients=clients)
        t = time.perf_counter()
        records = driver.run(seconds)
        elapsed = time.perf_counter() - t
    finally:
        proc.terminate()
        proc.wait(30)
    return {**summarise(records, elapsed), "checks": check(setup, records, digests)}, records


def crash(home: Path, *, seconds: float, clients: int = CLIENTS) -> dict[str, Any]:
    """The same load, with `kill -9` of the server half way; restart, then check."""
    setup = prepare(home)
    digests = release_digests(home)
    port = free_port()
    proc = start_server(home, port, workers=2)  # a supervisor and its workers
    driver = Driver(f"http://127.0.0.1:{port}/v1", setup, clients=clients, seed=11)
    runner = threading.Thread(target=driver.run, args=(seconds * 10,), daemon=True)
    runner.start()
    time.sleep(seconds / 2)
    before = len(driver.records)
    workers = [pid for pid in process_tree(proc.pid) if pid != proc.pid]
    proc.send_signal(signal.SIGKILL)
    driver.stop.set()  # each client's request in flight fails; none starts after
    proc.wait()
    runner.join()
    # the killed server's workers notice their supervisor is gone and stop (hub.app)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(_alive(pid) for pid in workers):
        time.sleep(0.2)
    orphans = sum(1 for pid in workers if _alive(pid))
    records = list(driver.records)
    # `hub serve` sweeps half-written population files once at start, only those older
    # than its query timeout (a running CLI or training may be writing one): restart
    # with a short timeout, after it has passed, so the killed server's files are swept
    time.sleep(RESTART_QUERY_TIMEOUT_S + 0.5)
    restarted = start_server(home, port, query_timeout=RESTART_QUERY_TIMEOUT_S)
    try:
        after = Driver(f"http://127.0.0.1:{port}/v1", setup, clients=8, seed=12)
        resumed = after.run(min(5.0, seconds / 2))
    finally:
        restarted.terminate()
        restarted.wait(30)
    checks = check(setup, records + resumed, digests)
    return {
        "workers_before_kill": len(workers),
        "workers_left_15s_after_kill": orphans,
        "responses_before_kill": before,
        "requests_without_response": sum(1 for r in records if r.status is None),
        "responses_after_restart": sum(1 for r in resumed if r.status is not None),
        "statuses_after_restart": dict(Counter(str(r.status) for r in resumed)),
        "checks": checks,
    }


def plot(records: list[Record], out: Path) -> list[str]:
    """Latency CDF per kind and throughput per second, as PNGs under ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    responded = [r for r in records if r.status is not None]
    fig, ax = plt.subplots(figsize=(7, 4))
    for kind in KINDS:
        ms = sorted(r.ms for r in responded if r.kind == kind)
        if len(ms) >= 5:
            ax.plot(ms, [(i + 1) / len(ms) for i in range(len(ms))], label=f"{kind} ({len(ms)})")
    ax.set_xscale("log")
    ax.set_xlabel("latency (ms, log scale)")
    ax.set_ylabel("share of requests")
    ax.set_title("hub serve under 32 clients: latency by request kind")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "load_latency.png", dpi=110)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(7, 3))
    start = min(r.start for r in responded)
    per_second = Counter(int(r.start - start) for r in responded)
    xs = sorted(per_second)
    ax.bar(xs, [per_second[x] for x in xs], width=1.0)
    ax.set_xlabel("second of the run")
    ax.set_ylabel("responses")
    ax.set_title("throughput per second")
    fig.tight_layout()
    fig.savefig(out / "load_throughput.png", dpi=110)
    plt.close(fig)
    return ["load_latency.png", "load_throughput.png"]


def process_tree(root: int) -> list[int]:
    """``root`` and its descendants, from /proc (the workers of a `hub serve`)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    tree, frontier = [root], [root]
    while frontier:
        children = [pid for pid, parent in parents.items() if parent in frontier]
        tree += children
        frontier = children
    return tree


def _alive(pid: int) -> bool:
    """Whether ``pid`` still runs (a zombie, dead but not yet reaped, does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def run(
    patients: int = 1_000_000,
    seconds: float = 60.0,
    crash_seconds: float = 20.0,
    results: Path | None = None,
) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="bench-load-"))
    try:
        summary, records = load(fresh_home(patients, work / "load"), seconds=seconds)
        plots = plot(records, results) if results is not None else []
        crashed = crash(fresh_home(patients, work / "crash"), seconds=crash_seconds)
        return {
            "patients": patients,
            "clients": CLIENTS,
            "load": summary,
            "crash": crashed,
            "plots": plots,
        }
    finally:
        import shutil

        shutil.rmtree(work, ignore_errors=True)


def markdown(r: dict[str, Any]) -> str:
    s, c = r["load"], r["load"]["checks"]
    k = r["crash"]
    kc = k["checks"]
    spent_vs_budget = ", ".join(
        f"{c['epsilon_spent'][p]:g} / {c['budgets'][p]:g}" for p in c["epsilon_spent"]
    )
    lines = [
        f"### Load: {r['clients']} concurrent clients against `hub serve` ({r['patients']:,}-patient release)",
        "",
        f"{s['requests']:,} responses in {s['seconds']} s: **{s['throughput_rps']} requests/s**; "
        f"latency p50 / p95 / p99 **{s['p50_ms']} / {s['p95_ms']} / {s['p99_ms']} ms**. "
        "Researchers (28 clients, 4 projects, one with a budget small enough to run out) "
        "run dummy, DP and exact queries, read queries and projects and request projects; "
        "stewards (4 clients) read the audit log, review outputs and approve projects.",
        "",
        "| request | n | p50 ms | p95 ms | p99 ms | statuses |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for kind, v in s["by_kind"].items():
        statuses = ", ".join(f"{code}: {n}" for code, n in v["statuses"].items())
        lines.append(
            f"| {kind} | {v['n']:,} | {v['p50_ms']} | {v['p95_ms']} | {v['p99_ms']} | {statuses} |"
        )
    refusals = ", ".join(f"{code} {n}" for code, n in s["codes"].items()) or "none"
    lines += [
        "",
        f"Refusals by code: {refusals}.",
        "",
        "| check after the run | result |",
        "|---|---|",
        f"| responses with exactly one audit outcome entry (by `X-Request-ID`, decision matching the status) | {c['matched_outcome_entries']:,} of {c['responses']:,} |",
        f"| 5xx responses, other violations | {c['violation_count']} violations{': ' + '; '.join(c['violations']) if c['violations'] else ''} |",
        f"| ε spent per project (committed + reserved) vs budget | {spent_vs_budget} |",
        f"| ledger equals the audited spends ({c['spends']:,} spends) | {'yes' if not any('ledger' in v for v in c['violations']) else 'NO'} |",
        f"| `hub audit verify` | {c['audit_verify']} |",
        f"| release files unchanged, output population files readable | {c['release_files_checked']} releases, {c['population_files']} population files |",
        "",
        "![latency by request kind](plots/load_latency.png)",
        "![throughput per second](plots/load_throughput.png)",
        "",
        "#### `kill -9` of the server under load, then restart",
        "",
        f"{k['responses_before_kill']:,} responses before the kill, {k['requests_without_response']} requests "
        f"without a response (in flight or refused while it was down); after the restart "
        f"{k['responses_after_restart']} responses ({', '.join(f'{a}: {b}' for a, b in k['statuses_after_restart'].items())}).",
        "",
        "| check after the restart | result |",
        "|---|---|",
        f"| every response received has its outcome entry | {kc['matched_outcome_entries']:,} of {kc['responses']:,} |",
        f"| outcome entries whose response never arrived (written, then the process died) | {kc['outcome_entries_without_response']} |",
        f"| violations (5xx, missing entries, overspend, ledger ≠ audit, files) | {kc['violation_count']}{': ' + '; '.join(kc['violations']) if kc['violations'] else ''} |",
        f"| `hub audit verify` | {kc['audit_verify']} |",
        f"| partial output files left (swept at the next start once older than its query timeout) | {kc['partial_files']} |",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    secs = float(sys.argv[2]) if len(sys.argv) > 2 else 60.0
    result = run(
        n, secs, crash_seconds=max(6.0, secs / 3), results=Path(__file__).with_name("plots")
    )
    print(json.dumps(result, indent=2))
    print(markdown(result))
