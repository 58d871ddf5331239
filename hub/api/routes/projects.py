"""Projects: requests, decisions and their budgets."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from governance.access.projects import Project
from governance.facade import Governance
from hub.api.deps import CurrentPrincipal, Gov, Researcher, Service, Steward
from hub.api.schemas import Approval, ProjectRequest, Reason

router = APIRouter()


def _project_view(p: Project, *, full: bool, gov: Governance | None = None) -> dict[str, Any]:
    data = p.as_dict()
    if not full:
        data.pop("members", None)
    if gov is not None:  # a release built from feeds: each feed and its controller's decision
        data["sources"] = [s.as_dict() for s in gov.sources.for_project(p.project_id)]
    return data


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
        public_benefit=body.public_benefit,
        daa_reference=body.daa_reference,
        daa_expires=body.daa_expires,
    )
    return _project_view(project, full=True)


@router.get("/projects", tags=["projects"])
def list_projects(principal: CurrentPrincipal, gov: Gov) -> dict[str, Any]:
    """The caller's projects (stewards and admins: every project), with their status."""
    return {
        "projects": [_project_view(p, full=True) for p in gov.projects.visible_to(principal.user)]
    }


@router.get("/projects/{project_id}", tags=["projects"])
def get_project(project_id: str, principal: CurrentPrincipal, service: Service) -> dict[str, Any]:
    project = service.project_for(principal, project_id)
    data = _project_view(project, full=True, gov=service.gov)
    if project.epsilon_total is not None:
        state = service.gov.ledger.state(project_id)
        data["budget"] = {
            "epsilon_total": state.epsilon_total,
            "epsilon_spent": state.epsilon_spent,
            "epsilon_remaining": state.epsilon_remaining,
            "delta_total": state.delta_total,
            "delta_spent": state.delta_spent,
            "delta_remaining": state.delta_remaining,
        }
    return data


@router.post("/projects/{project_id}/approve", tags=["projects"])
def approve_project(
    project_id: str, body: Approval, principal: Steward, gov: Gov
) -> dict[str, Any]:
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
        output_reviewers=body.output_reviewers,
        key_id=principal.key_id,
        sources=body.sources,
    )
    return _project_view(project, full=True, gov=gov)


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
