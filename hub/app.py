"""The FastAPI application: routes, problem+json errors, request limits."""

from __future__ import annotations

from fastapi import FastAPI
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from governance.facade import Governance
from hub import docs_ui, public_pages
from hub import http_errors as problems
from hub.api.request_audit import RequestAudit
from hub.api.routes import router
from hub.steward import install as install_steward_dashboard

MAX_BODY_BYTES = 1_000_000


def _too_large() -> StarletteHTTPException:
    return StarletteHTTPException(413, f"request bodies are limited to {MAX_BODY_BYTES:,} bytes")


class BodyLimit:
    """Refuse bodies over MAX_BODY_BYTES: by the declared length, and by what arrives."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = problems.problem(
            413, "too_large", f"request bodies are limited to {MAX_BODY_BYTES:,} bytes"
        )
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY_BYTES):
            await too_large(scope, receive, send)
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > MAX_BODY_BYTES:
                    # handled by the app's problem+json handler (413 too_large)
                    raise _too_large()
            return message

        await self.app(scope, limited, send)


def create_app(gov: Governance) -> FastAPI:
    """The hub's app over one governance home (its query timeout is ``gov``'s)."""
    app = FastAPI(
        title="Health data hub",
        version="1.0",
        description="Governed access to pseudonymised NHS-style records: dummy queries, "
        "differentially private aggregates, and exact outputs released after steward review.",
        docs_url=None,  # served from the package by docs_ui: no CDN, works offline
        redoc_url=None,
    )
    app.state.service = gov.queries
    problems.install(app)
    app.add_middleware(BodyLimit)
    app.add_middleware(RequestAudit, gov=gov)  # outermost: ids every response, even a 413
    app.include_router(router)
    docs_ui.install(app)
    public_pages.install(app)  # /register and /dictionary, in HTML
    install_steward_dashboard(app)  # /steward/: pages over the same governance calls
    return app
