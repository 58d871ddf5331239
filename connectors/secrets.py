"""The two secrets ingestion needs: the pseudonym key and the identifier-vault key.

Each is 32 random bytes. They come from ``HUB_PSEUDONYM_KEY`` / ``HUB_VAULT_KEY``
(64 hex characters) or from files in ``$HUB_HOME/keys/`` (mode 0600, created on first
use by ingestion only). The hub refuses keys that are missing, short, not hex,
trivially weak (one repeated byte) or readable by other users, and never prints them:
``Keys.__repr__`` shows fingerprints only.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from connectors.errors import SecretError

KEY_BYTES: Final = 32
KEY_NAMES: Final = ("pseudonym", "vault")


@dataclass(frozen=True)
class Keys:
    pseudonym: bytes = field(repr=False)
    vault: bytes = field(repr=False)

    @property
    def pseudonym_key_id(self) -> str:
        """A public fingerprint: releases with the same id have comparable pseudonyms."""
        return hmac.new(self.pseudonym, b"hub key id", hashlib.sha256).hexdigest()[:16]

    @property
    def vault_key_id(self) -> str:
        return hmac.new(self.vault, b"hub key id", hashlib.sha256).hexdigest()[:16]

    def __repr__(self) -> str:
        return f"Keys(pseudonym_key_id={self.pseudonym_key_id}, vault_key_id={self.vault_key_id})"


def parse_key(name: str, text: str) -> bytes:
    cleaned = text.strip()
    try:
        key = bytes.fromhex(cleaned)
    except ValueError:
        raise SecretError(
            f"the {name} key must be {KEY_BYTES * 2} hexadecimal characters"
        ) from None
    if len(key) < KEY_BYTES:
        raise SecretError(f"the {name} key is too short: need {KEY_BYTES} bytes, got {len(key)}")
    if len(set(key)) <= 2:
        raise SecretError(
            f"the {name} key is a default or trivially weak value; generate a random one"
        )
    return key


def _read_key_file(name: str, path: Path) -> bytes:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise SecretError(
            f"{path} is readable by other users (mode {mode:o}); run: chmod 600 {path}"
        )
    return parse_key(name, path.read_text())


def _create_key_file(path: Path) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    key = secrets.token_bytes(KEY_BYTES)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key.hex() + "\n")
    return key


def resolve_keys(
    home: Path,
    *,
    pseudonym_hex: str | None = None,
    vault_hex: str | None = None,
    create: bool = False,
) -> Keys:
    """Keys from the environment values given, else from ``home/keys``.

    With ``create=True`` (ingestion only) missing key files are made; otherwise a
    missing key is an error that says how to provide one.
    """
    given = {"pseudonym": pseudonym_hex, "vault": vault_hex}
    found: dict[str, bytes] = {}
    for name in KEY_NAMES:
        value = given[name]
        if value:
            found[name] = parse_key(name, value)
            continue
        path = home / "keys" / f"{name}.key"
        if path.exists():
            found[name] = _read_key_file(name, path)
        elif create:
            found[name] = _create_key_file(path)
        else:
            raise SecretError(
                f"no {name} key: set HUB_{name.upper()}_KEY or run `hub ingest` once "
                f"to create {path}"
            )
    return Keys(pseudonym=found["pseudonym"], vault=found["vault"])
