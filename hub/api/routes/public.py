"""The public transparency register (no key needed)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from governance.access import commercial
from hub.api.deps import Service

router = APIRouter()


@router.get("/public/projects", tags=["public"])
def public_register(service: Service) -> dict[str, Any]:
    """The transparency register of approved projects (no key needed)."""
    return {"projects": service.gov.public_register()}


@router.get("/public/policy", tags=["public"])
def access_policy() -> dict[str, Any]:
    """The access policy by organisation type: what each may do and on what terms."""
    return {"organisation_types": commercial.describe()}
