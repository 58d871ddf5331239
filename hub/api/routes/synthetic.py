"""DP synthetic datasets: a project member sends a spec, the hub generates the table,
charges ε and δ, and enters it for steward review; it downloads as Parquet from
``GET /v1/outputs/{output_id}/download?format=parquet`` once approved."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from hub.api.deps import CurrentPrincipal, Service
from models import synthetic, synthetic_spec

router = APIRouter()


class SyntheticRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    spec: str = Field(max_length=200_000, description="The synthetic-data spec (TOML, SQL inline)")
    name: str | None = Field(default=None, max_length=100)


@router.post("/projects/{project_id}/synthetic-datasets", tags=["synthetic data"])
def request_synthetic(
    project_id: str, body: SyntheticRequest, principal: CurrentPrincipal, service: Service
) -> dict[str, Any]:
    """Generate a DP synthetic copy of the project's person-level table (ε, δ charged);
    answers with the data card and the pending output. Nothing downloads before a
    steward approves it."""
    spec = synthetic_spec.parse(body.spec, name=body.name)
    return synthetic.generate(service, principal, project_id, spec)


@router.get("/projects/{project_id}/synthetic-datasets", tags=["synthetic data"])
def list_synthetic(
    project_id: str, principal: CurrentPrincipal, service: Service
) -> dict[str, Any]:
    """The project's synthetic datasets, their review status and (approved) download link."""
    return {"datasets": synthetic.datasets(service, principal, project_id)}
