"""Exact outputs at scale: submission, disclosure ledger, review and listing latency as a
project accumulates 10, 100 and 1,000 outputs.

Each exact output runs the researcher's query, the hub's per-person statistics (people,
largest contributions per cell), disclosure control, and the disclosure ledger's check
of its population against every earlier output of the project, in pairs and triples
(trackers). The ledger check is the part that grows with the number of outputs; it is
also timed alone, beside the set-based statement of the rule it must agree with
(``tracker_flags``) where that is still affordable.

    python -m benchmarks.outputs [PATIENTS] [OUTPUTS]
"""

from __future__ import annotations

import datetime as dt
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from connectors.ingest import ingest
from connectors.secrets import resolve_keys
from governance.facade import Governance
from governance.outputs.disclosure_ledger import tracker_flags
from synthetic_data.generator import SynthConfig, generate

MARKS = (10, 100, 1000)
GRANTS = {"patients": ["person_id", "sex", "year_of_birth", "imd_decile"]}


def _ms(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 2),
        "p95_ms": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))] * 1000, 2),
    }


def _setup(patients: int, work: Path) -> tuple[Governance, dict[str, Any], str]:
    src = generate(SynthConfig(patients=patients, seed=5), work / "real").out
    home = work / "hub"
    ingest(src, fmt="native", home=home, keys=resolve_keys(home, create=True))
    gov = Governance.open(home, create_keys=True)
    who = {}
    for user_id, role in (("ana", "researcher"), ("sam", "steward")):
        _, key = gov.people.add(
            user_id=user_id, name=user_id, role=role, organisation="UoB",
            organisation_type="university",
            accreditation_expires=dt.date.today() + dt.timedelta(days=30), actor="bench",
        )  # fmt: skip
        who[user_id] = gov.people.authenticate(key)
    project = gov.projects.request(
        requester=who["ana"].user, title="bench", purpose="p", lay_summary="l",
        grants=GRANTS, days=30,
    )  # fmt: skip
    gov.projects.approve(project.project_id, steward=who["sam"].user, epsilon=1.0, delta=1e-6)
    return gov, who, project.project_id


def _sql(rng: random.Random) -> str:
    lo = rng.randint(1930, 2010)
    hi = lo + rng.randint(0, 30)
    deciles = sorted(rng.sample(range(1, 11), rng.randint(3, 10)))
    return (
        "SELECT sex, count(*) AS n, avg(year_of_birth) AS mean_yob FROM patients "
        f"WHERE year_of_birth BETWEEN {lo} AND {hi} "
        f"AND imd_decile IN ({', '.join(map(str, deciles))}) GROUP BY sex"
    )


def run(patients: int = 10_000, outputs: int = max(MARKS)) -> dict[str, Any]:
    rng = random.Random(3)
    with tempfile.TemporaryDirectory() as tmp:
        gov, who, pid = _setup(patients, Path(tmp))
        service, review = gov.queries, gov.outputs
        submit: list[float] = []
        ids: list[str] = []
        results: dict[str, Any] = {"patients": patients, "marks": {}}
        for n in range(1, outputs + 1):
            t = time.perf_counter()
            answer = service.run(who["ana"], pid, sql=_sql(rng), target="real", mode="exact")
            submit.append(time.perf_counter() - t)
            ids.append(answer["output_id"])
            if n not in MARKS:
                continue
            mark: dict[str, Any] = {"submit": _ms(submit[-min(n, 20) :])}
            index = review.ledger.index(pid)
            probe = index.maps[-1] ^ (1 << 3)  # a population one person away from the last
            t = time.perf_counter()
            flags = index.flags(probe, threshold=7)
            mark["ledger_check_ms"] = round((time.perf_counter() - t) * 1000, 2)
            mark["ledger_flags_on_probe"] = len(flags)
            if n <= 100:
                earlier = dict(zip(index.ids, index.maps, strict=True))
                t = time.perf_counter()
                tracker_flags(probe, earlier, threshold=7)
                mark["set_rule_check_ms"] = round((time.perf_counter() - t) * 1000, 2)
            t = time.perf_counter()
            review.review(who["sam"], ids[-1], decision="approve")
            mark["review_ms"] = round((time.perf_counter() - t) * 1000, 2)
            t = time.perf_counter()
            queue = review.pending(who["sam"])
            mark["steward_queue_ms"] = round((time.perf_counter() - t) * 1000, 2)
            t = time.perf_counter()
            mine = review.find(who["ana"], project_id=pid)
            mark["researcher_list_ms"] = round((time.perf_counter() - t) * 1000, 2)
            mark["pending"], mark["listed"] = len(queue), len(mine)
            results["marks"][str(n)] = mark
        return results


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"Exact outputs on a {result['patients']:,}-person release, one project accumulating "
        "outputs (each: query, per-person statistics, SDC, disclosure ledger over every "
        "earlier output in pairs and triples).",
        "",
        "| outputs | submit p50 / p95 (ms) | ledger check (ms) | set rule (ms) | review (ms) "
        "| steward queue (ms) | researcher list (ms) |",
        "|---|---|---|---|---|---|---|",
    ]
    for n, m in result["marks"].items():
        lines.append(
            f"| {n} | {m['submit']['p50_ms']} / {m['submit']['p95_ms']} | "
            f"{m['ledger_check_ms']} | {m.get('set_rule_check_ms', '—')} | {m['review_ms']} | "
            f"{m['steward_queue_ms']} | {m['researcher_list_ms']} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:]]
    out = run(*args)
    print(markdown(out))
