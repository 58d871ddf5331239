"""How ingest and the quality gate scale, 100k to 1M patients, in one run (issue 20).

For each size, one generated population is loaded four ways, side by side:

* plain: ``CREATE TABLE ... AS SELECT * FROM read_parquet(...)`` of every table;
* governed: ``connectors.ingest.ingest`` without a gate (pseudonymisation, identifier
  scan, vault, views, manifest, checksum);
* ``hub ingest``: the command as a user runs it (quality gate and Data Docs on), into
  the same home, so the gate also compares with the previous release (drift);
* the quality gate alone on that release: the GX suite vs the same checks as plain
  DuckDB SQL (``plain_sql_counts``), each in a fresh process with GX already imported.

Targets: governed ingest and ``hub ingest`` at most 1.5x the plain load, the gate at
most 1.3x plain SQL, at 200k as well as 1M.

    python -m benchmarks.scaling                  # 100k, 200k and 1M
    python -m benchmarks.scaling 200000 1000000   # chosen sizes
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks._measure import run_measured
from benchmarks.ingest import loads

SIZES = (100_000, 200_000, 1_000_000)

GATE = """
import json, sys
from pathlib import Path
import great_expectations  # noqa: F401  (imported before the clock starts)
from benchmarks.quality import gate_side_by_side
from connectors import releases
home = Path(sys.argv[1])
print(json.dumps(gate_side_by_side(releases.get_release(home, releases.current_id(home)))))
"""


def one(patients: int, work: Path) -> dict[str, Any]:
    measured = loads(patients, work)
    plain, governed, gated = measured["plain"], measured["governed"], measured["gated"]
    home = work / "home"
    # a script file, not ``python -c``: pyspark (imported by GX) exits a process whose
    # main module has no file, taking it for a doctest run without grpc
    script = work / "gate.py"
    script.write_text(GATE)
    # the script imports ``benchmarks`` (not an installed package): from this checkout
    root = str(Path(__file__).resolve().parent.parent)
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
    gate = json.loads(
        run_measured(
            [sys.executable, str(script), str(home)], env={**os.environ, "PYTHONPATH": path}
        ).stdout
    )
    return {
        "patients": patients,
        "plain_load_s": round(plain.seconds, 2),
        "governed_s": round(governed.seconds, 2),
        "governed_ratio": round(governed.seconds / plain.seconds, 2),
        "hub_ingest_s": round(gated.seconds, 2),
        "hub_ingest_ratio": round(gated.seconds / plain.seconds, 2),
        "gate_checks": gate["checks"],
        "gate_plain_sql_s": round(gate["plain_sql_s"], 2),
        "gate_gx_s": round(gate["gx_s"], 2),
        "gate_ratio": round(gate["gx_s"] / gate["plain_sql_s"], 2),
        "engines_agree": gate["engines_agree"],
    }


def run(sizes: tuple[int, ...] = SIZES) -> list[dict[str, Any]]:
    out = []
    for patients in sizes:
        work = Path(tempfile.mkdtemp(prefix=f"bench-scaling-{patients}-"))
        try:
            out.append(one(patients, work))
            print(json.dumps(out[-1]), flush=True)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return out


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "### Ingest and quality gate, 100k to 1M patients (one run)",
        "",
        "| patients | plain load | governed ingest | `hub ingest` (gate on) | gate: plain SQL | gate: GX | engines agree |",
        "|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['patients']:,} | {r['plain_load_s']} s | {r['governed_s']} s "
            f"({r['governed_ratio']}×) | {r['hub_ingest_s']} s ({r['hub_ingest_ratio']}×) "
            f"| {r['gate_plain_sql_s']} s | {r['gate_gx_s']} s ({r['gate_ratio']}×) "
            f"| {r['engines_agree']} |"
        )
    lines += [
        "",
        "Targets (issue 20): governed and `hub ingest` at most 1.5× the plain load; the gate "
        "at most 1.3× the same checks in plain SQL; at 200k as well as 1M.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    chosen = tuple(int(a) for a in sys.argv[1:]) or SIZES
    result = run(chosen)
    print(json.dumps(result, indent=2))
    print(markdown(result))
