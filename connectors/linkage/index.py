"""The persistent person index: every feed record and identity the hub has linked.

A region's extracts arrive monthly. Relinking everyone each month would let a person's
pseudonym change whenever the linkage changed its mind; instead the index remembers
which person each feed record belongs to and each person's known identities, so a later
extract links to the people already known and every person keeps one index id, and so
one pseudonym, across releases.

The index holds identifiers (names, dates of birth, NHS numbers, postcodes), so it lives
in the vault folder and is encrypted at rest with AES-256-GCM under a key derived from
the vault key (HKDF-SHA256, its own label): without the vault key it is unreadable, and
a tampered file is refused. A new index is written beside the current one and renamed
into place only when the release that used it is published.
"""

from __future__ import annotations

import io
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pyarrow as pa
import pyarrow.parquet as pq
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from connectors.errors import IngestError

INDEX_FILE: Final = "person_index.enc"
MAGIC: Final = b"HUBPIDX1"
TABLES: Final = ("records", "identities")
RECORDS_SCHEMA: Final = pa.schema([("record_key", pa.string()), ("person", pa.int64())])
IDENTITIES_SCHEMA: Final = pa.schema(
    [
        ("person", pa.int64()),
        ("nhs_number", pa.string()),
        ("given_name", pa.string()),
        ("family_name", pa.string()),
        ("birth_date", pa.date32()),
        ("sex", pa.string()),
        ("postcode", pa.string()),
    ]
)


def index_key(vault_key: bytes) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"hub person index v1"
    ).derive(vault_key)


@dataclass
class PersonIndex:
    """The index as Arrow tables: ``records`` (record_key → person) and ``identities``."""

    records: pa.Table
    identities: pa.Table

    @property
    def people(self) -> int:
        persons = self.records.column("person")
        return len(pa.compute.unique(persons)) if len(persons) else 0

    @property
    def next_person(self) -> int:
        if not len(self.records):
            return 1
        return int(pa.compute.max(self.records.column("person")).as_py()) + 1

    @classmethod
    def empty(cls) -> PersonIndex:
        return cls(RECORDS_SCHEMA.empty_table(), IDENTITIES_SCHEMA.empty_table())


def path_in(vault_dir: Path) -> Path:
    return vault_dir / INDEX_FILE


def load(vault_dir: Path, vault_key: bytes) -> PersonIndex:
    """The current index, or an empty one if none was ever written."""
    path = path_in(vault_dir)
    if not path.exists():
        return PersonIndex.empty()
    blob = path.read_bytes()
    if not blob.startswith(MAGIC):
        raise IngestError("the person index is not a hub person index file")
    nonce, sealed = blob[len(MAGIC) : len(MAGIC) + 12], blob[len(MAGIC) + 12 :]
    try:
        plain = AESGCM(index_key(vault_key)).decrypt(nonce, sealed, MAGIC)
    except InvalidTag:
        raise IngestError(
            "the person index cannot be read with this vault key (wrong key or a damaged "
            "file); refusing to link without it"
        ) from None
    tables = {}
    offset = 0
    for name in TABLES:
        size = int.from_bytes(plain[offset : offset + 8], "big")
        offset += 8
        tables[name] = pq.read_table(io.BytesIO(plain[offset : offset + size]))
        offset += size
    return PersonIndex(
        tables["records"].cast(RECORDS_SCHEMA), tables["identities"].cast(IDENTITIES_SCHEMA)
    )


def write_staged(vault_dir: Path, vault_key: bytes, index: PersonIndex, token: str) -> Path:
    """Write ``index`` beside the current one (mode 0600); :func:`commit` puts it in place."""
    parts = []
    for table in (index.records, index.identities):
        buffer = io.BytesIO()
        pq.write_table(table, buffer, compression="zstd")
        data = buffer.getvalue()
        parts.append(len(data).to_bytes(8, "big") + data)
    nonce = secrets.token_bytes(12)
    sealed = AESGCM(index_key(vault_key)).encrypt(nonce, b"".join(parts), MAGIC)
    staged = vault_dir / f".staging-{token}.{INDEX_FILE}"
    fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(MAGIC + nonce + sealed)
        fh.flush()
        os.fsync(fh.fileno())
    return staged


def commit(vault_dir: Path, staged: Path) -> None:
    os.replace(staged, path_in(vault_dir))
