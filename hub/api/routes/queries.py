"""Queries on the dummy or the real release."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from hub.api.deps import CurrentPrincipal, Service
from hub.api.schemas import QueryAnswer, QueryRequest

router = APIRouter()


@router.post("/projects/{project_id}/queries", tags=["queries"], response_model=QueryAnswer)
def run_query(
    project_id: str, body: QueryRequest, principal: CurrentPrincipal, service: Service
) -> dict[str, Any]:
    """Dummy release: exact rows. Real release: `dp` (noisy, now) or `exact` (pending review)."""
    return service.run(
        principal,
        project_id,
        sql=body.sql,
        target=body.target,
        mode=body.mode,
        epsilon=body.epsilon,
        rows_per_person=body.rows_per_person,
    )


@router.get(
    "/projects/{project_id}/queries/{query_id}", tags=["queries"], response_model=QueryAnswer
)
def get_query(
    project_id: str, query_id: str, principal: CurrentPrincipal, service: Service
) -> dict[str, Any]:
    return service.get(principal, project_id, query_id)
