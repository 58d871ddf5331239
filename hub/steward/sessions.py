"""Server-side sessions for the steward dashboard, held in the server's memory only.

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
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

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

    @property
    def signed_in(self) -> bool:
        return self.key is not None

    def flash(self, kind: str, message: str) -> None:
        self.flashes.append((kind, message))

    def take_flashes(self) -> list[tuple[str, str]]:
        out, self.flashes = self.flashes, []
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
