"""A DP query answered: spec checked, budget reserved, bounded answers noised, spend
committed with the audit entry and the stored query (``QueryService.run`` dispatches here).

Everything that can refuse a DP query (the compiled plan, type binding, OpenDP's
certification) happens before any budget is reserved or data read; once data is read
the spend is committed whatever happens, and a failure is an answer like any other.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any, Final

import duckdb

from connectors import releases
from governance.access.people import Principal
from governance.access.projects import Project
from governance.outputs.review import sha256_json as _sha256
from governance.privacy import dp_query, dp_sql
from governance.privacy import mechanism as dp
from governance.sql import policy as sql_policy
from governance.sql.engine import Engine

if TYPE_CHECKING:
    from governance.queries import QueryService

BIND_SALT: Final = "0"  # the salt of the statements whose binding is checked (not run)


def prepare_plan(
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
    # bound with a fixed salt: the salt is an alphanumeric literal, so whether the
    # statements bind does not depend on its value, and the engine keeps the verdict
    bound = dp_sql.statements(plan, salt=BIND_SALT)
    if not all(engine.explain(cur, s.sql) for s in bound):
        # binding and planning read no table data: a refusal here is data-independent
        raise sql_policy.PolicyError(
            "dp_types", "the query's expressions do not fit the columns' types"
        )
    prepared = dp.prepare(plan, epsilon)
    return plan, prepared, salt


def answer(
    service: QueryService,
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
    engine = service.engine(release, project)
    cur = engine.cursor()
    try:
        plan, prepared, salt = prepare_plan(node, cur, engine, epsilon, rows_per_person)
    except BaseException:
        cur.close()
        raise
    spend = service.gov.ledger.reserve(
        project.project_id,
        epsilon=epsilon,
        delta=0.0,
        purpose=query_id,
        actor=principal.user.user_id,
        key_id=principal.key_id,
        role=principal.user.role,
        durable=False,  # made durable by the answer's own commit, before the response
    )
    # from here on data is read: whatever happens, the spend is committed (never
    # refunded) and the response does not depend on what went wrong
    body: dict[str, Any]

    def read(stream: dp_sql.Stream) -> list[tuple[Any, ...]]:
        # a statement without a salt gives the same rows every time on this immutable
        # release: they are kept for this project's next identical query (never the
        # noise, which is drawn afresh below for every answer; see ``Engine.run``)
        if stream.salted:
            return cur.execute(stream.sql).fetchall()
        return engine.fetch(cur, stream.sql, owner=project.project_id)

    try:
        truth = dp.bounded_answers(cur, plan, salt=salt, read=read)
        body = dp.answer_body(plan, dp.release(prepared, truth))
        status = "done"
    except Exception:  # a failure after reading data looks like any other
        body = dp.no_answer_body(plan)
        status = "no_answer"
    finally:
        cur.close()
    # the spend, the request's audit entry and the stored query commit together
    with service.gov.store.transaction() as con:
        spent = service.gov.ledger.commit_in(
            con, spend, epsilon=prepared.epsilon, actor=principal.user.user_id
        )
        state = service.gov.ledger.state_in(con, project.project_id)
        body["epsilon_spent"] = spent
        body["epsilon_remaining"] = state.epsilon_remaining
        service.gov.audit.append(
            con,
            service.event_for(
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
        service.record(
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
