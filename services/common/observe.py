"""What every service opens to be observed: its event sender and ``/metrics``.

``open_observers`` is called first in a service's ``serve`` (so it is closed
last): it serves ``/metrics`` when ``metrics_bind`` is set, connects the
event sender, and sends ``service-started``. ``stopping`` sends
``service-stopping``; call it when the stop signal arrives.
"""

from __future__ import annotations

import contextlib
import os

from services.common import events, metrics
from services.common.events import EventSender


async def open_observers(
    stack: contextlib.AsyncExitStack,
    service: str,
    node_name: str,
    events_endpoint: str,
    metrics_bind: str,
) -> EventSender:
    sender = EventSender(events_endpoint, service, node_name)
    stack.callback(sender.close)
    server = await metrics.start_server(metrics_bind)
    if server is not None:
        stack.push_async_callback(server.close)
    sender.send(events.STARTED, pid=os.getpid())
    return sender


def stopping(sender: EventSender) -> None:
    sender.send(events.STOPPING, pid=os.getpid())
