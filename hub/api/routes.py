"""The `/v1` routes. Each translates HTTP to one governance call; errors map in problems.py."""

from __future__ import annotations

import csv
import io
import math
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field

from connectors import releases
from governance.access.projects import Project
from governance.audit.events import AuditEvent
from governance.errors import AccessDenied, InvalidRequest, NotFound
from governance.privacy import domains as datasets
from hub.api.deps import CurrentPrincipal, Gov, Researcher, Service, Steward

PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["type", "title", "status", "detail", "code"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "code": {"type": "string"},
    },
}
# every error any route can give, as RFC 9457 problem+json (problems.py), so that the
# schema describes what clients really get (a schemathesis test checks conformance)
ERRORS: dict[int | str, dict[str, Any]] = {
    status: {
        "description": description,
        "content": {"application/problem+json": {"schema": PROBLEM_SCHEMA}},
    }
    for status, description in (
        (401, "no key, or a malformed, unknown or revoked key"),
        (403, "the caller's role, project or budget does not allow this"),
        (404, "no such resource, or not the caller's to see"),
        (409, "the resource is not in a state that allows this"),
        (413, "the request body is too large"),
        (422, "the request is not valid (the fields named, never their values)"),
        (503, "the audit store or the release cannot be used: nothing was done"),
    )
}

router = APIRouter(prefix="/v1", responses=ERRORS)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_max_length=20_000)


class ProjectRequest(Strict):
    title: str = Field(min_length=1, max_length=200)
    purpose: str = Field(min_length=1, max_length=5000)
    lay_summary: str = Field(min_length=1, max_length=5000)
    grants: dict[str, list[str]]
    days: int = Field(ge=1, le=3650)
    members: list[str] = Field(default_factory=list, max_length=50)


class Approval(Strict):
    epsilon: float
    delta: float = 1e-6
    days: int | None = Field(default=None, ge=1, le=3650)
    grants: dict[str, list[str]] | None = None
    sdc_threshold: int = Field(default=7, ge=1, le=100)
    sdc_rounding: int = Field(default=5, ge=1, le=100)
    trainers: list[str] = Field(default_factory=list, max_length=50)


class Reason(Strict):
    reason: str = Field(min_length=5, max_length=2000)


class OptionalReason(Strict):
    reason: str | None = Field(default=None, max_length=2000)


class QueryRequest(Strict):
    sql: str = Field(min_length=1, max_length=20_000)
    target: Literal["dummy", "real"] = "dummy"
    mode: Literal["dp", "exact"] | None = None
    epsilon: float | None = None


def _finite(value: float | None, name: str) -> None:
    if value is not None and not math.isfinite(value):
        raise InvalidRequest(f"{name} must be a finite number")


def _project_view(p: Project, *, full: bool) -> dict[str, Any]:
    data = p.as_dict()
    if not full:
        data.pop("members", None)
    return data


@router.get("/health", tags=["service"])
def health(service: Service) -> dict[str, Any]:
    """Liveness and the current release (no key needed)."""
    current = releases.current_id(service.gov.home)
    return {"status": "ok", "release": current}


@router.get("/me", tags=["people"])
def me(principal: CurrentPrincipal) -> dict[str, Any]:
    u = principal.user
    return {
        "user_id": u.user_id,
        "name": u.name,
        "role": u.role,
        "organisation": u.organisation,
        "accreditation_expires": u.accreditation_expires.isoformat(),
        "key_id": principal.key_id,
    }


