"""Outputs entering review: exact tables (with their audit entry and query record) and
trained models. Each is written in one transaction with its audit entry."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from governance.access import roles
from governance.access.people import Principal
from governance.audit.events import AuditEvent
from governance.errors import AccessDenied, Conflict, InvalidRequest, NotFound
from governance.outputs.review import now

if TYPE_CHECKING:
    from governance.outputs.review import OutputReview


def store_exact(
    review: OutputReview,
    *,
    event: AuditEvent,
    project_id: str,
    query_id: str,
    release: str,
    output_id: str,
    body: dict[str, Any],
    manifest: dict[str, Any],
    record_query: Callable[[sqlite3.Connection], None],
) -> None:
    """An exact output, its audit entry (``event``) and its query, in one transaction."""
    signature = review.sign(manifest)
    with review.gov.store.transaction() as con:
        con.execute(
            "INSERT INTO outputs (output_id, project_id, query_id, author, "
            "release, status, result, manifest, signature, created_at) "
            "VALUES (?, ?, ?, ?, ?, 'pending', ?, ?, ?, ?)",
            (
                output_id,
                project_id,
                query_id,
                event.actor,
                release,
                json.dumps(body, default=str),
                json.dumps(manifest),
                signature,
                now(),
            ),
        )
        review.gov.audit.append(con, event)
        record_query(con)


def submit_model(
    review: OutputReview,
    principal: Principal,
    project_id: str,
    *,
    model_id: str,
    release: str,
    card: dict[str, Any],
    artifact_sha256: str,
) -> str:
    """Ask for a trained model to leave the hub: a steward reviews its card first.

    Models can memorise their training data, so a model is an output like any other:
    pending until an accredited steward who is not its author approves it. The manifest
    carries the artifact's hash (what is approved is exactly that file) and the latest
    membership-inference audit, if any has been run.
    """
    event: dict[str, Any] = {"project": project_id}
    try:
        roles.require(principal.user, "model.submit")
    except AccessDenied as exc:
        review.gov.audit.record(
            AuditEvent.by(principal, "model.submit", decision="denied", reason=str(exc), **event)
        )
        raise
    output_id = review.new_id()
    manifest = {
        "kind": "model",
        "model_id": model_id,
        "project": project_id,
        "release": release,
        "artifact_sha256": artifact_sha256,
        "membership_inference": card.get("membership_inference"),
        "created_at": now(),
    }
    signature = review.sign(manifest)
    with review.gov.store.transaction() as con:
        con.execute(
            "INSERT INTO outputs (output_id, project_id, query_id, author, release, status, "
            "result, manifest, signature, created_at, kind) "
            "VALUES (?, ?, ?, ?, ?, 'pending', ?, ?, ?, ?, 'model')",
            (
                output_id,
                project_id,
                model_id,
                principal.user.user_id,
                release,
                json.dumps(card, default=str),
                json.dumps(manifest),
                signature,
                now(),
            ),
        )
        review.gov.audit.append(
            con,
            AuditEvent.by(
                principal,
                "model.submit",
                release=release,
                target=output_id,
                result_sha256=artifact_sha256,
                details={"model_id": model_id},
                **event,
            ),
        )
    return output_id


def record_model_audit(
    review: OutputReview, principal: Principal, output_id: str, result: dict[str, Any]
) -> dict[str, Any]:
    """Attach a steward's membership-inference audit to a pending model output."""
    try:
        roles.require(principal.user, "model.audit")
        row = review.row(output_id)
        if row["kind"] != "model":
            raise InvalidRequest(f"output {output_id} is not a model")
        if row["status"] != "pending":
            raise Conflict(f"output {output_id} is already {row['status']}")
    except (AccessDenied, Conflict, InvalidRequest, NotFound) as exc:
        review.gov.audit.record(
            AuditEvent.by(
                principal, "model.audit", target=output_id, decision="denied", reason=str(exc)
            )
        )
        raise
    manifest = json.loads(row["manifest"])
    manifest["membership_inference"] = result
    signature = review.sign(manifest)
    with review.gov.store.transaction() as con:
        con.execute(
            "UPDATE outputs SET manifest = ?, signature = ? WHERE output_id = ?",
            (json.dumps(manifest), signature, output_id),
        )
        review.gov.audit.append(
            con,
            AuditEvent.by(
                principal,
                "model.audit",
                target=output_id,
                project=row["project_id"],
                details={"attack_auc": result.get("attack_auc")},
            ),
        )
    return review.describe(review.row(output_id))


def model_output(review: OutputReview, model_id: str) -> str | None:
    """The pending output that asks to release this model, if any."""
    row = (
        review.gov.store.cached()
        .execute(
            "SELECT output_id FROM outputs WHERE kind = 'model' AND query_id = ? "
            "AND status = 'pending' ORDER BY created_at DESC LIMIT 1",
            (model_id,),
        )
        .fetchone()
    )
    return None if row is None else str(row["output_id"])
