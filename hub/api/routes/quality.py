"""Quality reports of releases."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from hub.api.deps import CurrentPrincipal, Gov

router = APIRouter()


@router.get("/quality/releases/{release_id}", tags=["quality"])
def quality(release_id: str, principal: CurrentPrincipal, gov: Gov) -> dict[str, Any]:
    return gov.quality_report(principal, release_id)
