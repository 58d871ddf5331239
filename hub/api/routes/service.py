"""Liveness and who the caller is."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from connectors import releases
from hub.api.deps import CurrentPrincipal, Service

router = APIRouter()


@router.get("/health", tags=["service"])
def health(service: Service) -> dict[str, Any]:
    """Liveness and the current release (no key needed)."""
    current = releases.current_id(service.gov.home)
    return {"status": "ok", "release": current}


@router.get("/me", tags=["people"])
def me(principal: CurrentPrincipal) -> dict[str, Any]:
    u = principal.user
    return {
        "user_id": u.user_id,
        "name": u.name,
        "role": u.role,
        "organisation": u.organisation,
        "accreditation_expires": u.accreditation_expires.isoformat(),
        "key_id": principal.key_id,
    }
