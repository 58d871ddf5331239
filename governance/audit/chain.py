"""The audit log's hash chain, pure: canonical JSON, entry hashes, chain verification.

An entry's body is canonical JSON (sorted keys, no spaces, ASCII only: a newline, a
control character or a right-to-left override in query text is written as an escape,
so no entry can look like two, or hide another). Its hash is

    hash(n) = SHA-256( hash(n-1) || "\\n" || body(n) ),   hash(0) = 64 zeros

and the body repeats its own sequence number and the previous hash, so an edit,
deletion, insertion or reordering anywhere breaks the chain at that entry.

>>> body = canonical({"seq": 1, "action": "login", "prev_hash": GENESIS})
>>> entry_hash(GENESIS, body) == entry_hash(GENESIS, body)
True
>>> canonical({"q": "a\\nb"})
'{"q":"a\\\\nb"}'
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

GENESIS: Final = "0" * 64


def canonical(body: dict[str, Any]) -> str:
    return json.dumps(
        body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    )


def entry_hash(prev_hash: str, body: str) -> str:
    return hashlib.sha256(f"{prev_hash}\n{body}".encode()).hexdigest()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class StoredEntry(NamedTuple):
    seq: int
    body: str
    prev_hash: str
    hash: str
    # index columns kept beside the body for filtering; they must repeat the body
    fields: tuple[tuple[str, object], ...] = ()


def _in_body(body: str, key: str, value: object) -> bool:
    """Whether canonical ``body`` holds ``key: value`` (absent when value is None).

    A plain substring test is exact here: in canonical JSON every quote inside a string
    value is escaped, so ``"key":`` can only match a real key.
    """
    if value is None:
        return f'"{key}":' not in body
    if (
        isinstance(value, str)
        and value.isascii()
        and value.isprintable()
        and '"' not in value
        and "\\" not in value
    ):
        # the common case, encoded as json.dumps would, without its cost
        return f'"{key}":"{value}"' in body
    return f'"{key}":{json.dumps(value, ensure_ascii=True)}' in body


@dataclass(frozen=True)
class ChainBreak:
    seq: int
    reason: str


def verify_chain(
    entries: Iterable[StoredEntry], *, start_hash: str = GENESIS, start_seq: int = 1
) -> tuple[int, str, ChainBreak | None]:
    """Walk entries in order. Returns (entries checked, head hash, first break or None)."""
    prev = start_hash
    expected = start_seq
    checked = 0
    for e in entries:
        if e.seq != expected:
            kind = "deleted" if e.seq > expected else "reordered or duplicated"
            return (
                checked,
                prev,
                ChainBreak(expected, f"entry {expected} is missing or {kind} (found {e.seq})"),
            )
        if e.prev_hash != prev:
            return (
                checked,
                prev,
                ChainBreak(
                    e.seq,
                    f"entry {e.seq} does not follow entry {e.seq - 1} (an "
                    "entry before it was changed, removed or inserted)",
                ),
            )
        seq_ok = f'"seq":{e.seq},' in e.body or e.body.endswith(f'"seq":{e.seq}}}')
        if not seq_ok or f'"prev_hash":"{e.prev_hash}"' not in e.body:
            return (
                checked,
                prev,
                ChainBreak(
                    e.seq, f"entry {e.seq} was edited (its body no longer matches its position)"
                ),
            )
        for key, value in e.fields:
            if not _in_body(e.body, key, value):
                return (
                    checked,
                    prev,
                    ChainBreak(e.seq, f"entry {e.seq}'s index columns were edited"),
                )
        if entry_hash(prev, e.body) != e.hash:
            return checked, prev, ChainBreak(e.seq, f"entry {e.seq} was edited (hash mismatch)")
        prev = e.hash
        expected += 1
        checked += 1
    return checked, prev, None
