"""Safe projects: requested by a researcher, decided by a steward, purpose-bound and expiring.

States::

    requested ──approve──▶ approved ──suspend──▶ suspended ──approve──▶ approved
        │                      │                     │
        └──reject──▶ rejected  └──close──▶ closed ◀──┘

Approval sets the grants (tables and columns, possibly narrower than requested: data
minimisation), the expiry date, the privacy budget (total ε and δ), the disclosure
control policy (redact counts at or below 7, round to 5 by default) and which members
may train models. ``authorize`` is the one place that says whether a user may act in a
project now, with a reason when not.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from governance import clock
from governance.access import commercial, roles
from governance.access.grants import Schema, validate_grants
from governance.access.people import People, User
from governance.access.sources import Feed, Sources, controls
from governance.audit.events import AuditEvent
from governance.audit.log import AuditLog
from governance.errors import AccessDenied, Conflict, InvalidRequest, NotFound
from governance.outputs import disclosure
from governance.privacy import accounting
from governance.store import Store

# the disclosure rules live in governance/outputs/disclosure.py; these are its defaults
DEFAULT_SDC_THRESHOLD: Final = disclosure.REDACTION_THRESHOLD
DEFAULT_SDC_ROUNDING: Final = disclosure.ROUNDING_MULTIPLE
OUTPUT_REVIEWERS: Final = (1, 2)  # independent stewards an output needs
STATES: Final = ("requested", "approved", "rejected", "suspended", "closed")

Grants = dict[str, list[str]]  # table -> columns
_DECISION_ACTIONS: Final = {
    "rejected": "project.reject",
    "suspended": "project.suspend",
    "closed": "project.close",
}


@dataclass(frozen=True)
class Project:
    project_id: str
    title: str
    purpose: str
    lay_summary: str
    organisation: str
    requested_by: str
    requested_grants: Grants
    requested_days: int
    status: str
    granted: Grants | None
    expires_at: dt.date | None
    epsilon_total: float | None
    delta_total: float | None
    sdc_threshold: int | None
    sdc_rounding: int | None
    decided_by: str | None
    decision_reason: str | None
    created_at: str
    members: dict[str, bool] = field(default_factory=dict)  # user_id -> may train models
    output_reviewers: int = 1  # stewards who must each approve an output
    # the access policy's terms (governance/access/commercial.py)
    organisation_type: str = "other"
    public_benefit: str | None = None
    daa_reference: str | None = None
    daa_expires: dt.date | None = None

    @property
    def commercial(self) -> bool:
        return commercial.policy_for(self.organisation_type).commercial

    def as_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["expires_at"] = self.expires_at.isoformat() if self.expires_at else None
        d["daa_expires"] = self.daa_expires.isoformat() if self.daa_expires else None
        d["commercial"] = self.commercial
        return d


class Projects:
    def __init__(
        self,
        store: Store,
        audit: AuditLog,
        people: People,
        schema: Callable[[], Schema | None] = lambda: None,
    ) -> None:
        self.store = store
        self.audit = audit
        self.people = people
        # the current release's grantable tables and columns (None before the first)
        self.schema = schema
        # the current release's feeds (empty unless built from feeds), and the decisions
        # of their data controllers, project by project
        self.feeds: Callable[[], list[Feed]] = list
        self.sources = Sources(store, audit)

    def _load(self, con: sqlite3.Connection, project_id: str) -> Project:
        row = con.execute("SELECT * FROM projects WHERE project_id = ?", (project_id,)).fetchone()
        if row is None:
            raise NotFound(f"no project {project_id}")
        members = {
            r["user_id"]: bool(r["can_train"])
            for r in con.execute(
                "SELECT user_id, can_train FROM project_members WHERE project_id = ?", (project_id,)
            )
        }
        terms = con.execute(
            "SELECT u.organisation_type AS user_type, t.* FROM users u LEFT JOIN "
            "project_terms t ON t.project_id = ? WHERE u.user_id = ?",
            (project_id, row["requested_by"]),
        ).fetchone()
        org_type = (terms["organisation_type"] or terms["user_type"]) if terms else "other"
        return Project(
            project_id=row["project_id"],
            title=row["title"],
            purpose=row["purpose"],
            lay_summary=row["lay_summary"],
            organisation=row["organisation"],
            requested_by=row["requested_by"],
            requested_grants=json.loads(row["requested_grants"]),
            requested_days=row["requested_days"],
            status=row["status"],
            granted=json.loads(row["granted"]) if row["granted"] else None,
            expires_at=dt.date.fromisoformat(row["expires_at"]) if row["expires_at"] else None,
            epsilon_total=row["epsilon_total"],
            delta_total=row["delta_total"],
            sdc_threshold=row["sdc_threshold"],
            sdc_rounding=row["sdc_rounding"],
            decided_by=row["decided_by"],
            decision_reason=row["decision_reason"],
            created_at=row["created_at"],
            members=members,
            output_reviewers=commercial.reviewers(org_type, row["output_reviewers"]),
            organisation_type=org_type,
            public_benefit=terms["public_benefit"] if terms else None,
            daa_reference=terms["daa_reference"] if terms else None,
            daa_expires=(
                dt.date.fromisoformat(terms["daa_expires"])
                if terms and terms["daa_expires"]
                else None
            ),
        )

    def get(self, project_id: str) -> Project:
        return self._load(self.store.cached(), project_id)

    def find(self, *, status: str | None = None) -> list[Project]:
        con = self.store.cached()
        sql = "SELECT project_id FROM projects"
        params: tuple[str, ...] = ()
        if status:
            sql += " WHERE status = ?"
            params = (status,)
        return [
            self._load(con, r[0])
            for r in con.execute(sql + " ORDER BY created_at, project_id", params)
        ]

    def visible_to(self, user: User) -> list[Project]:
        """Every project for those who see all of them, else the user's own."""
        projects = self.find()
        if roles.may(user.role, "project.view_any"):
            return projects
        return [p for p in projects if self.may_see(user, p)]

    def may_see(self, user: User, project: Project) -> bool:
        """Members see their project; a data controller, the projects using its data."""
        if roles.may(user.role, "project.view_any") or user.user_id in project.members:
            return True
        return user.role == "controller" and any(
            controls(user, s) for s in self.sources.for_project(project.project_id)
        )

    def request(
        self,
        *,
        requester: User,
        title: str,
        purpose: str,
        lay_summary: str,
        grants: Grants,
        days: int,
        members: list[str] | None = None,
        key_id: str | None = None,
        public_benefit: str | None = None,
        daa_reference: str | None = None,
        daa_expires: dt.date | str | None = None,
    ) -> Project:
        roles.require(requester, "project.request")
        for label, text in (("title", title), ("purpose", purpose), ("lay summary", lay_summary)):
            if not text or not text.strip():
                raise InvalidRequest(f"the {label} is required")
        if not 1 <= days <= 3650:
            raise InvalidRequest("the requested duration must be 1 to 3650 days")
        grants = validate_grants(grants, self.schema())
        project_id = "p-" + secrets.token_hex(4)
        team = sorted({requester.user_id, *(members or [])})
        # NotFound for an unknown member; the policy's terms and membership rules
        commercial.check_members(requester, [self.people.get(m) for m in team])
        terms = commercial.terms_for_request(
            requester,
            public_benefit=public_benefit,
            daa_reference=daa_reference,
            daa_expires=daa_expires,
        )
        with self.store.transaction() as con:
            now = clock.now()
            con.execute(
                "INSERT INTO projects (project_id, title, purpose, "
                "lay_summary, organisation, requested_by, "
                "requested_grants, requested_days, status, created_at, "
                "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'requested', ?, ?)",
                (
                    project_id,
                    title.strip(),
                    purpose.strip(),
                    lay_summary.strip(),
                    requester.organisation,
                    requester.user_id,
                    json.dumps(grants, sort_keys=True),
                    days,
                    now,
                    now,
                ),
            )
            for member in team:
                con.execute("INSERT INTO project_members VALUES (?, ?, 0)", (project_id, member))
            con.execute(
                "INSERT INTO project_terms VALUES (?, ?, ?, ?, ?)",
                (
                    project_id,
                    terms.organisation_type,
                    terms.public_benefit,
                    terms.daa_reference,
                    terms.daa_expires.isoformat() if terms.daa_expires else None,
                ),
            )
            self.audit.append(
                con,
                AuditEvent(
                    action="project.request",
                    actor=requester.user_id,
                    key_id=key_id,
                    role=requester.role,
                    project=project_id,
                    target=title.strip(),
                    details={
                        "grants": grants,
                        "members": team,
                        "organisation_type": terms.organisation_type,
                        "daa_reference": terms.daa_reference,
                        "daa_expires": (
                            terms.daa_expires.isoformat() if terms.daa_expires else None
                        ),
                    },
                ),
            )
        return self.get(project_id)

    def approve(
        self,
        project_id: str,
        *,
        steward: User,
        epsilon: float,
        delta: float,
        days: int | None = None,
        grants: Grants | None = None,
        sdc_threshold: int = DEFAULT_SDC_THRESHOLD,
        sdc_rounding: int = DEFAULT_SDC_ROUNDING,
        trainers: list[str] | None = None,
        key_id: str | None = None,
        output_reviewers: int = 1,
        sources: list[str] | None = None,
    ) -> Project:
        """Approve (or re-approve a suspended project), possibly narrowing the grants.

        On a release built from feeds, ``sources`` lists the feeds the project may use
        (all by default); each then awaits its data controller (``access.sources``)."""
        self._steward(steward)
        try:
            epsilon = accounting.validate_epsilon(epsilon)
            delta = accounting.validate_delta(delta)
        except ValueError as exc:
            raise InvalidRequest(f"budget: {exc}") from None
        if sdc_threshold < 1 or sdc_rounding < 1:
            raise InvalidRequest("disclosure control needs a threshold and rounding of at least 1")
        if output_reviewers not in OUTPUT_REVIEWERS:
            raise InvalidRequest("an output needs one or two independent reviewers")
        with self.store.transaction() as con:
            project = self._load(con, project_id)
            if project.status not in ("requested", "suspended"):
                raise Conflict(
                    f"project {project_id} is {project.status}; only "
                    "requested or suspended projects can be approved"
                )
            if project.requested_by == steward.user_id:
                raise AccessDenied("stewards cannot approve their own requests")
            granted = (
                validate_grants(grants, self.schema())
                if grants is not None
                else project.requested_grants
            )
            for table, columns in granted.items():
                allowed = set(project.requested_grants.get(table, []))
                if not set(columns) <= allowed:
                    raise InvalidRequest(
                        f"grants can only narrow the request: {table} "
                        "was not requested with those columns"
                    )
            spent = con.execute(
                "SELECT coalesce(sum(epsilon), 0) FROM budget_spends "
                "WHERE project_id = ? AND state <> 'refunded'",
                (project_id,),
            ).fetchone()[0]
            if epsilon < spent:
                raise InvalidRequest(
                    f"the budget cannot be set below what is already spent (epsilon {spent:g})"
                )
            for trainer in trainers or []:
                if trainer not in project.members:
                    raise InvalidRequest(f"{trainer} is not a member of {project_id}")
            expires = dt.date.today() + dt.timedelta(days=days or project.requested_days)
            feeds = self.feeds()
            listed = (
                self.sources.list_for_approval(con, project_id, feeds, sources, steward=steward)
                if feeds
                else None
            )
            if sources is not None and not feeds:
                raise InvalidRequest("the current release was not built from feeds")
            con.execute(
                "UPDATE projects SET status = 'approved', granted = ?, "
                "expires_at = ?, epsilon_total = ?, delta_total = ?, "
                "sdc_threshold = ?, sdc_rounding = ?, output_reviewers = ?, decided_by = ?, "
                "decision_reason = NULL, updated_at = ? WHERE project_id = ?",
                (
                    json.dumps(granted, sort_keys=True),
                    expires.isoformat(),
                    epsilon,
                    delta,
                    sdc_threshold,
                    sdc_rounding,
                    output_reviewers,
                    steward.user_id,
                    clock.now(),
                    project_id,
                ),
            )
            con.execute(
                "UPDATE project_members SET can_train = 0 WHERE project_id = ?", (project_id,)
            )
            for trainer in trainers or []:
                con.execute(
                    "UPDATE project_members SET can_train = 1 WHERE project_id = ? AND user_id = ?",
                    (project_id, trainer),
                )
            self.audit.append(
                con,
                AuditEvent(
                    action="project.approve",
                    actor=steward.user_id,
                    key_id=key_id,
                    role=steward.role,
                    project=project_id,
                    epsilon=epsilon,
                    delta=delta,
                    details={
                        "grants": granted,
                        "expires_at": expires.isoformat(),
                        "sdc": [sdc_threshold, sdc_rounding],
                        "output_reviewers": output_reviewers,
                        "trainers": sorted(trainers or []),
                        **({"sources": listed} if listed is not None else {}),
                    },
                ),
            )
        return self.get(project_id)

    def _decide(
        self,
        project_id: str,
        *,
        steward: User,
        to: str,
        allowed_from: tuple[str, ...],
        reason: str,
        key_id: str | None,
    ) -> Project:
        self._steward(steward)
        if not reason or len(reason.strip()) < 5:
            raise InvalidRequest("give a reason")
        with self.store.transaction() as con:
            project = self._load(con, project_id)
            if project.status not in allowed_from:
                raise Conflict(f"project {project_id} is {project.status}; it cannot become {to}")
            con.execute(
                "UPDATE projects SET status = ?, decided_by = ?, "
                "decision_reason = ?, updated_at = ? WHERE project_id = ?",
                (to, steward.user_id, reason.strip(), clock.now(), project_id),
            )
            self.audit.append(
                con,
                AuditEvent(
                    action=_DECISION_ACTIONS[to],
                    actor=steward.user_id,
                    key_id=key_id,
                    role=steward.role,
                    project=project_id,
                    reason=reason.strip(),
                ),
            )
        return self.get(project_id)

    def reject(
        self, project_id: str, *, steward: User, reason: str, key_id: str | None = None
    ) -> Project:
        return self._decide(
            project_id,
            steward=steward,
            to="rejected",
            allowed_from=("requested",),
            reason=reason,
            key_id=key_id,
        )

    def suspend(
        self, project_id: str, *, steward: User, reason: str, key_id: str | None = None
    ) -> Project:
        return self._decide(
            project_id,
            steward=steward,
            to="suspended",
            allowed_from=("approved",),
            reason=reason,
            key_id=key_id,
        )

    def close(
        self, project_id: str, *, steward: User, reason: str, key_id: str | None = None
    ) -> Project:
        return self._decide(
            project_id,
            steward=steward,
            to="closed",
            allowed_from=("approved", "suspended"),
            reason=reason,
            key_id=key_id,
        )

    @staticmethod
    def _steward(user: User) -> None:
        roles.require(user, "project.decide")


def authorize(
    project: Project,
    user: User,
    *,
    train: bool = False,
    today: dt.date | None = None,
    kind: commercial.AccessKind | None = None,
) -> None:
    """Raise AccessDenied with the reason unless ``user`` may use ``project`` now (for
    ``kind`` of access, checked against the organisation type's policy)."""
    today = today or dt.date.today()
    if not user.active:
        raise AccessDenied("your account is revoked")
    if user.accreditation_expires < today:
        raise AccessDenied(f"your accreditation lapsed on {user.accreditation_expires.isoformat()}")
    if project.status != "approved":
        raise AccessDenied(f"project {project.project_id} is {project.status}, not approved")
    if project.expires_at is not None and project.expires_at < today:
        raise AccessDenied(
            f"project {project.project_id} expired on {project.expires_at.isoformat()}"
        )
    if user.user_id not in project.members:
        raise AccessDenied(f"you are not a member of project {project.project_id}")
    if train and not project.members.get(user.user_id, False):
        raise AccessDenied(f"you may not train models in project {project.project_id}")
    commercial.check_use(project, "train" if train else kind, today=today)
