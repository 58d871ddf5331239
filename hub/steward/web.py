"""The dashboard's plumbing: templates, the signed-in steward, CSRF, HTML errors, headers.

Routes here are thin, like the API's: each page reads through the governance layer and
each form calls the same governance method the matching ``/v1`` route calls, with the
steward's principal (user and key id), so the audit log records it the same way.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Final

import jinja2
from fastapi import Depends, Form, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from markupsafe import Markup
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from governance.access import roles
from governance.access.people import Principal
from governance.audit.events import AuditEvent
from governance.errors import AccessDenied, HubError, InvalidRequest
from governance.facade import Governance
from governance.queries import QueryService
from hub.http_errors import status_for
from hub.steward import model_words
from hub.steward.sessions import COOKIE, Session, SessionStore, same_token

PREFIX: Final = "/steward"
HERE: Final = Path(__file__).parent
SECURITY_HEADERS: Final = {
    # no script or style from anywhere but the hub itself, no framing, forms post home
    "content-security-policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
    "cross-origin-opener-policy": "same-origin",
}


# ---------------------------------------------------------------------- templates
def _utc(value: str | dt.datetime | dt.date | None) -> dt.datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, dt.datetime):
        moment = value
    elif isinstance(value, dt.date):
        moment = dt.datetime(value.year, value.month, value.day)
    else:
        try:
            moment = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC)


def when(value: str | dt.datetime | None) -> Markup:
    """A <time> in UTC; static/localtime.js shows it in the steward's own zone."""
    moment = _utc(value)
    if moment is None:
        return Markup("—")
    iso = moment.isoformat(timespec="seconds").replace("+00:00", "Z")
    text = moment.strftime("%Y-%m-%d %H:%M:%S UTC")
    return Markup('<time datetime="{}" data-local="1">{}</time>').format(iso, text)


def number(value: Any) -> str:
    """Counts with thousands separators; ε, δ and scores to six significant figures."""
    if value is None:
        return "—"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:,.6g}"


def pretty(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, default=str)


ENV: Final = jinja2.Environment(
    # the steward's own templates, then the public pages' shared parts (_linkage.html)
    loader=jinja2.ChoiceLoader(
        [
            jinja2.FileSystemLoader(HERE / "templates"),
            jinja2.FileSystemLoader(HERE.parent / "templates"),
        ]
    ),
    autoescape=True,  # every template, whatever its name: nothing reaches a page unescaped
    undefined=jinja2.StrictUndefined,
    extensions=["jinja2.ext.do"],
    trim_blocks=True,
    lstrip_blocks=True,
)
ENV.filters.update(when=when, number=number, pretty=pretty)
ENV.filters.update(
    metric_label=model_words.label,
    metric_meaning=model_words.meaning,
    sql=model_words.sql_text,
    card_text=model_words.card_text,
)
ENV.globals["metric"] = model_words.shown


