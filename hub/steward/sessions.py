"""Server-side sessions for the steward dashboard: in memory, or shared by workers.

The browser holds a random 256-bit session token in an HttpOnly, SameSite=Strict cookie;
the server keeps, under the token's SHA-256, who signed in, their CSRF token and any
messages for the next page. Nothing is written to disk, so a restart signs everyone out;
a session ends after ``IDLE_S`` without a request or ``MAX_S`` after sign-in, whichever
comes first. A session made before sign-in carries only a CSRF token (for the sign-in
form); signing in replaces it with a new one (no session fixation).

The steward's API key stays in the session, in memory, so that every request checks it
again through ``People.authenticate``: a revoked key or lapsed account ends the session
at its next request.

>>> store = SessionStore(clock=iter(range(0, 10_000, 100)).__next__)
>>> token, session = store.new()
>>> store.get(token) is session
True
>>> store.get("forged") is None
True
"""

from __future__ import annotations

import hashlib
import json
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

COOKIE: Final = "hub_steward"
IDLE_S: Final = 15 * 60  # signed out after 15 minutes without a request
MAX_S: Final = 60 * 60  # and an hour after signing in, whatever happens
MAX_SESSIONS: Final = 10_000  # bounded memory: sign-in pages cannot grow it for ever


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass
class Session:
    csrf: str
    created: float
    last_seen: float
    user_id: str | None = None
    key: str | None = field(default=None, repr=False)  # never logged or rendered
    flashes: list[tuple[str, str]] = field(default_factory=list)
    # a shared store writes a session back when its messages change
    saved: Callable[[Session], None] | None = field(default=None, repr=False, compare=False)

    @property
    def signed_in(self) -> bool:
        return self.key is not None

    def flash(self, kind: str, message: str) -> None:
        self.flashes.append((kind, message))
        if self.saved is not None:
            self.saved(self)

    def take_flashes(self) -> list[tuple[str, str]]:
        out, self.flashes = self.flashes, []
        if out and self.saved is not None:
            self.saved(self)
        return out


