"""Governed queries: the one path from a researcher's SQL to an answer or an output.

    authorize → policy (parse tree + plan) → engine (locked down)
        dummy release:      exact rows
        real release, dp:   budget reserved → bounded, noised by OpenDP → committed
        real release, exact: output columns classified (outputs/exact_plan) → SDC
                             → disclosure ledger (differencing, trackers) → signed
                             manifest → output pending a steward's review
                             (outputs/review: approve, reject, return for changes)

Every request writes an audit entry, refusals included; no entry carries a result row.
The HTTP layer maps these calls and their errors, and does nothing else.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import sqlite3
import threading
from pathlib import Path
from typing import Any, Literal

from connectors import releases
from governance import codelists, dictionary, linkage_report
from governance.access import roles
from governance.access.people import Principal
from governance.access.projects import Project, authorize
from governance.access.sources import Scope
from governance.audit.events import AuditEvent
from governance.clock import now
from governance.errors import (
    AccessDenied,
    AuditUnavailable,
    Conflict,
    HubError,
    InvalidRequest,
    NotFound,
    PolicyViolation,
)
from governance.facade import Governance
from governance.outputs import submissions
from governance.outputs.review import Decision, sha256_json
from governance.privacy import accounting, domains, dp_answer
from governance.sql.cache import Bounded
from governance.sql.engine import Engine, grants_key

Target = Literal["dummy", "real"]
Mode = Literal["dp", "exact"]


def query_action(target: str, mode: str | None) -> str:
    """The audit action of a query request, whatever (possibly invalid) it asked for.

    >>> query_action("real", "dp"), query_action("real", None), query_action("x", None)
    ('query.real.dp', 'query.real', 'query.invalid')
    """
    if target == "dummy":
        return "query.dummy"
    if target != "real":
        return "query.invalid"
    return f"query.real.{mode}" if mode in ("dp", "exact") else "query.real"


_now = now
_sha256 = sha256_json


class QueryService:
    def __init__(self, gov: Governance, *, timeout_s: float = 30.0) -> None:
        self.gov = gov
        self.timeout_s = timeout_s
        # half-written population files are swept once, at `hub serve` start
        # (disclosure_ledger.sweep_partials), never here: another process may be writing
        self._engines: dict[Path, Engine] = {}
        self._lock = threading.Lock()
        # the column catalogue per release and grants (kept as JSON text: each caller
        # gets its own copy); a new release or a grant change is a new key
        self._catalogues: Bounded[tuple[str, str, Any], str] = Bounded(256)

    # ------------------------------------------------------------------ helpers
    def release_for(self, target: Target) -> releases.Release:
        home = self.gov.home if target == "real" else self.gov.home / "dummy"
        return releases.get_release(home)

    def real_release(self, release_id: str) -> releases.Release:
        """A published real release by id (a model's audit re-reads the one it used)."""
        return releases.get_release(self.gov.home, release_id)

    def engine(self, release: releases.Release, project: Project | None = None) -> Engine:
        """The release's engine; for a project, restricted to the rows of the feeds its
        data controllers approved (``AccessDenied`` when none has, before any read)."""
        with self._lock:
            engine = self._engines.get(release.path)
            if engine is None:
                engine = Engine(release.path, timeout_s=self.timeout_s)
                self._engines[release.path] = engine
        scope = None if project is None else self.scope(project, release)
        if scope is None:
            return engine
        try:
            return engine.scoped(scope.systems)
        except ValueError:
            raise AccessDenied(
                f"{release.id} was built before per-source access: its data controllers' "
                "decisions cannot be enforced on it; ingest its feeds again"
            ) from None

    def scope(self, project: Project, release: releases.Release) -> Scope | None:
        """What ``project`` may read of ``release`` (None: all of it; see access.sources)."""
        return self.gov.sources.scope(project.project_id, release.manifest)

    def scope_fields(self, project: Project, release: releases.Release) -> dict[str, Any]:
        """The audit fields naming the feeds a request reads and those withheld, and why."""
        scope = self.scope(project, release)
        return {} if scope is None else scope.audit_fields()

    def project_for(self, principal: Principal, project_id: str) -> Project:
        """The project, or NotFound when the caller may not even know it exists."""
        project = self.gov.projects.get(project_id)
        if not self.gov.projects.may_see(principal.user, project):
            raise NotFound(f"no project {project_id}")
        return project

    def catalogue(self, principal: Principal, project_id: str | None) -> dict[str, Any]:
        """Tables, columns, types, declared domains and bounds a project may use."""
        granted: dict[str, list[str]] | None = None
        if not roles.may(principal.user.role, "datasets.all"):
            if project_id is None:
                raise InvalidRequest("name the project (project_id)")
            granted = self.project_for(principal, project_id).granted or {}
        return self._catalogue(granted)

    def public_dictionary(self) -> dict[str, Any]:
        """Every table and column in words, the codes in use and the codelists: no data."""
        return self._catalogue(None)

    def _catalogue(self, granted: dict[str, list[str]] | None) -> dict[str, Any]:
        release = self.release_for("real")
        key = (release.id, str(release.path), None if granted is None else grants_key(granted))
        text = self._catalogues.get_or_make(
            key, lambda: json.dumps(self._read_catalogue(release, granted))
        )
        described: dict[str, Any] = json.loads(text)
        return described

    def _read_catalogue(
        self, release: releases.Release, granted: dict[str, list[str]] | None
    ) -> dict[str, Any]:
        cur = self.engine(release).cursor()
        try:
            rows = cur.execute(
                "SELECT table_name, column_name, data_type FROM duckdb_columns() "
                "WHERE NOT internal AND table_name NOT LIKE '\\_%' "
                "ESCAPE '\\' ORDER BY table_name, column_index"
            ).fetchall()
        finally:
            cur.close()
        tables: dict[str, list[tuple[str, str]]] = {}
        for table, column, dtype in rows:
            if granted is None or column in granted.get(table, []):
                tables.setdefault(table, []).append((column, dtype))
        described = {t: domains.describe(t, cols) for t, cols in tables.items()}
        return {
            "release": release.id,
            "tables": dictionary.annotate(described, dictionary.codes_in_use(self, release)),
            "codelists": codelists.describe(),
            "linkage": linkage_report.public_summary(release.manifest),
        }

    def audit(self, principal: Principal, **fields: Any) -> None:
        self.gov.audit.record(
            self.event_for(
                principal,
                **fields,
            )
        )

    # ------------------------------------------------------------------ queries
    def run(
        self,
        principal: Principal,
        project_id: str,
        *,
        sql: str,
        target: Target,
        mode: Mode | None = None,
        epsilon: float | None = None,
        rows_per_person: int | None = None,
        offset: int = 0,
    ) -> dict[str, Any]:
        project = self.project_for(principal, project_id)
        event = {
            "action": query_action(target, mode),
            "project": project_id,
            "query_text": sql,
        }
        try:
            roles.require(principal.user, "query.run")
            kind = "dummy" if target == "dummy" else mode if mode in ("dp", "exact") else None
            authorize(project, principal.user, kind=kind)
            if target not in ("dummy", "real"):
                raise InvalidRequest("target must be dummy or real")
            if target == "real" and mode not in ("dp", "exact"):
                raise InvalidRequest("on the real release, mode must be dp or exact")
            if target == "real" and mode == "dp":
                if epsilon is None:
                    raise InvalidRequest("a dp query needs epsilon")
                try:
                    accounting.validate_epsilon(epsilon)
                except ValueError as exc:
                    raise InvalidRequest(str(exc)) from None
            sql = codelists.expand(sql)  # codelist('name') → its codes; audited as written
            release = self.release_for(target)
            event.update(self.scope_fields(project, release))
            engine = self.engine(release, project)
            cur = engine.cursor()
            try:
                # checked once per release, text and grants (a release never changes)
                checked = engine.check(
                    cur, sql, granted=project.granted or {}, real=target == "real"
                )
            finally:
                cur.close()
        except (AccessDenied, InvalidRequest, PolicyViolation, NotFound, Conflict) as exc:
            self.audit(principal, decision="denied", reason=str(exc), **event)
            raise
        node = checked.node
        query_id = "q-" + secrets.token_hex(6)
        try:
            if target == "dummy":
                # nothing runs unless its audit entry can be written (a dp query's budget
                # reservation is its own proof: it is a durable write before anything runs)
                self.gov.audit.ensure_writable()
                return self._dummy(principal, project, query_id, sql, release, event, offset)
            if mode == "dp":
                assert epsilon is not None
                return dp_answer.answer(
                    self,
                    principal,
                    project,
                    query_id,
                    sql,
                    node,
                    release,
                    epsilon,
                    event,
                    rows_per_person,
                )
            self.gov.audit.ensure_writable()
            prepared = submissions.prepare_exact(self, node, release)
            return submissions.submit_exact(
                self, principal, project, query_id, sql, prepared, release, event
            )
        except AuditUnavailable:
            raise  # nothing can be recorded: the caller gets 503
        except HubError as exc:
            # a budget refusal is audited twice: by the ledger, in the transaction that
            # checked it (budget.reserve, denied), and here as the request's outcome
            # failures after the checks (a timeout, a spec dp cannot answer) are audited too
            self.audit(principal, decision="denied", reason=str(exc), target=query_id, **event)
            raise

    def record(
        self,
        query_id: str,
        project: Project,
        principal: Principal,
        sql: str,
        target: str,
        mode: str | None,
        release: str,
        status: str,
        epsilon: float | None,
        result: Any,
        output_id: str | None = None,
        *,
        con: sqlite3.Connection,
    ) -> None:
        """Store the query, inside the transaction that writes its audit entry."""
        con.execute(
            "INSERT INTO queries VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                query_id,
                project.project_id,
                principal.user.user_id,
                sql,
                hashlib.sha256(sql.encode()).hexdigest(),
                target,
                mode,
                release,
                status,
                epsilon,
                json.dumps(result, default=str),
                output_id,
                now(),
            ),
        )

    def event_for(self, principal: Principal, **fields: Any) -> AuditEvent:
        return AuditEvent(
            actor=principal.user.user_id,
            key_id=principal.key_id,
            role=principal.user.role,
            **fields,
        )

    def _dummy(
        self,
        principal: Principal,
        project: Project,
        query_id: str,
        sql: str,
        release: releases.Release,
        event: dict[str, Any],
        offset: int = 0,
    ) -> dict[str, Any]:
        # kept per project: the dummy release never changes (``Engine.run``)
        result = self.engine(release, project).run(sql, offset=offset, owner=project.project_id)
        body = {
            "columns": result.columns,
            "rows": [list(r) for r in result.rows],
            "truncated": result.truncated,
            "offset": offset,
        }
        # the audit entry and the stored query commit together, before the response
        with self.gov.store.transaction() as con:
            self.gov.audit.append(
                con,
                self.event_for(
                    principal,
                    release=release.id,
                    row_count=len(result.rows),
                    result_sha256=_sha256(body),
                    target=query_id,
                    **event,
                ),
            )
            self.record(
                query_id,
                project,
                principal,
                sql,
                "dummy",
                None,
                release.id,
                "done",
                None,
                body,
                con=con,
            )
        return {"query_id": query_id, "status": "done", "release": release.id, **body}

    def get(self, principal: Principal, project_id: str, query_id: str) -> dict[str, Any]:
        """A stored query; an exact one carries its output's status, reasons and link."""
        self.project_for(principal, project_id)
        row = (
            self.gov.store.cached()
            .execute(
                "SELECT * FROM queries WHERE query_id = ? AND project_id = ?",
                (query_id, project_id),
            )
            .fetchone()
        )
        # project_for has already refused anyone outside the project
        if row is None:
            raise NotFound(f"no query {query_id}")
        return self._query_view(row)

    def _query_view(self, row: sqlite3.Row) -> dict[str, Any]:
        out = dict(row)
        out["result"] = json.loads(out["result"]) if out["result"] else None
        if out.get("output_id"):
            out["output"] = self.gov.outputs.for_query(out["output_id"])
        return out

    def find(
        self, principal: Principal, project_id: str, *, limit: int = 200
    ) -> list[dict[str, Any]]:
        """A project's queries, newest first, with their status (members and stewards)."""
        self.project_for(principal, project_id)
        rows = self.gov.store.cached().execute(
            "SELECT * FROM queries WHERE project_id = ? ORDER BY created_at DESC, query_id LIMIT ?",
            (project_id, limit),
        )
        return [self._query_view(r) for r in rows]

    # ------------------------------------------------------------------ outputs (kept
    # here for callers of the old service; the review lives in governance/outputs/review.py)
    def pending(self, principal: Principal) -> list[dict[str, Any]]:
        return self.gov.outputs.pending(principal)

    def output(self, principal: Principal, output_id: str) -> dict[str, Any]:
        return self.gov.outputs.output(principal, output_id)

    def review(
        self, principal: Principal, output_id: str, *, approve: bool, reason: str | None = None
    ) -> dict[str, Any]:
        decision: Decision = "approve" if approve else "reject"
        return self.gov.outputs.review(principal, output_id, decision=decision, reason=reason)

    def download(self, principal: Principal, output_id: str) -> dict[str, Any]:
        return self.gov.outputs.download(principal, output_id)

    # ------------------------------------------------------------------ models as outputs
    def workspace(self, project_id: str) -> Path:
        """The project's workspace inside the hub: models and their cards live here."""
        return self.gov.home / "projects" / project_id

    def submit_model(
        self,
        principal: Principal,
        project_id: str,
        *,
        model_id: str,
        release: str,
        card: dict[str, Any],
        artifact_sha256: str,
    ) -> str:
        """Ask for a trained model to leave the hub (``submissions.submit_model``)."""
        project = self.project_for(principal, project_id)
        return submissions.submit_model(
            self.gov.outputs,
            principal,
            project.project_id,
            model_id=model_id,
            release=release,
            card=card,
            artifact_sha256=artifact_sha256,
        )

    def record_model_audit(
        self, principal: Principal, output_id: str, result: dict[str, Any]
    ) -> dict[str, Any]:
        return submissions.record_model_audit(self.gov.outputs, principal, output_id, result)

    def model_output(self, model_id: str) -> str | None:
        return submissions.model_output(self.gov.outputs, model_id)
