"""Service configuration: one frozen dataclass per service, loaded in ``main.py``.

Values come, lowest precedence first, from the dataclass defaults, an optional
TOML file (``NIMBUS_CONFIG``; the table named after the service, e.g.
``[writer]``), and environment variables ``NIMBUS_<FIELD>`` (upper case, e.g.
``NIMBUS_DATA_DIR``). Logic modules receive the dataclass and never read
``os.environ`` themselves.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from services.common.protocol import FrameLimits

C = TypeVar("C")


class ConfigError(Exception):
    pass


@dataclasses.dataclass(frozen=True)
class NodeServiceConfig:
    """Settings every per-node ZeroMQ service shares."""

    #: Name of the node this process serves, e.g. ``node01``.
    node_name: str
    #: ZeroMQ endpoint to bind, e.g. ``tcp://127.0.0.1:5601`` (``:0`` picks a port).
    bind: str
    #: asyncpg URL of this node's own database.
    node_database_url: str
    #: Directory holding this node's value files.
    data_dir: Path
    #: Largest accepted header frame and payload frame, in bytes.
    max_header_bytes: int = 64 * 1024
    max_frame_bytes: int = 64 * 1024 * 1024
    #: Requests served concurrently; more wait in the socket.
    max_in_flight: int = 256
    #: How long SIGTERM waits for in-flight requests before closing.
    drain_timeout_s: float = 30.0
    #: Optional file the bound endpoint is written to once serving (for ``:0``).
    endpoint_file: Path | None = None
    #: The events service's pipeline (PULL) endpoint; empty = send no events.
    events_endpoint: str = ""
    #: ``host:port`` of the Prometheus ``/metrics`` HTTP server; empty = none.
    metrics_bind: str = ""

    @property
    def frame_limits(self) -> FrameLimits:
        return FrameLimits(
            max_header_bytes=self.max_header_bytes,
            max_payload_frames=1,
            max_frame_bytes=self.max_frame_bytes,
        )


@dataclasses.dataclass(frozen=True)
class WriterConfig(NodeServiceConfig):
    #: A value file rolls over to a new one past this size.
    value_file_max_bytes: int = 1024 * 1024 * 1024


@dataclasses.dataclass(frozen=True)
class ReaderConfig(NodeServiceConfig):
    #: A retrieval not continued for this long is forgotten.
    retrieve_idle_timeout_s: float = 120.0


def load(cls: type[C], section: str, environ: Mapping[str, str] | None = None) -> C:
    """Build ``cls`` from its defaults, the TOML file and ``NIMBUS_*`` variables."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    toml_path = env.get("NIMBUS_CONFIG")
    if toml_path:
        with open(toml_path, "rb") as f:
            document = tomllib.load(f)
        table = document.get(section, {})
        if not isinstance(table, dict):
            raise ConfigError(f"[{section}] in {toml_path} is not a table")
        values.update(table)
    hints = typing.get_type_hints(cls)
    for item in dataclasses.fields(cls):  # type: ignore[arg-type]
        variable = f"NIMBUS_{item.name.upper()}"
        if variable in env:
            values[item.name] = env[variable]
    unknown = set(values) - {item.name for item in dataclasses.fields(cls)}  # type: ignore[arg-type]
    if unknown:
        raise ConfigError(f"unknown {section} settings: {sorted(unknown)}")
    converted: dict[str, Any] = {}
    for name, value in values.items():
        converted[name] = _convert(name, value, hints[name])
    try:
        return cls(**converted)
    except TypeError as exc:
        raise ConfigError(f"{section}: {exc}") from exc


def _convert(name: str, value: Any, hint: Any) -> Any:
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if value in ("", None):
            return None
        hint = args[0]
    try:
        if hint is bool:
            if isinstance(value, bool):
                return value
            return str(value).lower() in ("1", "true", "yes", "on")
        if hint in (int, float, str):
            return hint(value)
        if hint is Path:
            return Path(value)
    except ValueError as exc:
        raise ConfigError(f"setting {name}: {exc}") from exc
    return value


