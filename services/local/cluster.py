"""`nimbus local`: a whole cluster as processes on 127.0.0.1, no Docker.

``up`` starts (or reuses) Postgres, creates and migrates the central database
and one database per node, starts every node's services on free ports, waits
until each answers ``ping``, and writes ``DIR/cluster.json`` (the description
tests and tools read) and ``DIR/processes.json`` (how to restart each
process). Ports are chosen once and kept, so a stopped node comes back at the
same addresses. Everything lives under DIR: ``postgres/``, ``nodes/NAME/``
(value files) and ``logs/``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import sys
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import aiohttp

from services.common import db
from services.common.credentials import new_access_key, new_master_key
from services.common.rpc import RpcClient, RpcTimeout
from services.local import postgres, processes
from services.local.processes import ProcessSpec, Running

NODE_SERVICES = ("writer", "reader", "handoff")
#: Cluster-wide services besides the gateway, started before the nodes (the
#: nodes send them events; the gateway sends usage).
CLUSTER_SERVICES = ("events", "accounting")


class LocalClusterError(Exception):
    pass


def default_dir() -> Path:
    """``NIMBUS_LOCAL_DIR``, else /var/tmp/nimbus-USER/local.

    Not under the home directory: when run as root, Postgres runs as the
    ``postgres`` user, who cannot enter /root.
    """
    override = os.environ.get("NIMBUS_LOCAL_DIR")
    if override:
        return Path(override)
    user = os.environ.get("USER") or str(os.getuid())
    return Path("/var/tmp") / f"nimbus-{user}" / "local"


def node_name(number: int) -> str:
    return f"node{number:02d}"


def _cluster_file(directory: Path) -> Path:
    return directory / "cluster.json"


def _processes_file(directory: Path) -> Path:
    return directory / "processes.json"


def _write_json(path: Path, document: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(document, indent=2) + "\n")
    os.replace(tmp, path)


def load_cluster(directory: Path) -> dict[str, Any]:
    path = _cluster_file(directory)
    if not path.exists():
        raise LocalClusterError(f"no local cluster in {directory} (run `nimbus local up` first)")
    cluster: dict[str, Any] = json.loads(path.read_text())
    return cluster


def _load_processes(directory: Path) -> dict[str, dict[str, Any]]:
    path = _processes_file(directory)
    return json.loads(path.read_text()) if path.exists() else {}


def _running(entry: dict[str, Any]) -> Running | None:
    if entry.get("pid") is None:
        return None
    return Running(entry["pid"], entry["start_ticks"])


async def _prepare_postgres(directory: Path, database_url: str | None) -> tuple[str, Any]:
    """The server URL to use, starting a private server when none is given."""
    if database_url:
        await postgres.wait_for_postgres(database_url, 60)
        return database_url, None
    data_dir = directory / "postgres"
    previous = (
        load_cluster(directory).get("postgres") if _cluster_file(directory).exists() else None
    )
    port = previous["port"] if previous else processes.free_port()
    pg = await asyncio.to_thread(postgres.init_postgres, data_dir, port)
    await asyncio.to_thread(postgres.start_postgres, pg)
    return pg.url, {"data_dir": str(data_dir), "port": port}


def _local_endpoint() -> str:
    return f"tcp://127.0.0.1:{processes.free_port()}"


def _metrics_bind() -> str:
    return f"127.0.0.1:{processes.free_port()}"


def _events_endpoint(cluster: dict[str, Any]) -> str:
    return str(cluster.get("events", {}).get("pipeline", ""))


def _node_specs(
    directory: Path, node: dict[str, Any], central_url: str, events_endpoint: str
) -> list[ProcessSpec]:
    specs = []
    for service in NODE_SERVICES:
        if service not in node:
            continue  # a cluster.json from before the service existed; `up` adds it
        env = {
            "NIMBUS_NODE_NAME": node["name"],
            "NIMBUS_BIND": node[service],
            "NIMBUS_NODE_DATABASE_URL": node["database_url"],
            "NIMBUS_DATA_DIR": node["data_dir"],
            "NIMBUS_EVENTS_ENDPOINT": events_endpoint,
            "NIMBUS_METRICS_BIND": node.get("metrics", {}).get(service, ""),
        }
        if service == "handoff":
            # It looks up the writers of the nodes it holds copies for.
            env["NIMBUS_DATABASE_URL"] = central_url
        specs.append(
            ProcessSpec(
                name=f"{node['name']}-{service}",
                argv=[sys.executable, "-m", f"services.{service}.main"],
                env=env,
                log_file=str(directory / "logs" / f"{node['name']}-{service}.log"),
                ready=node[service],
                ready_service=f"{service} {node['name']}",
            )
        )
    return specs


async def up(
    directory: Path,
    nodes: int = 6,
    k: int = 4,
    n: int | None = None,
    database_url: str | None = None,
) -> dict[str, Any]:
    """Bring the cluster up (idempotent: reuses an existing DIR's ports and data)."""
    n = nodes if n is None else n
    if not 1 <= k <= n <= nodes:
        raise LocalClusterError(f"need 1 <= k <= n <= nodes, got k={k} n={n} nodes={nodes}")
    directory = directory.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    existing = load_cluster(directory) if _cluster_file(directory).exists() else None
    if existing and (len(existing["nodes"]) != nodes or existing["k"] != k or existing["n"] != n):
        raise LocalClusterError(
            f"{directory} holds a cluster of {len(existing['nodes'])} nodes, "
            f"k={existing['k']} n={existing['n']}; use another --dir or `local down --wipe`"
        )
    server_url, private = await _prepare_postgres(
        directory, database_url or (existing or {}).get("external_database_url")
    )
    names = [node_name(number) for number in range(1, nodes + 1)]
    central_url, node_dbs = await db.setup_databases(server_url, names)

    node_entries: list[dict[str, Any]] = []
    for number in range(1, nodes + 1):
        name = node_name(number)
        old = next((x for x in (existing or {}).get("nodes", []) if x["name"] == name), None)
        data_dir = directory / "nodes" / name
        data_dir.mkdir(parents=True, exist_ok=True)
        entry: dict[str, Any] = {"name": name}
        for service in NODE_SERVICES:
            known = (old or {}).get(service)
            entry[service] = known or _local_endpoint()
        old_metrics = (old or {}).get("metrics", {})
        entry["metrics"] = {
            service: old_metrics.get(service) or _metrics_bind() for service in NODE_SERVICES
        }
        entry.update(data_dir=str(data_dir), database_url=node_dbs[name])
        node_entries.append(entry)
    await db.register_cluster(
        central_url,
        k,
        n,
        [(node["name"], node["writer"], node["reader"]) for node in node_entries],
        handoffs={node["name"]: node["handoff"] for node in node_entries},
    )

    gateway = (existing or {}).get("gateway") or _new_gateway_entry()
    gateway.setdefault("metrics", _metrics_bind())
    cluster: dict[str, Any] = {
        "k": k,
        "n": n,
        "database_url": central_url,
        "gateway": gateway,
        "nodes": node_entries,
        "postgres": private,
        "events": _cluster_service_entry(existing, "events", ("pipeline", "publish", "query")),
        "accounting": _cluster_service_entry(existing, "accounting", ("pipeline", "query")),
    }
    if database_url:
        cluster["external_database_url"] = database_url
    _write_json(_cluster_file(directory), cluster)

    await _start_all(directory, _cluster_service_specs(directory, cluster))
    events_endpoint = _events_endpoint(cluster)
    specs = [
        spec
        for node in node_entries
        for spec in _node_specs(directory, node, central_url, events_endpoint)
    ]
    await _start_all(directory, specs)
    await _start_all(directory, [_gateway_spec(directory, cluster)])
    return cluster


def _cluster_service_entry(
    existing: dict[str, Any] | None, service: str, sockets: tuple[str, ...]
) -> dict[str, str]:
    """Endpoints of a cluster-wide service: kept from ``existing``, else new ports."""
    old = (existing or {}).get(service, {})
    entry = {socket: old.get(socket) or _local_endpoint() for socket in sockets}
    entry["metrics"] = old.get("metrics") or _metrics_bind()
    return entry


def _cluster_service_specs(directory: Path, cluster: dict[str, Any]) -> list[ProcessSpec]:
    events, accounting = cluster["events"], cluster["accounting"]
    environments = {
        "events": {
            "NIMBUS_PIPELINE_BIND": events["pipeline"],
            "NIMBUS_PUBLISH_BIND": events["publish"],
            "NIMBUS_BIND": events["query"],
            "NIMBUS_METRICS_BIND": events["metrics"],
        },
        "accounting": {
            "NIMBUS_DATABASE_URL": cluster["database_url"],
            "NIMBUS_PIPELINE_BIND": accounting["pipeline"],
            "NIMBUS_BIND": accounting["query"],
            "NIMBUS_EVENTS_ENDPOINT": events["pipeline"],
            "NIMBUS_METRICS_BIND": accounting["metrics"],
        },
    }
    return [
        ProcessSpec(
            name=service,
            argv=[sys.executable, "-m", f"services.{service}.main"],
            env=environments[service],
            log_file=str(directory / "logs" / f"{service}.log"),
            ready=cluster[service]["query"],
            ready_service=service,
        )
        for service in CLUSTER_SERVICES
    ]


def _new_gateway_entry() -> dict[str, Any]:
    access_key, secret_key = new_access_key()
    port = processes.free_port()
    return {
        "url": f"http://127.0.0.1:{port}",
        "access_key": access_key,
        "secret_key": secret_key,
        "master_key": new_master_key(),
        "region": "us-east-1",
    }


def _gateway_spec(directory: Path, cluster: dict[str, Any]) -> ProcessSpec:
    gateway = cluster["gateway"]
    port = urllib.parse.urlsplit(gateway["url"]).port
    env = {
        "NIMBUS_DATABASE_URL": cluster["database_url"],
        "NIMBUS_ROOT_ACCESS_KEY": gateway["access_key"],
        "NIMBUS_ROOT_SECRET_KEY": gateway["secret_key"],
        "NIMBUS_MASTER_KEY": gateway["master_key"],
        "NIMBUS_REGION": gateway["region"],
        "NIMBUS_HOST": "127.0.0.1",
        "NIMBUS_PORT": str(port),
        "NIMBUS_K": str(cluster["k"]),
        "NIMBUS_N": str(cluster["n"]),
        "NIMBUS_EVENTS_ENDPOINT": _events_endpoint(cluster),
        "NIMBUS_METRICS_BIND": gateway.get("metrics", ""),
        "NIMBUS_ACCOUNTING_ENDPOINT": cluster.get("accounting", {}).get("query", ""),
    }
    if "sequence_size" in gateway:
        env["NIMBUS_SEQUENCE_SIZE"] = str(gateway["sequence_size"])
    return ProcessSpec(
        name="gateway",
        argv=[sys.executable, "-m", "services.gateway.main"],
        env=env,
        log_file=str(directory / "logs" / "gateway.log"),
        ready=f"{gateway['url']}/-/health",
    )


async def _start_all(directory: Path, specs: Iterable[ProcessSpec]) -> None:
    table = _load_processes(directory)
    started: list[tuple[ProcessSpec, Running]] = []
    for spec in specs:
        current = _running(table.get(spec.name, {}))
        if not processes.is_alive(current):
            current = processes.start(spec)
        assert current is not None
        table[spec.name] = {"spec": asdict(spec), **asdict(current)}
        started.append((spec, current))
    _write_json(_processes_file(directory), table)
    await asyncio.gather(*(_wait_ready(spec, proc) for spec, proc in started))


async def _wait_ready(spec: ProcessSpec, proc: Running, timeout_s: float = 60.0) -> None:
    """Until the process answers its readiness probe; fail fast if it dies."""
    probe = (
        _http_probe(spec.ready)
        if spec.ready.startswith("http")
        else _zmq_probe(spec.ready, spec.ready_service)
    )
    deadline = time.monotonic() + timeout_s
    delay = 0.05
    async with probe as answers:
        while True:
            if not processes.is_alive(proc):
                raise LocalClusterError(
                    f"{spec.name} exited during start-up; see {spec.log_file}:\n"
                    + _tail(Path(spec.log_file))
                )
            if await answers():
                return
            if time.monotonic() > deadline:
                raise LocalClusterError(f"{spec.name} was not ready within {timeout_s} s")
            await asyncio.sleep(delay)  # poll interval between probes
            delay = min(delay * 2, 0.5)


@contextlib.asynccontextmanager
async def _zmq_probe(
    endpoint: str, service: str = ""
) -> AsyncIterator[Callable[[], Awaitable[bool]]]:
    client = await RpcClient.connect(endpoint, timeout_s=0.5)

    async def answers() -> bool:
        try:
            reply = await client.request({"message-type": "ping"})
        except RpcTimeout:
            return False
        if service and reply.header.get("service") != service:
            return False  # another process holds the port; ours is failing to bind
        return reply.header.get("result") == "success"

    try:
        yield answers
    finally:
        await client.close()


@contextlib.asynccontextmanager
async def _http_probe(url: str) -> AsyncIterator[Callable[[], Awaitable[bool]]]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:

        async def answers() -> bool:
            try:
                async with session.get(url) as response:
                    return response.status == 200
            except (aiohttp.ClientError, TimeoutError):
                return False

        yield answers


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


def _node_process_names(cluster: dict[str, Any], name: str) -> list[str]:
    if name not in {node["name"] for node in cluster["nodes"]}:
        known = ", ".join(node["name"] for node in cluster["nodes"])
        raise LocalClusterError(f"no node {name!r} (nodes: {known})")
    return [f"{name}-{service}" for service in NODE_SERVICES]


def _stop_processes(directory: Path, names: Iterable[str]) -> list[str]:
    table = _load_processes(directory)
    running: dict[str, Running] = {}
    for name in names:
        entry = table.get(name)
        if entry is None:
            continue
        proc = _running(entry)
        if proc is not None and processes.is_alive(proc):
            running[name] = proc
        entry["pid"] = None
    processes.stop(list(running.values()))
    _write_json(_processes_file(directory), table)
    return list(running)


def stop_node(directory: Path, name: str) -> list[str]:
    """SIGTERM (then SIGKILL after a grace period) every process of one node."""
    cluster = load_cluster(directory)
    return _stop_processes(directory, _node_process_names(cluster, name))


async def start_node(directory: Path, name: str) -> None:
    cluster = load_cluster(directory)
    names = _node_process_names(cluster, name)
    table = _load_processes(directory)
    node = next(node for node in cluster["nodes"] if node["name"] == name)
    fresh = {
        spec.name: spec
        for spec in _node_specs(directory, node, cluster["database_url"], _events_endpoint(cluster))
    }
    # As recorded when first started; a service added since then, as `up` would start it.
    specs = [
        ProcessSpec(**table[n]["spec"]) if n in table else fresh[n]
        for n in names
        if n in table or n in fresh
    ]
    await _start_all(directory, specs)


def process_table(directory: Path) -> dict[str, dict[str, Any]]:
    """Each process's spec, pid and whether it is alive now."""
    table = _load_processes(directory)
    for entry in table.values():
        entry["alive"] = processes.is_alive(_running(entry))
    return table


def down(directory: Path, wipe: bool = False) -> None:
    """Stop every process and the private Postgres; ``wipe`` deletes DIR too."""
    directory = directory.resolve()
    if _cluster_file(directory).exists():
        cluster = load_cluster(directory)
        # The gateway first, so it does not report the nodes going away.
        _stop_processes(directory, ["gateway"])
        _stop_processes(directory, list(_load_processes(directory)))
        private = cluster.get("postgres")
        if private:
            pg = postgres.PrivatePostgres(
                Path(private["data_dir"]),
                private["port"],
                postgres.SYSTEM_USER if os.geteuid() == 0 else None,
            )
            postgres.stop_postgres(pg)
    if wipe and directory.exists():
        shutil.rmtree(directory)
