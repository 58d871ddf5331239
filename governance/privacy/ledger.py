"""The privacy budget ledger: per project, reservations, commits and refunds.

A spend is read-check-write inside one ``BEGIN IMMEDIATE`` transaction of the
governance store, which holds SQLite's write lock across threads *and* processes, so
under any number of concurrent requests the committed plus reserved total never
exceeds the budget. Every spend and every refusal is written to the audit log in the
same transaction: if the audit entry cannot be written, the spend does not happen.

Lifecycle: ``reserve`` (counts against the budget at once) → ``commit`` (the actual
spend, at most the reservation; the difference is returned) or ``refund`` (nothing was
released, e.g. the query failed before running). A reservation never settled (a crashed
training run) keeps counting: it is never silently returned.

The maths (composition, validation) is in ``governance.privacy.accounting``.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import cast

from governance import clock
from governance.audit.events import AuditEvent
from governance.audit.log import AuditLog
from governance.errors import BudgetExhausted, Conflict, InvalidRequest, NotFound
from governance.privacy import accounting
from governance.store import Store


@dataclass(frozen=True)
class BudgetState:
    project_id: str
    epsilon_total: float
    delta_total: float
    epsilon_spent: float  # committed + reserved
    delta_spent: float

    @property
    def epsilon_remaining(self) -> float:
        return max(0.0, self.epsilon_total - self.epsilon_spent)

    @property
    def delta_remaining(self) -> float:
        return max(0.0, self.delta_total - self.delta_spent)


class Ledger:
    def __init__(self, store: Store, audit: AuditLog) -> None:
        self.store = store
        self.audit = audit

    def _state(self, con: sqlite3.Connection, project_id: str) -> BudgetState:
        row = con.execute(
            "SELECT epsilon_total, delta_total FROM projects WHERE project_id = ?", (project_id,)
        ).fetchone()
        if row is None:
            raise NotFound(f"no project {project_id}")
        if row["epsilon_total"] is None:
            raise Conflict(f"project {project_id} has no privacy budget (not approved)")
        spent = con.execute(
            "SELECT coalesce(sum(epsilon), 0), coalesce(sum(delta), 0) FROM budget_spends "
            "WHERE project_id = ? AND state IN ('reserved', 'committed')",
            (project_id,),
        ).fetchone()
        return BudgetState(project_id, row["epsilon_total"], row["delta_total"], spent[0], spent[1])

    def state(self, project_id: str) -> BudgetState:
        return self._state(self.store.cached(), project_id)

    def state_in(self, con: sqlite3.Connection, project_id: str) -> BudgetState:
        """The budget as the caller's transaction sees it."""
        return self._state(con, project_id)

    def reserve(
        self,
        project_id: str,
        *,
        epsilon: float,
        delta: float = 0.0,
        purpose: str,
        actor: str,
        key_id: str | None = None,
        role: str | None = None,
        durable: bool = True,
    ) -> int:
        """Reserve (ε, δ) atomically; raises BudgetExhausted (audited) when it does not fit.

        ``durable=False``: the caller commits the spend in a durable transaction before it
        answers (a DP query's answer), which makes this reservation durable too
        (``Store.transaction``); work that outlives its request keeps the default.
        """
        try:
            epsilon = accounting.validate_epsilon(epsilon)
            delta = accounting.validate_delta(delta)
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from None
        with self.store.transaction(durable=durable) as con:
            state = self._state(con, project_id)
            ok = accounting.fits(
                total=(state.epsilon_total, state.delta_total),
                spent=(state.epsilon_spent, state.delta_spent),
                request=(epsilon, delta),
            )
            event = AuditEvent(
                action="budget.reserve",
                actor=actor,
                key_id=key_id,
                role=role,
                project=project_id,
                target=purpose,
                epsilon=epsilon,
                delta=delta,
            )
            if not ok:
                reason = "the project's privacy budget cannot cover this: " + accounting.shortfall(
                    total=(state.epsilon_total, state.delta_total),
                    spent=(state.epsilon_spent, state.delta_spent),
                    request=(epsilon, delta),
                )
                self.audit.append(con, _denied(event, reason))
                refusal = BudgetExhausted(reason)
            else:
                cur = con.execute(
                    "INSERT INTO budget_spends (project_id, state, "
                    "epsilon, delta, purpose, actor, created_at) "
                    "VALUES (?, 'reserved', ?, ?, ?, ?, ?)",
                    (project_id, epsilon, delta, purpose, actor, clock.now()),
                )
                spend_id = int(cur.lastrowid or 0)
                self.audit.append(con, _with(event, details={"spend_id": spend_id}))
                return spend_id
        # the refusal's audit entry is committed before the refusal is raised
        raise refusal

    def commit(
        self, spend_id: int, *, epsilon: float | None = None, delta: float | None = None, actor: str
    ) -> None:
        """Settle a reservation at its actual spend (at most what was reserved)."""
        with self.store.transaction() as con:
            self.commit_in(con, spend_id, epsilon=epsilon, delta=delta, actor=actor)

    def commit_in(
        self,
        con: sqlite3.Connection,
        spend_id: int,
        *,
        epsilon: float | None = None,
        delta: float | None = None,
        actor: str,
    ) -> float:
        """``commit`` inside the caller's write transaction (with what the spend released).

        Returns the ε committed.
        """
        row = self._reserved(con, spend_id)
        eps = row["epsilon"] if epsilon is None else min(float(epsilon), row["epsilon"])
        dlt = row["delta"] if delta is None else min(float(delta), row["delta"])
        con.execute(
            "UPDATE budget_spends SET state = 'committed', epsilon "
            "= ?, delta = ?, settled_at = ? WHERE spend_id = ?",
            (eps, dlt, clock.now(), spend_id),
        )
        self.audit.append(
            con,
            AuditEvent(
                action="budget.commit",
                actor=actor,
                project=row["project_id"],
                target=row["purpose"],
                epsilon=eps,
                delta=dlt,
                details={"spend_id": spend_id, "reserved_epsilon": row["epsilon"]},
            ),
        )
        return float(eps)

    def refund(self, spend_id: int, *, actor: str, reason: str) -> None:
        """Return a reservation that released nothing."""
        with self.store.transaction() as con:
            row = self._reserved(con, spend_id)
            con.execute(
                "UPDATE budget_spends SET state = 'refunded', settled_at = ? WHERE spend_id = ?",
                (clock.now(), spend_id),
            )
            self.audit.append(
                con,
                AuditEvent(
                    action="budget.refund",
                    actor=actor,
                    project=row["project_id"],
                    target=row["purpose"],
                    reason=reason,
                    epsilon=0.0,
                    delta=0.0,
                    details={"spend_id": spend_id},
                ),
            )

    def _reserved(self, con: sqlite3.Connection, spend_id: int) -> sqlite3.Row:
        row = con.execute("SELECT * FROM budget_spends WHERE spend_id = ?", (spend_id,)).fetchone()
        if row is None:
            raise NotFound(f"no budget spend {spend_id}")
        if row["state"] != "reserved":
            raise Conflict(f"spend {spend_id} is already {row['state']}")
        return cast(sqlite3.Row, row)

    def history(self, project_id: str) -> list[dict[str, object]]:
        rows = self.store.cached().execute(
            "SELECT spend_id, state, epsilon, delta, purpose, actor, created_at, settled_at "
            "FROM budget_spends WHERE project_id = ? ORDER BY spend_id",
            (project_id,),
        )
        return [dict(r) for r in rows]


def _with(event: AuditEvent, **changes: object) -> AuditEvent:
    from dataclasses import replace

    return replace(event, **changes)  # type: ignore[arg-type]


def _denied(event: AuditEvent, reason: str) -> AuditEvent:
    return _with(event, decision="denied", reason=reason, epsilon=0.0, delta=0.0)
