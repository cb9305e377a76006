"""Access-key secrets at rest: AES-256-GCM under the cluster's master key.

A stored secret is ``nonce (12 bytes) || ciphertext+tag``; the access key id
is the associated data, so a ciphertext moved to another key id does not
decrypt. The master key never reaches the database.
"""

from __future__ import annotations

import base64
import os

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from services.common.credentials import new_access_key, new_master_key

__all__ = ["SecretBox", "new_access_key", "new_master_key"]


class MasterKeyError(ValueError):
    pass


class SecretBox:
    def __init__(self, master_key_b64: str) -> None:
        try:
            key = base64.b64decode(master_key_b64, validate=True)
        except ValueError as exc:
            raise MasterKeyError("master key is not base64") from exc
        if len(key) != 32:
            raise MasterKeyError(f"master key must be 32 bytes, got {len(key)}")
        self._aead = AESGCM(key)

    def seal(self, access_key_id: str, secret: str) -> bytes:
        nonce = os.urandom(12)
        return nonce + self._aead.encrypt(nonce, secret.encode(), access_key_id.encode())

    def open(self, access_key_id: str, sealed: bytes) -> str:
        return self._aead.decrypt(sealed[:12], sealed[12:], access_key_id.encode()).decode()
