"""Usage reporting: the outbox, its delivery to accounting, and usage queries.

Every usage detail is first a row of ``accounting_outbox`` in the central
database, written in the transaction of the change it counts: a version
committed (``bytes-added``, in ``queries.commit_version``), space freed
(``bytes-removed``, in ``queries.forget_garbage``), or a GET body sent
(``bytes-retrieved``, :func:`count_retrieved`). :class:`UsageFlusher`
delivers the rows to the accounting service as ``space-accounting-detail``
with the idempotency key ``outbox-<id>`` and deletes a row only once the
service has acknowledged it (it acknowledges after its commit). So:

- nothing is lost: an unreachable accounting service leaves the rows queued,
  and they are sent again later;
- nothing is counted twice: a row sent again (its acknowledgement was lost,
  or a gateway died before deleting it) carries the same detail id, which the
  service recognises and does not count again.

Several gateways may run against one database. Each claims its batch with
``FOR UPDATE SKIP LOCKED`` inside a transaction held while the batch is
delivered (bounded by the request timeout), so gateways deliver disjoint
rows instead of all sending the same oldest rows; a gateway that dies
mid-batch releases its locks and another resends, which the detail id makes
harmless.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from services.common.rpc import RpcClient, RpcTimeout
from services.gateway import queries
from services.gateway.context import Gateway

log = logging.getLogger(__name__)

#: Outbox rows delivered per step; the service serves many at once.
BATCH_ROWS = 500


class AccountingUnavailable(Exception):
    """The accounting service is not configured, does not answer, or refused."""


class Accounting:
    """The gateway's connection to the accounting service's ROUTER socket."""

    def __init__(self, endpoint: str, timeout_s: float = 5.0, ping_timeout_s: float = 2.0) -> None:
        self.endpoint = endpoint
        self.timeout_s = timeout_s
        self.ping_timeout_s = ping_timeout_s
        self._client: RpcClient | None = None
        self._lock = asyncio.Lock()

    @property
    def configured(self) -> bool:
        return bool(self.endpoint)

    async def _connected(self) -> RpcClient:
        if not self.endpoint:
            raise AccountingUnavailable("no accounting endpoint is configured")
        async with self._lock:
            if self._client is None:
                self._client = await RpcClient.connect(self.endpoint, self.timeout_s)
            return self._client

    async def request(self, header: dict[str, Any], timeout_s: float | None = None) -> Any:
        """One request; the reply header on success, else ``AccountingUnavailable``.

        The whole exchange is under the timeout: with no peer connected, even
        queueing the message in ZeroMQ may wait.
        """
        client = await self._connected()
        limit = timeout_s or self.timeout_s
        try:
            async with asyncio.timeout(limit):
                reply = await client.request(header, timeout_s=limit)
        except (TimeoutError, RpcTimeout, ConnectionError) as exc:
            raise AccountingUnavailable(
                f"{header.get('message-type')}: no answer from {self.endpoint}: {exc}"
            ) from exc
        if reply.header.get("result") != "success":
            raise AccountingUnavailable(
                f"{header.get('message-type')}: {reply.header.get('result')}: "
                f"{reply.header.get('error-message', '')}"
            )
        return reply.header

    async def ping(self) -> bool:
        try:
            await self.request({"message-type": "ping"}, timeout_s=self.ping_timeout_s)
        except AccountingUnavailable:
            return False
        return True

    async def reset(self) -> None:
        """Drop the connection and whatever it still queues; the next request reconnects
        (and resolves the host name again, as after a container restart)."""
        async with self._lock:
            if self._client is not None:
                await self._client.close()
                self._client = None

    async def close(self) -> None:
        await self.reset()

    async def usage(self, bucket_id: int, hours: int | None) -> dict[str, Any]:
        """``space-usage-reply`` of one bucket, with kebab-case keys as sent."""
        header: dict[str, Any] = {"message-type": "space-usage-request", "collection-id": bucket_id}
        if hours is not None:
            header["hours"] = hours
        reply: dict[str, Any] = await self.request(header)
        return reply


def _detail(row: queries.Record) -> dict[str, Any]:
    return {
        "message-type": "space-accounting-detail",
        "collection-id": row["bucket_id"],
        "event": row["event"],
        "value": row["value"],
        "timestamp": row["at"],
        "detail-id": f"outbox-{row['id']}",
    }


class UsageFlusher:
    """Delivers queued usage details to the accounting service (a worker)."""

    name = "usage-flusher"

    def __init__(self, gw: Gateway, accounting: Accounting, batch: int = BATCH_ROWS) -> None:
        self.gw = gw
        self.accounting = accounting
        self.batch = batch
        self._said_unconfigured = False
        self._reachable = True

    async def _deliver(self, row: queries.Record) -> bool:
        try:
            await self.accounting.request(_detail(row))
        except AccountingUnavailable as exc:
            log.debug("outbox row %s not delivered: %s", row["id"], exc)
            return False
        return True

    async def run_once(self) -> bool:
        """Deliver one batch; True if it was full and all went (more may wait)."""
        if not self.accounting.configured:
            if not self._said_unconfigured:
                log.warning("no accounting endpoint: usage details stay queued in the outbox")
                self._said_unconfigured = True
            return False
        # Ask first: rows are not locked, nor 500 requests queued, for a
        # service that is away.
        if not await self.accounting.ping():
            if self._reachable:
                log.warning(
                    "accounting at %s does not answer; usage stays queued", self.accounting.endpoint
                )
            self._reachable = False
            await self.accounting.reset()
            return False
        if not self._reachable:
            log.info("accounting at %s answers again", self.accounting.endpoint)
            self._reachable = True
        async with self.gw.pool.acquire() as conn, conn.transaction():
            rows = await queries.claim_outbox(conn, self.batch)
            if not rows:
                return False
            delivered = await asyncio.gather(*(self._deliver(row) for row in rows))
            acknowledged = [row["id"] for row, ok in zip(rows, delivered, strict=True) if ok]
            if acknowledged:
                await queries.drop_outbox(conn, acknowledged)
        if len(acknowledged) < len(rows):
            log.warning(
                "%d of %d usage details not acknowledged; they stay queued",
                len(rows) - len(acknowledged),
                len(rows),
            )
            await self.accounting.reset()
        return len(rows) == self.batch and len(acknowledged) == len(rows)


_recording: set[asyncio.Task[None]] = set()


async def count_retrieved(gw: Gateway, bucket_id: int, sent_bytes: int) -> None:
    """Queue ``bytes-retrieved`` for a GET body (its bytes actually sent).

    The insert runs in its own task, shielded: a handler cancelled because
    its client went away still records what was sent. A database that is
    away loses this one detail (logged); the GET itself is already answered.
    """
    if sent_bytes <= 0:
        return
    task = asyncio.create_task(_queue_retrieved(gw, bucket_id, sent_bytes))
    _recording.add(task)
    task.add_done_callback(_recording.discard)
    await asyncio.shield(task)


async def _queue_retrieved(gw: Gateway, bucket_id: int, sent_bytes: int) -> None:
    try:
        await queries.queue_usage(gw.pool, bucket_id, queries.BYTES_RETRIEVED, sent_bytes)
    except Exception as exc:
        log.warning("bucket %s: %d retrieved bytes not counted: %s", bucket_id, sent_bytes, exc)
