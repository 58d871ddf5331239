"""Data controllers decide: a project sees a feed's rows only while its controller agrees.

A release built from a region's feeds (``hub ingest --format feeds``) names every feed,
its organisation and that organisation's data controller in its manifest. When a steward
approves a project on such a release, the approval lists the feeds the project may use
(all of them unless narrowed); each listed feed then waits for its controller, a user
with the ``controller`` role whose organisation is the controller named in the manifest.
The controller approves, refuses, or later withdraws the use of its data, with a reason.

States of one project's source::

    pending ──approve──▶ approved ──withdraw──▶ withdrawn ──approve──▶ approved
       └──refuse──▶ refused ──approve──▶ approved
    (a source the steward no longer lists becomes "removed")

``scope`` is the one place that turns these decisions into what a request may read: the
approved feeds (every query, DP answer, exact output and training cohort is filtered to
them by the engine, see ``governance.sql.scope``) and the feeds withheld, with why, for
the audit entry. A release not built from feeds has one source and no controller
decisions: its scope is unrestricted.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

from governance import clock
from governance.access import roles
from governance.access.people import User
from governance.audit.events import AuditEvent
from governance.audit.log import AuditLog
from governance.errors import AccessDenied, Conflict, InvalidRequest, NotFound
from governance.store import Store

STATES: Final = ("pending", "approved", "refused", "withdrawn", "removed")
DECISIONS: Final = {"approve": "approved", "refuse": "refused", "withdraw": "withdrawn"}
# which state each decision may start from
_FROM: Final = {
    "approve": ("pending", "refused", "withdrawn"),
    "refuse": ("pending",),
    "withdraw": ("approved",),
}
PREFIX: Final = "feeds:"  # a feed's rows carry source_system = 'feeds:<feed name>'


@dataclass(frozen=True)
class Feed:
    name: str
    organisation: str
    controller: str


@dataclass(frozen=True)
class Source:
    project_id: str
    source: str
    organisation: str
    controller: str
    status: str
    decided_by: str | None
    reason: str | None
    updated_at: str

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Scope:
    """What one request may read from a release built from feeds."""

    sources: frozenset[str]  # approved feed names
    withheld: tuple[str, ...]  # "<feed>: <status> by <who>: <reason>", for the audit

    @property
    def systems(self) -> frozenset[str]:
        """The ``source_system`` values of the approved feeds' rows."""
        return frozenset(PREFIX + s for s in self.sources)

    def audit_fields(self) -> dict[str, Any]:
        return {"sources": tuple(sorted(self.sources)), "withheld": self.withheld or None}


def release_feeds(manifest: dict[str, Any]) -> list[Feed]:
    """The feeds a release was built from (empty for a release not built from feeds).

    >>> release_feeds({"linkage": {"feeds": [{"name": "ae", "organisation": "EDs",
    ...     "controller": "Region EDs"}]}})
    [Feed(name='ae', organisation='EDs', controller='Region EDs')]
    >>> release_feeds({"source": "synthea"})
    []
    """
    linkage = manifest.get("linkage")
    if not isinstance(linkage, dict):
        return []
    return [
        Feed(str(f["name"]), str(f.get("organisation") or f["name"]), str(f.get("controller")))
        for f in linkage.get("feeds", [])
        if isinstance(f, dict) and f.get("name") and f.get("controller")
    ]


def controls(user: User, source: Source | Feed) -> bool:
    """Whether ``user`` is the data controller of ``source`` (names compared loosely).

    >>> u = User("c", "C", "controller", "The Dudley Group NHS FT ", "nhs_trust",
    ...          __import__("datetime").date(2100, 1, 1), True)
    >>> controls(u, Feed("trust-rna", "x", "the dudley group nhs ft"))
    True
    """
    return user.role == "controller" and _norm(user.organisation) == _norm(source.controller)


def _norm(name: str) -> str:
    return " ".join(name.lower().split())


def _row(row: sqlite3.Row) -> Source:
    return Source(**{k: row[k] for k in row.keys()})  # noqa: SIM118 (sqlite3.Row)