@router.get("/datasets", tags=["data"])
def list_datasets(
    principal: CurrentPrincipal,
    service: Service,
    project_id: Annotated[str | None, Query(max_length=40)] = None,
) -> dict[str, Any]:
    """Tables, columns, types, declared domains and bounds a project may use."""
    granted: dict[str, list[str]] | None = None
    if principal.user.role != "steward":
        if project_id is None:
            raise InvalidRequest("name the project (project_id)")
        project = service.project_for(principal, project_id)
        granted = project.granted or {}
    release = service.release_for("real")
    cur = service.engine(release).cursor()
    try:
        rows = cur.execute(
            "SELECT table_name, column_name, data_type FROM duckdb_columns() "
            "WHERE NOT internal AND table_name NOT LIKE '\\_%' "
            "ESCAPE '\\' ORDER BY table_name, column_index"
        ).fetchall()
    finally:
        cur.close()
    tables: dict[str, list[tuple[str, str]]] = {}
    for table, column, dtype in rows:
        if granted is None or column in granted.get(table, []):
            tables.setdefault(table, []).append((column, dtype))
    return {
        "release": release.id,
        "tables": {t: datasets.describe(t, cols) for t, cols in tables.items()},
    }


@router.post("/projects", status_code=201, tags=["projects"])
def request_project(body: ProjectRequest, principal: Researcher, gov: Gov) -> dict[str, Any]:
    project = gov.projects.request(
        requester=principal.user,
        title=body.title,
        purpose=body.purpose,
        lay_summary=body.lay_summary,
        grants=body.grants,
        days=body.days,
        members=body.members,
        key_id=principal.key_id,
    )
    return _project_view(project, full=True)


@router.get("/projects/{project_id}", tags=["projects"])
def get_project(project_id: str, principal: CurrentPrincipal, service: Service) -> dict[str, Any]:
    project = service.project_for(principal, project_id)
    data = _project_view(project, full=True)
    if project.epsilon_total is not None:
        state = service.gov.ledger.state(project_id)
        data["budget"] = {
            "epsilon_total": state.epsilon_total,
            "epsilon_spent": state.epsilon_spent,
            "epsilon_remaining": state.epsilon_remaining,
            "delta_total": state.delta_total,
        }
    return data


@router.post("/projects/{project_id}/approve", tags=["projects"])
def approve_project(
    project_id: str, body: Approval, principal: Steward, gov: Gov
) -> dict[str, Any]:
    _finite(body.epsilon, "epsilon")
    _finite(body.delta, "delta")
    project = gov.projects.approve(
        project_id,
        steward=principal.user,
        epsilon=body.epsilon,
        delta=body.delta,
        days=body.days,
        grants=body.grants,
        sdc_threshold=body.sdc_threshold,
        sdc_rounding=body.sdc_rounding,
        trainers=body.trainers,
        key_id=principal.key_id,
    )
    return _project_view(project, full=True)


@router.post("/projects/{project_id}/reject", tags=["projects"])
def reject_project(project_id: str, body: Reason, principal: Steward, gov: Gov) -> dict[str, Any]:
    project = gov.projects.reject(
        project_id, steward=principal.user, reason=body.reason, key_id=principal.key_id
    )
    return _project_view(project, full=True)


@router.post("/projects/{project_id}/suspend", tags=["projects"])
def suspend_project(project_id: str, body: Reason, principal: Steward, gov: Gov) -> dict[str, Any]:
    project = gov.projects.suspend(
        project_id, steward=principal.user, reason=body.reason, key_id=principal.key_id
    )
    return _project_view(project, full=True)


@router.post("/projects/{project_id}/queries", tags=["queries"])
def run_query(
    project_id: str, body: QueryRequest, principal: CurrentPrincipal, service: Service
) -> dict[str, Any]:
    """Dummy release: exact rows. Real release: `dp` (noisy, now) or `exact` (pending review)."""
    _finite(body.epsilon, "epsilon")
    return service.run(
        principal,
        project_id,
        sql=body.sql,
        target=body.target,
        mode=body.mode,
        epsilon=body.epsilon,
    )


@router.get("/projects/{project_id}/queries/{query_id}", tags=["queries"])
def get_query(
    project_id: str, query_id: str, principal: CurrentPrincipal, service: Service
) -> dict[str, Any]:
    return service.get(principal, project_id, query_id)


@router.get("/outputs", tags=["outputs"])
def pending_outputs(principal: Steward, service: Service) -> dict[str, Any]:
    """Exact outputs awaiting review, with their disclosure manifests and flags."""
    return {"outputs": service.pending(principal)}


