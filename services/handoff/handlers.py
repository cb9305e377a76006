"""Decode handoff requests, ask the worker, encode the replies.

``handoff-status`` → ``handoff-status-reply`` with ``node-name``,
``holdings`` ({home: {"segments", "bytes", "tombstones", "damaged"}} for every
node this node holds copies for), ``forwarded`` (running totals: "segments",
"bytes", "tombstones") and ``homes-up`` ({home: whether its writer answered
the last ping}).
"""

from __future__ import annotations

from services.common import protocol
from services.common.protocol import Message
from services.common.rpc import Handler, Reply
from services.handoff.worker import HandoffWorker


def make_handlers(worker: HandoffWorker) -> dict[str, Handler]:
    async def handoff_status(message: Message) -> Reply:
        status = await worker.status()
        header = protocol.reply_header(
            message.header,
            node_name=status.node_name,
            holdings={home: held.as_json() for home, held in status.holdings.items()},
            forwarded=status.forwarded,
            homes_up=status.homes_up,
        )
        return header, ()

    return {"handoff-status": handoff_status}
