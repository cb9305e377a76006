"""The gateway's view of the storage nodes: connections and liveness.

One DEALER connection per writer and per reader, shared by every request
(many in flight, matched by message-id). Three signals decide whether a
service is up; PUTs send no shares to a writer that is down (they go to
handoff nodes instead), reads skip a reader that is down:

* **The connection** (a ZeroMQ socket monitor on each DEALER). When the
  connection closes (the process died: its kernel closed the TCP connection)
  the service is down at once, and requests waiting on that connection fail
  at once instead of at their timeout: their replies can no longer arrive.
* **Transport heartbeats** (ZMTP PING/PONG, ``ZMQ_HEARTBEAT_IVL`` and
  ``ZMQ_HEARTBEAT_TIMEOUT``): the gateway's ZeroMQ I/O thread pings the peer
  every ``heartbeat_interval_s`` and closes the connection when nothing at
  all arrives for ``heartbeat_timeout_s`` after a ping. A paused (SIGSTOPped)
  process keeps its TCP connection open but answers nothing, so its
  connection is closed and it is down within interval + timeout. The PONGs
  come from the peer's ZeroMQ I/O thread, not its Python code, so a busy
  (but running) service is not cut off.
* **Pings** (the ``ping`` request, answered by the service's Python code)
  every ``heartbeat_interval_s``, each waiting ``heartbeat_timeout_s``:
  ``down_after`` unanswered in a row mark the service down (one is enough
  while it has no connection at all). A ping does not count as missed when
  anything else arrived from the service meanwhile (it is answering, just
  busy) or when the gateway's own event loop was stalled (the answer may be
  sitting unread). A ping answered with ``shutting-down`` (a SIGTERMed
  service draining) or by the wrong process (in Docker a restarted container
  can get a new address and the old one another container: the connection
  is then reset, which resolves the name again) marks it down at once.

A request that times out marks its service down at once too. A service that
is down is retried all the time: ZeroMQ reconnects by itself, a completed
handshake sends a ping at once, and pings go on every round while connected
(every ``UNCONNECTED_PING_S`` while not, as a safety net). Only an answered
ping (sent after the connection was last lost) marks a service up again.

Every change of this view is logged and sent as an event: ``node-down``
(``node-name``, ``node-service``: writer or reader, ``reason``) and
``node-up`` (``node-name``, ``node-service``). The envelope's ``service`` is
the gateway, the observer; the observed service is ``node-service``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import asyncpg
import zmq

from services.common.events import EventSender
from services.common.protocol import SUCCESS, ErrorCode
from services.common.rpc import RpcClient, RpcTimeout

log = logging.getLogger(__name__)

SERVICES = ("writer", "reader")

NODE_DOWN = "node-down"
NODE_UP = "node-up"

#: A ping whose timeout fires this much later than due says the gateway's own
#: event loop was stalled: its answer may have arrived unread, so it is no miss.
STALL_TOLERANCE_S = 0.25

#: Pings every this often when the caller does not say (the gateway passes its config).
DEFAULT_HEARTBEAT_INTERVAL_S = 0.5

#: A service without a connection is not pinged every round: a ping sent then
#: waits in the socket until a connection is made, so they would pile up over a
#: long outage. A completed handshake pings at once instead; this slow ping is
#: only the safety net should that event be missed.
UNCONNECTED_PING_S = 5.0


@dataclass
class Liveness:
    """Whether one service is up, and why not: the rules, fed with what happened.

    Pure logic (no sockets, no clock): every method returns True when it
    changed ``up``, so that the caller reports the change once.
    """

    down_after: int = 2
    up: bool = True
    #: Why the service is down ("" while up).
    reason: str = ""
    #: Pings unanswered in a row.
    misses: int = 0
    #: A connection is established (handshake completed, not lost since).
    connected: bool = False
    #: Counts lost connections: answers to pings sent before the last loss do not count.
    epoch: int = 0
    #: When the newest answered ping was sent: older pings timing out do not count.
    newest_answered: float = -math.inf

    def fail(self, reason: str) -> bool:
        """Down at once (a request timed out, the service is shutting down, ...)."""
        self.misses = max(self.misses, self.down_after)
        if not self.up:
            return False
        self.up = False
        self.reason = reason
        return True

    def connection_made(self) -> None:
        self.connected = True

    def connection_lost(self, reason: str = "connection lost") -> bool:
        self.connected = False
        self.epoch += 1
        return self.fail(reason)

    def answered(self, sent: float, epoch: int) -> bool:
        """The right service answered a ping sent at ``sent`` during ``epoch``."""
        if epoch != self.epoch:
            return False  # sent on a connection lost since: says nothing about now
        self.connected = True
        self.newest_answered = max(self.newest_answered, sent)
        self.misses = 0
        if self.up:
            return False
        self.up = True
        self.reason = ""
        return True

    def missed(self, sent: float, epoch: int, heard_since: bool, timeout_s: float) -> bool:
        """A ping sent at ``sent`` during ``epoch`` got no answer within ``timeout_s``.

        ``heard_since``: something else arrived from the service after the ping
        was sent (it is alive, only slow to answer this one).
        """
        if epoch != self.epoch or sent < self.newest_answered or heard_since:
            return False
        self.misses += 1
        if not self.connected:
            return self.fail(f"not connected and a ping unanswered within {timeout_s:g} s")
        if self.misses >= self.down_after:
            return self.fail(f"{self.misses} pings in a row unanswered within {timeout_s:g} s")
        return False


@dataclass
class Endpoint:
    node_name: str
    service: str
    address: str
    client: RpcClient
    liveness: Liveness = field(default_factory=Liveness)
    #: When a ping was last sent while not connected (see ``UNCONNECTED_PING_S``).
    unconnected_ping_at: float = -math.inf

    @property
    def up(self) -> bool:
        return self.liveness.up

    @property
    def misses(self) -> int:
        return self.liveness.misses

    @property
    def reason(self) -> str:
        """Why the service is down ("" while up)."""
        return self.liveness.reason


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
        events: EventSender | None = None,
        heartbeat_interval_s: float = DEFAULT_HEARTBEAT_INTERVAL_S,
    ) -> None:
        self.nodes = nodes
        self._by_name = {node.name: node for node in nodes}
        self._heartbeat_timeout_s = heartbeat_timeout_s
        self._heartbeat_interval_s = heartbeat_interval_s
        self._down_after = down_after
        self._events = events
        self._pings: set[asyncio.Task[None]] = set()
        self._rounds = 0
        self.name = "heartbeat"

    @classmethod
    async def connect(
        cls,
        rows: list[asyncpg.Record],
        request_timeout_s: float,
        heartbeat_timeout_s: float,
        down_after: int,
        *,
        heartbeat_interval_s: float = DEFAULT_HEARTBEAT_INTERVAL_S,
        events: EventSender | None = None,
    ) -> NodeSet:
        """Connect to every node listed in ``rows`` (name, number, endpoints)."""
        nodeset = cls([], heartbeat_timeout_s, down_after, events, heartbeat_interval_s)
        transport_heartbeat: dict[int, int] = {
            zmq.HEARTBEAT_IVL: max(1, round(heartbeat_interval_s * 1000)),
            zmq.HEARTBEAT_TIMEOUT: max(1, round(heartbeat_timeout_s * 1000)),
        }
        for row in rows:
            node = Node(row["name"], row["node_number"])
            nodeset._add(node)
            for service in SERVICES:
                address = row[f"{service}_endpoint"]
                client = await RpcClient.connect(
                    address,
                    timeout_s=request_timeout_s,
                    socket_options=transport_heartbeat,
                    on_event=functools.partial(nodeset._socket_event, node.name, service),
                )
                # Registered before the loop runs again, so no socket event is missed.
                node.endpoints[service] = Endpoint(
                    node.name, service, address, client, Liveness(down_after)
                )
            if row["handoff_endpoint"]:
                node.handoff = await RpcClient.connect(
                    row["handoff_endpoint"], timeout_s=heartbeat_timeout_s
                )
        return nodeset

    def _add(self, node: Node) -> None:
        self.nodes.append(node)
        self._by_name[node.name] = node

    @property
    def names(self) -> list[str]:
        return [node.name for node in self.nodes]

    def __getitem__(self, name: str) -> Node:
        return self._by_name[name]

    def endpoints(self) -> Iterator[Endpoint]:
        for node in self.nodes:
            yield from node.endpoints.values()

    def is_up(self, name: str, service: str) -> bool:
        node = self._by_name.get(name)
        return node is not None and node.endpoints[service].up

    def mark_down(self, endpoint: Endpoint, reason: str) -> None:
        if endpoint.liveness.fail(reason):
            self._report(endpoint)

    def _report(self, endpoint: Endpoint) -> None:
        """Log and send the change of ``endpoint``'s state just made."""
        fields = {"node-name": endpoint.node_name, "node-service": endpoint.service}
        if endpoint.up:
            log.warning("%s %s is up", endpoint.node_name, endpoint.service)
            if self._events is not None:
                self._events.send(NODE_UP, **fields)
        else:
            log.warning("%s %s is down: %s", endpoint.node_name, endpoint.service, endpoint.reason)
            if self._events is not None:
                self._events.send(NODE_DOWN, **fields, reason=endpoint.reason)

    def _socket_event(self, node_name: str, service: str, event: int) -> None:
        """A socket monitor event of ``node_name``'s ``service`` connection."""
        node = self._by_name.get(node_name)
        endpoint = None if node is None else node.endpoints.get(service)
        if endpoint is None:
            return
        if event == zmq.EVENT_DISCONNECTED:
            changed = endpoint.liveness.connection_lost()
            # Replies to what was sent on the lost connection cannot arrive any more.
            failed = endpoint.client.fail_pending("connection lost")
            if changed:
                self._report(endpoint)
            if failed:
                log.info(
                    "%s %s: %d requests failed with the connection",
                    node_name,
                    service,
                    failed,
                )
        elif event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            endpoint.liveness.connection_made()
            now = time.monotonic()
            # Back now rather than at the next round; at most once an interval
            # (a process answering as another node is reconnected to at once).
            if not endpoint.up and now - endpoint.unconnected_ping_at >= self._heartbeat_interval_s:
                endpoint.unconnected_ping_at = now
                self._spawn_ping(endpoint)

    def _spawn_ping(self, endpoint: Endpoint) -> asyncio.Task[None]:
        task = asyncio.create_task(
            self._ping(endpoint), name=f"ping {endpoint.node_name} {endpoint.service}"
        )
        self._pings.add(task)
        task.add_done_callback(self._pings.discard)
        return task

    async def _ping(self, endpoint: Endpoint) -> None:
        liveness = endpoint.liveness
        epoch, sent = liveness.epoch, time.monotonic()
        try:
            reply = await endpoint.client.request(
                {"message-type": "ping"}, timeout_s=self._heartbeat_timeout_s
            )
        except RpcTimeout:
            stalled = time.monotonic() - sent > self._heartbeat_timeout_s + STALL_TOLERANCE_S
            heard = endpoint.client.last_received > sent
            if not stalled and liveness.missed(sent, epoch, heard, self._heartbeat_timeout_s):
                self._report(endpoint)
            return
        except ConnectionError:
            return  # the connection was lost or reset meanwhile, which is judged itself
        result = reply.header.get("result")
        answered_as = reply.header.get("service")
        expected = f"{endpoint.service} {endpoint.node_name}"
        if result == ErrorCode.SHUTTING_DOWN:
            self.mark_down(endpoint, "shutting down")
        elif result != SUCCESS:
            if liveness.missed(sent, epoch, False, self._heartbeat_timeout_s):
                self._report(endpoint)
        elif answered_as != expected:
            # Another node's process answered. Stop sending there and reconnect,
            # which resolves the name again.
            if liveness.connection_lost(f"{answered_as!r} answered, not {expected!r}"):
                self._report(endpoint)
            await endpoint.client.reset()
        elif liveness.answered(sent, epoch):
            self._report(endpoint)

    async def run_once(self) -> bool:
        """One heartbeat round: a ping to every connected service, down ones too.

        The first round pings every service and waits for the answers (the
        gateway starts with a view). Later rounds return at once, each ping
        judging itself when answered or timed out, so that rounds stay
        ``heartbeat_interval_s`` apart however slowly a service answers; a
        service without a connection is pinged every ``UNCONNECTED_PING_S``
        only (and at once when its connection is made).
        """
        self._rounds += 1
        first = self._rounds == 1
        now = time.monotonic()
        pings = []
        for endpoint in self.endpoints():
            if not (first or endpoint.liveness.connected):
                if now - endpoint.unconnected_ping_at < UNCONNECTED_PING_S:
                    continue
                endpoint.unconnected_ping_at = now
            pings.append(self._spawn_ping(endpoint))
        if first and pings:
            await asyncio.wait(pings)
        return False

    async def close(self) -> None:
        for task in list(self._pings):
            task.cancel()
        if self._pings:
            await asyncio.wait(list(self._pings))
        for node in self.nodes:
            for endpoint in node.endpoints.values():
                await endpoint.client.close()
            if node.handoff is not None:
                await node.handoff.close()
