"""Signing in with a steward's API key, and out."""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated

from fastapi import APIRouter, Form, Request, Response
from fastapi.responses import RedirectResponse

from governance.access import roles
from governance.audit.events import AuditEvent
from governance.errors import AccessDenied, Unauthenticated
from hub.steward.sessions import COOKIE, SessionStore, same_token
from hub.steward.web import PREFIX, CheckedForm, HtmlRoute, html, service, sessions

router = APIRouter(prefix=PREFIX, route_class=HtmlRoute, include_in_schema=False)


def _set_cookie(response: Response, request: Request, token: str, store: SessionStore) -> None:
    response.set_cookie(
        COOKIE,
        token,
        max_age=int(store.max_s),
        path=PREFIX,
        httponly=True,
        samesite="strict",
        # behind TLS the cookie is Secure too; plain http only on localhost
        secure=request.url.scheme == "https",
    )


def _form(request: Request, status: int = 200, message: str | None = None) -> Response:
    """The sign-in form, with the CSRF token of a session made for it."""
    store = sessions(request)
    token = request.cookies.get(COOKIE)
    session = store.get(token)
    fresh = session is None
    if session is None:
        token, session = store.new()
    response = html(
        "sign_in.html",
        status,
        csrf=session.csrf,
        message=message,
        signed_out=request.query_params.get("signed_out") == "1",
    )
    if fresh and token:
        _set_cookie(response, request, token, store)
    return response


@router.get("/sign-in")
def sign_in_page(request: Request) -> Response:
    session = sessions(request).get(request.cookies.get(COOKIE))
    if session is not None and session.signed_in:
        return RedirectResponse(f"{PREFIX}/", status_code=303)
    return _form(request)


@router.post("/sign-in")
def sign_in(
    request: Request,
    key: Annotated[str, Form(max_length=200)] = "",
    csrf_token: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    store = sessions(request)
    old = request.cookies.get(COOKIE)
    session = store.get(old)
    if session is None or not same_token(session.csrf, csrf_token):
        return html(
            "error.html",
            403,
            status=403,
            message="This sign-in form has expired or did not come from this dashboard. "
            "Open the sign-in page again.",
        )
    gov = service(request).gov
    try:
        principal = gov.people.authenticate(key)
    except Unauthenticated:
        return _form(request, 401, "That key is not valid.")
    user = principal.user
    event = AuditEvent.by(principal, "steward.sign_in")
    try:
        roles.require(user, "dashboard")
    except AccessDenied as exc:
        reason = str(exc)
        gov.audit.record(replace(event, decision="denied", reason=reason))
        return _form(request, 403, f"Refused: {reason}. Use a steward's key.")
    gov.audit.record(event)
    store.drop(old)  # a new session on sign-in: a token set before it is worthless
    token, _ = store.new(user_id=user.user_id, key=key.strip())
    response = RedirectResponse(f"{PREFIX}/", status_code=303)
    _set_cookie(response, request, token, store)
    return response


@router.post("/sign-out")
def sign_out(request: Request, desk: CheckedForm) -> Response:
    desk.audit(action="steward.sign_out")
    sessions(request).drop(request.cookies.get(COOKIE))
    response = RedirectResponse(f"{PREFIX}/sign-in?signed_out=1", status_code=303)
    response.delete_cookie(COOKIE, path=PREFIX, httponly=True, samesite="strict")
    return response
