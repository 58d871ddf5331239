"""The dashboard's front page: what is waiting, and the audit log's integrity."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import RedirectResponse

from hub.steward.audit_log import integrity
from hub.steward.web import PREFIX, HtmlRoute, SignedIn

router = APIRouter(prefix=PREFIX, route_class=HtmlRoute, include_in_schema=False)


@router.get("")
def bare() -> Response:
    return RedirectResponse(f"{PREFIX}/", status_code=307)


@router.get("/")
def home(desk: SignedIn) -> Response:
    return desk.page("home.html", section="home", chain=integrity(desk))
