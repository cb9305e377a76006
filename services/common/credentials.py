"""Fresh credentials in the shapes the gateway expects.

Used by the gateway's admin commands and by the local cluster, which must not
import a service to make its root key.
"""

from __future__ import annotations

import base64
import os
import secrets


def new_master_key() -> str:
    """Base64 of 32 random bytes: the key that encrypts access-key secrets."""
    return base64.b64encode(os.urandom(32)).decode()


def new_access_key() -> tuple[str, str]:
    """A fresh (access key id, secret key) pair in AWS's shapes."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
    access_key_id = "NK" + "".join(secrets.choice(alphabet) for _ in range(18))
    return access_key_id, secrets.token_urlsafe(30)[:40]
