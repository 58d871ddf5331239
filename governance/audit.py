"""The tamper-evident audit log: append-only, hash-chained, with signed checkpoints.

Every entry records who (actor, key id, role), on what (project, target, release), what
(action, query text and its SHA-256, ε and δ spent, result row count and hash) and the
decision (allowed or denied, with the reason). Never result rows or any patient-level
value: callers pass counts and hashes only.

Each append runs inside a write transaction of the governance store (``BEGIN
IMMEDIATE``), is fsynced at commit before the caller goes on, and also re-signs the
log's *head* (entry count and head hash) with Ed25519; every ``CHECKPOINT_EVERY``
entries the signed head is kept as a checkpoint. ``verify`` walks the whole chain,
checks every checkpoint and the head, and names the first entry that was edited,
deleted, inserted, reordered or cut off. If the store cannot be written, the append
raises ``AuditUnavailable`` and the action it would have recorded does not happen.

The signing key lives in ``$HUB_HOME/keys/audit_signing.key`` (or
``HUB_AUDIT_SIGNING_KEY``), apart from the store; ``public_key_pem`` exports the public
key so that an auditor can verify an export without the hub.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import json
import os
import sqlite3
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Final, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from connectors.secrets import parse_key
from governance.audit_chain import (
    GENESIS,
    ChainBreak,
    StoredEntry,
    canonical,
    entry_hash,
    sha256_text,
    verify_chain,
)
from governance.errors import AuditUnavailable
from governance.store import Store

CHECKPOINT_EVERY: Final = 1000
Decision = Literal["allowed", "denied"]

# Entries that record a change of the privacy budget ledger on behalf of a request;
# every other entry written while serving a request is that request's *outcome* entry.
SUPPORTING_ACTIONS: Final = frozenset({"budget.reserve", "budget.commit", "budget.refund"})


@dataclass
class RequestContext:
    """The API request being served: its id, who made it, and the outcome entries written.

    The HTTP layer binds one per request (``bind_request``); every entry appended while it
    is bound carries its ``request_id``, so a response (``X-Request-ID``) can be matched
    with its audit entries. ``outcomes`` counts committed outcome entries: the HTTP layer
    writes a generic one for a request that reached no audited action, so that every
    authenticated request has exactly one.
    """

    request_id: str
    actor: str | None = None
    key_id: str | None = None
    role: str | None = None
    outcomes: int = 0
    unavailable: bool = False

    def count_outcome(self) -> None:
        self.outcomes += 1


_request: contextvars.ContextVar[RequestContext | None] = contextvars.ContextVar(
    "hub_audit_request", default=None
)


def bind_request(ctx: RequestContext) -> contextvars.Token[RequestContext | None]:
    return _request.set(ctx)


def unbind_request(token: contextvars.Token[RequestContext | None]) -> None:
    _request.reset(token)


def current_request() -> RequestContext | None:
    return _request.get()


@dataclass(frozen=True)
class AuditEvent:
    action: str
    decision: Decision = "allowed"
    actor: str | None = None
    key_id: str | None = None
    role: str | None = None
    project: str | None = None
    target: str | None = None
    reason: str | None = None
    query_text: str | None = None
    release: str | None = None
    epsilon: float | None = None
    delta: float | None = None
    row_count: int | None = None
    result_sha256: str | None = None
    request_id: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def body(self, *, seq: int, prev_hash: str, time: str) -> dict[str, Any]:
        # (not dataclasses.asdict: its deep copies cost more than the rest of an append)
        out = {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if getattr(self, f.name) is not None and f.name != "details"
        }
        if self.details:
            # nested as a JSON string: the body's own keys stay the only unescaped keys
            out["details"] = canonical(self.details)
        if self.query_text is not None:
            out["query_sha256"] = sha256_text(self.query_text)
        return {**out, "seq": seq, "prev_hash": prev_hash, "time": time}


class Signer:
    """The Ed25519 key that signs the log's head and checkpoints."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._key = private_key

    @classmethod
    def load(cls, home: Path, *, seed_hex: str | None = None, create: bool = False) -> Signer:
        if seed_hex:
            return cls(
                Ed25519PrivateKey.from_private_bytes(parse_key("audit signing", seed_hex)[:32])
            )
        path = home / "keys" / "audit_signing.key"
        if path.exists():
            mode = path.stat().st_mode & 0o777
            if mode & 0o077:
                from connectors.errors import SecretError

                raise SecretError(
                    f"{path} is readable by other users (mode {mode:o}); run: chmod 600 {path}"
                )
            return cls(
                Ed25519PrivateKey.from_private_bytes(
                    parse_key("audit signing", path.read_text())[:32]
                )
            )
        if not create:
            from connectors.errors import SecretError

            raise SecretError(f"no audit signing key: set HUB_AUDIT_SIGNING_KEY or create {path}")
        path.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(path.parent, 0o700)
        key = Ed25519PrivateKey.generate()
        seed = key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(seed.hex() + "\n")
        return cls(key)

    def sign(self, message: bytes) -> str:
        return self._key.sign(message).hex()

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self._key.public_key()

    def public_key_pem(self) -> str:
        return self.public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode()


