"""Injected dependencies, named so that route signatures read like prose."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from governance.access import roles
from governance.access.people import Principal
from governance.audit.events import current_request
from governance.facade import Governance
from governance.queries import QueryService


def get_service(request: Request) -> QueryService:
    service: QueryService = request.app.state.service
    return service


def get_governance(request: Request) -> Governance:
    return get_service(request).gov


Service = Annotated[QueryService, Depends(get_service)]
Gov = Annotated[Governance, Depends(get_governance)]


# Declares the Bearer scheme in the OpenAPI schema (the /docs Authorize button takes an
# API key); authentication itself is governance's, which refuses a missing key.
_bearer = HTTPBearer(scheme_name="API key", description="Your hub API key", auto_error=False)


def current_principal(
    gov: Gov, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Principal:
    principal = gov.people.authenticate(credentials.credentials if credentials else None)
    ctx = current_request()
    if ctx is not None:  # the request is now attributable: it gets an audit outcome entry
        ctx.actor, ctx.key_id, ctx.role = (
            principal.user.user_id,
            principal.key_id,
            principal.user.role,
        )
    return principal


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


def steward(principal: CurrentPrincipal) -> Principal:
    roles.require(principal.user, "audit.read")
    return principal


def researcher(principal: CurrentPrincipal) -> Principal:
    roles.require(principal.user, "project.request")
    return principal


Steward = Annotated[Principal, Depends(steward)]
Researcher = Annotated[Principal, Depends(researcher)]
