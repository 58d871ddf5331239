"""schemathesis against the hub's own OpenAPI schema, on a live `hub serve`.

Every operation in the schema, each generated request sent as every role (no key, a
member researcher, another researcher, a steward, a modeller, an admin); half the
generated project ids are replaced by a real project's, so that requests get past the
404 and reach the governed layer. Each response must not be a 5xx and must conform to
the schema: a documented status code, a documented content type, a body that matches
the documented schema (errors: RFC 9457 problem+json). Hypothesis runs derandomized
(fixed seed) with a bounded number of examples per operation: `make test` runs a few,
`make bench` many more (``run``).
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from benchmarks.api import fresh_home, serving
from governance.facade import Governance

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
ROLES = ("nobody", "member", "other", "steward", "modeller", "admin")


def fuzz(
    url: str,
    keys: dict[str, str],
    *,
    project_id: str,
    max_examples: int,
) -> dict[str, Any]:
    """Fuzz every operation as every role; ``keys`` maps roles in ROLES to API keys."""
    schema = schemathesis.openapi.from_url(url + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    failures: list[str] = []
    statuses: Counter[str] = Counter()
    by_role: Counter[str] = Counter()
    for operation in operations:

        @settings(
            max_examples=max_examples,
            derandomize=True,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy(), real_project=st.booleans())
        def check(case: Any, real_project: bool) -> None:
            if real_project and case.path_parameters and "project_id" in case.path_parameters:
                case.path_parameters["project_id"] = project_id
            for role in ROLES:
                headers = {"Authorization": f"Bearer {keys[role]}"} if role in keys else {}
                response = case.call(headers=headers)
                statuses[str(response.status_code)] += 1
                by_role[role] += 1
                try:
                    case.validate_response(response, checks=CHECKS, headers=headers)
                except Exception as exc:  # a failed check: recorded, not shrunk
                    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                    failures.append(
                        f"{role} {case.method} {case.operation.path} -> {response.status_code}: "
                        f"{type(exc).__name__}: {first[:200]}"
                    )

        try:
            check()
        except Exception as exc:  # Hypothesis re-raises what schemathesis recorded
            text = " ".join(str(exc).split())
            failures.append(f"{operation.method.upper()} {operation.path}: {text[:300]}")
    return {
        "operations": len(operations),
        "requests": sum(statuses.values()),
        "statuses": dict(sorted(statuses.items())),
        "by_role": dict(by_role),
        "failures": sorted(set(failures)),
    }


def people(home: Path) -> tuple[dict[str, str], str]:
    """One user per role and an approved project of the member researcher's."""
    gov = Governance.open(home, create_keys=True)
    until = dt.date.today() + dt.timedelta(days=30)
    keys, users = {}, {}
    for role, user_id, kind in (
        ("member", "fz-ana", "researcher"),
        ("other", "fz-bob", "researcher"),
        ("steward", "fz-sam", "steward"),
        ("modeller", "fz-mo", "modeller"),
        ("admin", "fz-root", "admin"),
    ):
        users[role], keys[role] = gov.people.add(
            user_id=user_id,
            name=user_id,
            role=kind,
            organisation="UoB",
            organisation_type="university",
            accreditation_expires=until,
            actor="bench",
        )
    project = gov.projects.request(
        requester=users["member"],
        title="fuzz",
        purpose="fuzzing the API",
        lay_summary="fuzzing the API",
        grants={"patients": ["person_id", "sex", "year_of_birth", "imd_decile"]},
        days=30,
        members=["fz-mo"],
    )
    gov.projects.approve(
        project.project_id, steward=users["steward"], epsilon=50.0, delta=1e-6, trainers=["fz-mo"]
    )
    return keys, project.project_id


def run(patients: int = 3_000, max_examples: int = 100) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="bench-fuzz-"))
    try:
        home = fresh_home(patients, work / "hub")
        keys, project_id = people(home)
        t = time.perf_counter()
        with serving(home, query_timeout=5) as url:
            result = fuzz(
                url.removesuffix("/v1"), keys, project_id=project_id, max_examples=max_examples
            )
        return {
            "patients": patients,
            "max_examples": max_examples,
            "seconds": round(time.perf_counter() - t, 1),
            **result,
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


def markdown(r: dict[str, Any]) -> str:
    statuses = ", ".join(f"{s}: {n:,}" for s, n in r["statuses"].items())
    failures = r["failures"]
    lines = [
        "### API fuzzing (schemathesis against the hub's OpenAPI schema, live `hub serve`)",
        "",
        f"{r['operations']} operations × up to {r['max_examples']} generated requests each × "
        f"{len(r['by_role'])} roles (no key, member researcher, other researcher, steward, "
        f"modeller, admin), fixed seed: **{r['requests']:,} requests in {r['seconds']} s**, "
        f"statuses {statuses}. Checks on every response: not a 5xx, a documented status, a "
        "documented content type, a body matching the documented schema.",
        "",
        f"Failures: **{len(failures)}**" + ("" if not failures else ":"),
    ]
    lines += [f"- `{f}`" for f in failures[:20]]
    return "\n".join(lines)


if __name__ == "__main__":
    result = run(max_examples=int(sys.argv[1]) if len(sys.argv) > 1 else 100)
    print(json.dumps(result, indent=2))
    print(markdown(result))
