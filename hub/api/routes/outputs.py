"""Outputs: the steward's review and the researcher's download."""

from __future__ import annotations

import csv
import io
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import PlainTextResponse

from hub.api.deps import CurrentPrincipal, Service, Steward
from hub.api.schemas import OptionalReason, Reason

router = APIRouter()


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