class SessionStore:
    def __init__(
        self,
        *,
        idle_s: float = IDLE_S,
        max_s: float = MAX_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.idle_s = idle_s
        self.max_s = max_s
        self.clock = clock
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def new(self, *, user_id: str | None = None, key: str | None = None) -> tuple[str, Session]:
        """A fresh session; returns the token for the cookie (stored only as its hash)."""
        token = secrets.token_urlsafe(32)
        now = self.clock()
        session = Session(secrets.token_urlsafe(32), now, now, user_id, key)
        with self._lock:
            if len(self._sessions) >= MAX_SESSIONS:
                self._purge(now)
            if len(self._sessions) >= MAX_SESSIONS:
                # still full: drop the oldest sessions nobody has signed in to
                anonymous = sorted(
                    (s.last_seen, h) for h, s in self._sessions.items() if not s.signed_in
                )
                for _, digest in anonymous[: max(1, MAX_SESSIONS // 10)]:
                    del self._sessions[digest]
            self._sessions[_digest(token)] = session
        return token, session

    def get(self, token: str | None) -> Session | None:
        """The live session for a cookie value, or None (expired ones are dropped)."""
        if not token:
            return None
        digest = _digest(token)
        now = self.clock()
        with self._lock:
            session = self._sessions.get(digest)
            if session is None:
                return None
            if self._expired(session, now):
                del self._sessions[digest]
                return None
            session.last_seen = now
            return session

    def drop(self, token: str | None) -> None:
        if token:
            with self._lock:
                self._sessions.pop(_digest(token), None)

    def __len__(self) -> int:
        return len(self._sessions)

    def _expired(self, session: Session, now: float) -> bool:
        return now - session.last_seen > self.idle_s or now - session.created > self.max_s

    def _purge(self, now: float) -> None:
        for digest in [h for h, s in self._sessions.items() if self._expired(s, now)]:
            del self._sessions[digest]


def same_token(expected: str, given: str | None) -> bool:
    """Constant-time comparison of a form's CSRF token with the session's."""
    return bool(given) and secrets.compare_digest(expected.encode(), (given or "").encode())


class SharedSessionStore(SessionStore):
    """Sessions that every worker process of one ``hub serve`` sees.

    Held in a small SQLite file under the hub home (WAL, so workers read while one
    writes), keyed by the token's SHA-256 like the in-memory store. The steward's API key
    is stored only encrypted (AES-GCM) under a secret that ``hub serve`` draws at start
    and hands to its workers in their environment; it never reaches the disk. A restart
    draws a new secret, so old sessions cannot be read and everyone is signed out, as
    with the in-memory store. Times are wall-clock seconds, shared by the workers.
    """

    def __init__(
        self,
        path: Path,
        secret: bytes,
        *,
        idle_s: float = IDLE_S,
        max_s: float = MAX_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(idle_s=idle_s, max_s=max_s, clock=clock)
        self.path = path
        self._aead = AESGCM(secret)
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as con:
            con.execute(
                "CREATE TABLE IF NOT EXISTS sessions (digest TEXT PRIMARY KEY, body BLOB NOT NULL,"
                " last_seen REAL NOT NULL, signed_in INTEGER NOT NULL)"
            )

    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        con.execute("PRAGMA journal_mode=WAL")
        return con

    def _seal(self, digest: str, session: Session) -> bytes:
        body = json.dumps(
            {
                "csrf": session.csrf,
                "created": session.created,
                "last_seen": session.last_seen,
                "user_id": session.user_id,
                "key": session.key,
                "flashes": session.flashes,
            }
        ).encode()
        nonce = secrets.token_bytes(12)
        return nonce + self._aead.encrypt(nonce, body, digest.encode())

    def _open(self, digest: str, sealed: bytes) -> Session | None:
        try:
            body = json.loads(self._aead.decrypt(sealed[:12], sealed[12:], digest.encode()))
        except InvalidTag:  # sealed by an earlier run of the server: signed out
            return None
        session = Session(
            body["csrf"], body["created"], body["last_seen"], body["user_id"], body["key"]
        )
        session.flashes = [(k, m) for k, m in body["flashes"]]
        session.saved = lambda s: self._write(digest, s)
        return session

    def _write(self, digest: str, session: Session) -> None:
        with self._connect() as con:
            con.execute(
                "INSERT OR REPLACE INTO sessions VALUES (?, ?, ?, ?)",
                (digest, self._seal(digest, session), session.last_seen, int(session.signed_in)),
            )

    def new(self, *, user_id: str | None = None, key: str | None = None) -> tuple[str, Session]:
        token = secrets.token_urlsafe(32)
        now = self.clock()
        digest = _digest(token)
        session = Session(secrets.token_urlsafe(32), now, now, user_id, key)
        session.saved = lambda s: self._write(digest, s)
        with self._connect() as con:
            (count,) = con.execute("SELECT count(*) FROM sessions").fetchone()
            if count >= MAX_SESSIONS:
                con.execute("DELETE FROM sessions WHERE last_seen < ?", (now - self.idle_s,))
                con.execute(
                    "DELETE FROM sessions WHERE digest IN (SELECT digest FROM sessions "
                    "WHERE signed_in = 0 ORDER BY last_seen LIMIT ?)",
                    (max(1, MAX_SESSIONS // 10),),
                )
        self._write(digest, session)
        return token, session

    def get(self, token: str | None) -> Session | None:
        if not token:
            return None
        digest = _digest(token)
        now = self.clock()
        with self._connect() as con:
            row = con.execute("SELECT body FROM sessions WHERE digest = ?", (digest,)).fetchone()
        if row is None:
            return None
        session = self._open(digest, row[0])
        if session is None or self._expired(session, now):
            self.drop(token)
            return None
        session.last_seen = now
        self._write(digest, session)
        return session

    def drop(self, token: str | None) -> None:
        if token:
            with self._connect() as con:
                con.execute("DELETE FROM sessions WHERE digest = ?", (_digest(token),))

    def clear(self) -> None:
        """Sign everyone out (``hub serve`` does this as it starts)."""
        with self._connect() as con:
            con.execute("DELETE FROM sessions")

    def __len__(self) -> int:
        with self._connect() as con:
            (count,) = con.execute("SELECT count(*) FROM sessions").fetchone()
        return int(count)
