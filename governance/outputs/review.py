"""Output review: what leaves the hub, decided by stewards, seen by its researchers.

States of an output (an exact table, a trained model or an emulated trial's estimate)::

    pending ──approve (by the last required reviewer)──▶ approved ──▶ downloadable
       │  └─approve (one of two required reviewers)──▶ pending (one review recorded)
       ├──reject (reason)────────────▶ rejected
       └──return for changes (reason)──▶ returned   (the researcher revises and resubmits)

A reviewer is a steward who is not the output's author; a project's policy may ask for
two independent reviewers (``output_reviewers``), who must be different stewards; a
reject or a return by any reviewer is final. The query that made an output takes the
output's final status, so the researcher sees the decision, the reviewer's reason and,
once approved, a download link. Every decision and refusal is audited.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

from governance import clock
from governance.access import roles
from governance.access.people import Principal
from governance.audit.events import AuditEvent
from governance.errors import AccessDenied, Conflict, InvalidRequest, NotFound
from governance.outputs.disclosure_ledger import DisclosureLedger

if TYPE_CHECKING:
    from governance.facade import Governance

Decision = Literal["approve", "reject", "return"]
FINAL: Final = {"approve": "approved", "reject": "rejected", "return": "returned"}
ACTIONS: Final = {"approve": "output.approve", "reject": "output.reject", "return": "output.return"}
STATUSES: Final = ("pending", "approved", "rejected", "returned")


def sha256_json(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def download_url(output_id: str) -> str:
    return f"/v1/outputs/{output_id}/download"


class OutputReview:
    def __init__(self, gov: Governance) -> None:
        self.gov = gov
        self.outputs_dir = gov.home / "outputs"
        self.outputs_dir.mkdir(parents=True, exist_ok=True)
        self.ledger = DisclosureLedger(self.outputs_dir)

    # ------------------------------------------------------------------ reading
    def row(self, output_id: str) -> sqlite3.Row:
        row = (
            self.gov.store.cached()
            .execute("SELECT * FROM outputs WHERE output_id = ?", (output_id,))
            .fetchone()
        )
        if row is None:
            raise NotFound(f"no output {output_id}")
        return row  # type: ignore[no-any-return]

    def _reviews(
        self, output_id: str, con: sqlite3.Connection | None = None
    ) -> list[dict[str, Any]]:
        rows = (con or self.gov.store.cached()).execute(
            "SELECT reviewer, decision, reason, created_at FROM output_reviews "
            "WHERE output_id = ? ORDER BY created_at, reviewer",
            (output_id,),
        )
        return [dict(r) for r in rows]

    def _required(self, project_id: str) -> int:
        return self.gov.projects.get(project_id).output_reviewers

    def describe(
        self,
        row: sqlite3.Row,
        *,
        reviews: list[dict[str, Any]] | None = None,
        required: int | None = None,
    ) -> dict[str, Any]:
        """An output as its reviewers see it: the table, the manifest, the reviews."""
        out = dict(row)
        out["result"] = json.loads(out["result"])
        out["manifest"] = json.loads(out["manifest"])
        out["reviews"] = self._reviews(row["output_id"]) if reviews is None else reviews
        out["reviewers_required"] = (
            self._required(row["project_id"]) if required is None else required
        )
        out["download_url"] = download_url(row["output_id"])
        return out

    def researcher_view(
        self,
        row: sqlite3.Row,
        *,
        reviews: list[dict[str, Any]] | None = None,
        required: int | None = None,
    ) -> dict[str, Any]:
        """An output as its project's members see it: status and reasons always, the
        disclosure rules applied, and the download link once approved (no table before).

        What the disclosure checks found (how many cells were small, suppressed or
        rounded) and whether the query failed are written after the data is read: they
        are data, so members see them only once a steward has approved the output (the
        approved table shows them anyway). Before that, and after a rejection or a
        return, a member sees the same fields whatever the data held.
        """
        manifest = json.loads(row["manifest"])
        shown = ("rules", "counts") if row["status"] == "approved" else ("rules",)
        reviews = self._reviews(row["output_id"]) if reviews is None else reviews
        return {
            "output_id": row["output_id"],
            "project_id": row["project_id"],
            "query_id": row["query_id"],
            "kind": row["kind"],
            "status": row["status"],
            "created_at": row["created_at"],
            "reviewed_at": row["reviewed_at"],
            "review_reason": row["review_reason"],
            "reasons": [r["reason"] for r in reviews if r["reason"]],
            "reviews_done": len(reviews),
            "reviewers_required": (
                self._required(row["project_id"]) if required is None else required
            ),
            "disclosure": {k: manifest[k] for k in shown if k in manifest},
            "download_url": download_url(row["output_id"]) if row["status"] == "approved" else None,
        }

    @staticmethod
    def is_reviewer(principal: Principal) -> bool:
        return roles.may(principal.user.role, "output.list")

    def _member(self, principal: Principal, project_id: str) -> bool:
        project = self.gov.projects.get(project_id)
        return principal.user.user_id in project.members

    def pending(self, principal: Principal) -> list[dict[str, Any]]:
        """The review queue (stewards): pending outputs, oldest first."""
        return self.find(principal, status="pending")

    def find(
        self, principal: Principal, *, status: str | None = None, project_id: str | None = None
    ) -> list[dict[str, Any]]:
        """Stewards: every output (by status); researchers and modellers: their projects'."""
        if status is not None and status not in STATUSES:
            raise InvalidRequest(f"status must be one of {', '.join(STATUSES)}")
        steward = roles.may(principal.user.role, "output.list")
        roles.require(principal.user, "output.list" if steward else "output.view_own")
        where, params = "1 = 1", []
        if status is not None:
            where += " AND status = ?"
            params.append(status)
        if project_id is not None:
            where += " AND project_id = ?"
            params.append(project_id)
        if not steward:
            where += " AND project_id IN (SELECT project_id FROM project_members WHERE user_id = ?)"
            params.append(principal.user.user_id)
        con = self.gov.store.cached()
        rows = list(
            con.execute(
                f"SELECT * FROM outputs WHERE {where} ORDER BY created_at, output_id",  # noqa: S608
                params,
            )
        )
        view = self.describe if steward else self.researcher_view
        required: dict[str, int] = {}  # one project read per project, not per output
        reviews: dict[str, list[dict[str, Any]]] = {r["output_id"]: [] for r in rows}
        # the reviews of the outputs listed, not of every output ever reviewed
        for r in con.execute(
            "SELECT * FROM output_reviews WHERE output_id IN "  # noqa: S608
            f"(SELECT output_id FROM outputs WHERE {where}) ORDER BY created_at, reviewer",
            params,
        ):
            if r["output_id"] in reviews:
                reviews[r["output_id"]].append(
                    {k: r[k] for k in ("reviewer", "decision", "reason", "created_at")}
                )
        out = []
        for r in rows:
            if r["project_id"] not in required:
                required[r["project_id"]] = self._required(r["project_id"])
            out.append(view(r, reviews=reviews[r["output_id"]], required=required[r["project_id"]]))
        return out

    def output(self, principal: Principal, output_id: str) -> dict[str, Any]:
        """One output: in full for stewards, the researcher's view for its members."""
        row = self.row(output_id)
        if roles.may(principal.user.role, "output.list"):
            roles.require(principal.user, "output.list")
            return self.describe(row)
        if not self._member(principal, row["project_id"]):
            raise NotFound(f"no output {output_id}")
        return self.researcher_view(row)

    def for_query(self, output_id: str) -> dict[str, Any]:
        """What a query's reader learns of its output (no table before approval)."""
        return self.researcher_view(self.row(output_id))

    # ------------------------------------------------------------------ deciding
    def review(
        self,
        principal: Principal,
        output_id: str,
        *,
        decision: Decision,
        reason: str | None = None,
    ) -> dict[str, Any]:
        """One reviewer's decision. The checks run again under the store's write lock, so
        two stewards deciding at once cannot both pass them (one gets a 409)."""
        user = principal.user
        event = AuditEvent.by(principal, ACTIONS[decision], target=output_id)
        reason = reason.strip() if reason else None
        try:
            roles.require(user, "output.review")
            if decision != "approve" and (not reason or len(reason) < 5):
                word = "rejection" if decision == "reject" else "return (what should change)"
                raise InvalidRequest(f"give a reason for the {word}")
            row = self.row(output_id)
            self._check(row, self._reviews(output_id), principal, decision)
            required = self._required(row["project_id"])
            with self.gov.store.transaction() as con:
                row = con.execute(
                    "SELECT * FROM outputs WHERE output_id = ?", (output_id,)
                ).fetchone()
                reviews = self._reviews(output_id, con)
                self._check(row, reviews, principal, decision)
                approvals = sum(r["decision"] == "approve" for r in reviews)
                final = decision != "approve" or approvals + 1 >= required
                self._decide(con, row, principal, decision, reason, final)
                self.gov.audit.append(
                    con,
                    AuditEvent.by(
                        principal,
                        ACTIONS[decision],
                        target=output_id,
                        project=row["project_id"],
                        reason=reason,
                        details={
                            "reviews": len(reviews) + 1,
                            "required": required,
                            "final": final,
                        },
                    ),
                )
        except (AccessDenied, Conflict, InvalidRequest, NotFound) as exc:
            self.gov.audit.record(_denied(event, str(exc)))
            raise
        return self.describe(self.row(output_id))

    @staticmethod
    def _check(
        row: sqlite3.Row,
        reviews: list[dict[str, Any]],
        principal: Principal,
        decision: Decision,
    ) -> None:
        output_id, user_id = row["output_id"], principal.user.user_id
        if row["author"] == user_id:
            raise AccessDenied("authors cannot review their own outputs")
        if row["status"] != "pending":
            raise Conflict(f"output {output_id} is already {row['status']}")
        if decision == "approve" and json.loads(row["manifest"]).get("failed"):
            raise Conflict(f"output {output_id} has no result to release: its query failed")
        if any(r["reviewer"] == user_id for r in reviews):
            raise Conflict(f"you have already reviewed output {output_id}: another steward must")

    @staticmethod
    def _decide(
        con: sqlite3.Connection,
        row: sqlite3.Row,
        principal: Principal,
        decision: Decision,
        reason: str | None,
        final: bool,
    ) -> None:
        output_id, user_id = row["output_id"], principal.user.user_id
        con.execute(
            "INSERT INTO output_reviews VALUES (?, ?, ?, ?, ?)",
            (output_id, user_id, decision, reason, clock.now()),
        )
        if final:
            status = FINAL[decision]
            con.execute(
                "UPDATE outputs SET status = ?, reviewed_by = ?, review_reason = ?, "
                "reviewed_at = ? WHERE output_id = ?",
                (status, user_id, reason, clock.now(), output_id),
            )
            con.execute("UPDATE queries SET status = ? WHERE output_id = ?", (status, output_id))

    # ------------------------------------------------------------------ releasing
    def download(self, principal: Principal, output_id: str) -> dict[str, Any]:
        row = self.row(output_id)
        project = self.gov.projects.get(row["project_id"])
        if (
            not roles.may(principal.user.role, "project.view_any")
            and principal.user.user_id not in project.members
        ):
            raise NotFound(f"no output {output_id}")
        fields: dict[str, Any] = {"target": output_id, "project": project.project_id}
        if row["status"] != "approved":
            self.gov.audit.record(
                AuditEvent.by(
                    principal, "output.download", decision="denied", reason="not approved", **fields
                )
            )
            raise Conflict(
                f"output {output_id} is {row['status']}: only approved outputs can be downloaded"
            )
        body: dict[str, Any] = json.loads(row["result"])
        if row["kind"] == "synthetic":
            return self._synthetic(principal, row, body, fields)
        if row["kind"] == "model":
            manifest = json.loads(row["manifest"])
            body = {"model_card": body, "artifact_sha256": manifest["artifact_sha256"]}
            self.gov.audit.record(
                AuditEvent.by(
                    principal,
                    "output.download",
                    result_sha256=manifest["artifact_sha256"],
                    **fields,
                )
            )
            return body
        if row["kind"] == "trial":
            # the estimate, and the same figures as a one-row table (for CSV or Parquet)
            body = {**body, **trial_table(body)}
            self.gov.audit.record(
                AuditEvent.by(
                    principal,
                    "output.download",
                    result_sha256=json.loads(row["manifest"])["result_sha256"],
                    **fields,
                )
            )
            return body
        self.gov.audit.record(
            AuditEvent.by(
                principal,
                "output.download",
                row_count=len(body["rows"]),
                result_sha256=sha256_json(body),
                **fields,
            )
        )
        return body

    def _synthetic(
        self, principal: Principal, row: sqlite3.Row, card: dict[str, Any], fields: dict[str, Any]
    ) -> dict[str, Any]:
        """An approved synthetic table: its data card and the Parquet file's bytes, the
        file checked against the hash in the signed manifest (what was approved)."""
        manifest = json.loads(row["manifest"])
        try:
            data = Path(manifest["parquet"]).read_bytes()
        except OSError:
            data = b""
        if hashlib.sha256(data).hexdigest() != manifest["parquet_sha256"]:
            reason = "the approved file is missing or changed"
            self.gov.audit.record(
                AuditEvent.by(
                    principal, "output.download", decision="denied", reason=reason, **fields
                )
            )
            raise Conflict(f"output {row['output_id']}: {reason}; ask a steward")
        self.gov.audit.record(
            AuditEvent.by(
                principal,
                "output.download",
                row_count=manifest.get("rows"),
                result_sha256=manifest["parquet_sha256"],
                **fields,
            )
        )
        return {"data_card": card, "parquet": data, "parquet_sha256": manifest["parquet_sha256"]}

    def new_id(self) -> str:
        return "o-" + secrets.token_hex(6)

    def sign(self, manifest: dict[str, Any]) -> str:
        return self.gov.audit.signer.sign(json.dumps(manifest, sort_keys=True).encode())


TRIAL_COLUMNS: Final = (
    "average_effect", "ci95_low", "ci95_high", "naive_difference", "epsilon", "delta",
)  # fmt: skip


def trial_table(estimate: dict[str, Any]) -> dict[str, Any]:
    """An approved trial estimate as one row (the columns CSV and Parquet downloads use).

    >>> trial_table({"average_effect": -1.5, "ci95": [-2.0, -1.0], "naive_difference": 0.5,
    ...              "epsilon": 1.0, "delta": 1e-6})["rows"]
    [[-1.5, -2.0, -1.0, 0.5, 1.0, 1e-06]]
    """
    low, high = estimate["ci95"]
    values = {**estimate, "ci95_low": low, "ci95_high": high}
    return {"columns": list(TRIAL_COLUMNS), "rows": [[values[c] for c in TRIAL_COLUMNS]]}


def _denied(event: AuditEvent, reason: str) -> AuditEvent:
    return AuditEvent(**{**event.__dict__, "decision": "denied", "reason": reason})
