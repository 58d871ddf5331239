"""One id and exactly one audit outcome entry per authenticated request.

Every response carries ``X-Request-ID``. Every audit entry written while serving it
carries the same ``request_id`` (``governance.audit.RequestContext``). The request's
*outcome entry* is the one entry whose action is not a ledger change (``budget.*``):
the query, approval, review, download or audit read it performed, allowed or denied.
A request that presented a valid key but reached no audited action (a read such as
``GET /v1/me``, or a refusal before the governed layer: a role check, a body that does
not validate, a project it may not see) gets a generic ``api.<method>`` entry naming
the route and the status. That entry is written before the first byte of the response
is sent; if it cannot be written the response becomes a 503 and the handler's answer
is dropped. Requests without a valid key and the anonymous routes (``/v1/health``,
``/v1/public/projects``, ``/docs``) write nothing: otherwise anyone could grow the log.
"""

from __future__ import annotations

import logging
import re
import secrets
from typing import Final

import anyio.to_thread
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from governance.audit.events import AuditEvent, RequestContext, bind_request, unbind_request
from governance.errors import AuditUnavailable
from governance.facade import Governance
from hub import http_errors as problems

HEADER: Final = "X-Request-ID"
log = logging.getLogger("hub.api")
_SAFE_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


class RequestAudit:
    def __init__(self, app: ASGIApp, gov: Governance) -> None:
        self.app = app
        self.gov = gov

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        ctx = RequestContext(request_id=secrets.token_hex(12))
        token = bind_request(ctx)
        replaced = False
        started = False

        async def sending(message: Message) -> None:
            nonlocal replaced, started
            if replaced:
                return  # the handler's answer was replaced by a 503
            if message["type"] == "http.response.start":
                started = True
                MutableHeaders(scope=message)[HEADER] = ctx.request_id
                if ctx.actor is not None and ctx.outcomes == 0 and not ctx.unavailable:
                    try:
                        await anyio.to_thread.run_sync(self._record, ctx, scope, message["status"])
                    except AuditUnavailable as exc:
                        replaced = True
                        response = problems.problem(503, exc.code, str(exc))
                        response.headers[HEADER] = ctx.request_id
                        await response(scope, receive, send)
                        return
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except Exception as exc:
            # an unexpected error: answered here, with its id and its outcome entry (left
            # to Starlette, its 500 would come from the outermost middleware, past this
            # one, unaudited); the log names the error's type, never its message
            if started:
                raise
            log.error("unexpected %s while handling a request", type(exc).__name__)
            response = problems.problem(
                500, "internal_error", "the hub could not complete the request"
            )
            if ctx.actor is not None and ctx.outcomes == 0:
                try:
                    await anyio.to_thread.run_sync(self._record, ctx, scope, 500)
                except AuditUnavailable as unavailable:
                    response = problems.problem(503, unavailable.code, str(unavailable))
            response.headers[HEADER] = ctx.request_id
            await response(scope, receive, send)
        finally:
            unbind_request(token)

    def _record(self, ctx: RequestContext, scope: Scope, status: int) -> None:
        path = route_template(scope)
        params = scope.get("path_params") or {}
        project = params.get("project_id")
        self.gov.audit.record(
            AuditEvent(
                action=f"api.{str(scope.get('method', 'get')).lower()}",
                decision="allowed" if status < 400 else "denied",
                actor=ctx.actor,
                key_id=ctx.key_id,
                role=ctx.role,
                project=project
                if isinstance(project, str) and _SAFE_ID.fullmatch(project)
                else None,
                target=path,
                reason=None if status < 400 else (ctx.reason or f"HTTP {status}"),
                request_id=ctx.request_id,
                details={"status": status},
            )
        )


def route_template(scope: Scope) -> str:
    """The matched route's path template with its router prefix: ``/v1/projects/{project_id}``.

    A route included through a prefixed router knows only its own part (``/me``); the
    prefix is what precedes the part of the concrete path that the route matched. A
    template names no value, so it is safe to audit.
    """
    route = scope.get("route")
    template = getattr(route, "path", None)
    regex = getattr(route, "path_regex", None)
    if not isinstance(template, str):
        return "(no route)"
    concrete = str(scope.get("path", ""))
    if regex is not None:
        for i, char in enumerate(concrete):
            if char == "/" and regex.fullmatch(concrete[i:]):
                return concrete[:i] + template
    return template
