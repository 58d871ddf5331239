"""Safe people: users with one role, an organisation, an accreditation expiry, and API keys.

An API key is ``hub_<key id>_<secret>``: the key id (public, recorded in the audit log)
finds the key, and the 256-bit random secret is stored only as its SHA-256 and compared
in constant time. A fast hash is right here: the secret is random, not a password, so
there is nothing to brute-force. A key is shown once, when it is made.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import secrets
import sqlite3
from dataclasses import dataclass
from typing import Final, Literal, cast

from governance import clock
from governance.access import commercial
from governance.audit.events import AuditEvent
from governance.audit.log import AuditLog
from governance.errors import Conflict, InvalidRequest, NotFound, Unauthenticated
from governance.store import Store

Role = Literal["researcher", "steward", "modeller", "admin", "controller"]
ROLES: Final = ("researcher", "steward", "modeller", "admin", "controller")
ORGANISATION_TYPES: Final = ("nhs_trust", "university", "life_science_company", "other")
_KEY = re.compile(r"hub_([a-z0-9]{12})_([A-Za-z0-9_-]{43})")
_USER_ID = re.compile(r"[a-z][a-z0-9_.-]{1,39}")


@dataclass(frozen=True)
class User:
    user_id: str
    name: str
    role: Role
    organisation: str
    organisation_type: str
    accreditation_expires: dt.date
    active: bool

    def accredited(self, today: dt.date | None = None) -> bool:
        return self.active and self.accreditation_expires >= (today or dt.date.today())


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: the user and the key they used."""

    user: User
    key_id: str


def _row_user(row: sqlite3.Row) -> User:
    return User(
        user_id=row["user_id"],
        name=row["name"],
        role=cast(Role, row["role"]),
        organisation=row["organisation"],
        organisation_type=row["organisation_type"],
        accreditation_expires=dt.date.fromisoformat(row["accreditation_expires"]),
        active=bool(row["active"]),
    )


def _secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class People:
    def __init__(self, store: Store, audit: AuditLog) -> None:
        self.store = store
        self.audit = audit

    def add(
        self,
        *,
        user_id: str,
        name: str,
        role: str,
        organisation: str,
        organisation_type: str,
        accreditation_expires: dt.date,
        actor: str,
    ) -> tuple[User, str]:
        """Create a user and their first key; returns the key (shown once)."""
        if not _USER_ID.fullmatch(user_id):
            raise InvalidRequest("user id: 2-40 lowercase letters, digits, '.', '_' or '-'")
        if role not in ROLES:
            raise InvalidRequest(f"role must be one of {', '.join(ROLES)}")
        if organisation_type not in ORGANISATION_TYPES:
            raise InvalidRequest(
                f"organisation type must be one of {', '.join(ORGANISATION_TYPES)}"
            )
        commercial.check_role(role=role, organisation_type=organisation_type)
        if not name.strip() or not organisation.strip():
            raise InvalidRequest("name and organisation are required")
        with self.store.transaction() as con:
            if con.execute("SELECT 1 FROM users WHERE user_id = ?", (user_id,)).fetchone():
                raise Conflict(f"user {user_id} already exists")
            con.execute(
                "INSERT INTO users VALUES (?, ?, ?, ?, ?, ?, ?, 1)",
                (
                    user_id,
                    name,
                    role,
                    organisation,
                    organisation_type,
                    accreditation_expires.isoformat(),
                    clock.now(),
                ),
            )
            key, key_id = self._new_key(con, user_id)
            self.audit.append(
                con,
                AuditEvent(
                    action="user.add",
                    actor=actor,
                    target=user_id,
                    details={"role": role, "key_id": key_id},
                ),
            )
        return self.get(user_id), key

    def _new_key(self, con: sqlite3.Connection, user_id: str) -> tuple[str, str]:
        key_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)  # 256 bits
        con.execute(
            "INSERT INTO api_keys VALUES (?, ?, ?, ?, NULL)",
            (key_id, user_id, _secret_hash(secret), clock.now()),
        )
        return f"hub_{key_id}_{secret}", key_id

    def get(self, user_id: str) -> User:
        row = (
            self.store.cached()
            .execute("SELECT * FROM users WHERE user_id = ?", (user_id,))
            .fetchone()
        )
        if row is None:
            raise NotFound(f"no user {user_id}")
        return _row_user(row)

    def list(self) -> list[tuple[User, list[str]]]:
        con = self.store.cached()
        out = []
        for row in con.execute("SELECT * FROM users ORDER BY user_id"):
            keys = [
                r[0]
                for r in con.execute(
                    "SELECT key_id FROM api_keys WHERE user_id = ? AND revoked_at IS NULL",
                    (row["user_id"],),
                )
            ]
            out.append((_row_user(row), keys))
        return out

    def revoke(self, *, user_id: str, actor: str) -> int:
        """Revoke every key of a user and deactivate them; returns keys revoked."""
        with self.store.transaction() as con:
            if not con.execute("SELECT 1 FROM users WHERE user_id = ?", (user_id,)).fetchone():
                raise NotFound(f"no user {user_id}")
            n = con.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE user_id = ? AND revoked_at IS NULL",
                (clock.now(), user_id),
            ).rowcount
            con.execute("UPDATE users SET active = 0 WHERE user_id = ?", (user_id,))
            self.audit.append(
                con,
                AuditEvent(
                    action="user.revoke", actor=actor, target=user_id, details={"keys_revoked": n}
                ),
            )
        return n

    def rotate_key(self, *, user_id: str, actor: str) -> str:
        """Revoke a user's keys and issue a new one (shown once)."""
        with self.store.transaction() as con:
            row = con.execute("SELECT active FROM users WHERE user_id = ?", (user_id,)).fetchone()
            if row is None:
                raise NotFound(f"no user {user_id}")
            if not row["active"]:
                raise Conflict(f"user {user_id} is revoked; add them again to restore access")
            con.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE user_id = ? AND revoked_at IS NULL",
                (clock.now(), user_id),
            )
            key, key_id = self._new_key(con, user_id)
            self.audit.append(
                con,
                AuditEvent(
                    action="user.rotate_key",
                    actor=actor,
                    target=user_id,
                    details={"key_id": key_id},
                ),
            )
        return key

    def authenticate(self, key: str | None) -> Principal:
        """The principal a key belongs to; any failure is the same generic refusal."""
        if not key:
            raise Unauthenticated("an API key is required (Authorization: Bearer <key>)")
        match = _KEY.fullmatch(key.strip())
        if match is None:
            raise Unauthenticated("the API key is not valid")
        key_id, secret = match.groups()
        row = (
            self.store.cached()
            .execute(
                "SELECT k.secret_sha256, k.revoked_at, u.* FROM api_keys "
                "k JOIN users u USING (user_id) WHERE k.key_id = ?",
                (key_id,),
            )
            .fetchone()
        )
        # compare even when the key id is unknown, so timing says nothing about key ids
        expected = row["secret_sha256"] if row else _secret_hash("no such key")
        matches = hmac.compare_digest(expected, _secret_hash(secret))
        if row is None or not matches or row["revoked_at"] is not None or not row["active"]:
            raise Unauthenticated("the API key is not valid")
        return Principal(_row_user(row), key_id)
