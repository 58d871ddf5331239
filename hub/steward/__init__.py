"""The steward dashboard at ``/steward/``: server-rendered pages over the governed layer.

Pages: sign-in, the audit log (with its integrity), projects, outputs awaiting review,
models awaiting release, trial estimates, feasibility runs, privacy budgets and data
quality. ``install`` adds them to the hub's FastAPI app; they stay out of the OpenAPI
schema (they are not the API).
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from hub.steward import audit_log, auth, budgets, feasibility, home, outputs, projects, quality
from hub.steward.sessions import SessionStore
from hub.steward.web import HERE, PREFIX, SecurityHeaders


def install(app: FastAPI, *, sessions: SessionStore | None = None) -> None:
    """Mount the dashboard; sessions in this app's memory unless a shared store is given."""
    app.state.steward_sessions = sessions if sessions is not None else SessionStore()
    for module in (auth, home, audit_log, projects, outputs, feasibility, budgets, quality):
        app.include_router(module.router)
    app.mount(f"{PREFIX}/static", StaticFiles(directory=HERE / "static"), name="steward-static")
    app.add_middleware(SecurityHeaders)


__all__ = ["install"]
