"""The Ed25519 key that signs the audit log's head and checkpoints.

The signing key lives in ``$HUB_HOME/keys/audit_signing.key`` (or
``HUB_AUDIT_SIGNING_KEY``), apart from the store; ``public_key_pem`` exports the public
key so that an auditor can verify an export without the hub.

>>> head_message(3, "ab")
b'hub-audit-v1|3|ab'
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from connectors.secrets import parse_key


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


def valid(public_key: Ed25519PublicKey, signature: str, message: bytes) -> bool:
    return _valid(public_key, signature, message)
