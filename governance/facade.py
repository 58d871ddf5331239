"""The governance facade: one object holding the store, audit log, people, projects and
ledger of a hub home. Everything that touches release data goes through here.

>>> # gov = Governance.open(Path("var"))
>>> # user, key = gov.people.add(user_id="ana", ..., actor="cli:root")
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from connectors import releases
from connectors.errors import ReleaseError
from governance.access import commercial, roles
from governance.access.people import People
from governance.access.projects import Projects
from governance.access.sources import Feed, Sources, release_feeds
from governance.audit.log import AuditLog
from governance.audit.signer import Signer
from governance.errors import NotFound
from governance.privacy.ledger import Ledger
from governance.store import Store

if TYPE_CHECKING:
    from governance.access.people import Principal
    from governance.cohorts import Cohorts
    from governance.feasibility import Feasibility
    from governance.outputs.review import OutputReview
    from governance.queries import QueryService


@dataclass(frozen=True)
class Governance:
    home: Path
    store: Store
    audit: AuditLog
    people: People
    projects: Projects
    ledger: Ledger
    query_timeout_s: float = 30.0

    @classmethod
    def open(
        cls,
        home: Path,
        *,
        signing_seed_hex: str | None = None,
        create_keys: bool = False,
        query_timeout_s: float = 30.0,
    ) -> Governance:
        """Open (creating on first use) the governance store of a hub home.

        The audit signing key must exist unless ``create_keys`` (first setup) is given.
        """
        store = Store.for_home(home)
        audit = AuditLog(store, Signer.load(home, seed_hex=signing_seed_hex, create=create_keys))
        people = People(store, audit)
        projects = Projects(store, audit, people)
        projects.sources = Sources(store, audit)
        gov = cls(home, store, audit, people, projects, Ledger(store, audit), query_timeout_s)
        projects.schema = gov.release_schema  # grants are checked against the release
        projects.feeds = gov.release_feeds  # and sources against its feeds
        return gov

    def release_schema(self) -> dict[str, frozenset[str]] | None:
        """The current real release's grantable tables and columns (None before one)."""
        try:
            release = self.queries.release_for("real")
        except ReleaseError:
            return None
        # the process's one engine on the release (DuckDB allows one configuration per
        # file and process, and a release is read through the engine only)
        engine = self.queries.engine(release)
        cur = engine.cursor()
        try:
            catalogue = engine.catalogue(cur)
        finally:
            cur.close()
        return {t: frozenset(c) for t, c in catalogue.items() if not t.startswith("_")}

    def release_feeds(self) -> list[Feed]:
        """The current real release's feeds and their controllers (empty: not from feeds)."""
        try:
            release = self.queries.release_for("real")
        except ReleaseError:
            return []
        return release_feeds(release.manifest)

    @property
    def sources(self) -> Sources:
        """Each project's sources and their data controllers' decisions."""
        return self.projects.sources

    @cached_property
    def queries(self) -> QueryService:
        """Governed queries: one service per hub home and process."""
        from governance.queries import QueryService

        return QueryService(self, timeout_s=self.query_timeout_s)

    @cached_property
    def outputs(self) -> OutputReview:
        """Outputs and their review (exact tables and models): one per hub home and process."""
        from governance.outputs.review import OutputReview

        return OutputReview(self)

    @cached_property
    def cohorts(self) -> Cohorts:
        """Training cohorts: checked person-local, read only by the hub's own training."""
        from governance.cohorts import Cohorts

        return Cohorts(self.queries)

    @cached_property
    def feasibility(self) -> Feasibility:
        """Trial feasibility specs answered by DP counts per site and area."""
        from governance.feasibility import Feasibility

        return Feasibility(self.queries)

    def quality_report(self, principal: Principal, release_id: str) -> dict[str, Any]:
        """A release's manifest and quality report, for stewards and admins."""
        roles.require(principal.user, "quality.read")
        try:
            release = releases.get_release(self.home, release_id)
        except Exception:
            raise NotFound(f"no release {release_id}") from None
        path = releases.quality_report(release.path)
        report = json.loads(path.read_text()) if path.exists() else None
        return {"release": release.id, "manifest": release.manifest, "quality": report}

    def public_register(self) -> list[dict[str, Any]]:
        """The transparency register: every approved, suspended or closed project."""
        out = []
        con = self.store.cached()
        for p in self.projects.find():
            if p.status not in ("approved", "suspended", "closed"):
                continue
            queries = con.execute(
                "SELECT count(*) FROM queries WHERE project_id = ?", (p.project_id,)
            ).fetchone()[0]
            outputs = con.execute(
                "SELECT count(*) FROM outputs WHERE project_id = ? AND status = 'approved'",
                (p.project_id,),
            ).fetchone()[0]
            state = self.ledger.state(p.project_id)
            feasibility = con.execute(
                "SELECT count(*) FROM feasibility_runs WHERE project_id = ?", (p.project_id,)
            ).fetchone()[0]
            out.append(
                {
                    "project_id": p.project_id,
                    "title": p.title,
                    "organisation": p.organisation,
                    "purpose": p.purpose,
                    "lay_summary": p.lay_summary,
                    "status": p.status,
                    "approved_until": p.expires_at.isoformat() if p.expires_at else None,
                    "queries": queries,
                    "outputs_released": outputs,
                    "epsilon_used": round(state.epsilon_spent, 6),
                    "epsilon_total": state.epsilon_total,
                    # which organisations' data the project uses, as their controllers decided
                    "sources": [
                        {
                            k: getattr(s, k)
                            for k in ("source", "organisation", "controller", "status")
                        }
                        for s in self.sources.for_project(p.project_id)
                        if s.status != "removed"
                    ],
                    "feasibility_runs": feasibility,
                    **commercial.register_fields(p),
                }
            )
        return out
