"""Trial feasibility (issue 19): time from an approved project to its first answer through
the API, and the relative error of per-site DP counts at the pre-approved ε.

A life-science company's researcher and a steward work through a real `hub serve`: the
researcher requests a commercial project (feasibility grants, public benefit, agreement),
the steward approves it, and the clock runs from the approval's response to the first
feasibility answer. Then the same specs run ``repeats`` more times; each per-trust count
is compared with the exact count of the same SQL run on the release directly (plain
DuckDB, no bounding: with k equal to the number of trusts nothing is truncated, so the
error is the noise alone). Target: relative error ≤ 5% for sites with ≥ 1,000 eligible.
"""

from __future__ import annotations

import datetime as dt
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import duckdb
import httpx

from benchmarks.api import fresh_home, serving
from connectors import releases
from governance.facade import Governance
from governance.feasibility import EPSILON, FEASIBILITY_GRANTS, parse_spec
from governance.feasibility.compile import compile_spec

AS_OF = "2024-12-31"
SPECS: dict[str, dict[str, Any]] = {
    "hypertension, 40-90": {
        "title": "hypertension, 40-90",
        "as_of": AS_OF,
        "population": {"age": [40, 90]},
        "include": [{"kind": "condition", "codelist": "hypertension-snomed"}],
    },
    "T2D on metformin, no CKD": {
        "title": "T2D on metformin, no CKD",
        "as_of": AS_OF,
        "include": [
            {"kind": "condition", "codelist": "type2-diabetes-snomed"},
            {"kind": "medication", "codes": ["0601022B0"]},
        ],
        "exclude": [{"kind": "condition", "codelist": "ckd-snomed"}],
    },
}
LARGE = 1_000  # sites with at least this many eligible people carry the target


def _truth(path: Path, spec: dict[str, Any]) -> dict[str, int]:
    """Exact per-trust counts: the compiled sites SQL run on the release, unbounded."""
    sql = compile_spec(parse_spec(spec)).sites_sql
    con = duckdb.connect(str(path), read_only=True)
    try:
        return {str(code): int(n) for code, n, _ in con.execute(sql).fetchall()}
    finally:
        con.close()


