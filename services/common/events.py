"""Sending events to the events service (PUSH → its PULL pipeline).

An event is one ZeroMQ message: a JSON header with ``message-type`` =
``event``, ``event-type`` (``service-started``, ``node-down``, ...),
``service``, ``node-name``, ``timestamp`` (seconds since the epoch, float) and
fields of its own. The events service republishes it on its PUB socket with
``event-type`` as the topic.

Events are best effort, by decision: sending never blocks and never fails the
caller. While the events service is away ZeroMQ queues up to ``QUEUE_LIMIT``
events, then drops new ones (and counts them in ``dropped``); a service's own
work never waits for its observers. What must not be lost (usage) goes
through the accounting service instead, with acknowledgements.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import zmq

log = logging.getLogger(__name__)

#: Events queued in the socket while the events service does not take them.
QUEUE_LIMIT = 10_000

# Event types every service uses (others are named where they are sent).
STARTED = "service-started"
STOPPING = "service-stopping"


def event_header(event_type: str, service: str, node_name: str, **fields: Any) -> dict[str, Any]:
    return {
        "message-type": "event",
        "event-type": event_type,
        "service": service,
        "node-name": node_name,
        "timestamp": time.time(),
        **fields,
    }


class EventSender:
    """One PUSH socket to the events pipeline; ``send`` never blocks."""

    def __init__(self, endpoint: str, service: str, node_name: str = "") -> None:
        self.endpoint = endpoint
        self.service = service
        self.node_name = node_name
        self.dropped = 0
        self._socket: zmq.Socket[bytes] | None = None
        if endpoint:
            self._socket = zmq.Context.instance().socket(zmq.PUSH)
            self._socket.setsockopt(zmq.SNDHWM, QUEUE_LIMIT)
            self._socket.setsockopt(zmq.LINGER, 500)
            self._socket.connect(endpoint)

    def send(self, event_type: str, **fields: Any) -> None:
        if self._socket is None:
            return
        header = event_header(event_type, self.service, self.node_name, **fields)
        try:
            self._socket.send(json.dumps(header).encode(), zmq.NOBLOCK)
        except zmq.Again:
            self.dropped += 1
            if self.dropped in (1, 100) or self.dropped % 10_000 == 0:
                log.warning("events service not taking events; %d dropped", self.dropped)
        except zmq.ZMQError as exc:
            log.warning("event %s not sent: %s", event_type, exc)

    def close(self) -> None:
        """Flush what is queued for up to the linger time, then close."""
        if self._socket is not None:
            self._socket.close()
            self._socket = None