@router.post("/outputs/{output_id}/approve", tags=["outputs"])
def approve_output(
    output_id: str, principal: Steward, service: Service, body: OptionalReason | None = None
) -> dict[str, Any]:
    return service.review(principal, output_id, approve=True, reason=body.reason if body else None)


@router.post("/outputs/{output_id}/reject", tags=["outputs"])
def reject_output(
    output_id: str, body: Reason, principal: Steward, service: Service
) -> dict[str, Any]:
    return service.review(principal, output_id, approve=False, reason=body.reason)


@router.get(
    "/outputs/{output_id}/download",
    tags=["outputs"],
    response_model=None,
    responses={200: {"content": {"text/csv": {"schema": {"type": "string"}}}}},
)
def download_output(
    output_id: str,
    principal: CurrentPrincipal,
    service: Service,
    format: Annotated[Literal["json", "csv"], Query()] = "json",
) -> dict[str, Any] | PlainTextResponse:
    body = service.download(principal, output_id)
    if format == "json":
        return body
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(body["columns"])
    writer.writerows(body["rows"])
    return PlainTextResponse(buffer.getvalue(), media_type="text/csv")


@router.get("/audit", tags=["audit"])
def read_audit(
    principal: Steward,
    gov: Gov,
    actor: str | None = None,
    project: str | None = None,
    action: str | None = None,
    decision: Literal["allowed", "denied"] | None = None,
    since: str | None = None,
    until: str | None = None,
    text: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    before_seq: int | None = None,
) -> dict[str, Any]:
    entries = gov.audit.entries(
        actor=actor,
        project=project,
        action=action,
        decision=decision,
        since=since,
        until=until,
        text=text,
        limit=limit,
        before_seq=before_seq,
    )
    gov.audit.record(
        AuditEvent(
            action="audit.read",
            actor=principal.user.user_id,
            key_id=principal.key_id,
            role=principal.user.role,
            row_count=len(entries),
        )
    )
    return {"entries": entries}


@router.get("/audit/verify", tags=["audit"])
def verify_audit(principal: Steward, gov: Gov) -> dict[str, Any]:
    report = gov.audit.verify()
    return report.as_dict()


@router.get("/quality/releases/{release_id}", tags=["quality"])
def quality(release_id: str, principal: CurrentPrincipal, gov: Gov) -> dict[str, Any]:
    import json

    if principal.user.role not in ("steward", "admin"):
        raise AccessDenied("quality reports are for stewards")
    try:
        release = releases.get_release(gov.home, release_id)
    except Exception:
        raise NotFound(f"no release {release_id}") from None
    path = releases.quality_dir(release.path) / "quality.json"
    report = json.loads(path.read_text()) if path.exists() else None
    return {"release": release.id, "manifest": release.manifest, "quality": report}


@router.get("/public/projects", tags=["public"])
def public_register(service: Service) -> dict[str, Any]:
    """The transparency register of approved projects (no key needed)."""
    gov = service.gov
    out = []
    con = gov.store.cached()
    for p in gov.projects.find():
        if p.status not in ("approved", "suspended", "closed"):
            continue
        queries = con.execute(
            "SELECT count(*) FROM queries WHERE project_id = ?", (p.project_id,)
        ).fetchone()[0]
        outputs = con.execute(
            "SELECT count(*) FROM outputs WHERE project_id = ? AND status = 'approved'",
            (p.project_id,),
        ).fetchone()[0]
        state = gov.ledger.state(p.project_id)
        out.append(
            {
                "project_id": p.project_id,
                "title": p.title,
                "organisation": p.organisation,
                "purpose": p.purpose,
                "lay_summary": p.lay_summary,
                "status": p.status,
                "approved_until": p.expires_at.isoformat() if p.expires_at else None,
                "queries": queries,
                "outputs_released": outputs,
                "epsilon_used": round(state.epsilon_spent, 6),
                "epsilon_total": state.epsilon_total,
            }
        )
    return {"projects": out}
