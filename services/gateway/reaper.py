"""Destroys, on the nodes, the segments no live version references any more.

Overwritten and deleted versions, replaced part attempts and aborted uploads
are queued in ``garbage_segment`` in the same transaction that retires them.
Each step sends ``destroy-key`` for a batch of them to every node's writer
(handed-off copies may be anywhere) and forgets a row once every node has
confirmed; a node that is down keeps the row for a later step (destroy-key is
idempotent), so a key deleted while its home was down is destroyed there when
it comes back, never resurrected.

Forgetting a row is when its space counts as freed: the same statement that
deletes the rows queues ``bytes-removed`` for those that carry a retired
version's size (part attempts that never became a version carry 0).
"""

from __future__ import annotations

import asyncio
import logging

from services.common import messages
from services.common.messages import SegmentRef
from services.common.rpc import RpcTimeout
from services.gateway import queries
from services.gateway.context import Gateway

log = logging.getLogger(__name__)


class Reaper:
    name = "reaper"

    def __init__(self, gw: Gateway, batch: int = 100) -> None:
        self.gw = gw
        self.batch = batch

    async def _destroy(self, row: queries.Record) -> bool:
        async def one(segment_num: int, home: str) -> bool:
            if not self.gw.nodes.is_up(home, "writer"):
                return False
            ref = SegmentRef(row["bucket_id"], row["key"], self.gw.ids.next_id(), segment_num)
            header = messages.destroy(
                ref, row["unified_id"], conjoined_part_to_delete=row["conjoined_part"]
            )
            try:
                reply = await self.gw.nodes[home].writer.client.request(header)
            except (RpcTimeout, ConnectionError):
                return False
            return reply.header.get("result") == "success"

        # Every node, not only the homes: shares handed off at write time may be
        # held anywhere, and a holder may have forwarded its copy home already.
        names = self.gw.nodes.names
        done = await asyncio.gather(*(one(i, node) for i, node in enumerate(names)))
        return all(done)

    async def run_once(self) -> bool:
        rows = await queries.garbage(self.gw.pool, self.batch)
        destroyed = [row["id"] for row in rows if await self._destroy(row)]
        if destroyed:
            await queries.forget_garbage(self.gw.pool, destroyed)
            log.info("destroyed %d garbage segment groups", len(destroyed))
        return bool(destroyed)
