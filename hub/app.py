"""The FastAPI application: routes, problem+json errors, request limits."""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from pathlib import Path

from fastapi import FastAPI
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from governance.facade import Governance
from hub import docs_ui, public_pages
from hub import http_errors as problems
from hub.api.request_audit import RequestAudit
from hub.api.routes import router
from hub.steward import install as install_steward_dashboard
from hub.steward.sessions import SessionStore

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


# what `hub serve` hands its worker processes (each builds its own app from them)
SESSION_SECRET_ENV = "HUB_SERVE_SESSION_SECRET"  # noqa: S105 (a variable name)
QUERY_TIMEOUT_ENV = "HUB_SERVE_QUERY_TIMEOUT"


def serve_app() -> FastAPI:
    """The app factory ``hub serve`` gives uvicorn: one app per worker process.

    Every worker opens the same hub home (settings from the environment), so they share
    the audit log, the ledger and the outputs through SQLite, and the steward sessions
    through ``SharedSessionStore`` under the secret ``hub serve`` drew at start.
    """
    from governance.settings import get_settings
    from hub.steward.sessions import SharedSessionStore

    _stop_with_supervisor()
    settings = get_settings()
    gov = settings.governance(query_timeout_s=float(os.environ.get(QUERY_TIMEOUT_ENV, "30")))
    secret = bytes.fromhex(os.environ[SESSION_SECRET_ENV])
    sessions = SharedSessionStore(session_file(gov.home), secret)
    return create_app(gov, sessions=sessions)


def _stop_with_supervisor(every_s: float = 0.5) -> None:
    """A worker of ``hub serve --workers N`` stops when its supervisor is gone.

    ``kill -9`` of ``hub serve`` cannot stop its workers; orphaned, they would go on
    answering on the port with the old process's state. Each worker watches its parent
    and, once it has changed, stops the way SIGTERM stops it: requests in flight finish,
    none is accepted after. (A single-process ``hub serve`` has no supervisor to watch.)
    """
    if multiprocessing.parent_process() is None:
        return
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(every_s)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="hub-supervisor-watch", daemon=True).start()


def session_file(home: Path) -> Path:
    return home / "run" / "steward-sessions.sqlite"


def create_app(gov: Governance, *, sessions: SessionStore | None = None) -> FastAPI:
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
    # /steward/: pages over the same governance calls
    install_steward_dashboard(app, sessions=sessions)
    return app
