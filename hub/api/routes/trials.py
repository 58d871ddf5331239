"""Emulated trials: a modeller sends a study (its target-trial protocol and the cohort
that emulates it), the hub estimates the average effect under DP (charged to the
project's ledger, audited) and sends the estimate for steward review; the estimate is
read once a steward has approved it."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from governance.outputs import submissions
from hub.api.deps import CurrentPrincipal, Service
from models import trial

router = APIRouter()


class TrialRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    study: str = Field(
        max_length=200_000, description="The study spec (TOML with [protocol]; SQL inline)"
    )
    name: str = Field(default="study", max_length=100)


@router.post("/projects/{project_id}/trials", tags=["trials"], status_code=202)
def run_trial(
    project_id: str, body: TrialRequest, principal: CurrentPrincipal, service: Service
) -> dict[str, Any]:
    """Estimate the study's average effect (DP AIPW; its ε and δ charged) and send it for
    steward review: returns the trial and output ids, the protocol and the privacy spent,
    never the estimate before approval."""
    study = trial.parse_study(body.study, name=body.name, files=False)
    return trial.run(service, principal, project_id, study)


@router.get("/projects/{project_id}/trials/{trial_id}", tags=["trials"])
def get_trial(
    project_id: str, trial_id: str, principal: CurrentPrincipal, service: Service
) -> dict[str, Any]:
    """The trial's review status; once approved, the estimate too (an audited download)."""
    output_id = submissions.trial_output(service, principal, project_id, trial_id)
    review = service.gov.outputs.output(principal, output_id)
    out: dict[str, Any] = {"trial_id": trial_id, "output_id": output_id, **review}
    if review["status"] == "approved":
        out["estimate"] = service.gov.outputs.download(principal, output_id)
    return out
