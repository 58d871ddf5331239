"""Audit events: what one entry records, and the request it belongs to.

An entry records who (actor, key id, role), on what (project, target, release), what
(action, query text and its SHA-256, ε and δ spent, result row count and hash) and the
decision (allowed or denied, with the reason). Never result rows or any patient-level
value: callers pass counts and hashes only.

>>> AuditEvent("query.dummy", actor="ana").body(seq=1, prev_hash="0", time="t")["actor"]
'ana'
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, Final, Literal

from governance.audit.chain import canonical, sha256_text

if TYPE_CHECKING:
    from governance.access.people import Principal

Decision = Literal["allowed", "denied"]

# The one list of audit actions: every entry names one of these (the steward's filters
# and the docs read it from here). ``api.<method>`` entries are the generic outcome of
# a request that reached no governed action.
ACTIONS: Final = frozenset(
    {
        "api.delete", "api.get", "api.patch", "api.post", "api.put",
        "audit.read", "audit.verify",
        "budget.commit", "budget.refund", "budget.reserve",
        "dictionary.build",
        "feasibility.run",
        "model.audit", "model.audit.extract", "model.submit", "model.train",
        "output.approve", "output.download", "output.reject", "output.return",
        "project.approve", "project.close", "project.reject", "project.request",
        "project.suspend",
        "query.dummy", "query.invalid", "query.real", "query.real.dp", "query.real.exact",
        "reidentify",
        "source.approve", "source.refuse", "source.withdraw",
        "steward.form", "steward.sign_in", "steward.sign_out",
        "synthetic.extract", "synthetic.generate",
        "train.extract", "train.model", "trial.estimate",
        "user.add", "user.revoke", "user.rotate_key",
    }
)  # fmt: skip

# Entries that record a change of the privacy budget ledger on behalf of a request;
# every other entry written while serving a request is that request's *outcome* entry.
SUPPORTING_ACTIONS: Final = frozenset({"budget.reserve", "budget.commit", "budget.refund"})


@dataclass
class RequestContext:
    """The API request being served: its id, who made it, and the outcome entries written.

    The HTTP layer binds one per request (``bind_request``); every entry appended while it
    is bound carries its ``request_id``, so a response (``X-Request-ID``) can be matched
    with its audit entries. ``outcomes`` counts committed outcome entries: the HTTP layer
    writes a generic one for a request that reached no audited action, so that every
    authenticated request has exactly one.
    """

    request_id: str
    actor: str | None = None
    key_id: str | None = None
    role: str | None = None
    outcomes: int = 0
    unavailable: bool = False
    reason: str | None = None  # a refusal's code and message, for its generic entry

    def count_outcome(self) -> None:
        self.outcomes += 1


_request: contextvars.ContextVar[RequestContext | None] = contextvars.ContextVar(
    "hub_audit_request", default=None
)


def bind_request(ctx: RequestContext) -> contextvars.Token[RequestContext | None]:
    return _request.set(ctx)


def unbind_request(token: contextvars.Token[RequestContext | None]) -> None:
    _request.reset(token)


def current_request() -> RequestContext | None:
    return _request.get()


@dataclass(frozen=True)
class AuditEvent:
    action: str
    decision: Decision = "allowed"
    actor: str | None = None
    key_id: str | None = None
    role: str | None = None
    project: str | None = None
    target: str | None = None
    reason: str | None = None
    query_text: str | None = None
    release: str | None = None
    epsilon: float | None = None
    delta: float | None = None
    row_count: int | None = None
    result_sha256: str | None = None
    request_id: str | None = None
    # a release built from feeds: the feeds this access could read, and those withheld
    # from it by their data controllers, with why (governance.access.sources.Scope)
    sources: tuple[str, ...] | None = None
    withheld: tuple[str, ...] | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"unknown audit action {self.action!r}: add it to ACTIONS")

    @classmethod
    def by(cls, principal: Principal, action: str, **fields: Any) -> AuditEvent:
        """An event done by an authenticated principal (actor, key id and role filled)."""
        return cls(
            action,
            actor=principal.user.user_id,
            key_id=principal.key_id,
            role=principal.user.role,
            **fields,
        )

    def body(self, *, seq: int, prev_hash: str, time: str) -> dict[str, Any]:
        # (not dataclasses.asdict: its deep copies cost more than the rest of an append)
        out = {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if getattr(self, f.name) is not None and f.name != "details"
        }
        if self.details:
            # nested as a JSON string: the body's own keys stay the only unescaped keys
            out["details"] = canonical(self.details)
        if self.query_text is not None:
            out["query_sha256"] = sha256_text(self.query_text)
        return {**out, "seq": seq, "prev_hash": prev_hash, "time": time}
