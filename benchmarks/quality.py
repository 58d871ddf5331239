"""Quality gate: GX suite time vs the same checks as plain DuckDB SQL, and defect recall.

Target (issue 4): on 1M generated patients the full suite at most 2x the plain SQL
checks, measured side by side in one run; with --defects, at least 99% of injected
defective rows flagged.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.parquet as pq

from connectors import pseudonym, releases
from connectors.ingest import GateFailed, ingest
from connectors.quality.gate import plain_sql_counts, run_gate
from connectors.secrets import resolve_keys
from synthetic_data.generator import SynthConfig, generate


def gate_side_by_side(release: releases.Release) -> dict[str, Any]:
    """The gate's checks on ``release`` as plain DuckDB SQL, then by GX (no Data Docs):
    seconds each, how many checks, and whether both engines counted the same."""
    t = time.perf_counter()
    plain = plain_sql_counts(release.path, manifest=release.manifest)
    plain_s = time.perf_counter() - t
    t = time.perf_counter()
    result = run_gate(release.path, manifest=release.manifest)
    gx_s = time.perf_counter() - t
    agree = plain == {
        c["id"]: (c["rows_checked"], c["violations"]) for c in result.report["checks"]
    }
    return {
        "plain_sql_s": plain_s,
        "gx_s": gx_s,
        "checks": len(result.report["checks"]),
        "engines_agree": agree,
    }


def speed(patients: int, work: Path) -> dict[str, Any]:
    src = generate(
        SynthConfig(patients=patients, nhs_range="test" if patients <= 450_000 else "synthetic"),
        work / "src",
    ).out
    home = work / "home"
    release = ingest(src, fmt="native", home=home, keys=resolve_keys(home, create=True)).release
    side = gate_side_by_side(release)
    plain_s, gx_s, agree = side["plain_sql_s"], side["gx_s"], side["engines_agree"]
    t = time.perf_counter()
    run_gate(release.path, manifest=release.manifest, out_dir=work / "quality")
    gx_docs_s = time.perf_counter() - t
    return {
        "patients": patients,
        "checks": side["checks"],
        "plain_sql_s": round(plain_s, 1),
        "gx_s": round(gx_s, 1),
        "gx_with_data_docs_s": round(gx_docs_s, 1),
        "ratio": round(gx_s / plain_s, 2),
        "ratio_with_data_docs": round(gx_docs_s / plain_s, 2),
        "engines_agree": agree,
    }


def recall(patients: int, rate: float, work: Path) -> dict[str, Any]:
    src = generate(SynthConfig(patients=patients, seed=5, defects=rate), work / "defective").out
    home = work / "dhome"
    keys = resolve_keys(home, create=True)
    captured: dict[str, Any] = {}

    def gate(staging_db: Path, *, manifest: dict[str, Any], previous_db: Any, out_dir: Path) -> Any:
        captured["r"] = run_gate(staging_db, manifest=manifest, out_dir=None, complete=True)
        return captured["r"].passed, captured["r"].report

    try:
        ingest(src, fmt="native", home=home, keys=keys, gate=gate)
        blocked = False
    except GateFailed:
        blocked = True
    patients_rows = pq.read_table(src / "patients").to_pylist()
    by_pid = {
        pseudonym.person_id(keys.pseudonym, "nhs:" + p["nhs_number"]): p["patient_id"]
        for p in patients_rows
    }
    by_row = {}
    for path in sorted((src / "patients").glob("*.parquet")):
        # quarantined rows name their file by the first 16 hex digits of its sha256
        label = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
        for i, pid in enumerate(
            pq.read_table(path, columns=["patient_id"]).column(0).to_pylist(), 1
        ):
            by_row[f"{label}:{i}"] = pid
    flagged: dict[str, set[Any]] = defaultdict(set)
    for check_id, row_keys in captured["r"].flagged.items():
        table = check_id.split(".")[1]
        for key in row_keys:
            if table == "patients":
                flagged[table].add(by_pid.get(key) or by_row.get(str(key)))
            else:
                flagged[table].add(int(key))
    manifest = (
        duckdb.connect()
        .execute(f"SELECT \"table\", row_key, defect FROM read_parquet('{src}/defects/*.parquet')")
        .fetchall()
    )
    by_kind: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for table, key, defect in manifest:
        by_kind[defect][0] += 1
        by_kind[defect][1] += key in flagged[table]
    found = sum(v[1] for v in by_kind.values())
    return {
        "patients": patients,
        "defect_rate": rate,
        "defective_rows": len(manifest),
        "flagged": found,
        "recall": round(found / len(manifest), 4),
        "blocked": blocked,
        "by_kind": {k: round(v[1] / v[0], 4) for k, v in sorted(by_kind.items())},
    }


def run(patients: int = 1_000_000) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="bench-quality-"))
    try:
        return {"speed": speed(patients, work), "recall": recall(20_000, 0.02, work)}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def markdown(r: dict[str, Any]) -> str:
    s, q = r["speed"], r["recall"]
    kinds = ", ".join(f"{k} {v:.1%}" for k, v in q["by_kind"].items())
    return "\n".join(
        [
            "### Quality gate (Great Expectations on DuckDB) vs the same checks in plain SQL",
            "",
            "| patients | checks | plain SQL | GX suite | ratio | GX suite + Data Docs | engines agree |",
            "|---:|---:|---:|---:|---:|---:|---|",
            f"| {s['patients']:,} | {s['checks']} | {s['plain_sql_s']} s | {s['gx_s']} s | {s['ratio']}× "
            f"| {s['gx_with_data_docs_s']} s ({s['ratio_with_data_docs']}×) | {s['engines_agree']} |",
            "",
            f"Defect recall on {q['patients']:,} patients at `--defects {q['defect_rate']}`: "
            f"{q['flagged']:,} of {q['defective_rows']:,} injected rows flagged (**{q['recall']:.2%}**), "
            f"publication blocked: {q['blocked']}. By kind: {kinds}.",
            "",
            "Target: suite at most 2× plain SQL; at least 99% of defective rows flagged.",
        ]
    )


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    result = run(n)
    print(json.dumps(result, indent=2))
    print(markdown(result))
