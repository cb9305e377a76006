"""The real connection to a home writer: an RpcClient behind the HomeWriter protocol.

Timeouts, closed connections and a send that cannot even be queued all become
:class:`~services.handoff.forward.Unreachable`, the one failure the worker
knows. A connection that failed is closed (``LINGER`` 0), so pieces queued for
a peer that went away are dropped, never delivered late.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from services.common.protocol import Header
from services.common.rpc import RpcClient, RpcTimeout
from services.handoff.forward import Unreachable

#: Beyond the reply timeout, how long queuing a request may take before we give up.
_SEND_GRACE_S = 5.0


class RpcHomeWriter:
    def __init__(self, client: RpcClient) -> None:
        self._client = client

    @classmethod
    async def connect(cls, endpoint: str, timeout_s: float) -> RpcHomeWriter:
        return cls(await RpcClient.connect(endpoint, timeout_s=timeout_s))

    async def request(
        self, header: Header, payloads: Sequence[bytes] = (), timeout_s: float | None = None
    ) -> Header:
        limit_s = (timeout_s or self._client.timeout_s) + _SEND_GRACE_S
        try:
            async with asyncio.timeout(limit_s):
                reply = await self._client.request(header, payloads, timeout_s)
        except (RpcTimeout, ConnectionError, TimeoutError) as exc:
            raise Unreachable(str(exc) or type(exc).__name__) from exc
        return reply.header

    async def close(self) -> None:
        await self._client.close()