def html(template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    return HTMLResponse(ENV.get_template(template).render(prefix=PREFIX, **context), status_code)


# ---------------------------------------------------------------------- state
def sessions(request: Request) -> SessionStore:
    store: SessionStore = request.app.state.steward_sessions
    return store


def service(request: Request) -> QueryService:
    svc: QueryService = request.app.state.service
    return svc


class SignInRequired(Exception):
    """No live steward session: the browser is sent to the sign-in page."""


class FormRefused(Exception):
    """A form post without the session's CSRF token."""


@dataclass
class Desk:
    """The signed-in steward at work: who they are, their session, the hub they act on."""

    request: Request
    principal: Principal
    session: Session
    service: QueryService

    @property
    def gov(self) -> Governance:
        return self.service.gov

    def flash(self, kind: str, message: str) -> None:
        self.session.flash(kind, message)

    def audit(self, **fields: Any) -> None:
        """An audit entry as the API writes it for this steward's key."""
        self.gov.audit.record(
            AuditEvent(
                actor=self.principal.user.user_id,
                key_id=self.principal.key_id,
                role=self.principal.user.role,
                **fields,
            )
        )

    def page(self, template: str, *, section: str, status: int = 200, **context: Any) -> Response:
        svc = self.service
        pending = svc.pending(self.principal)
        counts = {
            "projects": len(self.gov.projects.find(status="requested")),
            "outputs": sum(1 for o in pending if o.get("kind", "table") == "table"),
            # models and DP synthetic datasets share the Models page
            "models": sum(1 for o in pending if o.get("kind") in ("model", "synthetic")),
            "trials": sum(1 for o in pending if o.get("kind") == "trial"),
        }
        return html(
            template,
            status,
            section=section,
            steward=self.principal.user,
            csrf=self.session.csrf,
            counts=counts,
            # the commercial flag shown wherever a project appears (access policy)
            commercial={p.project_id for p in self.gov.projects.find() if p.commercial},
            flashes=self.session.take_flashes(),
            **context,
        )


def desk(request: Request) -> Desk:
    store = sessions(request)
    token = request.cookies.get(COOKIE)
    session = store.get(token)
    if session is None or session.key is None:
        raise SignInRequired
    svc = service(request)
    try:
        principal = svc.gov.people.authenticate(session.key)
        roles.require(principal.user, "dashboard")
    except AccessDenied:
        # a revoked key or a lapsed accreditation ends the session at once
        store.drop(token)
        raise SignInRequired from None
    return Desk(request, principal, session, svc)


SignedIn = Annotated[Desk, Depends(desk)]


def checked_form(desk: SignedIn, csrf_token: Annotated[str, Form()] = "") -> Desk:
    """The steward, for a form post carrying this session's CSRF token (else refused)."""
    if not same_token(desk.session.csrf, csrf_token):
        desk.audit(
            action="steward.form",
            decision="denied",
            reason="a form was posted without this session's CSRF token",
            target=desk.request.url.path,
        )
        raise FormRefused
    return desk


CheckedForm = Annotated[Desk, Depends(checked_form)]


def act(desk: Desk, back: str, done: str, action: Callable[[], object]) -> RedirectResponse:
    """Run one governance call for a form; its refusal comes back as a message on the page."""
    try:
        action()
    except HubError as exc:
        desk.flash("error", str(exc))
    else:
        desk.flash("ok", done)
    return RedirectResponse(back, status_code=303)


def finite(text: str, name: str, *, integer: bool = False) -> float:
    try:
        value = float(text)
    except ValueError:
        raise InvalidRequest(f"{name} must be a number") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise InvalidRequest(f"{name} must be a finite number")
    if integer and value != int(value):
        raise InvalidRequest(f"{name} must be a whole number")
    return value


# ---------------------------------------------------------------------- errors
def error_page(status: int, message: str) -> HTMLResponse:
    return html("error.html", status, status=status, message=message)


class HtmlRoute(APIRoute):
    """Dashboard routes answer errors as pages (or a redirect to sign in), not JSON."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def answer(request: Request) -> Response:
            try:
                return await handler(request)
            except SignInRequired:
                return RedirectResponse(f"{PREFIX}/sign-in", status_code=303)
            except FormRefused:
                return error_page(
                    403,
                    "This form was refused: it did not carry this session's security token. "
                    "Reload the page and try again.",
                )
            except HubError as exc:
                return error_page(status_for(exc), str(exc))
            except RequestValidationError as exc:
                fields = sorted({str(e.get("loc", ("", "?"))[-1]) for e in exc.errors()[:10]})
                return error_page(422, "Check these fields: " + ", ".join(fields))
            except StarletteHTTPException as exc:
                return error_page(exc.status_code, str(exc.detail))

        return answer


class SecurityHeaders:
    """Strict headers on every dashboard response, static files and errors included."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not str(scope.get("path", "")).startswith(PREFIX):
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {k.lower() for k, _ in headers}
                for name, value in SECURITY_HEADERS.items():
                    if name.encode() not in present:
                        headers.append((name.encode(), value.encode()))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)
