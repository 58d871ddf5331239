"""Errors as RFC 9457 problem+json, mapped once from the governance error tree.

Every problem has a stable ``code`` and a human ``detail``; never a stack trace, a
patient-level value or an echo of the request body.
"""

from __future__ import annotations

import logging
from typing import Final

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from connectors.errors import IngestError
from governance import errors
from governance.audit.events import current_request

log = logging.getLogger("hub.api")

STATUS: Final[dict[type[errors.HubError], int]] = {
    errors.InvalidRequest: 422,
    errors.NotFound: 404,
    errors.Unauthenticated: 401,
    errors.AccessDenied: 403,
    errors.Conflict: 409,
    errors.BudgetExhausted: 403,
    errors.QueryError: 400,
    errors.PolicyViolation: 422,
    errors.DisclosureRisk: 422,
    errors.AuditUnavailable: 503,
}


def problem(status: int, code: str, detail: str, title: str | None = None) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    ctx = current_request()
    if ctx is not None:  # the request's generic audit entry gives this as its reason
        ctx.reason = f"{code}: {detail}"[:500]
    return JSONResponse(
        status_code=status,
        media_type="application/problem+json",
        content={
            "type": f"https://hub.example/problems/{code}",
            "title": title or code.replace("_", " "),
            "status": status,
            "detail": detail,
            "code": code,
        },
        headers=headers,
    )


def status_for(exc: errors.HubError) -> int:
    """The HTTP status of a governance error (the API's and the dashboard's)."""
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 400


def install(app: FastAPI) -> None:
    @app.exception_handler(errors.HubError)
    async def hub_error(_: Request, exc: errors.HubError) -> JSONResponse:
        if isinstance(exc, errors.AuditUnavailable):
            ctx = current_request()
            if ctx is not None:  # nothing could be recorded, so nothing more is tried
                ctx.unavailable = True
        return problem(status_for(exc), exc.code, str(exc))

    @app.exception_handler(IngestError)
    async def release_error(_: Request, exc: IngestError) -> JSONResponse:
        return problem(503, "release_unavailable", str(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        # field locations and messages only: never the submitted values
        parts = []
        for err in exc.errors()[:5]:
            where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
            parts.append(f"{where or 'body'}: {err.get('msg', 'invalid')}")
        return problem(422, "invalid_request", "; ".join(parts) or "the request is not valid")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}.get(
            exc.status_code, "http_error"
        )
        return problem(exc.status_code, code, str(exc.detail))

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.error("unexpected %s while handling a request", type(exc).__name__)
        return problem(500, "internal_error", "the hub could not complete the request")
