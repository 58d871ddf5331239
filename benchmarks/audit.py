"""Durable audit appends per second (1 and 16 writers) and `hub audit verify` on 1M entries.

Targets (issue 5): at least 2,000 durable appends/s; verifying 1M entries in at most 10 s.
Every append is its own fsynced transaction (SQLite WAL, synchronous=FULL) that also
re-signs the head with Ed25519. The 1M-entry log is built with the same ``append``
code, batched 10,000 to a transaction to save time; verification does not care.
"""

from __future__ import annotations

import json
import multiprocessing
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from governance.audit.events import AuditEvent
from governance.facade import Governance

EVENT = AuditEvent(
    action="query.real.dp", actor="ana", key_id="0123456789ab", role="researcher", project="p-1a2b3c4d",
    query_text="SELECT sex, count(*) FROM patients GROUP BY sex", release="release-0001",
    epsilon=0.1, delta=0.0, row_count=2, result_sha256="0" * 64,
)  # fmt: skip


def _writer(home: str, n: int, start: Any) -> None:
    gov = Governance.open(Path(home))
    start.wait()
    for _ in range(n):
        gov.audit.record(EVENT)


def appends(writers: int, per_writer: int, home: Path) -> float:
    Governance.open(home, create_keys=True)
    ctx = multiprocessing.get_context("fork")
    start = ctx.Event()
    procs = [
        ctx.Process(target=_writer, args=(str(home), per_writer, start)) for _ in range(writers)
    ]
    for p in procs:
        p.start()
    t = time.perf_counter()
    start.set()
    for p in procs:
        p.join()
    return writers * per_writer / (time.perf_counter() - t)


def verify(entries: int, home: Path) -> dict[str, Any]:
    gov = Governance.open(home, create_keys=True)
    batch = 10_000
    for _ in range(entries // batch):
        with gov.store.transaction() as con:
            for _ in range(batch):
                gov.audit.append(con, EVENT)
    t = time.perf_counter()
    report = gov.audit.verify()
    return {
        "entries": report.entries,
        "ok": report.ok,
        "seconds": round(time.perf_counter() - t, 2),
    }


def run(entries: int = 1_000_000) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="bench-audit-"))
    try:
        single = appends(1, 3000, work / "single")
        many = appends(16, 300, work / "many")
        v = verify(entries, work / "verify")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {
        "appends_per_s_1_writer": round(single),
        "appends_per_s_16_writers": round(many),
        "verify": v,
    }


def markdown(r: dict[str, Any]) -> str:
    v = r["verify"]
    return "\n".join(
        [
            "### Audit log (SQLite WAL, fsync per append, Ed25519-signed head)",
            "",
            "| durable appends/s, 1 writer | durable appends/s, 16 writer processes | `hub audit verify`, entries | verify time |",
            "|---:|---:|---:|---:|",
            f"| {r['appends_per_s_1_writer']:,} | {r['appends_per_s_16_writers']:,} | {v['entries']:,} ({'ok' if v['ok'] else 'FAILED'}) | {v['seconds']} s |",
            "",
            "Targets: at least 2,000 durable appends/s; 1M entries verified in at most 10 s.",
        ]
    )


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    result = run(n)
    print(json.dumps(result, indent=2))
    print(markdown(result))
