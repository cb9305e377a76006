"""A history checker: what the cluster acknowledged is what it must serve.

Clients record every acknowledged PUT (key → sha256 of the body) and DELETE,
and every attempt that failed (its outcome unknown). At the end, every
acknowledged object must read back byte-identical and be listed; a key whose
only writes failed must not be listed; a deleted key must be gone.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError


@dataclass
class History:
    acknowledged: dict[str, bytes] = field(default_factory=dict)
    deleted: set[str] = field(default_factory=set)
    failed: dict[str, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def put(self, s3: Any, bucket: str, key: str, body: bytes) -> bool:
        try:
            s3.put_object(Bucket=bucket, Key=key, Body=body)
        except (ClientError, BotoCoreError) as exc:
            with self.lock:
                self.failed[key] = str(exc)
            return False
        with self.lock:
            self.acknowledged[key] = hashlib.sha256(body).digest()
            self.failed.pop(key, None)
        return True

    def delete(self, s3: Any, bucket: str, key: str) -> bool:
        try:
            s3.delete_object(Bucket=bucket, Key=key)
        except (ClientError, BotoCoreError):
            return False
        with self.lock:
            self.acknowledged.pop(key, None)
            self.deleted.add(key)
        return True

    def check(self, s3: Any, bucket: str) -> None:
        listed: set[str] = set()
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            listed.update(item["Key"] for item in page.get("Contents", []))
        missing = set(self.acknowledged) - listed
        assert not missing, f"acknowledged but not listed: {sorted(missing)[:10]}"
        never_acknowledged = set(self.failed) - set(self.acknowledged)
        # A failed PUT may still have committed (the answer was lost), but one
        # refused before storing never may; callers check that case themselves.
        resurrected = self.deleted & listed - set(self.acknowledged)
        assert not resurrected, f"deleted but listed: {sorted(resurrected)[:10]}"
        for key, digest in self.acknowledged.items():
            body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
            assert hashlib.sha256(body).digest() == digest, f"{key} reads back different bytes"
        self.unacknowledged_listed = sorted(never_acknowledged & listed)
