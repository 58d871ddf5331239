"""Governed queries: the one path from a researcher's SQL to an answer or an output.

    authorize → policy (parse tree + plan) → engine (locked down)
        dummy release:      exact rows
        real release, dp:   budget reserved → bounded, noised by OpenDP → committed
        real release, exact: SDC → disclosure ledger (differencing) → signed manifest
                             → output pending a steward's review

Every request writes an audit entry, refusals included; no entry carries a result row.
The HTTP layer maps these calls and their errors, and does nothing else.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import secrets
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from connectors import releases
from governance import codelists, dictionary
from governance.access import roles
from governance.access.people import Principal
from governance.access.projects import Project, authorize
from governance.audit.events import AuditEvent
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
from governance.outputs import disclosure
from governance.privacy import accounting, domains, dp_query
from governance.privacy import mechanism as dp
from governance.sql import policy as sql_policy
from governance.sql.engine import Engine

Target = Literal["dummy", "real"]
Mode = Literal["dp", "exact"]
DIFFERENCING_LIMIT: Final = disclosure.REDACTION_THRESHOLD


def row_level_sql(
    cur: duckdb.DuckDBPyConnection,
    node: dict[str, Any],
    columns: list[str],
    *,
    distinct: bool = False,
) -> str:
    """The FROM and WHERE of a checked SELECT, returning ``columns`` per row.

    Built by editing DuckDB's own parse tree and letting DuckDB write the SQL back
    (``json_deserialize_sql``), so no text of the researcher's is pasted into SQL.
    """
    select_list = [
        {"class": "COLUMN_REF", "type": "COLUMN_REF", "alias": "", "query_location": 0,
         "column_names": [c]}
        for c in columns
    ]  # fmt: skip
    modifiers = [{"type": "DISTINCT_MODIFIER", "distinct_on_targets": []}] if distinct else []
    row_node = {
        **node,
        "select_list": select_list,
        "group_expressions": [],
        "group_sets": [],
        "having": None,
        "aggregate_handling": "STANDARD_HANDLING",
        "modifiers": modifiers,
    }
    tree = {"error": False, "statements": [{"node": row_node}]}
    text: str = cur.execute("SELECT json_deserialize_sql($j)", {"j": json.dumps(tree)}).fetchall()[
        0
    ][0]
    return text


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


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _sha256(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


@dataclass(frozen=True)
class Columns:
    counts: list[str]
    extremes: list[str]
    groups: list[str]


class QueryService:
    def __init__(self, gov: Governance, *, timeout_s: float = 30.0) -> None:
        self.gov = gov
        self.timeout_s = timeout_s
        self.outputs_dir = gov.home / "outputs"
        self.outputs_dir.mkdir(parents=True, exist_ok=True)
        for partial in self.outputs_dir.glob("*/.*.partial"):  # left by a killed process
            partial.unlink(missing_ok=True)
        self._engines: dict[Path, Engine] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ helpers
    def release_for(self, target: Target) -> releases.Release:
        home = self.gov.home if target == "real" else self.gov.home / "dummy"
        return releases.get_release(home)

    def real_release(self, release_id: str) -> releases.Release:
        """A published real release by id (a model's audit re-reads the one it used)."""
        return releases.get_release(self.gov.home, release_id)

    def engine(self, release: releases.Release) -> Engine:
        with self._lock:
            engine = self._engines.get(release.path)
            if engine is None:
                engine = Engine(release.path, timeout_s=self.timeout_s)
                self._engines[release.path] = engine
            return engine

    def project_for(self, principal: Principal, project_id: str) -> Project:
        """The project, or NotFound when the caller may not even know it exists."""
        project = self.gov.projects.get(project_id)
        user = principal.user
        if not roles.may(user.role, "project.view_any") and user.user_id not in project.members:
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
        }

    def audit(self, principal: Principal, **fields: Any) -> None:
        self.gov.audit.record(
            self._event(
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
    ) -> dict[str, Any]:
        project = self.project_for(principal, project_id)
        event = {
            "action": query_action(target, mode),
            "project": project_id,
            "query_text": sql,
        }
        try:
            roles.require(principal.user, "query.run")
            authorize(project, principal.user)
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
            engine = self.engine(release)
            cur = engine.cursor()
            try:
                checked = sql_policy.check(
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
                return self._dummy(principal, project, query_id, sql, release, event)
            if mode == "dp":
                assert epsilon is not None
                return self._dp(
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
            return self._exact(principal, project, query_id, sql, node, release, event)
        except AuditUnavailable:
            raise  # nothing can be recorded: the caller gets 503
        except HubError as exc:
            # a budget refusal is audited twice: by the ledger, in the transaction that
            # checked it (budget.reserve, denied), and here as the request's outcome
            # failures after the checks (a timeout, a spec dp cannot answer) are audited too
            self.audit(principal, decision="denied", reason=str(exc), target=query_id, **event)
            raise

    def _record(
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
                _now(),
            ),
        )

    def _event(self, principal: Principal, **fields: Any) -> AuditEvent:
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
    ) -> dict[str, Any]:
        result = self.engine(release).run(sql)
        body = {
            "columns": result.columns,
            "rows": [list(r) for r in result.rows],
            "truncated": result.truncated,
        }
        # the audit entry and the stored query commit together, before the response
        with self.gov.store.transaction() as con:
            self.gov.audit.append(
                con,
                self._event(
                    principal,
                    release=release.id,
                    row_count=len(result.rows),
                    result_sha256=_sha256(body),
                    target=query_id,
                    **event,
                ),
            )
            self._record(
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

    # ------------------------------------------------------------------ dp
    def _dp_spec(
        self,
        node: dict[str, Any],
        cur: duckdb.DuckDBPyConnection,
        engine: Engine,
        epsilon: float,
        rows_per_person: int | None,
    ) -> tuple[dp_query.Plan, dp.Prepared, str]:
        """The compiled plan, its certified OpenDP measurements and the salt: everything
        that can refuse a DP query, done before any budget is reserved or data read."""
        plan = dp_query.compile_plan(node, engine.catalogue(cur), rows_per_person=rows_per_person)
        salt = secrets.token_hex(8)
        if not all(engine.explain(cur, s.sql) for s in dp_query.statements(plan, salt=salt)):
            # binding and planning read no table data: a refusal here is data-independent
            raise sql_policy.PolicyError(
                "dp_types", "the query's expressions do not fit the columns' types"
            )
        prepared = dp.prepare(plan, epsilon)
        return plan, prepared, salt

    def _dp(
        self,
        principal: Principal,
        project: Project,
        query_id: str,
        sql: str,
        node: dict[str, Any],
        release: releases.Release,
        epsilon: float,
        event: dict[str, Any],
        rows_per_person: int | None = None,
    ) -> dict[str, Any]:
        engine = self.engine(release)
        cur = engine.cursor()
        try:
            plan, prepared, salt = self._dp_spec(node, cur, engine, epsilon, rows_per_person)
        except BaseException:
            cur.close()
            raise
        spend = self.gov.ledger.reserve(
            project.project_id,
            epsilon=epsilon,
            delta=0.0,
            purpose=query_id,
            actor=principal.user.user_id,
            key_id=principal.key_id,
            role=principal.user.role,
        )
        # from here on data is read: whatever happens, the spend is committed (never
        # refunded) and the response does not depend on what went wrong
        body: dict[str, Any]
        try:
            truth = dp.bounded_answers(cur, plan, salt=salt)
            body = dp.answer_body(plan, dp.release(prepared, truth))
            status = "done"
        except Exception:  # a failure after reading data looks like any other
            body = dp.no_answer_body(plan)
            status = "no_answer"
        finally:
            cur.close()
        # the spend, the request's audit entry and the stored query commit together
        with self.gov.store.transaction() as con:
            spent = self.gov.ledger.commit_in(
                con, spend, epsilon=prepared.epsilon, actor=principal.user.user_id
            )
            state = self.gov.ledger.state_in(con, project.project_id)
            body["epsilon_spent"] = spent
            body["epsilon_remaining"] = state.epsilon_remaining
            self.gov.audit.append(
                con,
                self._event(
                    principal,
                    release=release.id,
                    epsilon=spent,
                    delta=0.0,
                    row_count=len(body["rows"]),
                    result_sha256=_sha256(body),
                    target=query_id,
                    reason=dp.NO_ANSWER_REASON if status == "no_answer" else None,
                    details={"spend_id": spend, "outcome": status},
                    **event,
                ),
            )
            self._record(
                query_id,
                project,
                principal,
                sql,
                "real",
                "dp",
                release.id,
                status,
                spent,
                body,
                con=con,
            )
        return {"query_id": query_id, "status": status, "release": release.id, **body}

    # ------------------------------------------------------------------ exact
    def _columns(self, node: dict[str, Any], names: list[str]) -> Columns:
        counts, extremes, groups = [], [], []
        for item, name in zip(node["select_list"], names, strict=True):
            fn = str(item.get("function_name", "")).lower()
            if not sql_policy.has_aggregate(item):
                groups.append(name)
            elif fn in ("count", "count_star"):
                counts.append(name)
            elif fn in ("min", "max"):
                extremes.append(name)
            elif fn in ("median", "quantile_cont", "quantile_disc", "mode"):
                extremes.append(name)  # single values that can describe one person
        return Columns(counts, extremes, groups)

    def _population(self, cur: duckdb.DuckDBPyConnection, node: dict[str, Any]) -> list[int]:
        """The people an exact output describes: its FROM and WHERE, one row per person."""
        sql = row_level_sql(cur, node, ["person_id"], distinct=True)
        return [int(r[0]) for r in cur.execute(sql).fetchall()]

    def _exact(
        self,
        principal: Principal,
        project: Project,
        query_id: str,
        sql: str,
        node: dict[str, Any],
        release: releases.Release,
        event: dict[str, Any],
    ) -> dict[str, Any]:
        engine = self.engine(release)
        result = engine.run(sql)
        cols = self._columns(node, result.columns)
        if not cols.counts:
            raise InvalidRequest(
                "an exact output needs a count per row (count(*) or count(DISTINCT person_id))"
            )
        rows = [dict(zip(result.columns, r, strict=True)) for r in result.rows]
        safe = disclosure.apply_sdc(
            rows,
            count_columns=cols.counts,
            group_columns=cols.groups,
            extreme_columns=cols.extremes,
            threshold=project.sdc_threshold or disclosure.REDACTION_THRESHOLD,
            multiple=project.sdc_rounding or disclosure.ROUNDING_MULTIPLE,
        )
        # other aggregates of a row whose count was redacted go too
        hidden_rows = {a.row for a in safe.actions if a.rule in ("small_count", "secondary")}
        for i in hidden_rows:
            for col in result.columns:
                if (
                    col not in cols.groups
                    and col not in cols.counts
                    and safe.rows[i][col] is not None
                ):
                    safe.rows[i][col] = None
                    safe.actions.append(
                        disclosure.CellAction(i, col, "small_count", "its row's count was redacted")
                    )
        cur = engine.cursor()
        try:
            population = self._population(cur, node)
        finally:
            cur.close()
        output_id = "o-" + secrets.token_hex(6)
        population_file, flags = self._differencing(project.project_id, output_id, population)
        manifest = {
            "output_id": output_id,
            "project": project.project_id,
            "query_sha256": hashlib.sha256(sql.encode()).hexdigest(),
            "release": release.id,
            **safe.manifest(),
            "differencing": flags,
            "population": len(population),
            "created_at": _now(),
        }
        signature = self.gov.audit.signer.sign(json.dumps(manifest, sort_keys=True).encode())
        safe_rows = [[r[c] for c in result.columns] for r in safe.rows]
        body = {"columns": result.columns, "rows": safe_rows}
        try:
            self._store_output(
                principal,
                project,
                query_id,
                sql,
                release,
                output_id,
                body,
                manifest,
                signature,
                len(flags),
                event,
            )
        except BaseException:
            population_file.unlink(missing_ok=True)  # no population without its output
            raise
        return {
            "query_id": query_id,
            "status": "pending_review",
            "output_id": output_id,
            "release": release.id,
        }

    def _store_output(
        self,
        principal: Principal,
        project: Project,
        query_id: str,
        sql: str,
        release: releases.Release,
        output_id: str,
        body: dict[str, Any],
        manifest: dict[str, Any],
        signature: str,
        flags: int,
        event: dict[str, Any],
    ) -> None:
        """The output, its audit entry and the stored query, in one transaction."""
        with self.gov.store.transaction() as con:
            con.execute(
                "INSERT INTO outputs (output_id, project_id, query_id, author, "
                "release, status, result, manifest, signature, created_at) "
                "VALUES (?, ?, ?, ?, ?, 'pending', ?, ?, ?, ?)",
                (
                    output_id,
                    project.project_id,
                    query_id,
                    principal.user.user_id,
                    release.id,
                    json.dumps(body, default=str),
                    json.dumps(manifest),
                    signature,
                    _now(),
                ),
            )
            self.gov.audit.append(
                con,
                self._event(
                    principal,
                    release=release.id,
                    row_count=len(body["rows"]),
                    result_sha256=_sha256(body),
                    target=output_id,
                    details={"flags": flags},
                    **event,
                ),
            )
            self._record(
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
            )

    def _differencing(
        self, project_id: str, output_id: str, population: list[int]
    ) -> tuple[Path, list[dict[str, Any]]]:
        """This output's population file, and earlier outputs whose population differs
        from this one by 1..7 people.

        The file is written under a temporary name, fsynced and renamed into place, so a
        crash never leaves a half-written population for later outputs to trip over;
        only populations of outputs that were stored are compared.
        """
        folder = self.outputs_dir / project_id
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{output_id}.population.parquet"
        partial = folder / f".{output_id}.population.parquet.partial"
        try:
            pq.write_table(
                pa.table({"person_id": pa.array(sorted(population), pa.int64())}), partial
            )
            with open(partial, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(partial, path)
        except OSError:
            partial.unlink(missing_ok=True)
            raise AuditUnavailable(
                "the hub's output store cannot be written; nothing was released"
            ) from None
        stored = {
            r[0]
            for r in self.gov.store.cached().execute(
                "SELECT output_id FROM outputs WHERE project_id = ?", (project_id,)
            )
        }
        flags = []
        con = duckdb.connect()
        try:
            for other in sorted(folder.glob("*.population.parquet")):
                if other == path or other.name.split(".")[0] not in stored:
                    continue
                both = con.execute(
                    "SELECT count(*) FROM read_parquet($a) a "
                    "JOIN read_parquet($b) b USING (person_id)",
                    {"a": str(path), "b": str(other)},
                ).fetchall()[0][0]
                size_other = con.execute(
                    "SELECT count(*) FROM read_parquet($b)", {"b": str(other)}
                ).fetchall()[0][0]
                differ = len(population) + size_other - 2 * both
                if 0 < differ <= DIFFERENCING_LIMIT:
                    flags.append(
                        {
                            "with_output": other.name.split(".")[0],
                            "people_in_difference": differ,
                            "rule": f"populations differ by {DIFFERENCING_LIMIT} or fewer people",
                        }
                    )
        finally:
            con.close()
        return path, flags

    def get(self, principal: Principal, project_id: str, query_id: str) -> dict[str, Any]:
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
        out = dict(row)
        out["result"] = json.loads(out["result"]) if out["result"] else None
        return out

    # ------------------------------------------------------------------ outputs
    def _output(self, output_id: str) -> sqlite3.Row:
        row = (
            self.gov.store.cached()
            .execute("SELECT * FROM outputs WHERE output_id = ?", (output_id,))
            .fetchone()
        )
        if row is None:
            raise NotFound(f"no output {output_id}")
        return row  # type: ignore[no-any-return]

    def pending(self, principal: Principal) -> list[dict[str, Any]]:
        roles.require(principal.user, "output.list")
        rows = self.gov.store.cached().execute(
            "SELECT * FROM outputs WHERE status = 'pending' ORDER BY created_at"
        )
        return [self._describe(r) for r in rows]

    @staticmethod
    def _describe(row: sqlite3.Row) -> dict[str, Any]:
        out = dict(row)
        out["result"] = json.loads(out["result"])
        out["manifest"] = json.loads(out["manifest"])
        return out

    def review(
        self, principal: Principal, output_id: str, *, approve: bool, reason: str | None = None
    ) -> dict[str, Any]:
        user = principal.user
        event: dict[str, Any] = {
            "action": "output.approve" if approve else "output.reject",
            "target": output_id,
        }
        try:
            roles.require(user, "output.review")
            row = self._output(output_id)
            if row["author"] == user.user_id:
                raise AccessDenied("authors cannot review their own outputs")
            if row["status"] != "pending":
                raise Conflict(f"output {output_id} is already {row['status']}")
            if not approve and (not reason or len(reason.strip()) < 5):
                raise InvalidRequest("give a reason for the rejection")
        except (AccessDenied, Conflict, InvalidRequest, NotFound) as exc:
            self.audit(principal, decision="denied", reason=str(exc), **event)
            raise
        with self.gov.store.transaction() as con:
            con.execute(
                "UPDATE outputs SET status = ?, reviewed_by = ?, "
                "review_reason = ?, reviewed_at = ? WHERE output_id = ?",
                ("approved" if approve else "rejected", user.user_id, reason, _now(), output_id),
            )
            self.gov.audit.append(
                con,
                self._event(
                    principal,
                    project=row["project_id"],
                    reason=reason,
                    **event,
                ),
            )
        return self._describe(self._output(output_id))

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
        """Ask for a trained model to leave the hub: a steward reviews its card first.

        Models can memorise their training data, so a model is an output like any
        other: pending until an accredited steward who is not its author approves it.
        The manifest carries the artifact's hash (what is approved is exactly that file)
        and the latest membership-inference audit, if any has been run.
        """
        project = self.project_for(principal, project_id)
        event: dict[str, Any] = {"action": "model.submit", "project": project.project_id}
        try:
            roles.require(principal.user, "model.submit")
        except AccessDenied as exc:
            self.audit(principal, decision="denied", reason=str(exc), **event)
            raise
        output_id = "o-" + secrets.token_hex(6)
        manifest = {
            "kind": "model",
            "model_id": model_id,
            "project": project.project_id,
            "release": release,
            "artifact_sha256": artifact_sha256,
            "membership_inference": card.get("membership_inference"),
            "created_at": _now(),
        }
        signature = self.gov.audit.signer.sign(json.dumps(manifest, sort_keys=True).encode())
        with self.gov.store.transaction() as con:
            con.execute(
                "INSERT INTO outputs (output_id, project_id, query_id, author, release, status, "
                "result, manifest, signature, created_at, kind) "
                "VALUES (?, ?, ?, ?, ?, 'pending', ?, ?, ?, ?, 'model')",
                (
                    output_id,
                    project.project_id,
                    model_id,
                    principal.user.user_id,
                    release,
                    json.dumps(card, default=str),
                    json.dumps(manifest),
                    signature,
                    _now(),
                ),
            )
            self.gov.audit.append(
                con,
                self._event(
                    principal,
                    release=release,
                    target=output_id,
                    result_sha256=artifact_sha256,
                    details={"model_id": model_id},
                    **event,
                ),
            )
        return output_id

    def record_model_audit(
        self, principal: Principal, output_id: str, result: dict[str, Any]
    ) -> dict[str, Any]:
        """Attach a steward's membership-inference audit to a pending model output."""
        event: dict[str, Any] = {"action": "model.audit", "target": output_id}
        try:
            roles.require(principal.user, "model.audit")
            row = self._output(output_id)
            if row["kind"] != "model":
                raise InvalidRequest(f"output {output_id} is not a model")
            if row["status"] != "pending":
                raise Conflict(f"output {output_id} is already {row['status']}")
        except (AccessDenied, Conflict, InvalidRequest, NotFound) as exc:
            self.audit(principal, decision="denied", reason=str(exc), **event)
            raise
        manifest = json.loads(row["manifest"])
        manifest["membership_inference"] = result
        signature = self.gov.audit.signer.sign(json.dumps(manifest, sort_keys=True).encode())
        with self.gov.store.transaction() as con:
            con.execute(
                "UPDATE outputs SET manifest = ?, signature = ? WHERE output_id = ?",
                (json.dumps(manifest), signature, output_id),
            )
            self.gov.audit.append(
                con,
                self._event(
                    principal,
                    project=row["project_id"],
                    details={"attack_auc": result.get("attack_auc")},
                    **event,
                ),
            )
        return self._describe(self._output(output_id))

    def model_output(self, model_id: str) -> str | None:
        """The pending output that asks to release this model, if any."""
        row = (
            self.gov.store.cached()
            .execute(
                "SELECT output_id FROM outputs WHERE kind = 'model' AND query_id = ? "
                "AND status = 'pending' ORDER BY created_at DESC LIMIT 1",
                (model_id,),
            )
            .fetchone()
        )
        return None if row is None else str(row["output_id"])

    def output(self, principal: Principal, output_id: str) -> dict[str, Any]:
        """One output as its reviewer sees it (stewards only)."""
        roles.require(principal.user, "output.list")
        return self._describe(self._output(output_id))

    def download(self, principal: Principal, output_id: str) -> dict[str, Any]:
        row = self._output(output_id)
        project = self.project_for(principal, row["project_id"])
        event: dict[str, Any] = {
            "action": "output.download",
            "target": output_id,
            "project": project.project_id,
        }
        if row["status"] != "approved":
            self.audit(principal, decision="denied", reason="not approved", **event)
            raise Conflict(
                f"output {output_id} is {row['status']}: only approved outputs can be downloaded"
            )
        body: dict[str, Any] = json.loads(row["result"])
        if row["kind"] == "model":
            manifest = json.loads(row["manifest"])
            body = {"model_card": body, "artifact_sha256": manifest["artifact_sha256"]}
            self.audit(principal, result_sha256=manifest["artifact_sha256"], **event)
            return body
        self.audit(principal, row_count=len(body["rows"]), result_sha256=_sha256(body), **event)
        return body
