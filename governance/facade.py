"""The governance facade: one object holding the store, audit log, people, projects and
ledger of a hub home. Everything that touches release data goes through here.

>>> # gov = Governance.open(Path("var"))
>>> # user, key = gov.people.add(user_id="ana", ..., actor="cli:root")
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from governance.access.people import People
from governance.access.projects import Projects
from governance.audit.log import AuditLog
from governance.audit.signer import Signer
from governance.privacy.ledger import Ledger
from governance.store import Store


@dataclass(frozen=True)
class Governance:
    home: Path
    store: Store
    audit: AuditLog
    people: People
    projects: Projects
    ledger: Ledger

    @classmethod
    def open(
        cls, home: Path, *, signing_seed_hex: str | None = None, create_keys: bool = False
    ) -> Governance:
        """Open (creating on first use) the governance store of a hub home.

        The audit signing key must exist unless ``create_keys`` (first setup) is given.
        """
        store = Store.for_home(home)
        audit = AuditLog(store, Signer.load(home, seed_hex=signing_seed_hex, create=create_keys))
        people = People(store, audit)
        return cls(home, store, audit, people, Projects(store, audit, people), Ledger(store, audit))
