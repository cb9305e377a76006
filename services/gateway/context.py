"""What every gateway handler shares: config, database pool, nodes, ids."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg
from aiohttp import web

from services.common import placement
from services.common.config import GatewayConfig
from services.common.events import EventSender
from services.common.unified_id import UnifiedIdGenerator
from services.gateway.nodes import NodeSet
from services.gateway.secrets import SecretBox
from services.gateway.store import Layout


@dataclass(frozen=True)
class Principal:
    """Who a request acts as."""

    user_id: int
    name: str
    access_key: str


@dataclass
class Gateway:
    cfg: GatewayConfig
    pool: asyncpg.Pool
    nodes: NodeSet
    ids: UnifiedIdGenerator
    box: SecretBox
    root: Principal
    #: Where node and object events go (best effort, never blocks).
    events: EventSender

    def layout_for(self, bucket: str, key: str, k: int, n: int, sequence_size: int) -> Layout:
        preference = placement.preference_list(self.nodes.names, bucket, key)
        if n > len(preference):
            raise ValueError(f"{n} shares need at least {n} nodes, have {len(preference)}")
        return Layout(k, n, sequence_size, tuple(preference[:n]), tuple(preference[n:]))


GATEWAY = web.AppKey("gateway", Gateway)
