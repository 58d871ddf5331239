"""Governed ingest of generated patients vs a plain DuckDB load of the same files.

Target (issue 3): the whole governed ingest (pseudonymisation, encryption, views,
manifest, checksums) at most 3x ``CREATE TABLE ... AS SELECT * FROM read_parquet(...)``
of the same Parquet files, measured side by side in one run.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from benchmarks._measure import Measured, run_measured

TABLES = ("patients", "encounters", "conditions", "observations", "medications", "procedures")

GOVERNED = """
import sys
from pathlib import Path
from connectors.ingest import ingest
from connectors.secrets import resolve_keys
home = Path(sys.argv[2])
ingest(Path(sys.argv[1]), fmt="native", home=home, keys=resolve_keys(home, create=True))
"""

PLAIN = """
import sys, duckdb
con = duckdb.connect(sys.argv[1])
con.execute("SET enable_progress_bar = false")
for t in {tables!r}:
    con.execute(f"CREATE TABLE {{t}} AS SELECT * FROM read_parquet('{{sys.argv[2]}}/{{t}}/*.parquet')")
con.execute("CHECKPOINT")
"""


def loads(patients: int, work: Path) -> dict[str, Measured]:
    """Generate ``patients`` under ``work``; load them plainly, governed, and by `hub ingest`.

    `hub ingest` (gate and Data Docs on) loads into the governed load's home, so its gate
    also compares with the previous release, as a monthly reload's does.
    """
    src = work / "src"
    nhs_range = "test" if patients <= 450_000 else "synthetic"
    run_measured(
        [sys.executable, "-m", "hub.cli", "synth", "-n", str(patients), "--out", str(src),
         "--nhs-range", nhs_range]
    )  # fmt: skip
    plain = run_measured(
        [sys.executable, "-c", PLAIN.format(tables=TABLES), str(work / "plain.duckdb"), str(src)]
    )
    # issue 3's governed ingest: pseudonymisation, vault, views, manifest, checksum
    governed = run_measured([sys.executable, "-c", GOVERNED, str(src), str(work / "home")])
    # what `hub ingest` does: the same plus the quality gate and its Data Docs
    gated = run_measured(
        [sys.executable, "-m", "hub.cli", "ingest", str(src)],
        env={**os.environ, "HUB_HOME": str(work / "home")},
    )
    return {"plain": plain, "governed": governed, "gated": gated}


def run(patients: int = 1_000_000) -> dict[str, float | int]:
    work = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    try:
        measured = loads(patients, work)
        plain, governed, gated = measured["plain"], measured["governed"], measured["gated"]
        manifest = json.loads(next((work / "home" / "releases").glob("release-*.json")).read_text())
        rows = sum(t["rows_in"] for t in manifest["tables"].values())
        size = next((work / "home" / "releases").glob("release-*.duckdb")).stat().st_size
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {
        "patients": patients,
        "rows": rows,
        "plain_s": round(plain.seconds, 1),
        "plain_peak_rss_mb": round(plain.peak_rss_mb),
        "governed_s": round(governed.seconds, 1),
        "governed_peak_rss_mb": round(governed.peak_rss_mb),
        "ratio": round(governed.seconds / plain.seconds, 2),
        "with_gate_s": round(gated.seconds, 1),
        "with_gate_ratio": round(gated.seconds / plain.seconds, 2),
        "release_mb": round(size / 2**20),
    }


def markdown(r: dict[str, float | int]) -> str:
    return "\n".join(
        [
            "### Governed ingest (`hub ingest`, native Parquet) vs plain DuckDB load",
            "",
            "| patients | rows | plain CTAS | governed ingest | ratio | `hub ingest` with quality gate | peak RSS (plain / governed) | release file |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|",
            f"| {r['patients']:,} | {r['rows']:,} | {r['plain_s']} s | {r['governed_s']} s "
            f"| {r['ratio']}× | {r['with_gate_s']} s ({r['with_gate_ratio']}×) "
            f"| {r['plain_peak_rss_mb']:,} / {r['governed_peak_rss_mb']:,} MB "
            f"| {r['release_mb']:,} MB |",
            "",
            "Target: governed ingest (pseudonymisation, encryption, views, manifest) at most 3× "
            "the plain load of the same files; the quality gate is measured on its own below.",
        ]
    )


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    result = run(n)
    print(json.dumps(result, indent=2))
    print(markdown(result))
