"""The gateway's view of the storage nodes: connections and liveness.

One DEALER connection per writer and per reader, shared by every request
(many in flight, matched by message-id). A heartbeat pings every service each
``heartbeat_interval_s``; ``down_after`` missed pings in a row mark it down,
and one answered ping marks it up again. A request that times out marks its
service down at once, so the next requests do not wait for the heartbeat.
A paused (SIGSTOPped) process answers nothing and so counts as down.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

import asyncpg

from services.common.rpc import RpcClient, RpcTimeout

log = logging.getLogger(__name__)

SERVICES = ("writer", "reader")


@dataclass
class Endpoint:
    node_name: str
    service: str
    address: str
    client: RpcClient
    up: bool = True
    misses: int = 0


@dataclass
class Node:
    name: str
    number: int
    endpoints: dict[str, Endpoint] = field(default_factory=dict)
    #: The node's handoff service, asked for what it holds (not heartbeated:
    #: it does not decide where shares go).
    handoff: RpcClient | None = None

    @property
    def writer(self) -> Endpoint:
        return self.endpoints["writer"]

    @property
    def reader(self) -> Endpoint:
        return self.endpoints["reader"]


class NodeSet:
    def __init__(
        self,
        nodes: list[Node],
        heartbeat_timeout_s: float,
        down_after: int,
    ) -> None:
        self.nodes = nodes
        self._by_name = {node.name: node for node in nodes}
        self._heartbeat_timeout_s = heartbeat_timeout_s
        self._down_after = down_after
        self.name = "heartbeat"

    @classmethod
    async def connect(
        cls,
        rows: list[asyncpg.Record],
        request_timeout_s: float,
        heartbeat_timeout_s: float,
        down_after: int,
    ) -> NodeSet:
        """Connect to every node listed in ``rows`` (name, number, endpoints)."""
        nodes = []
        for row in rows:
            node = Node(row["name"], row["node_number"])
            for service in SERVICES:
                address = row[f"{service}_endpoint"]
                client = await RpcClient.connect(address, timeout_s=request_timeout_s)
                node.endpoints[service] = Endpoint(node.name, service, address, client)
            if row["handoff_endpoint"]:
                node.handoff = await RpcClient.connect(
                    row["handoff_endpoint"], timeout_s=heartbeat_timeout_s
                )
            nodes.append(node)
        return cls(nodes, heartbeat_timeout_s, down_after)

    @property
    def names(self) -> list[str]:
        return [node.name for node in self.nodes]

    def __getitem__(self, name: str) -> Node:
        return self._by_name[name]

    def is_up(self, name: str, service: str) -> bool:
        node = self._by_name.get(name)
        return node is not None and node.endpoints[service].up

    def mark_down(self, endpoint: Endpoint, reason: str) -> None:
        endpoint.misses = max(endpoint.misses, self._down_after)
        if endpoint.up:
            endpoint.up = False
            log.warning("%s %s is down: %s", endpoint.node_name, endpoint.service, reason)

    async def _ping(self, endpoint: Endpoint) -> None:
        try:
            reply = await endpoint.client.request(
                {"message-type": "ping"}, timeout_s=self._heartbeat_timeout_s
            )
            answered = reply.header.get("result") == "success"
        except (RpcTimeout, ConnectionError):
            answered = False
        expected = f"{endpoint.service} {endpoint.node_name}"
        if answered and reply.header.get("service") != expected:
            # Another node's process answered: in Docker a restarted container
            # can get a new address and the old one another container. Stop
            # sending there and reconnect, which resolves the name again.
            self.mark_down(endpoint, f"{reply.header.get('service')!r} answered, not {expected!r}")
            await endpoint.client.reset()
            return
        if answered:
            endpoint.misses = 0
            if not endpoint.up:
                endpoint.up = True
                log.warning("%s %s is up", endpoint.node_name, endpoint.service)
            return
        endpoint.misses += 1
        if endpoint.misses >= self._down_after:
            self.mark_down(endpoint, f"{endpoint.misses} heartbeats missed")

    async def run_once(self) -> bool:
        """One heartbeat round over every service of every node."""
        await asyncio.gather(
            *(self._ping(ep) for node in self.nodes for ep in node.endpoints.values())
        )
        return False

    async def close(self) -> None:
        for node in self.nodes:
            for endpoint in node.endpoints.values():
                await endpoint.client.close()
            if node.handoff is not None:
                await node.handoff.close()
