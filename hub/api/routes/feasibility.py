"""Trial feasibility: a spec in, DP counts per site and per area out, charged at once."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from governance.feasibility import load_spec, parse_spec
from governance.feasibility.spec import SpecError
from hub.api.deps import CurrentPrincipal, Gov
from hub.api.schemas import FeasibilityRequest

router = APIRouter()


@router.post("/projects/{project_id}/feasibility", tags=["feasibility"])
def run_feasibility(
    project_id: str, body: FeasibilityRequest, principal: CurrentPrincipal, gov: Gov
) -> dict[str, Any]:
    """DP counts of the people who meet a feasibility spec, per acute trust and per local
    authority, with 95% intervals; the run's fixed ε is charged to the project and the
    spec is stored with the answer. Send the spec as JSON (`spec`) or TOML (`spec_toml`)."""
    if (body.spec is None) == (body.spec_toml is None):
        raise SpecError("send the spec as JSON (spec) or as TOML text (spec_toml), not both")
    spec = (
        parse_spec(body.spec)
        if body.spec is not None
        else load_spec(str(body.spec_toml), fmt="toml")
    )
    return gov.feasibility.run(principal, project_id, spec)


@router.get("/projects/{project_id}/feasibility", tags=["feasibility"])
def list_feasibility(project_id: str, principal: CurrentPrincipal, gov: Gov) -> dict[str, Any]:
    """The project's feasibility runs, newest first."""
    return {"runs": gov.feasibility.find(principal, project_id)}


@router.get("/projects/{project_id}/feasibility/{run_id}", tags=["feasibility"])
def get_feasibility(
    project_id: str, run_id: str, principal: CurrentPrincipal, gov: Gov
) -> dict[str, Any]:
    """One run: the spec as it was answered, and its answer."""
    return gov.feasibility.get(principal, project_id, run_id)