class Sources:
    def __init__(self, store: Store, audit: AuditLog) -> None:
        self.store = store
        self.audit = audit

    # ------------------------------------------------------------------ reading
    def for_project(self, project_id: str) -> list[Source]:
        rows = self.store.cached().execute(
            "SELECT * FROM project_sources WHERE project_id = ? ORDER BY source", (project_id,)
        )
        return [_row(r) for r in rows]

    def awaiting(self, user: User) -> list[Source]:
        """The sources ``user`` controls, in every project (pending first)."""
        roles.require(user, "source.view")
        rows = self.store.cached().execute(
            "SELECT * FROM project_sources WHERE status <> 'removed' "
            "ORDER BY status <> 'pending', project_id, source"
        )
        found = [_row(r) for r in rows]
        if user.role != "controller":
            return found
        return [s for s in found if controls(user, s)]

    def scope(self, project_id: str, manifest: dict[str, Any]) -> Scope | None:
        """What ``project_id`` may read of a release with this manifest (None: all of it).

        Refused, before anything is read, when no controller has approved any feed yet.
        """
        feeds = release_feeds(manifest)
        if not feeds:
            return None
        decided = {s.source: s for s in self.for_project(project_id)}
        approved = frozenset(
            f.name for f in feeds if (s := decided.get(f.name)) and s.status == "approved"
        )
        withheld = tuple(
            f"{s.source}: {s.status}"
            + (f" by {s.decided_by}" if s.decided_by else "")
            + (f": {s.reason}" if s.reason else "")
            for f in feeds
            if (s := decided.get(f.name)) and s.status in ("refused", "withdrawn")
        )
        listed = [f.name for f in feeds if (s := decided.get(f.name)) and s.status != "removed"]
        if not listed:
            raise AccessDenied(
                f"project {project_id} lists none of this release's feeds: a steward "
                "suspends it and approves it again naming the feeds it may use (hub "
                "projects approve --source), then their data controllers decide"
            )
        if not approved:
            waiting = sorted(f.name for f in feeds if f.name in decided)
            raise AccessDenied(
                f"no data controller has approved the use of its data in project {project_id}"
                + (f" (awaiting: {', '.join(waiting)})" if waiting else "")
                + (f"; withheld: {'; '.join(withheld)}" if withheld else "")
            )
        return Scope(approved, withheld)

    # ------------------------------------------------------------------ writing
    def list_for_approval(
        self,
        con: sqlite3.Connection,
        project_id: str,
        feeds: list[Feed],
        chosen: Iterable[str] | None,
        *,
        steward: User,
    ) -> list[str]:
        """The steward's list of feeds for a project being approved (all when ``chosen``
        is None); called inside the approval's transaction. Feeds already decided keep
        their controller's decision; feeds dropped from the list become "removed"."""
        names = {f.name: f for f in feeds}
        wanted = sorted(names) if chosen is None else sorted(set(chosen))
        unknown = [n for n in wanted if n not in names]
        if unknown:
            raise InvalidRequest(
                f"the release has no feed {', '.join(map(repr, unknown))} "
                f"(its feeds: {', '.join(sorted(names))})"
            )
        if not wanted:
            raise InvalidRequest("list at least one feed the project may use")
        now = clock.now()
        existing = {
            r["source"]: r["status"]
            for r in con.execute(
                "SELECT source, status FROM project_sources WHERE project_id = ?", (project_id,)
            )
        }
        for name in wanted:
            feed = names[name]
            if name not in existing or existing[name] == "removed":
                con.execute(
                    "INSERT OR REPLACE INTO project_sources VALUES (?, ?, ?, ?, 'pending', "
                    "NULL, NULL, ?)",
                    (project_id, name, feed.organisation, feed.controller, now),
                )
        for name, status in existing.items():
            if name not in wanted and status != "removed":
                con.execute(
                    "UPDATE project_sources SET status = 'removed', decided_by = ?, "
                    "reason = 'not listed in the steward''s approval', updated_at = ? "
                    "WHERE project_id = ? AND source = ?",
                    (steward.user_id, now, project_id, name),
                )
        return wanted

    def decide(
        self,
        project_id: str,
        source: str,
        *,
        controller: User,
        decision: str,
        reason: str = "",
        key_id: str | None = None,
    ) -> Source:
        """A controller's decision on the use of its feed in a project (audited)."""
        roles.require(controller, "source.decide")
        if decision not in DECISIONS:
            raise InvalidRequest(f"decision must be one of {', '.join(DECISIONS)}")
        reason = reason.strip()
        if decision != "approve" and len(reason) < 5:
            raise InvalidRequest(f"give a reason to {decision}")
        with self.store.transaction() as con:
            row = con.execute(
                "SELECT * FROM project_sources WHERE project_id = ? AND source = ?",
                (project_id, source),
            ).fetchone()
            current = _row(row) if row is not None else None
            if current is None or current.status == "removed" or not controls(controller, current):
                # the same answer whether the project or feed exists or another controls it
                raise NotFound(f"no source {source} of project {project_id} under your control")
            if current.status not in _FROM[decision]:
                raise Conflict(f"{source} is {current.status} in {project_id}; cannot {decision}")
            status = DECISIONS[decision]
            con.execute(
                "UPDATE project_sources SET status = ?, decided_by = ?, reason = ?, "
                "updated_at = ? WHERE project_id = ? AND source = ?",
                (status, controller.user_id, reason or None, clock.now(), project_id, source),
            )
            self.audit.append(
                con,
                AuditEvent(
                    action=f"source.{decision}",
                    actor=controller.user_id,
                    key_id=key_id,
                    role=controller.role,
                    project=project_id,
                    target=source,
                    reason=reason or None,
                    details={"organisation": current.organisation},
                ),
            )
        return next(s for s in self.for_project(project_id) if s.source == source)
