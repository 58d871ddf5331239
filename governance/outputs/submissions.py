"""Outputs entering review: exact tables (with their audit entry and query record) and
trained models. Each is written in one transaction with its audit entry."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from governance.access import roles
from governance.access.people import Principal
from governance.audit.events import AuditEvent
from governance.clock import now
from governance.errors import AccessDenied, Conflict, InvalidRequest, NotFound
from governance.outputs import disclosure
from governance.outputs.disclosure_ledger import PART
from governance.outputs.exact import FAILED_REASON, Prepared, compute, prepare
from governance.outputs.population_index import MAX_FLAGS
from governance.outputs.review import sha256_json

if TYPE_CHECKING:
    from connectors import releases
    from governance.access.projects import Project
    from governance.outputs.review import OutputReview
    from governance.queries import QueryService


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
        insert_output(
            con,
            output_id,
            project_id,
            query_id,
            event.actor,
            release,
            body,
            manifest,
            signature,
            kind="table",
        )
        review.gov.audit.append(con, event)
        record_query(con)


def insert_output(
    con: sqlite3.Connection,
    output_id: str,
    project_id: str,
    query_id: str,
    author: str | None,
    release: str,
    result: Any,
    manifest: dict[str, Any],
    signature: str,
    *,
    kind: str,
) -> None:
    """An output awaiting review (exact table, model, synthetic dataset or trial estimate),
    inside the caller's transaction with its audit entry."""
    con.execute(
        "INSERT INTO outputs (output_id, project_id, query_id, author, release, status, "
        "result, manifest, signature, created_at, kind) "
        "VALUES (?, ?, ?, ?, ?, 'pending', ?, ?, ?, ?, ?)",
        (
            output_id, project_id, query_id, author, release, json.dumps(result, default=str),
            json.dumps(manifest), signature, now(), kind,
        ),
    )  # fmt: skip


def prepare_exact(
    service: QueryService, node: dict[str, Any], release: releases.Release
) -> Prepared:
    """Classify the output columns and bind the hub's statistics: reads no data."""
    engine = service.engine(release)
    cur = engine.cursor()
    try:
        return prepare(engine, cur, node, engine.catalogue(cur))
    finally:
        cur.close()


