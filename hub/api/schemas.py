"""Request bodies and the problem+json schema of the `/v1` API.

Numbers are numbers: every field is strict (``true`` is not 1, ``"0.01"`` is not a
number), so a client's mistake is a clear 422 rather than a silent conversion.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from governance.outputs.disclosure import REDACTION_THRESHOLD, ROUNDING_MULTIPLE
from governance.privacy.accounting import DEFAULT_PROJECT_DELTA


def _finite(value: float | None) -> float | None:
    if value is not None and not math.isfinite(value):
        raise ValueError("must be a finite number")
    return value


# a JSON number (an integer is fine), finite, never a boolean or a string
Number = Annotated[float, Field(strict=True), AfterValidator(_finite)]

PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["type", "title", "status", "detail", "code"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "code": {"type": "string"},
    },
}
# every error any route can give, as RFC 9457 problem+json (problems.py), so that the
# schema describes what clients really get (a schemathesis test checks conformance)
ERRORS: dict[int | str, dict[str, Any]] = {
    status: {
        "description": description,
        "content": {"application/problem+json": {"schema": PROBLEM_SCHEMA}},
    }
    for status, description in (
        (400, "a mistake in the query (code query_error): where it is, and the names to use"),
        (401, "no key, or a malformed, unknown or revoked key"),
        (403, "the caller's role, project or budget does not allow this"),
        (404, "no such resource, or not the caller's to see"),
        (409, "the resource is not in a state that allows this"),
        (413, "the request body is too large"),
        (
            422,
            "the request is not valid (the fields named, never their values), or a "
            "governance rule refuses it (code policy_violation, naming the rule)",
        ),
        (503, "the audit store or the release cannot be used: nothing was done"),
    )
}


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_max_length=20_000, strict=True)


class ProjectRequest(Strict):
    title: str = Field(min_length=1, max_length=200)
    purpose: str = Field(min_length=1, max_length=5000)
    lay_summary: str = Field(min_length=1, max_length=5000)
    grants: dict[str, list[str]]
    days: int = Field(ge=1, le=3650)
    members: list[str] = Field(default_factory=list, max_length=50)
    # the access policy's terms (required of a life-science company's project)
    public_benefit: str | None = Field(default=None, max_length=5000)
    daa_reference: str | None = Field(default=None, max_length=64)
    daa_expires: str | None = Field(
        default=None, max_length=10, description="the data access agreement's expiry, YYYY-MM-DD"
    )


class FeasibilityRequest(Strict):
    spec: dict[str, Any] | None = Field(
        default=None, description="the feasibility spec as a JSON object (dates as text)"
    )
    spec_toml: str | None = Field(default=None, max_length=20_000, description="or as TOML")


class Approval(Strict):
    epsilon: Number
    delta: Number = DEFAULT_PROJECT_DELTA
    days: int | None = Field(default=None, ge=1, le=3650)
    grants: dict[str, list[str]] | None = None
    sdc_threshold: int = Field(default=REDACTION_THRESHOLD, ge=1, le=100)
    sdc_rounding: int = Field(default=ROUNDING_MULTIPLE, ge=1, le=100)
    trainers: list[str] = Field(default_factory=list, max_length=50)
    output_reviewers: int = Field(
        default=1, ge=1, le=2, description="independent stewards who must approve each output"
    )
    sources: list[str] | None = Field(
        default=None,
        max_length=200,
        description="a release built from feeds: the feeds the project may use (default: "
        "all); each then awaits its data controller's decision",
    )


class SourceDecision(Strict):
    decision: Literal["approve", "refuse", "withdraw"]
    reason: str = Field(
        default="", max_length=2000, description="required to refuse or withdraw (5+ chars)"
    )


class Reason(Strict):
    reason: str = Field(min_length=5, max_length=2000)


class OptionalReason(Strict):
    reason: str | None = Field(default=None, max_length=2000)


class QueryRequest(Strict):
    sql: str = Field(min_length=1, max_length=20_000)
    target: Literal["dummy", "real"] = "dummy"
    mode: Literal["dp", "exact"] | None = None
    epsilon: Number | None = None
    offset: int = Field(
        default=0,
        ge=0,
        le=100_000_000,
        description="dummy release: skip this many rows (paging past the 10,000-row page; "
        "add ORDER BY for stable pages)",
    )
    rows_per_person: int | None = Field(
        default=None,
        ge=1,
        le=10_000,
        description="dp mode: the most rows one person contributes (k), up to the source's "
        "steward-set maximum (default: the source's own; 1 on person-level tables)",
    )


Cell = str | int | float | bool | None


class QueryAnswer(BaseModel):
    """The answer to a query (``POST``) or its stored record (``GET``).

    ``status`` is ``done`` (rows are here), ``pending_review`` (an exact output waits for
    a steward; ``output_id`` names it), or ``no_answer`` (a DP query read data but gave
    no answer; its budget is spent). DP answers also carry the noise and its intervals.
    """

    model_config = ConfigDict(extra="allow")

    query_id: str
    status: str = Field(description="done, pending_review or no_answer")
    release: str | None = Field(default=None, description="the release the query ran on")
    columns: list[str] | None = Field(default=None, description="column names, in order")
    rows: list[list[Cell]] | None = Field(default=None, description="result rows")
    truncated: bool | None = Field(default=None, description="dummy mode: rows were capped")
    output_id: str | None = Field(default=None, description="exact mode: the output to review")
    epsilon_spent: float | None = Field(default=None, description="dp mode: ε charged")
    epsilon_remaining: float | None = Field(default=None, description="dp mode: ε left")
    ci95_half_width: dict[str, Any] | None = Field(
        default=None, description="dp mode: half-width of each column's 95% noise interval"
    )
    contribution_bound: int | None = Field(
        default=None, description="dp mode: the most rows one person contributed (k)"
    )
    bounding: dict[str, Any] | None = Field(
        default=None, description="dp mode: how each person's contribution was bounded"
    )
    noise_scale: dict[str, Any] | None = Field(
        default=None, description="dp mode: the noise scale of each aggregate column"
    )
