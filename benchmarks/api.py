"""API latency and throughput on a 1M-patient release, against raw DuckDB in the same run.

Target (issue 6): light-query (one table, GROUP BY sex) overhead at most 15 ms at p50;
heavy query (observations joined to conditions) at most 1.2x raw DuckDB; throughput
with 16 concurrent clients reported. The dummy release is built from the same 1M people
so that `target: dummy` runs the same SQL on the same data through policy, engine and
audit; DP latency on the real release is reported beside it.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import contextlib
import datetime as dt
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import httpx

from connectors import releases
from connectors.ingest import ingest
from connectors.secrets import resolve_keys
from governance.facade import Governance
from synthetic_data.generator import SynthConfig, generate

LIGHT = "SELECT sex, count(*) AS n FROM patients GROUP BY sex"
HEAVY = (
    "SELECT c.code, count(*) AS n, avg(o.value) AS mean_value FROM observations o "
    "JOIN conditions c ON c.person_id = o.person_id AND c.encounter_id = o.encounter_id "
    "WHERE o.code = '999791000000106' GROUP BY c.code"
)
GRANTS = {
    "patients": ["person_id", "sex"],
    "observations": ["person_id", "encounter_id", "code", "value"],
    "conditions": ["person_id", "encounter_id", "code"],
}


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _timed(fn: Any, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


_HOMES: dict[int, Path] = {}
# a folder where built homes are kept between runs (opt-in): a 1M-patient home takes
# minutes to generate and ingest, and is the same every time (a fixed seed)
KEEP_HOMES_ENV = "HUB_BENCH_HOMES"


def built_home(patients: int) -> Path:
    """A pristine hub home with a real and a dummy release of ``patients`` people (the
    dummy built from the same files), built once per process and copied for each caller
    (benchmarks in one `make bench` run share the build). Removed at exit, unless
    ``$HUB_BENCH_HOMES`` names a folder: then it is built there once and kept for later
    runs (``home-<patients>``, complete once its ``.built`` marker exists)."""
    if patients not in _HOMES:
        keep = os.environ.get(KEEP_HOMES_ENV)
        if keep:
            home = Path(keep).resolve() / f"home-{patients}"
            if not (home / ".built").exists():
                shutil.rmtree(home, ignore_errors=True)  # an interrupted build
                _build_home(patients, home)
                (home / ".built").touch()
        else:
            work = Path(tempfile.mkdtemp(prefix=f"bench-home-{patients}-"))
            atexit.register(shutil.rmtree, work, ignore_errors=True)
            home = work / "hub"
            _build_home(patients, home)
        _HOMES[patients] = home
    return _HOMES[patients]


def _build_home(patients: int, home: Path) -> None:
    src = generate(
        SynthConfig(patients=patients, nhs_range="synthetic" if patients > 450_000 else "test"),
        home.parent / f".src-{patients}",
    ).out
    ingest(src, fmt="native", home=home, keys=resolve_keys(home, create=True))
    ingest(src, fmt="native", home=home / "dummy", keys=resolve_keys(home / "dummy", create=True))
    shutil.rmtree(src)


def fresh_home(patients: int, dest: Path) -> Path:
    """A copy of the built home at ``dest`` (releases hard-linked: they are immutable)."""
    shutil.copytree(
        built_home(patients),
        dest,
        copy_function=_link_or_copy,
        ignore=shutil.ignore_patterns(".built"),
    )
    return dest


def _link_or_copy(src: str, dst: str) -> None:
    if src.endswith(".duckdb"):
        try:
            os.link(src, dst)
            return
        except OSError:
            pass
    shutil.copy2(src, dst)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(
    home: Path, port: int, *, query_timeout: float = 30.0, workers: int | None = None
) -> subprocess.Popen[bytes]:
    """`hub serve` on a hub home, in a real process; returns once /v1/health answers
    (``workers``: its worker processes; default, as `hub serve`, the cores)."""
    more = ["--workers", str(workers)] if workers else []
    proc = subprocess.Popen(
        [sys.executable, "-m", "hub.cli", "serve", "--port", str(port),
         "--query-timeout", str(query_timeout), *more],
        env={**os.environ, "HUB_HOME": str(home)},
        # the server's own log (no patient-level value is ever logged), kept for diagnosis
        stdout=(home / "serve.log").open("ab"),
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/v1/health"
    for _ in range(600):
        if proc.poll() is not None:
            raise RuntimeError(f"hub serve exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("hub serve did not start within 60 s")


@contextlib.contextmanager
def serving(home: Path, *, query_timeout: float = 30.0) -> Iterator[str]:
    """The API base URL (``.../v1``) of a `hub serve` on a free port, stopped on exit."""
    port = free_port()
    proc = start_server(home, port, query_timeout=query_timeout)
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run(patients: int = 1_000_000, repeats: int = 25, seconds: float = 10.0) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="bench-api-"))
    server = None
    try:
        home = fresh_home(patients, work / "hub")
        release_path = releases.get_release(home).path
        gov = Governance.open(home, create_keys=True)
        until = dt.date.today() + dt.timedelta(days=30)
        ana, key = gov.people.add(
            user_id="ana",
            name="Ana",
            role="researcher",
            organisation="UoB",
            organisation_type="university",
            accreditation_expires=until,
            actor="bench",
        )
        sam, _ = gov.people.add(
            user_id="sam",
            name="Sam",
            role="steward",
            organisation="UHB",
            organisation_type="nhs_trust",
            accreditation_expires=until,
            actor="bench",
        )
        project = gov.projects.request(
            requester=ana,
            title="bench",
            purpose="bench",
            lay_summary="bench",
            grants=GRANTS,
            days=30,
        )
        gov.projects.approve(project.project_id, steward=sam, epsilon=100.0, delta=1e-6)
        server = serving(home)
        url = server.__enter__()
        client = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=120)
        path = f"/projects/{project.project_id}/queries"

        def api(sql: str, **extra: Any) -> None:
            r = client.post(path, json={"sql": sql, "target": "dummy", **extra})
            r.raise_for_status()

        # raw DuckDB on a copy of the file: this process already reads the release through
        # the governance engine (grant checks), and DuckDB refuses a second configuration
        raw_path = work / "raw.duckdb"
        shutil.copy(release_path, raw_path)
        raw = duckdb.connect(str(raw_path), read_only=True)

        def direct(sql: str) -> None:
            raw.execute(sql).fetchall()

        results: dict[str, Any] = {"patients": patients}
        for name, sql in (("light", LIGHT), ("heavy", HEAVY)):
            api(sql)
            direct(sql)  # warm both
            a, d, kept = [], [], []
            for i in range(repeats):  # interleaved, so both see the same machine
                # a text the hub has not seen (a fresh alias): no kept answer, no cached
                # check, the query run as a first request would be
                fresh = sql.replace("AS n,", f"AS n{i},").replace("AS n FROM", f"AS n{i} FROM")
                a += _timed(lambda q=fresh: api(q), 1)
                d += _timed(lambda q=fresh: direct(q), 1)
                kept += _timed(lambda q=sql: api(q), 1)  # the same text again: kept answer
            results[name] = {
                "api_p50_ms": round(statistics.median(a), 1),
                "api_p95_ms": round(_pct(a, 0.95), 1),
                "raw_p50_ms": round(statistics.median(d), 1),
                "raw_p95_ms": round(_pct(d, 0.95), 1),
                "overhead_p50_ms": round(statistics.median(a) - statistics.median(d), 1),
                "ratio_p50": round(statistics.median(a) / statistics.median(d), 2),
                "kept_p50_ms": round(statistics.median(kept), 1),
            }
        dp_times = _timed(
            lambda: client.post(
                path, json={"sql": LIGHT, "target": "real", "mode": "dp", "epsilon": 0.01}
            ).raise_for_status(),
            repeats,
        )
        results["dp_light_p50_ms"] = round(statistics.median(dp_times), 1)

        done = 0
        deadline = time.perf_counter() + seconds

        def worker(_: int) -> int:
            n = 0
            with httpx.Client(
                base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=120
            ) as c:
                while time.perf_counter() < deadline:
                    c.post(path, json={"sql": LIGHT, "target": "dummy"}).raise_for_status()
                    n += 1
            return n

        t = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            done = sum(pool.map(worker, range(16)))
        results["throughput_16_clients_rps"] = round(done / (time.perf_counter() - t), 1)
        return results
    finally:
        if server is not None:
            server.__exit__(None, None, None)
        shutil.rmtree(work, ignore_errors=True)


def markdown(r: dict[str, Any]) -> str:
    light, heavy = r["light"], r["heavy"]
    return "\n".join(
        [
            "### API latency and throughput (1M-patient release, `target: dummy` on the same data)",
            "",
            "Each API request is a text the hub has not seen before (a fresh column alias), so "
            "nothing is answered from a kept answer; the last column is the same text asked "
            "again by the same project (its kept answer).",
            "",
            "| query | API p50 / p95 | raw DuckDB p50 / p95 | overhead at p50 | ratio at p50 "
            "| same text again, p50 |",
            "|---|---:|---:|---:|---:|---:|",
            f"| light: `GROUP BY sex` on patients | {light['api_p50_ms']} / {light['api_p95_ms']} ms | {light['raw_p50_ms']} / {light['raw_p95_ms']} ms | {light['overhead_p50_ms']} ms | {light['ratio_p50']}× | {light.get('kept_p50_ms', '—')} ms |",
            f"| heavy: observations ⋈ conditions | {heavy['api_p50_ms']} / {heavy['api_p95_ms']} ms | {heavy['raw_p50_ms']} / {heavy['raw_p95_ms']} ms | {heavy['overhead_p50_ms']} ms | {heavy['ratio_p50']}× | {heavy.get('kept_p50_ms', '—')} ms |",
            "",
            f"DP light query on the real release: p50 {r['dp_light_p50_ms']} ms. Throughput with 16 concurrent clients (light query): {r['throughput_16_clients_rps']} requests/s.",
            "",
            "Targets: light-query overhead at most 15 ms at p50; heavy query at most 1.2× raw DuckDB.",
        ]
    )


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    result = run(n)
    print(json.dumps(result, indent=2))
    print(markdown(result))