def submit_exact(
    service: QueryService,
    principal: Principal,
    project: Project,
    query_id: str,
    sql: str,
    prepared: Prepared,
    release: releases.Release,
    event: dict[str, Any],
) -> dict[str, Any]:
    """Data is read from here on: whatever happens goes to a steward, and the
    researcher is told the same thing ("pending review") either way."""
    outputs = service.gov.outputs
    output_id = outputs.new_id()
    threshold = project.sdc_threshold or disclosure.REDACTION_THRESHOLD
    multiple = project.sdc_rounding or disclosure.ROUNDING_MULTIPLE
    manifest: dict[str, Any] = {
        "output_id": output_id,
        "project": project.project_id,
        "query_sha256": hashlib.sha256(sql.encode()).hexdigest(),
        "release": release.id,
        # the rules are the project's, known before any data is read: every output
        # carries them, a failed one too (their absence would mark it as failed)
        "rules": {"redaction_threshold": threshold, "rounding_multiple": multiple},
    }
    population_file = None
    try:
        done = compute(
            service.engine(release, project),
            sql,
            prepared,
            threshold=threshold,
            multiple=multiple,
            owner=project.project_id,
        )
        population_file = outputs.ledger.write(
            project.project_id, output_id, done.population, done.row_keys
        )
        # each aggregate's own people where they are not the whole output's (a sum
        # skips people whose value is NULL; a cell it does not publish adds no one)
        whole = done.population.tobytes()
        parts = [
            (f"{output_id}{PART}{k}", people, keys)
            for k, (people, keys) in enumerate(done.parts, 1)
            if people.tobytes() != whole
        ]
        for part_id, people, keys in parts:
            outputs.ledger.write(project.project_id, part_id, people, keys)
        seen = outputs.ledger.seen(project.project_id)
        fresh = (
            service.gov.store.cached()
            .execute(
                "SELECT rowid, output_id FROM outputs WHERE project_id = ? AND rowid > ? "
                "ORDER BY rowid",
                (project.project_id, seen),
            )
            .fetchall()
        )
        flags = outputs.ledger.check(
            project.project_id,
            output_id,
            done.population,
            stored=[r[1] for r in fresh],
            stored_up_to=fresh[-1][0] if fresh else seen,
            threshold=threshold,
            row_keys=done.row_keys,
            parts=parts,
        )
        manifest.update(
            {
                **done.sdc.manifest(),
                "differencing": flags,
                "differencing_truncated": len(flags) >= MAX_FLAGS,
                "population": len(done.population),
            }
        )
        body: dict[str, list[Any]] = {
            "columns": done.columns,
            "rows": [[r[c] for c in done.columns] for r in done.sdc.rows],
        }
    except Exception:  # a data-dependent failure: the steward's to see, not the caller's
        if population_file is not None:
            outputs.ledger.remove(project.project_id, output_id)
        population_file = None
        manifest.update({"failed": True, "reason": FAILED_REASON})
        body = {"columns": [], "rows": []}  # nothing to release
    manifest["created_at"] = now()
    try:
        store_exact(
            outputs,
            event=service.event_for(
                principal,
                release=release.id,
                row_count=len(body["rows"]),
                result_sha256=sha256_json(body),
                target=output_id,
                details={
                    "flags": len(manifest.get("differencing", [])),
                    "failed": bool(manifest.get("failed")),
                },
                **event,
            ),
            project_id=project.project_id,
            query_id=query_id,
            release=release.id,
            output_id=output_id,
            body=body,
            manifest=manifest,
            record_query=lambda con: service.record(
                query_id,
                project,
                principal,
                sql,
                "real",
                "exact",
                release.id,
                "pending_review",
                None,
                {"output_id": output_id},
                output_id,
                con=con,
            ),
        )
    except BaseException:
        if population_file is not None:
            outputs.ledger.remove(project.project_id, output_id)  # none without its output
        raise
    return {
        "query_id": query_id,
        "status": "pending_review",
        "output_id": output_id,
        "release": release.id,
    }


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
        insert_output(
            con,
            output_id,
            project_id,
            model_id,
            principal.user.user_id,
            release,
            card,
            manifest,
            signature,
            kind="model",
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


def submit_synthetic(
    review: OutputReview,
    principal: Principal,
    project_id: str,
    *,
    dataset_id: str,
    release: str,
    card: dict[str, Any],
    parquet: Path,
    spend_id: int,
    epsilon: float,
    delta: float,
) -> str:
    """A DP synthetic table enters review: the ledger's commit, the output and its audit
    entry in one transaction. What a steward approves is exactly the file whose hash the
    signed manifest holds; the download checks it again."""
    data = parquet.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    output_id = review.new_id()
    manifest = {
        "kind": "synthetic",
        "dataset_id": dataset_id,
        "project": project_id,
        "release": release,
        "parquet": str(parquet),
        "parquet_sha256": digest,
        "rows": card.get("rows"),
        "epsilon": epsilon,
        "delta": delta,
        "created_at": now(),
    }
    signature = review.sign(manifest)
    with review.gov.store.transaction() as con:
        review.gov.ledger.commit_in(
            con, spend_id, epsilon=epsilon, delta=delta, actor=principal.user.user_id
        )
        insert_output(
            con,
            output_id,
            project_id,
            dataset_id,
            principal.user.user_id,
            release,
            card,
            manifest,
            signature,
            kind="synthetic",
        )
        review.gov.audit.append(
            con,
            AuditEvent.by(
                principal,
                "synthetic.generate",
                project=project_id,
                release=release,
                target=output_id,
                epsilon=epsilon,
                delta=delta,
                row_count=card.get("rows"),
                result_sha256=digest,
                details={"dataset_id": dataset_id, "method": card.get("method")},
            ),
        )
    return output_id


def submit_trial(
    review: OutputReview,
    principal: Principal,
    project_id: str,
    *,
    trial_id: str,
    release: str,
    estimate: dict[str, Any],
    manifest: dict[str, Any],
    event: AuditEvent,
) -> str:
    """An emulated trial's DP estimate enters review, with its audit entry (``event``,
    ``trial.estimate``) in the same transaction.

    The estimate is differentially private, yet it is a result about the region's people
    that a reader will act on: like any output it leaves only once a steward who is not
    its author has read it beside its protocol (eligibility, strategies, time zero,
    follow-up, outcome, contrast, confounders) and its privacy cost. ``manifest`` is
    what the hub signs: the protocol, the cohort SQL's hash, ε and δ, the estimate's hash.
    """
    output_id = review.new_id()
    manifest = {
        **manifest,
        "kind": "trial",
        "trial_id": trial_id,
        "project": project_id,
        "release": release,
        "result_sha256": sha256_json(estimate),
        "created_at": now(),
    }
    signature = review.sign(manifest)
    with review.gov.store.transaction() as con:
        insert_output(
            con,
            output_id,
            project_id,
            trial_id,
            principal.user.user_id,
            release,
            estimate,
            manifest,
            signature,
            kind="trial",
        )
        review.gov.audit.append(
            con,
            dataclasses.replace(event, target=output_id, result_sha256=manifest["result_sha256"]),
        )
    return output_id


def trial_output(
    service: QueryService, principal: Principal, project_id: str, trial_id: str
) -> str:
    """The output that holds a trial's estimate (NotFound outside the caller's projects)."""
    service.project_for(principal, project_id)
    row = (
        service.gov.store.cached()
        .execute(
            "SELECT output_id FROM outputs WHERE kind = 'trial' AND query_id = ? "
            "AND project_id = ?",
            (trial_id, project_id),
        )
        .fetchone()
    )
    if row is None:
        raise NotFound(f"no trial {trial_id} in project {project_id}")
    return str(row["output_id"])
