"""The FastAPI application: routes, problem+json errors, request limits."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint

from governance.queries import QueryService
from governance.service import Governance
from hub.api import problems
from hub.api.routes import router

MAX_BODY_BYTES = 1_000_000


class BodyLimit(BaseHTTPMiddleware):
    """Refuse bodies over MAX_BODY_BYTES (by header, and by what actually arrives)."""

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY_BYTES):
            return problems.problem(
                413, "too_large", f"request bodies are limited to {MAX_BODY_BYTES:,} bytes"
            )
        if request.method in ("POST", "PUT", "PATCH"):
            body = b""
            async for chunk in request.stream():
                body += chunk
                if len(body) > MAX_BODY_BYTES:
                    return problems.problem(
                        413, "too_large", f"request bodies are limited to {MAX_BODY_BYTES:,} bytes"
                    )

            async def receive() -> dict[str, object]:
                return {"type": "http.request", "body": body, "more_body": False}

            request = Request(request.scope, receive)
        return await call_next(request)


def create_app(gov: Governance, *, timeout_s: float = 30.0) -> FastAPI:
    app = FastAPI(
        title="Health data hub",
        version="1.0",
        description="Governed access to pseudonymised NHS-style records: dummy queries, "
        "differentially private aggregates, and exact outputs released after steward review.",
    )
    app.state.service = QueryService(gov, timeout_s=timeout_s)
    problems.install(app)
    app.add_middleware(BodyLimit)
    app.include_router(router)
    return app
