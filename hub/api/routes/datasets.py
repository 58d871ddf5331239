"""The data dictionary: tables and columns a project may use."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from hub.api.deps import CurrentPrincipal, Service

router = APIRouter()


@router.get("/datasets", tags=["data"])
def list_datasets(
    principal: CurrentPrincipal,
    service: Service,
    project_id: Annotated[str | None, Query(max_length=40)] = None,
) -> dict[str, Any]:
    """Tables, columns, types, declared domains and bounds a project may use."""
    return service.catalogue(principal, project_id)
