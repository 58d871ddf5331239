"""Generator throughput: patients/s, rows/s and peak RSS at 100k and 1M patients.

Target (issue 2): 1M patients with full histories in at most 120 s on 2 cores, peak RSS
under 3 GB. The test range holds 450,000 people per population, so 1M uses
``--nhs-range synthetic``; everything else is identical.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

from benchmarks._measure import run_measured

SIZES = (100_000, 1_000_000)


def run(sizes: tuple[int, ...] = SIZES) -> list[dict[str, float | int | str]]:
    results = []
    for n in sizes:
        out = Path(tempfile.mkdtemp(prefix="bench-synth-"))
        try:
            nhs_range = "test" if n <= 450_000 else "synthetic"
            m = run_measured(
                [
                    sys.executable, "-m", "hub.cli", "synth", "--patients", str(n),
                    "--seed", "1", "--out", str(out / "pop"), "--nhs-range", nhs_range,
                ]
            )  # fmt: skip
            manifest = json.loads((out / "pop" / "manifest.json").read_text())
            rows = sum(v for k, v in manifest["rows"].items() if k != "ground_truth")
            size_mb = sum(p.stat().st_size for p in (out / "pop").rglob("*") if p.is_file()) / 2**20
        finally:
            shutil.rmtree(out, ignore_errors=True)
        results.append(
            {
                "patients": n,
                "seconds": round(m.seconds, 1),
                "patients_per_s": round(n / m.seconds),
                "rows": rows,
                "rows_per_s": round(rows / m.seconds),
                "peak_rss_mb": round(m.peak_rss_mb),
                "output_mb": round(size_mb),
                "nhs_range": nhs_range,
            }
        )
    return results


def markdown(results: list[dict[str, float | int | str]]) -> str:
    lines = [
        "### Synthetic EHR generator (`hub synth`, Parquet, 2 workers)",
        "",
        "| patients | wall s | patients/s | rows | rows/s | peak RSS (tree) | output |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r['patients']:,} | {r['seconds']} | {r['patients_per_s']:,} | {r['rows']:,} "
            f"| {r['rows_per_s']:,} | {r['peak_rss_mb']:,} MB | {r['output_mb']:,} MB |"
        )
    lines += [
        "",
        "Target: 1M patients in at most 120 s with peak RSS under 3 GB. "
        "Synthea's maintainers report about 1,000 patients per minute.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sizes = tuple(int(a) for a in sys.argv[1:]) or SIZES
    res = run(sizes)
    print(json.dumps(res, indent=2))
    print(markdown(res))
