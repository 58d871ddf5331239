"""Keyed pseudonyms: the person key of every research table.

``person_id = HMAC-SHA256(key, source_key)`` truncated to its first 63 bits, read as a
positive BIGINT, where ``source_key`` is ``"nhs:" + normalised NHS number`` or, when a
source has no NHS number, ``"<source>:" + the source patient id``. An unkeyed hash would
not do: all valid NHS numbers can be enumerated in minutes. 63 bits keep the key
compact and OMOP-shaped (``person_id`` is an integer there); a collision among a few
million people has a probability below 1e-6, and ingestion fails loudly if one happens.

The same HMAC is computed inside DuckDB (``sql_person_id``) so that a million people are
pseudonymised in well under a second without leaving the engine; ``person_id`` below is
the Python reference it is tested against.

>>> person_id(b"k" * 32, "nhs:9990000018") == person_id(b"k" * 32, "nhs:9990000018")
True
>>> normalise_nhs_number(" 999 000 0018 ")
'9990000018'
"""

from __future__ import annotations

import hashlib
import hmac
import re

_BLOCK = 64  # SHA-256 block size
_NON_DIGITS = re.compile(r"[\s-]")


def normalise_nhs_number(raw: str) -> str:
    """Strip spaces and hyphens: '999 000 0018' and '999-000-0018' are one person."""
    return _NON_DIGITS.sub("", raw)


def person_id(key: bytes, source_key: str) -> int:
    digest = hmac.new(key, source_key.encode(), hashlib.sha256).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def hmac_pads(key: bytes) -> dict[str, bytes]:
    """Inner and outer HMAC pads, bound as query parameters (never stored)."""
    if len(key) > _BLOCK:
        key = hashlib.sha256(key).digest()
    key = key.ljust(_BLOCK, b"\0")
    return {
        "hmac_ipad": bytes(b ^ 0x36 for b in key),
        "hmac_opad": bytes(b ^ 0x5C for b in key),
    }


def sql_person_id(expression: str) -> str:
    """SQL computing ``person_id`` of a VARCHAR expression, given ``hmac_pads`` params."""
    inner = f"unhex(sha256($hmac_ipad || ({expression})::BLOB))"
    return f"((('0x' || left(sha256($hmac_opad || {inner}), 16))::UBIGINT) >> 1)::BIGINT"
