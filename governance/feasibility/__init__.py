"""Trial feasibility: a spec → DP counts per site (trust) and per area (local authority).

    spec (TOML/JSON, strict: spec.py) → two DP queries (compile.py) → the DP query path:
        SQL policy on the project's grants → dp_query plan → OpenDP certified at the
        run's fixed ε → one budget reservation → bounded answers → noise → one commit
        with the audit entry and the stored run (spec + answer)

A run costs ``EPSILON`` (the pre-approved ε of one feasibility answer, split
``AREA_SHARE`` to the areas and the rest to the sites), charged to the project's ledger
like any DP query: a feasibility project approved with a budget of a few runs answers
the same day, with no further review. The same rules as DP queries hold: everything
that can refuse a run is checked before any budget is reserved or data read; once data
is read the spend is committed whatever happens; one outcome audit entry per request
(``feasibility.run``) carrying the spec's hash, never a count.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from typing import TYPE_CHECKING, Any, Final

from governance.access import roles
from governance.access.projects import authorize
from governance.clock import now
from governance.errors import AccessDenied, AuditUnavailable, HubError, NotFound, PolicyViolation
from governance.feasibility.compile import (
    AREA_KEY,
    ELIGIBLE,
    FEASIBILITY_GRANTS,
    SEEN,
    SITE_KEY,
    Compiled,
    compile_spec,
    missing_grants,
)
from governance.feasibility.spec import FeasibilitySpec, SpecError, load_spec, parse_spec
from governance.outputs.review import sha256_json
from governance.privacy import domains, dp_answer
from governance.privacy import mechanism as dp

if TYPE_CHECKING:
    from governance.access.people import Principal
    from governance.privacy.dp_query import Plan
    from governance.queries import QueryService

__all__ = [
    "AREA_SHARE",
    "EPSILON",
    "FEASIBILITY_GRANTS",
    "Feasibility",
    "FeasibilitySpec",
    "SpecError",
    "load_spec",
    "parse_spec",
]

EPSILON: Final = 1.0  # the pre-approved ε of one feasibility run
AREA_SHARE: Final = 0.2  # of EPSILON; the sites' noise scales with the number of trusts
ACTION: Final = "feasibility.run"


class Feasibility:
    def __init__(self, service: QueryService) -> None:
        self.service = service

    def run(self, principal: Principal, project_id: str, spec: FeasibilitySpec) -> dict[str, Any]:
        """Answer ``spec`` for the project: DP counts per site and per area, charged."""
        service = self.service
        project = service.project_for(principal, project_id)
        canonical = spec.canonical()
        spec_text = json.dumps(canonical, sort_keys=True)
        event: dict[str, Any] = {"action": ACTION, "project": project_id, "query_text": spec_text}
        compiled = compile_spec(spec)
        try:
            roles.require(principal.user, "query.run")
            authorize(project, principal.user, kind="feasibility")
            lacking = missing_grants(spec, project.granted or {})
            if lacking:
                raise AccessDenied(
                    "this spec needs columns the project is not granted: "
                    + "; ".join(f"{t}: {', '.join(c)}" for t, c in lacking.items())
                )
            release = service.release_for("real")
            event.update(service.scope_fields(project, release))  # feeds read and withheld
            engine = service.engine(release, project)  # only its controllers' approved feeds
            cur = engine.cursor()
        except HubError as exc:
            service.audit(principal, decision="denied", reason=str(exc), **event)
            raise
        try:
            plans = []
            for sql, k, share in (
                (compiled.areas_sql, None, AREA_SHARE),
                (compiled.sites_sql, compiled.sites_rows_per_person, 1 - AREA_SHARE),
            ):
                checked = engine.check(cur, sql, granted=project.granted or {}, real=True)
                plans.append(dp_answer.prepare_plan(checked.node, cur, engine, EPSILON * share, k))
        except (HubError, PolicyViolation) as exc:
            cur.close()
            service.audit(principal, decision="denied", reason=str(exc), **event)
            raise
        except BaseException:
            cur.close()
            raise
        run_id = "f-" + secrets.token_hex(6)
        try:
            spend = service.gov.ledger.reserve(
                project_id,
                epsilon=EPSILON,
                delta=0.0,
                purpose=run_id,
                actor=principal.user.user_id,
                key_id=principal.key_id,
                role=principal.user.role,
            )
        except AuditUnavailable:
            cur.close()
            raise
        except HubError as exc:
            cur.close()
            service.audit(principal, decision="denied", reason=str(exc), target=run_id, **event)
            raise
        # data is read from here on: the spend is committed whatever happens
        answers: list[dp.DpAnswer | None] = []
        try:
            for plan, prepared, salt in plans:
                try:
                    answers.append(dp.release(prepared, dp.bounded_answers(cur, plan, salt=salt)))
                except Exception:  # a failure after reading data looks like any other
                    answers.append(None)
        finally:
            cur.close()
        certified = sum(prepared.epsilon for _, prepared, _ in plans)
        status = "done" if all(a is not None for a in answers) else "no_answer"
        body = _body(canonical, compiled, [p for p, _, _ in plans], answers)
        with service.gov.store.transaction() as con:
            spent = service.gov.ledger.commit_in(
                con, spend, epsilon=certified, actor=principal.user.user_id
            )
            state = service.gov.ledger.state_in(con, project_id)
            body.update(
                run_id=run_id,
                project_id=project_id,
                status=status,
                release=release.id,
                epsilon_spent=spent,
                epsilon_remaining=state.epsilon_remaining,
            )
            service.gov.audit.append(
                con,
                service.event_for(
                    principal,
                    release=release.id,
                    epsilon=spent,
                    delta=0.0,
                    row_count=len(body["sites"]) + len(body["areas"]),
                    result_sha256=sha256_json(body),
                    target=run_id,
                    reason=dp.NO_ANSWER_REASON if status == "no_answer" else None,
                    details={"spend_id": spend, "outcome": status},
                    **event,
                ),
            )
            con.execute(
                "INSERT INTO feasibility_runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    run_id,
                    project_id,
                    principal.user.user_id,
                    spec_text,
                    hashlib.sha256(spec_text.encode()).hexdigest(),
                    release.id,
                    status,
                    spent,
                    json.dumps(body, default=str),
                    now(),
                ),
            )
        return body

    def get(self, principal: Principal, project_id: str, run_id: str) -> dict[str, Any]:
        """A stored run: the spec as answered and its answer (members and stewards)."""
        self.service.project_for(principal, project_id)
        row = (
            self.service.gov.store.cached()
            .execute(
                "SELECT result FROM feasibility_runs WHERE run_id = ? AND project_id = ?",
                (run_id, project_id),
            )
            .fetchone()
        )
        if row is None:
            raise NotFound(f"no feasibility run {run_id}")
        out: dict[str, Any] = json.loads(row["result"])
        return out

    def find(self, principal: Principal, project_id: str) -> list[dict[str, Any]]:
        """A project's runs, newest first: id, when, status, ε and the spec's title."""
        self.service.project_for(principal, project_id)
        rows = self.service.gov.store.cached().execute(
            "SELECT run_id, user_id, spec, status, epsilon, release, created_at "
            "FROM feasibility_runs WHERE project_id = ? ORDER BY created_at DESC, run_id",
            (project_id,),
        )
        return [
            {
                "run_id": r["run_id"],
                "user_id": r["user_id"],
                "title": json.loads(r["spec"]).get("title"),
                "status": r["status"],
                "epsilon": r["epsilon"],
                "release": r["release"],
                "created_at": r["created_at"],
            }
            for r in rows
        ]


def _rows(
    plan: Plan, answer: dp.DpAnswer | None, names: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    if answer is None:
        return []
    out = []
    for n, group in enumerate(plan.groups):
        row: dict[str, Any] = {"code": group}
        if names is not None:
            row["name"] = names.get(str(group))
        for label in (ELIGIBLE, SEEN):
            # post-processing: a count below zero is shown as zero, with the interval
            # around it (projecting onto counts ≥ 0 never moves a value away from the
            # truth, so the interval keeps its 95% coverage)
            value = max(0, int(answer.values[label][n] or 0))
            half = int(answer.ci95_half_width[label] or 0)
            row[label] = value
            row[f"{label}_ci95"] = [max(0, value - half), value + half]
        out.append(row)
    return out


def _body(
    canonical: dict[str, Any],
    compiled: Compiled,
    plans: list[Plan],
    answers: list[dp.DpAnswer | None],
) -> dict[str, Any]:
    areas_plan, sites_plan = plans
    areas, sites = answers
    seen = canonical["seen_within_days"]
    body: dict[str, Any] = {
        "spec": canonical,
        "sites": _rows(sites_plan, sites, domains.ACUTE_TRUSTS),
        "areas": _rows(areas_plan, areas),
        "site_kind": f"acute trust ({SITE_KEY})",
        "area_kind": f"local authority ({AREA_KEY})",
        "columns": {
            ELIGIBLE: "people who meet the criteria (at a site: and were ever seen there)",
            SEEN: f"of those, seen in the {seen} days to as_of (at a site: seen there)",
        },
        "noise": {
            "areas": None if areas is None else areas.noise,
            "sites": None if sites is None else sites.noise,
        },
        "mechanism": "OpenDP discrete Laplace on person counts; intervals are 95%",
        "bounding": {
            "areas": "one row per person: each person moves each count by at most 1",
            "sites": (
                "a person counts once at each trust they attended: each person moves each "
                f"site vector by at most {sites_plan.rows_per_person} (the number of trusts)"
            ),
        },
        "sql": {"areas": compiled.areas_sql, "sites": compiled.sites_sql},
    }
    if None in answers:
        body["no_answer"] = True
        body["reason"] = dp.NO_ANSWER_REASON
    return body
