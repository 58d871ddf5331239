"""Data controllers: each organisation's decision on the use of its feed, project by project."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from hub.api.deps import CurrentPrincipal, Gov
from hub.api.schemas import SourceDecision

router = APIRouter()


@router.get("/sources", tags=["sources"])
def list_sources(principal: CurrentPrincipal, gov: Gov) -> dict[str, Any]:
    """A data controller: every project's use of the feeds it controls (pending first).
    Stewards and admins: every project's sources."""
    return {"sources": [s.as_dict() for s in gov.sources.awaiting(principal.user)]}


@router.post("/projects/{project_id}/sources/{source}/decision", tags=["sources"])
def decide_source(
    project_id: str, source: str, body: SourceDecision, principal: CurrentPrincipal, gov: Gov
) -> dict[str, Any]:
    """Approve, refuse or withdraw the use of a feed you control in a project. A
    withdrawal takes effect for every later query, DP answer, exact output and training
    cohort of the project; their audit entries name the feeds withheld and why."""
    decided = gov.sources.decide(
        project_id,
        source,
        controller=principal.user,
        decision=body.decision,
        reason=body.reason,
        key_id=principal.key_id,
    )
    return decided.as_dict()
