"""Every refusal the governed layer can give. The HTTP mapping is done once, in ``hub/``.

    HubError
     ├── InvalidRequest      bad arguments (a NaN epsilon, an unknown role, ...)      → 422
     ├── NotFound            no such user, project, output (or not yours to see)    → 404
     ├── AccessDenied        who you are or what your project allows says no        → 403
     │    └── Unauthenticated  no key, a malformed, unknown or revoked key          → 401
     ├── Conflict            the thing is not in a state that allows this           → 409
     ├── BudgetExhausted     the project's privacy budget cannot cover the spend    → 403
     ├── PolicyViolation     the SQL breaks a policy rule (named in the message)    → 422
     ├── DisclosureRisk      an output would disclose too much                      → 422
     └── AuditUnavailable    the audit store cannot be written: nothing runs        → 503

Every message is safe to show the caller: it names rules, states and ids, never a
patient-level value.
"""

from __future__ import annotations


class HubError(Exception):
    """Base of every governed refusal; ``code`` is stable, the message is for people."""

    code = "hub_error"


class InvalidRequest(HubError):
    code = "invalid_request"


class NotFound(HubError):
    code = "not_found"


class AccessDenied(HubError):
    code = "access_denied"


class Unauthenticated(AccessDenied):
    code = "unauthenticated"


class Conflict(HubError):
    code = "conflict"


class BudgetExhausted(HubError):
    code = "budget_exhausted"


class PolicyViolation(HubError):
    code = "policy_violation"


class QueryError(PolicyViolation):
    """A plain mistake in the query (its syntax, a name that does not exist): fix and retry.

    Kept apart from governance refusals (``policy_violation``) by its code, so a client
    can tell "you may not" from "there is no such thing".
    """

    code = "query_error"


class DisclosureRisk(HubError):
    code = "disclosure_risk"


class AuditUnavailable(HubError):
    code = "audit_unavailable"
