"""The public transparency register (no key needed)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from hub.api.deps import Service

router = APIRouter()


@router.get("/public/projects", tags=["public"])
def public_register(service: Service) -> dict[str, Any]:
    """The transparency register of approved projects (no key needed)."""
    return {"projects": service.gov.public_register()}
