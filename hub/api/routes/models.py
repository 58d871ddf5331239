"""DP models trained inside the hub: a modeller sends a spec, the hub trains and answers
with the card (DP metrics only); weights leave only after a steward's release."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from hub.api.deps import CurrentPrincipal, Service
from models import spec as specs
from models.trainer import Trainer

router = APIRouter()


class TrainRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    spec: str = Field(max_length=200_000, description="The training spec (TOML, SQL inline)")
    name: str = Field(default="model", max_length=100)


@router.post("/projects/{project_id}/models", tags=["models"])
def train_model(
    project_id: str, body: TrainRequest, principal: CurrentPrincipal, service: Service
) -> dict[str, Any]:
    """Train in the hub (ε + metrics ε charged); returns the card, never rows or weights."""
    spec = specs.parse(body.spec, name=body.name, files=False)
    model = Trainer(service, principal).train(project_id, spec, progress=False)
    return {"model_id": model.model_id, "card": model.card}


@router.get("/projects/{project_id}/models", tags=["models"])
def list_models(project_id: str, principal: CurrentPrincipal, service: Service) -> dict[str, Any]:
    return {"models": Trainer(service, principal).models(project_id)}


@router.get("/projects/{project_id}/models/{model_id}", tags=["models"])
def get_model(
    project_id: str, model_id: str, principal: CurrentPrincipal, service: Service
) -> dict[str, Any]:
    return {"model_id": model_id, "card": Trainer(service, principal).card(project_id, model_id)}


@router.post("/projects/{project_id}/models/{model_id}/submit", tags=["models"])
def submit_model(
    project_id: str, model_id: str, principal: CurrentPrincipal, service: Service
) -> dict[str, Any]:
    """Ask a steward to release the model's weights."""
    output_id = Trainer(service, principal).submit(project_id, model_id)
    return {"output_id": output_id, "status": "pending"}


@router.get(
    "/projects/{project_id}/models/{model_id}/weights",
    tags=["models"],
    response_class=Response,
    responses={200: {"content": {"application/octet-stream": {}}}},
)
def model_weights(
    project_id: str, model_id: str, principal: CurrentPrincipal, service: Service
) -> Response:
    """The weights (torch state dicts), once a steward has approved the release."""
    data = Trainer(service, principal).weights(project_id, model_id)
    return Response(
        data,
        media_type="application/octet-stream",
        headers={"Content-Disposition": f'attachment; filename="{model_id}.pt"'},
    )
