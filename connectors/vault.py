"""The identifier vault: direct identifiers, encrypted, apart from every release.

One record per person: the identifiers a source carried (NHS number, names, address,
postcode, exact date of birth, Synthea's SSN/driver/passport, ...) as canonical JSON,
encrypted with AES-256-GCM under the vault key with a fresh random 96-bit nonce. The
associated data binds each ciphertext to its place: ``vault/v1|patients|<columns>|
<person_id>``, so a ciphertext moved to another person or column list fails to decrypt.

The vault file (Parquet: person_id, columns, nonce, ciphertext) lives in
``$HUB_HOME/vault/``, never in a release folder, and no research connection attaches it.
Reading it back is re-identification, an admin-only, audited action.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Final

import pyarrow as pa
import pyarrow.parquet as pq
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from connectors.errors import IngestError

NONCE_BYTES: Final = 12
SCHEMA: Final = pa.schema(
    [
        ("person_id", pa.int64()),
        ("columns", pa.string()),
        ("nonce", pa.binary()),
        ("ciphertext", pa.binary()),
    ]
)
# nonces and ciphertexts are random bytes: compressing them (or looking for repeats to
# dictionary-encode) costs two thirds of a load's encryption time and saves nothing
COMPRESSION: Final = {"person_id": "zstd", "columns": "zstd", "nonce": "none", "ciphertext": "none"}
DICTIONARY: Final = ["columns"]


def associated_data(person_id: int, columns: str) -> bytes:
    return f"vault/v1|patients|{columns}|{person_id}".encode()


def encrypt_batches(key: bytes, batches: Iterable[pa.RecordBatch], out: Path) -> int:
    """Encrypt (person_id, identifiers JSON) batches into a vault file; return rows."""
    aead = AESGCM(key)
    rows = 0
    with pq.ParquetWriter(
        out, SCHEMA, compression=COMPRESSION, use_dictionary=DICTIONARY
    ) as writer:
        for batch in batches:
            ids = batch.column("person_id").to_pylist()
            records = batch.column("identifiers").to_pylist()
            if not ids:
                continue
            # a connector builds every record with the same keys (json_object), so the
            # column list is read once per batch; the JSON text is encrypted as built
            columns = ",".join(json.loads(records[0]))
            nonces = os.urandom(NONCE_BYTES * len(ids))
            nonce_out = [nonces[i : i + NONCE_BYTES] for i in range(0, len(nonces), NONCE_BYTES)]
            encrypt = aead.encrypt
            prefix = f"vault/v1|patients|{columns}|"
            cipher_out = [
                encrypt(nonce, record.encode(), (prefix + str(pid)).encode())
                for nonce, record, pid in zip(nonce_out, records, ids, strict=True)
            ]
            writer.write_table(
                pa.table(
                    {
                        "person_id": ids,
                        "columns": [columns] * len(ids),
                        "nonce": nonce_out,
                        "ciphertext": cipher_out,
                    },
                    schema=SCHEMA,
                )
            )
            rows += len(ids)
    return rows


def reidentify(key: bytes, vault_file: Path, person_id: int) -> dict[str, Any]:
    """Decrypt one person's identifiers. Raises IngestError if absent or tampered."""
    table = pq.read_table(vault_file, filters=[("person_id", "=", person_id)])
    if table.num_rows == 0:
        raise IngestError(f"person {person_id} is not in {vault_file.name}")
    row = table.slice(0, 1).to_pylist()[0]
    try:
        plaintext = AESGCM(key).decrypt(
            row["nonce"], row["ciphertext"], associated_data(person_id, row["columns"])
        )
    except InvalidTag:
        raise IngestError(
            "the vault record failed authentication (wrong key or tampered)"
        ) from None
    result: dict[str, Any] = json.loads(plaintext)
    return result