def head_message(seq: int, head_hash: str) -> bytes:
    return f"hub-audit-v1|{seq}|{head_hash}".encode()


def load_public_key(pem: str) -> Ed25519PublicKey:
    key = serialization.load_pem_public_key(pem.encode())
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("not an Ed25519 public key")
    return key


def _valid(public_key: Ed25519PublicKey, signature: str, message: bytes) -> bool:
    try:
        public_key.verify(bytes.fromhex(signature), message)
    except (InvalidSignature, ValueError):
        return False
    return True


@dataclass(frozen=True)
class VerifyReport:
    ok: bool
    entries: int
    head_hash: str
    checkpoints: int
    first_bad: int | None
    reason: str
    verified_at: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class AuditLog:
    def __init__(
        self, store: Store, signer: Signer, *, checkpoint_every: int = CHECKPOINT_EVERY
    ) -> None:
        self.store = store
        self.signer = signer
        self.checkpoint_every = checkpoint_every

    # ------------------------------------------------------------------ writing
    def append(self, con: sqlite3.Connection, event: AuditEvent) -> int:
        """Append inside the caller's write transaction; durable when it commits.

        Inside an API request the entry carries the request's id; an outcome entry is
        counted for the request once the transaction that holds it commits.
        """
        ctx = _request.get()
        if ctx is not None and event.request_id is None:
            event = replace(event, request_id=ctx.request_id)
        if ctx is not None and event.action not in SUPPORTING_ACTIONS:
            self.store.after_commit(con, ctx.count_outcome)
        try:
            row = con.execute("SELECT seq, head_hash FROM audit_head WHERE id = 1").fetchone()
            seq = (row["seq"] if row else 0) + 1
            prev = row["head_hash"] if row else GENESIS
            body_dict = event.body(seq=seq, prev_hash=prev, time=_now())
            body = canonical(body_dict)
            digest = entry_hash(prev, body)
            con.execute(
                "INSERT INTO audit_entries (seq, body, prev_hash, hash, time, actor, "
                "role, project, action, decision) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    seq,
                    body,
                    prev,
                    digest,
                    body_dict["time"],
                    event.actor,
                    event.role,
                    event.project,
                    event.action,
                    event.decision,
                ),
            )
            signature = self.signer.sign(head_message(seq, digest))
            con.execute(
                "INSERT INTO audit_head (id, seq, head_hash, signature) VALUES (1, ?, ?, ?) "
                "ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, head_hash "
                "= excluded.head_hash, signature = excluded.signature",
                (seq, digest, signature),
            )
            if seq % self.checkpoint_every == 0:
                con.execute(
                    "INSERT INTO audit_checkpoints (seq, head_hash, "
                    "signature, signed_at) VALUES (?, ?, ?, ?)",
                    (seq, digest, signature, body_dict["time"]),
                )
        except sqlite3.OperationalError as exc:
            raise AuditUnavailable(
                f"the audit log cannot be written ({exc}); nothing was done"
            ) from None
        return seq

    def record(self, event: AuditEvent) -> int:
        """Append in a transaction of its own (for actions with no state of their own)."""
        with self.store.transaction() as con:
            return self.append(con, event)

    def ensure_writable(self) -> None:
        """Prove the store takes a durable write now, before work that must be audited.

        Bumps a counter (a committed, fsynced write: it must change bytes, since SQLite
        writes nothing for an update that leaves a row as it was); raises
        ``AuditUnavailable`` when the store cannot be written, so a query is refused
        before it runs rather than after.
        """
        with self.store.transaction() as con:
            try:
                con.execute(
                    "INSERT INTO store_probe (id, writes) VALUES (1, 1) "
                    "ON CONFLICT (id) DO UPDATE SET writes = writes + 1"
                )
            except sqlite3.OperationalError as exc:
                raise AuditUnavailable(
                    f"the audit log cannot be written ({exc}); nothing was done"
                ) from None

    # ------------------------------------------------------------------ reading
    def _stored(
        self, con: sqlite3.Connection, *, with_fields: bool = False
    ) -> Iterator[StoredEntry]:
        names = ("time", "actor", "role", "project", "action", "decision")
        for row in con.execute(
            "SELECT seq, body, prev_hash, hash, time, actor, role, project, action, decision "
            "FROM audit_entries ORDER BY seq"
        ):
            fields = tuple(zip(names, row[4:], strict=True)) if with_fields else ()
            yield StoredEntry(row[0], row[1], row[2], row[3], fields)

    def verify(self, public_key: Ed25519PublicKey | None = None) -> VerifyReport:
        key = public_key or self.signer.public_key
        con = self.store.connect()
        try:
            con.row_factory = None
            checkpoints = {
                r[0]: (r[1], r[2])
                for r in con.execute("SELECT seq, head_hash, signature FROM audit_checkpoints")
            }
            head = con.execute(
                "SELECT seq, head_hash, signature FROM audit_head WHERE id = 1"
            ).fetchone()
            hashes_at: dict[int, str] = {}

            def tracked() -> Iterator[StoredEntry]:
                for e in self._stored(con, with_fields=True):
                    if e.seq in checkpoints:
                        hashes_at[e.seq] = e.hash
                    yield e

            count, head_hash, broken = verify_chain(tracked())
        finally:
            con.close()
        now = _now()
        if broken is None:
            for seq in sorted(checkpoints):
                recorded, signature = checkpoints[seq]
                if not _valid(key, signature, head_message(seq, recorded)):
                    broken = ChainBreak(
                        seq, f"the checkpoint at entry {seq} has an invalid signature"
                    )
                    break
                if seq > count:
                    broken = ChainBreak(
                        count + 1,
                        "the log was cut off: a signed checkpoint covers "
                        f"entry {seq} but only {count} entries remain",
                    )
                    break
                if hashes_at.get(seq) != recorded:
                    broken = ChainBreak(seq, f"entry {seq} differs from its signed checkpoint")
                    break
        if broken is None and count:
            if head is None:
                broken = ChainBreak(count, "the signed head of the log is missing")
            elif not _valid(key, head[2], head_message(head[0], head[1])):
                broken = ChainBreak(head[0], "the signed head of the log has an invalid signature")
            elif head[0] > count:
                broken = ChainBreak(
                    count + 1,
                    f"the log was cut off after entry {count}: "
                    f"the signed head covers {head[0]} entries",
                )
            elif head[0] != count or head[1] != head_hash:
                broken = ChainBreak(head[0], "the signed head does not match the last entry")
        if broken is None:
            return VerifyReport(
                True,
                count,
                head_hash,
                len(checkpoints),
                None,
                f"verified {count} entries and {len(checkpoints)} checkpoints",
                now,
            )
        return VerifyReport(
            False, count, head_hash, len(checkpoints), broken.seq, broken.reason, now
        )

    def entries(
        self,
        *,
        actor: str | None = None,
        role: str | None = None,
        project: str | None = None,
        action: str | None = None,
        decision: str | None = None,
        since: str | None = None,
        until: str | None = None,
        text: str | None = None,
        limit: int = 100,
        before_seq: int | None = None,
    ) -> list[dict[str, Any]]:
        """Entries newest first, filtered; each is its signed body plus its hash."""
        where: list[str] = []
        params: list[object] = []
        for column, value in (
            ("actor", actor),
            ("role", role),
            ("project", project),
            ("action", action),
            ("decision", decision),
        ):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if since:
            where.append("time >= ?")
            params.append(since)
        if until:
            where.append("time <= ?")
            params.append(until)
        if before_seq is not None:
            where.append("seq < ?")
            params.append(before_seq)
        if text:
            where.append("instr(lower(json_extract(body, '$.query_text')), lower(?)) > 0")
            params.append(text)
        sql = "SELECT body, hash FROM audit_entries"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY seq DESC LIMIT ?"
        params.append(max(1, min(limit, 10_000)))
        con = self.store.connect()
        try:
            return [{**json.loads(r["body"]), "hash": r["hash"]} for r in con.execute(sql, params)]
        finally:
            con.close()

    def export(self) -> Iterator[str]:
        """JSON lines: a header with the public key, every entry, every checkpoint, the head."""
        yield json.dumps(
            {
                "type": "header",
                "format": "hub-audit-v1",
                "public_key_pem": self.signer.public_key_pem(),
                "hash": "sha256(prev_hash + '\\n' + body)",
                "signed": "ed25519('hub-audit-v1|<seq>|<head_hash>')",
            }
        )
        con = self.store.connect()
        try:
            for e in self._stored(con):
                yield json.dumps(
                    {
                        "type": "entry",
                        "seq": e.seq,
                        "body": e.body,
                        "prev_hash": e.prev_hash,
                        "hash": e.hash,
                    }
                )
            for r in con.execute(
                "SELECT seq, head_hash, signature, signed_at FROM audit_checkpoints ORDER BY seq"
            ):
                yield json.dumps(
                    {
                        "type": "checkpoint",
                        "seq": r[0],
                        "head_hash": r[1],
                        "signature": r[2],
                        "signed_at": r[3],
                    }
                )
            head = con.execute("SELECT seq, head_hash, signature FROM audit_head").fetchone()
            if head:
                yield json.dumps(
                    {"type": "head", "seq": head[0], "head_hash": head[1], "signature": head[2]}
                )
        finally:
            con.close()


def verify_export(lines: Iterator[str], public_key: Ed25519PublicKey) -> tuple[bool, str]:
    """Verify an export without the hub: the chain, every checkpoint, the head."""
    entries, checkpoints, head = [], [], None
    for line in lines:
        item = json.loads(line)
        if item["type"] == "entry":
            entries.append(StoredEntry(item["seq"], item["body"], item["prev_hash"], item["hash"]))
        elif item["type"] == "checkpoint":
            checkpoints.append(item)
        elif item["type"] == "head":
            head = item
    count, head_hash, broken = verify_chain(entries)
    if broken:
        return False, broken.reason
    by_seq = {e.seq: e.hash for e in entries}
    for c in checkpoints:
        if (
            not _valid(public_key, c["signature"], head_message(c["seq"], c["head_hash"]))
            or by_seq.get(c["seq"]) != c["head_hash"]
        ):
            return False, f"checkpoint {c['seq']} does not verify"
    if count and (
        head is None
        or head["seq"] != count
        or head["head_hash"] != head_hash
        or not _valid(public_key, head["signature"], head_message(count, head_hash))
    ):
        return False, "the signed head does not verify"
    return True, f"verified {count} entries"