@dataclasses.dataclass(frozen=True)
class GatewayConfig:
    """The S3 gateway (stateless; any number may run against one cluster)."""

    #: asyncpg URL of the central database (nodes and their endpoints are read from it).
    database_url: str
    #: Root credentials: full access, created in the database on start.
    root_access_key: str
    root_secret_key: str
    #: Base64 of 32 random bytes: encrypts access-key secrets at rest (AES-GCM).
    master_key: str
    host: str = "127.0.0.1"
    port: int = 9000
    #: AWS region the gateway answers as (SigV4 scope).
    region: str = "us-east-1"
    #: Virtual-host-style addressing: Host ``<bucket>.<domain>``; empty = path style only.
    domain: str = ""
    #: New buckets: k-of-n code and sequence size.
    k: int = 4
    n: int = 6
    sequence_size: int = 4 * 1024 * 1024
    #: Largest single PUT (S3's limit) and part.
    max_object_bytes: int = 5 * 1024**3
    #: How long one request to a writer or reader may take.
    node_timeout_s: float = 10.0
    #: Liveness (services/gateway/nodes.py): every writer and reader is pinged
    #: this often, each ping waiting ``heartbeat_timeout_s``; ``down_after``
    #: unanswered in a row (nothing else heard from it meanwhile) mark it down,
    #: within 2.5 s for a process that is connected but does not answer. ZeroMQ
    #: transport heartbeats (answered by the peer's I/O thread, not its Python
    #: code) use the same interval and timeout, so a paused (SIGSTOPped)
    #: process is down within interval + timeout (1.5 s); a dead one (its
    #: connection closed) at once.
    heartbeat_interval_s: float = 0.5
    heartbeat_timeout_s: float = 1.0
    down_after: int = 3
    #: Largest accepted clock skew of signed requests.
    max_skew_s: float = 900.0
    #: Shard of the unified-id generator (distinct per gateway replica).
    id_shard: int = 0
    #: Optional file the bound URL is written to once serving (for port 0).
    endpoint_file: Path | None = None
    #: The events service's pipeline (PULL) endpoint; empty = send no events.
    events_endpoint: str = ""
    #: ``host:port`` of the Prometheus ``/metrics`` server. Its own port, not
    #: the S3 one: on the S3 port ``/metrics`` is the bucket named "metrics".
    metrics_bind: str = ""
    #: The accounting service's query (ROUTER) endpoint: usage details are
    #: delivered there with acknowledgements; empty = usage stays queued in the
    #: central database's outbox until one is configured.
    accounting_endpoint: str = ""
    #: How often queued usage details are delivered to the accounting service.
    accounting_flush_s: float = 1.0


@dataclasses.dataclass(frozen=True, kw_only=True)
class HandoffConfig(NodeServiceConfig):
    """The handoff service of one node: returns shares held for others to their home."""

    #: asyncpg URL of the central database (the homes' writer endpoints are read from it).
    database_url: str
    #: One worker step forwards at most this many segments and, past the segment
    #: that crosses it, this many bytes (client traffic keeps priority).
    batch_segments: int = 32
    batch_bytes: int = 64 * 1024 * 1024
    #: After a step that did work the worker rests ``tranquility`` times as long
    #: as the step took; after an idle step (nothing held, or every home down)
    #: it waits ``idle_s``, which is also how soon a home that came back is noticed.
    tranquility: float = 2.0
    idle_s: float = 2.0
    #: A home whose writer does not answer ping within this time counts as down.
    ping_timeout_s: float = 1.0
    #: How long the home writer may take to store one forwarded piece.
    forward_timeout_s: float = 30.0
    #: A copy the home refused is retried after this, doubling up to ``retry_max_s``.
    retry_initial_s: float = 5.0
    retry_max_s: float = 600.0


@dataclasses.dataclass(frozen=True)
class AccountingConfig:
    """The accounting service: per-bucket bytes added, removed and retrieved per hour."""

    #: asyncpg URL of the central database (hourly totals live there).
    database_url: str
    #: PULL socket: fire-and-forget ``space-accounting-detail`` messages.
    pipeline_bind: str
    #: ROUTER socket: acknowledged details, ``space-usage-request``, ``ping``.
    bind: str
    events_endpoint: str = ""
    metrics_bind: str = ""
    max_header_bytes: int = 64 * 1024
    max_in_flight: int = 256
    drain_timeout_s: float = 30.0
    #: Idempotency keys of counted details are kept this long (a sender's
    #: retries must arrive within it to be recognised).
    detail_retention_s: float = 7 * 24 * 3600.0
    endpoint_file: Path | None = None


@dataclasses.dataclass(frozen=True)
class EventsConfig:
    """The events service: every service PUSHes events; subscribers get them on PUB."""

    #: PULL socket every service sends its events to.
    pipeline_bind: str
    #: PUB socket; the topic of each message is its ``event-type``.
    publish_bind: str
    #: ROUTER socket: ``ping`` and ``recent-events-request``.
    bind: str
    metrics_bind: str = ""
    max_header_bytes: int = 64 * 1024
    #: How many recent events ``recent-events-request`` can return.
    history: int = 1000
    drain_timeout_s: float = 5.0
    endpoint_file: Path | None = None
