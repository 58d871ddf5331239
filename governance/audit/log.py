"""The tamper-evident audit log: append-only, hash-chained, with signed checkpoints.

Each append runs inside a write transaction of the governance store (``BEGIN
IMMEDIATE``), is fsynced at commit before the caller goes on, and also re-signs the
log's *head* (entry count and head hash) with Ed25519; every ``CHECKPOINT_EVERY``
entries the signed head is kept as a checkpoint. ``verify`` walks the whole chain,
checks every checkpoint and the head, and names the first entry that was edited,
deleted, inserted, reordered or cut off. If the store cannot be written, the append
raises ``AuditUnavailable`` and the action it would have recorded does not happen.
What one entry holds is ``governance.audit.events``; the pure chain is
``governance.audit.chain``; the key is ``governance.audit.signer``.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any, Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from governance import clock
from governance.access import roles
from governance.audit.chain import (
    GENESIS,
    ChainBreak,
    StoredEntry,
    canonical,
    entry_hash,
    verify_chain,
)
from governance.audit.events import SUPPORTING_ACTIONS, AuditEvent, current_request
from governance.audit.signer import Signer, _valid, head_message
from governance.errors import AuditUnavailable
from governance.store import Store

if TYPE_CHECKING:
    from governance.access.people import Principal

CHECKPOINT_EVERY: Final = 1000


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
        ctx = current_request()
        if ctx is not None and event.request_id is None:
            event = replace(event, request_id=ctx.request_id)
        if ctx is not None and event.action not in SUPPORTING_ACTIONS:
            self.store.after_commit(con, ctx.count_outcome)
        try:
            row = con.execute("SELECT seq, head_hash FROM audit_head WHERE id = 1").fetchone()
            seq = (row["seq"] if row else 0) + 1
            prev = row["head_hash"] if row else GENESIS
            body_dict = event.body(seq=seq, prev_hash=prev, time=clock.now())
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

        Bumps a counter (a committed write: it must change bytes, since SQLite writes
        nothing for an update that leaves a row as it was); raises ``AuditUnavailable``
        when the store cannot be written, so a query is refused before it runs rather
        than after. Not fsynced by itself: the query's own entry is, before its response
        (``Store.transaction(durable=False)``).
        """
        with self.store.transaction(durable=False) as con:
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
        now = clock.now()
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

    def read(self, principal: Principal, **filters: Any) -> list[dict[str, Any]]:
        """``entries`` for a steward, the reading itself audited (with its row count)."""
        roles.require(principal.user, "audit.read")
        found = self.entries(**filters)
        self.record(AuditEvent.by(principal, "audit.read", row_count=len(found)))
        return found

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
