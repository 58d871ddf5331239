"""The audit log, for stewards."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query

from hub.api.deps import Gov, Steward

router = APIRouter()


@router.get("/audit", tags=["audit"])
def read_audit(
    principal: Steward,
    gov: Gov,
    actor: str | None = None,
    project: str | None = None,
    action: str | None = None,
    decision: Literal["allowed", "denied"] | None = None,
    since: str | None = None,
    until: str | None = None,
    text: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    before_seq: Annotated[int | None, Query(ge=1, le=2**62)] = None,
) -> dict[str, Any]:
    entries = gov.audit.read(
        principal,
        actor=actor,
        project=project,
        action=action,
        decision=decision,
        since=since,
        until=until,
        text=text,
        limit=limit,
        before_seq=before_seq,
    )
    return {"entries": entries}


@router.get("/audit/verify", tags=["audit"])
def verify_audit(principal: Steward, gov: Gov) -> dict[str, Any]:
    report = gov.audit.verify()
    return report.as_dict()