def run(patients: int = 100_000, repeats: int = 20) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-feasibility-") as tmp:
        home = fresh_home(patients, Path(tmp) / "hub")
        gov = Governance.open(home, create_keys=True)
        keys = {}
        until = dt.date.today() + dt.timedelta(days=30)
        for user_id, role, org, kind in (
            ("cara", "researcher", "Acme Bio", "life_science_company"),
            ("sam", "steward", "Regional hub", "nhs_trust"),
        ):
            _, keys[user_id] = gov.people.add(
                user_id=user_id, name=user_id, role=role, organisation=org,
                organisation_type=kind, accreditation_expires=until, actor="cli:bench",
            )  # fmt: skip
        release = releases.get_release(home)
        truths = {name: _truth(release.path, spec) for name, spec in SPECS.items()}
        with serving(home) as base:
            cara = httpx.Client(
                base_url=base, headers={"Authorization": f"Bearer {keys['cara']}"}, timeout=120
            )
            sam = httpx.Client(
                base_url=base, headers={"Authorization": f"Bearer {keys['sam']}"}, timeout=120
            )
            made = cara.post(
                "/projects",
                json={
                    "title": "trial feasibility", "purpose": "site selection",
                    "lay_summary": "where could a trial recruit", "grants": FEASIBILITY_GRANTS,
                    "days": 30, "public_benefit": "Trials of new medicines reach the "
                    "region's patients sooner.", "daa_reference": "DAA-BENCH-1",
                    "daa_expires": (dt.date.today() + dt.timedelta(days=60)).isoformat(),
                },
            )  # fmt: skip
            made.raise_for_status()
            pid = made.json()["project_id"]
            budget = EPSILON * (repeats + 1) * len(SPECS)
            sam.post(f"/projects/{pid}/approve", json={"epsilon": budget, "delta": 0.0})
            approved_at = time.perf_counter()
            first = cara.post(
                f"/projects/{pid}/feasibility", json={"spec": next(iter(SPECS.values()))}
            )
            first_answer_s = time.perf_counter() - approved_at
            first.raise_for_status()
            latencies: list[float] = []
            errors: dict[str, dict[str, list[float]]] = {n: {} for n in SPECS}
            for _ in range(repeats):
                for name, spec in SPECS.items():
                    t = time.perf_counter()
                    answer = cara.post(f"/projects/{pid}/feasibility", json={"spec": spec})
                    latencies.append(time.perf_counter() - t)
                    answer.raise_for_status()
                    for row in answer.json()["sites"]:
                        true = truths[name].get(row["code"], 0)
                        if true:
                            rel = abs(row["eligible"] - true) / true
                            errors[name].setdefault(row["code"], []).append(rel)
    per_spec = {}
    for name, by_site in errors.items():
        sites = []
        for code, rels in by_site.items():
            true = truths[name][code]
            sites.append(
                {
                    "site": code,
                    "eligible": true,
                    "mean_rel_error_pct": round(100 * statistics.fmean(rels), 2),
                    "max_rel_error_pct": round(100 * max(rels), 2),
                }
            )
        large = [s for s in sites if s["eligible"] >= LARGE]
        pooled = sorted(
            rel for code, rels in by_site.items() if truths[name][code] >= LARGE for rel in rels
        )
        per_spec[name] = {
            "sites": sorted(sites, key=lambda s: -s["eligible"]),
            "large_sites": len(large),
            "large_mean_rel_error_pct": (
                round(statistics.fmean(s["mean_rel_error_pct"] for s in large), 2)
                if large
                else None
            ),
            "large_max_rel_error_pct": max((s["max_rel_error_pct"] for s in large), default=None),
            # over every run at every large site: the share of answers within 5%
            "large_p95_rel_error_pct": (
                round(100 * pooled[min(len(pooled) - 1, int(0.95 * len(pooled)))], 2)
                if pooled
                else None
            ),
            "large_within_5pct": (
                round(sum(r <= 0.05 for r in pooled) / len(pooled), 4) if pooled else None
            ),
        }
    return {
        "patients": patients,
        "epsilon_per_run": EPSILON,
        "repeats": repeats,
        "first_answer_after_approval_s": round(first_answer_s, 3),
        "answer_p50_s": round(statistics.median(latencies), 3),
        "specs": per_spec,
    }


def markdown(r: dict[str, Any]) -> str:
    lines = [
        f"### Trial feasibility ({r['patients']:,} people, ε = {r['epsilon_per_run']:g} a run)",
        "",
        f"First answer {r['first_answer_after_approval_s']} s after the steward's approval "
        f"(through `hub serve`); answer p50 {r['answer_p50_s']} s over {r['repeats']} runs "
        "of each spec.",
        "",
        "| spec | site | eligible (exact) | mean / max relative error |",
        "|---|---|---:|---:|",
    ]
    for name, s in r["specs"].items():
        for site in s["sites"]:
            lines.append(
                f"| {name} | {site['site']} | {site['eligible']:,} | "
                f"{site['mean_rel_error_pct']}% / {site['max_rel_error_pct']}% |"
            )
    lines += [""]
    for name, s in r["specs"].items():
        if s["large_sites"]:
            lines.append(
                f"- {name}: {s['large_sites']} sites with ≥ {LARGE:,} eligible; relative "
                f"error mean {s['large_mean_rel_error_pct']}%, 95th centile "
                f"{s['large_p95_rel_error_pct']}%, max {s['large_max_rel_error_pct']}%; "
                f"{100 * s['large_within_5pct']:.1f}% of answers within 5%"
            )
    lines += [
        "",
        "Target: relative error ≤ 5% for sites with ≥ 1,000 eligible people (max over runs "
        "shown; each run is one draw of the noise).",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    reps = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    result = run(n, reps)
    print(json.dumps(result, indent=2))
    print(markdown(result))
