"""Training cohorts: the governed door through which the hub's own training reads rows.

Only the hub's process calls :meth:`Cohorts.prepare` and :meth:`Cohorts.read` (the
training service in ``models/``); nothing returns rows to a modeller. The lifecycle
follows DP queries, so that nothing that can fail after reading data depends on it:

1. :meth:`Cohorts.prepare` (no data read): the role and the project's trainers, the SQL
   policy (grants, functions), the person-local compiler
   (``governance.privacy.cohort_query``: one row per person, rows from that person's
   records only), and binding of the SQL the hub writes (``EXPLAIN``). Any refusal here
   is audited and costs nothing.
2. The caller reserves the budget.
3. :meth:`Cohorts.read` runs the hub-written SQL and audits the extraction (row count,
   never a value). An engine failure after this point is a :class:`CohortUnreadable`
   with a fixed message; the caller keeps the reservation (no refunds once data is read).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from governance.access import roles
from governance.access.projects import authorize
from governance.access.sources import Scope
from governance.errors import AccessDenied, Conflict, HubError, PolicyViolation
from governance.privacy import cohort_query, cohort_sql
from governance.sql import policy as sql_policy

if TYPE_CHECKING:
    import duckdb

    from connectors.releases import Release
    from governance.access.people import Principal
    from governance.queries import QueryService

Purpose = Literal["train", "audit", "synthetic"]
# the audit action of each purpose's extraction
EXTRACT_ACTIONS: dict[str, str] = {
    "train": "train.extract",
    "audit": "model.audit.extract",
    "synthetic": "synthetic.extract",
}
MAX_COHORT_ROWS = 5_000_000


class CohortUnreadable(Conflict):
    """The cohort could not be read after data was touched (a fixed, data-free message)."""

    code = "no_answer"


@dataclass(frozen=True)
class PreparedCohort:
    """A checked cohort: the SQL the hub will run, on which release, for which project."""

    project_id: str
    release: Release
    sql: str  # hub-written from the checked tree
    user_sql: str
    purpose: Purpose
    # a release built from feeds: the approved feeds' rows only (access.sources), fixed
    # when the cohort was checked, and named in both audit entries
    scope: Scope | None = None

    @property
    def population(self) -> int:
        """The release's number of people, from its manifest (public: the release's size)."""
        tables = self.release.manifest.get("tables", {})
        return int(tables.get("patients", {}).get("published", 0)) or 1


@dataclass(frozen=True)
class CohortRows:
    columns: dict[str, list[Any]]  # column name -> values, one per person
    release: str

    def __len__(self) -> int:
        return len(next(iter(self.columns.values()), []))


def cohort_runnable(
    cur: duckdb.DuckDBPyConnection, node: dict[str, Any], catalogue: dict[str, dict[str, str]]
) -> str:
    """The SQL the hub runs for a cohort's checked parse tree: its rules
    (``cohort_query.check``, refusing with PolicyError), every expression hardened
    (``cohort_sql.hardened_tree``), one row per person kept (``cohort_sql.wrap_sql``).
    Reads no data; the neighbour tests run exactly this."""
    cohort_query.check(node, catalogue)
    tree = cohort_sql.hardened_tree(node)
    inner = cur.execute(
        "SELECT json_deserialize_sql($t::JSON)", {"t": cohort_sql.statement_json(tree)}
    ).fetchall()[0][0]
    return cohort_sql.wrap_sql(str(inner))


class Cohorts:
    def __init__(self, service: QueryService) -> None:
        self.service = service

    def prepare(
        self,
        principal: Principal,
        project_id: str,
        sql: str,
        *,
        purpose: Purpose = "train",
        release_id: str | None = None,
    ) -> PreparedCohort:
        """Check everything that can refuse a cohort, before any data or budget."""
        service = self.service
        action = EXTRACT_ACTIONS[purpose]
        event: dict[str, Any] = {"action": action, "project": project_id, "query_text": sql}
        try:
            project = service.project_for(principal, project_id)
            user = principal.user
            if purpose == "train":
                roles.require(user, "model.train")
                authorize(project, user, train=True)
            elif purpose == "synthetic":
                roles.require(user, "synthetic.request")
                authorize(project, user)
            else:
                roles.require(user, "model.audit")
                if not user.accredited():
                    raise AccessDenied("only accredited stewards audit models")
            release = (
                service.release_for("real")
                if release_id is None
                else service.real_release(release_id)
            )
            scope = service.scope(project, release)
            if scope is not None:
                event.update(scope.audit_fields())
            engine = service.engine(release, project)
            cur = engine.cursor()
            try:
                checked = engine.check(cur, sql, granted=project.granted or {}, real=False)
                runnable = cohort_runnable(cur, checked.node, engine.catalogue(cur))
                if not engine.explain(cur, runnable):
                    raise sql_policy.PolicyError(
                        "cohort_types", "the cohort's expressions do not fit the columns' types"
                    )
                # the result's types (binding only, no data): values of some types fail
                # when a row is read (cohort_sql.check_result_types)
                described = cur.execute(f"DESCRIBE {runnable}").fetchall()
                cohort_sql.check_result_types(str(r[1]) for r in described)
            finally:
                cur.close()
        except (HubError, PolicyViolation) as exc:
            service.audit(principal, decision="denied", reason=str(exc), **event)
            raise
        return PreparedCohort(project_id, release, runnable, sql, purpose, scope)

    def read(self, principal: Principal, prepared: PreparedCohort) -> CohortRows:
        """Run a prepared cohort (reads data); audited before the rows are used."""
        service = self.service
        action = EXTRACT_ACTIONS[prepared.purpose]
        event: dict[str, Any] = {
            "action": action,
            "project": prepared.project_id,
            "query_text": prepared.user_sql,
            "release": prepared.release.id,
            **(prepared.scope.audit_fields() if prepared.scope else {}),
        }
        try:
            engine = service.engine(prepared.release)
            if prepared.scope is not None:
                engine = engine.scoped(prepared.scope.systems)
            result = engine.run(prepared.sql, max_rows=MAX_COHORT_ROWS)
        except Exception:
            reason = "the cohort could not be read (no answer; the reservation is kept)"
            service.audit(principal, reason=reason, details={"outcome": "no_answer"}, **event)
            raise CohortUnreadable(reason) from None
        # a cohort past the row cap keeps its first rows: truncation is never an error
        data = {c: [row[i] for row in result.rows] for i, c in enumerate(result.columns)}
        service.audit(principal, row_count=len(result.rows), **event)
        return CohortRows(data, prepared.release.id)
