"""The `nimbus` command: database migrations, the local cluster, probes.

    nimbus db migrate (--url URL --kind central|node | --dir DIR)
    nimbus db setup --url CENTRAL_URL --nodes 6
    nimbus local up [--nodes 6] [--k 4] [--n N] [--dir DIR] [--database-url URL]
    nimbus local down [--dir DIR] [--wipe]
    nimbus local stop-node NAME [--dir DIR]
    nimbus local start-node NAME [--dir DIR]
    nimbus local status [--dir DIR]
    nimbus ping ENDPOINT [--timeout-s 2]
    nimbus status [--dir DIR | --url GATEWAY_URL] [--json]
    nimbus usage BUCKET [--hours N] [--dir DIR | --url GATEWAY_URL] [--json]
    nimbus admin user create NAME [--dir DIR]
    nimbus admin key create USER [--dir DIR]
    nimbus events [--follow] [--type T] [--limit N] [--dir DIR | --endpoint ENDPOINT]

`nimbus admin` reaches the central database and the master key through the
local cluster's cluster.json (--dir), or NIMBUS_DATABASE_URL and
NIMBUS_MASTER_KEY when those are set (as in the compose cluster).

`nimbus events` prints the events service's recent events, one JSON object a
line, oldest first; with --follow it prints each event as it is published
until interrupted. --type keeps one event type (exactly). It reaches the
events service at --endpoint (the query socket, or with --follow the publish
socket), else at NIMBUS_EVENTS_QUERY / NIMBUS_EVENTS_PUBLISH when set and no
--dir is given (as in the compose cluster's gateway container), else through
the local cluster's cluster.json.

`nimbus usage` prints a bucket's bytes added, removed and retrieved (totals,
then per hour; --hours N: the last N hours only) from the gateway's
/-/usage/BUCKET, signing the request with SigV4: with the local cluster's
root key from cluster.json (--dir), or with --url and AWS_ACCESS_KEY_ID /
AWS_SECRET_ACCESS_KEY (region: AWS_REGION or AWS_DEFAULT_REGION, else
us-east-1).

Every `nimbus local` command takes the same --dir, defaulting to
$NIMBUS_LOCAL_DIR or /var/tmp/nimbus-$USER/local.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from pathlib import Path

# Heavier modules are imported inside the commands that use them: `nimbus
# ping` runs as every container's health check and must start fast.
from services.common.rpc import RpcClient, RpcTimeout

LOCAL_NODE_NAME = "node{number:02d}"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nimbus", description="Nimbus object store")
    commands = parser.add_subparsers(dest="command", required=True)

    database = commands.add_parser("db", help="database administration")
    db_commands = database.add_subparsers(dest="db_command", required=True)
    migrate = db_commands.add_parser("migrate", help="apply missing migrations (idempotent)")
    migrate.add_argument("--url", help="database URL")
    migrate.add_argument(
        "--kind", choices=("central", "node"), help="which schema the database holds"
    )
    migrate.add_argument("--dir", type=Path, help="migrate every database of a local cluster")
    setup = db_commands.add_parser(
        "setup", help="create (if missing) and migrate the central and every node database"
    )
    setup.add_argument("--url", required=True, help="central database URL; nodes go beside it")
    setup.add_argument("--nodes", type=int, required=True, help="nodes node01..nodeNN")
    setup.add_argument("--k", type=int, default=4, help="shares needed to rebuild")
    setup.add_argument("--n", type=int, default=None, help="shares per object (default: nodes)")
    setup.add_argument(
        "--writer-endpoint",
        default="tcp://{node}-writer:7001",
        help="each node's writer endpoint; {node} is replaced by the node name",
    )
    setup.add_argument(
        "--reader-endpoint",
        default="tcp://{node}-reader:7002",
        help="each node's reader endpoint; {node} is replaced by the node name",
    )
    setup.add_argument(
        "--handoff-endpoint",
        default="tcp://{node}-handoff:7003",
        help="each node's handoff service endpoint; {node} is replaced by the node name",
    )

    local = commands.add_parser("local", help="a cluster of local processes on 127.0.0.1")
    local_commands = local.add_subparsers(dest="local_command", required=True)
    dir_help = "cluster directory (default: $NIMBUS_LOCAL_DIR or /var/tmp/nimbus-$USER/local)"
    up = local_commands.add_parser("up", help="start the cluster and wait until it serves")
    up.add_argument("--nodes", type=int, default=6)
    up.add_argument("--k", type=int, default=4)
    up.add_argument("--n", type=int, default=None, help="shares per object (default: --nodes)")
    up.add_argument("--database-url", help="use this Postgres instead of a private one")
    down = local_commands.add_parser("down", help="stop every process of the cluster")
    down.add_argument("--wipe", action="store_true", help="also delete the cluster directory")
    stop_node = local_commands.add_parser("stop-node", help="stop one node's processes")
    start_node = local_commands.add_parser("start-node", help="start one node's processes")
    for node_parser in (stop_node, start_node):
        node_parser.add_argument("name")
    status = local_commands.add_parser("status", help="which processes run")
    for sub in (up, down, stop_node, start_node, status):
        sub.add_argument("--dir", type=Path, default=None, help=dir_help)

    status_cmd = commands.add_parser(
        "status", help="every node's state and the handoff backlog, as the gateway sees them"
    )
    status_cmd.add_argument("--dir", type=Path, default=None, help=dir_help)
    status_cmd.add_argument("--url", help="the gateway's URL (default: the local cluster's)")
    status_cmd.add_argument("--json", action="store_true", help="print the JSON document")

    usage_cmd = commands.add_parser(
        "usage", help="a bucket's bytes added, removed and retrieved, as accounting counted them"
    )
    usage_cmd.add_argument("bucket")
    usage_cmd.add_argument("--hours", type=int, help="only the last N hours (default: all time)")
    usage_where = usage_cmd.add_mutually_exclusive_group()
    usage_where.add_argument("--dir", type=Path, default=None, help=dir_help)
    usage_where.add_argument(
        "--url", help="the gateway's URL; credentials from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
    )
    usage_cmd.add_argument("--json", action="store_true", help="print the JSON document")
    usage_cmd.add_argument("--timeout-s", type=float, default=10.0)

    admin = commands.add_parser("admin", help="users and access keys")
    admin_commands = admin.add_subparsers(dest="admin_command", required=True)
    user = admin_commands.add_parser("user", help="users")
    user.add_argument("action", choices=["create"])
    user.add_argument("name")
    key = admin_commands.add_parser("key", help="access keys")
    key.add_argument("action", choices=["create"])
    key.add_argument("user")
    for sub in (user, key):
        sub.add_argument("--dir", type=Path, default=None, help=dir_help)

    events = commands.add_parser("events", help="the cluster's recent events, or follow them")
    events.add_argument("--follow", action="store_true", help="print events as they happen")
    events.add_argument("--type", help="only events of this event-type")
    events.add_argument("--limit", type=int, help="at most this many recent events (newest)")
    events.add_argument("--dir", type=Path, default=None, help=dir_help)
    events.add_argument(
        "--endpoint", help="the events service's query socket (with --follow: its publish socket)"
    )
    events.add_argument("--timeout-s", type=float, default=10.0)

    ping = commands.add_parser(
        "ping", help="exit 0 if a service answers ping (tcp://...) or its health URL (http://...)"
    )
    ping.add_argument("endpoint")
    ping.add_argument("--timeout-s", type=float, default=2.0)
    return parser


async def _migrate(args: argparse.Namespace) -> int:
    from services.common import db

    if args.db_command == "setup":
        names = [LOCAL_NODE_NAME.format(number=i) for i in range(1, args.nodes + 1)]
        central, nodes = await db.setup_databases(args.url, names)
        endpoints = [
            (name, args.writer_endpoint.format(node=name), args.reader_endpoint.format(node=name))
            for name in names
        ]
        handoffs = {name: args.handoff_endpoint.format(node=name) for name in names}
        await db.register_cluster(
            central, args.k, args.n or args.nodes, endpoints, handoffs=handoffs
        )
        print(f"central database ready: {db.redact(central)}")
        for name, url in nodes.items():
            print(f"{name} database ready: {db.redact(url)}")
        return 0
    if args.dir is not None:
        from services.local import cluster

        described = cluster.load_cluster(args.dir)
        targets = [(described["database_url"], "central")]
        targets += [(node["database_url"], "node") for node in described["nodes"]]
    elif args.url and args.kind:
        targets = [(args.url, args.kind)]
    else:
        print("nimbus db migrate: give --url and --kind, or --dir", file=sys.stderr)
        return 2
    for url, kind in targets:
        applied = await db.migrate(url, kind)
        print(f"{kind}: applied {len(applied)} migration(s) {' '.join(applied)}".rstrip())
    return 0


async def _ping(endpoint: str, timeout_s: float) -> int:
    if endpoint.startswith(("http://", "https://")):
        return await asyncio.to_thread(_http_ping, endpoint, timeout_s)
    client = await RpcClient.connect(endpoint, timeout_s=timeout_s)
    try:
        reply = await client.request({"message-type": "ping"})
    except RpcTimeout:
        print(f"{endpoint}: no answer within {timeout_s} s", file=sys.stderr)
        return 1
    finally:
        await client.close()
    print(json.dumps(reply.header))
    return 0 if reply.header.get("result") == "success" else 1


def _http_ping(url: str, timeout_s: float) -> int:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            print(response.read().decode(errors="replace"))
            return 0
    except (urllib.error.URLError, OSError) as exc:
        print(f"{url}: {exc}", file=sys.stderr)
        return 1


def _status(args: argparse.Namespace) -> int:
    import urllib.error
    import urllib.request

    url = args.url
    if url is None:
        from services.local import cluster

        url = cluster.load_cluster(args.dir or cluster.default_dir())["gateway"]["url"]
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/-/status", timeout=10) as response:
            document = json.load(response)
    except (urllib.error.URLError, OSError) as exc:
        print(f"nimbus: the gateway at {url} does not answer: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(document, indent=2))
        return 0
    print(f"{'node':8} {'writer':7} {'reader':7} {'handoff':8} holds for others")
    for name, node in document["nodes"].items():
        held = node.get("holds_for_others") or {}
        detail = ", ".join(
            f"{home}: {counts.get('segments', 0)} shares {counts.get('bytes', 0)} B"
            for home, counts in held.items()
        )
        print(f"{name:8} {node['writer']:7} {node['reader']:7} {node['handoff']:8} {detail or '-'}")
    backlog = document["handoff_backlog"]
    print(f"handoff backlog: {backlog['segments']} shares, {backlog['bytes']} bytes")
    return 0


def _usage_target(args: argparse.Namespace) -> tuple[str, str, str, str] | None:
    """(gateway URL, access key, secret key, region); None if --url lacks credentials."""
    if args.url is not None:
        access_key = os.environ.get("AWS_ACCESS_KEY_ID")
        secret_key = os.environ.get("AWS_SECRET_ACCESS_KEY")
        if not access_key or not secret_key:
            return None
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        return args.url, access_key, secret_key, region or "us-east-1"
    from services.local import cluster

    gateway = cluster.load_cluster(args.dir or cluster.default_dir())["gateway"]
    return (
        gateway["url"],
        gateway["access_key"],
        gateway["secret_key"],
        gateway.get("region", "us-east-1"),
    )


def _s3_error_text(body: bytes) -> str:
    """``Code: Message`` of an S3 error document (the body itself if it is not one)."""
    import defusedxml.ElementTree

    try:
        root = defusedxml.ElementTree.fromstring(body)
    except Exception:
        return body.decode(errors="replace").strip()
    return f"{root.findtext('Code', '')}: {root.findtext('Message', '')}"


def _usage(args: argparse.Namespace) -> int:
    import urllib.error
    import urllib.request

    from services.common import sigv4_client

    target = _usage_target(args)
    if target is None:
        print(
            "nimbus usage: --url needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY", file=sys.stderr
        )
        return 2
    base, access_key, secret_key, region = target
    query = {"hours": str(args.hours)} if args.hours is not None else None
    url = sigv4_client.url_for(base, f"/-/usage/{args.bucket}", query)
    credentials = sigv4_client.Credentials(access_key, secret_key, region)
    request = urllib.request.Request(url, headers=sigv4_client.sign("GET", url, credentials))
    try:
        with urllib.request.urlopen(request, timeout=args.timeout_s) as response:
            document = json.load(response)
    except urllib.error.HTTPError as exc:
        print(f"nimbus usage: {exc.code} {_s3_error_text(exc.read())}", file=sys.stderr)
        return 1
    except (urllib.error.URLError, OSError) as exc:
        print(f"nimbus: the gateway at {base} does not answer: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(document, indent=2))
        return 0
    columns = ("bytes_added", "bytes_removed", "bytes_retrieved")
    print(f"bucket {document['bucket']} (id {document['bucket_id']})")
    print(f"{'':26} {'added':>16} {'removed':>16} {'retrieved':>16}")
    print(f"{'total':26}", *(f"{document[name]:>16}" for name in columns))
    print(f"{'not yet counted':26}", *(f"{document['pending'][name]:>16}" for name in columns))
    if document["hourly"]:
        print("per hour (UTC):")
    for hour in document["hourly"]:
        print(f"  {hour['hour']!s:24}", *(f"{hour.get(name, 0):>16}" for name in columns))
    return 0


def _local(args: argparse.Namespace) -> int:
    from services.local import cluster

    directory = args.dir or cluster.default_dir()
    match args.local_command:
        case "up":
            described = asyncio.run(
                cluster.up(directory, args.nodes, args.k, args.n, args.database_url)
            )
            print(f"nimbus local cluster is up: {directory / 'cluster.json'}")
            print(f"  k={described['k']} n={described['n']} nodes={len(described['nodes'])}")
            print(f"  database: {described['database_url']}")
            gateway = described["gateway"]
            print(f"  S3 endpoint: {gateway['url']}  (region {gateway['region']})")
            print(f"  AWS_ACCESS_KEY_ID={gateway['access_key']}")
            print(f"  AWS_SECRET_ACCESS_KEY={gateway['secret_key']}")
        case "down":
            cluster.down(directory, wipe=args.wipe)
            print(f"nimbus local cluster in {directory} is down")
        case "stop-node":
            stopped = cluster.stop_node(directory, args.name)
            print(f"stopped {', '.join(stopped) or 'nothing (already stopped)'}")
        case "start-node":
            asyncio.run(cluster.start_node(directory, args.name))
            print(f"{args.name} is serving")
        case "status":
            for name, entry in sorted(cluster.process_table(directory).items()):
                state = f"running pid {entry['pid']}" if entry["alive"] else "stopped"
                print(f"{name:20} {state}")
    return 0


def _admin_target(directory: Path | None) -> tuple[str, str]:
    """(central database URL, master key) for admin commands."""
    from services.local import cluster

    url, master = os.environ.get("NIMBUS_DATABASE_URL"), os.environ.get("NIMBUS_MASTER_KEY")
    if url and master and directory is None:
        return url, master
    described = cluster.load_cluster(directory or cluster.default_dir())
    return described["database_url"], described["gateway"]["master_key"]


async def _admin(args: argparse.Namespace) -> int:
    import asyncpg

    from services.gateway import queries as gateway_queries
    from services.gateway.secrets import SecretBox, new_access_key

    url, master = _admin_target(args.dir)
    conn = await asyncpg.connect(url)
    try:
        if args.admin_command == "user":
            created = await gateway_queries.ensure_user(conn, args.name)
            print(json.dumps({"user": args.name, "id": created}))
            return 0
        user_id = await gateway_queries.user_id(conn, args.user)
        if user_id is None:
            print(
                f"nimbus: no user {args.user!r} (create it with `nimbus admin user create`)",
                file=sys.stderr,
            )
            return 1
        access_key, secret_key = new_access_key()
        sealed = SecretBox(master).seal(access_key, secret_key)
        await gateway_queries.put_access_key(conn, access_key, user_id, sealed)
        print(json.dumps({"user": args.user, "access_key": access_key, "secret_key": secret_key}))
        return 0
    finally:
        await conn.close()


def _events_endpoint(args: argparse.Namespace) -> str:
    """The query socket (the publish socket with --follow) of the events service."""
    if args.endpoint:
        return str(args.endpoint)
    socket, variable = (
        ("publish", "NIMBUS_EVENTS_PUBLISH") if args.follow else ("query", "NIMBUS_EVENTS_QUERY")
    )
    if args.dir is None and os.environ.get(variable):
        return os.environ[variable]
    from services.local import cluster

    described = cluster.load_cluster(args.dir or cluster.default_dir())
    endpoint = described.get("events", {}).get(socket)
    if not endpoint:
        raise cluster.LocalClusterError("the local cluster has no events service")
    return str(endpoint)


def _print_event(event: object) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


async def _events(args: argparse.Namespace) -> int:
    endpoint = _events_endpoint(args)
    if args.follow:
        return await _follow_events(endpoint, args.type)
    request: dict[str, object] = {"message-type": "recent-events-request"}
    if args.type:
        request["event-type"] = args.type
    if args.limit is not None:
        request["limit"] = args.limit
    client = await RpcClient.connect(endpoint, timeout_s=args.timeout_s)
    try:
        reply = await client.request(request)
    except RpcTimeout:
        print(f"nimbus: the events service at {endpoint} does not answer", file=sys.stderr)
        return 1
    finally:
        await client.close()
    if reply.header.get("result") != "success":
        print(f"nimbus: {reply.header.get('error-message')}", file=sys.stderr)
        return 1
    try:
        for event in reply.header.get("events", []):
            _print_event(event)
    except BrokenPipeError:
        pass  # e.g. `| head`: the reader has all it wants
    if reply.header.get("truncated"):
        print(
            "nimbus: older events left out (one reply holds ~48 KiB of events);"
            " narrow with --type or --limit, or use --follow",
            file=sys.stderr,
        )
    return 0


async def _follow_events(endpoint: str, event_type: str | None) -> int:
    """Print what the events service publishes until SIGINT or SIGTERM."""
    import signal

    import aiozmq
    import zmq

    stream = await aiozmq.create_zmq_stream(zmq.SUB, connect=endpoint)
    stream.transport.setsockopt(zmq.LINGER, 0)
    # ZeroMQ filters by topic prefix; the exact type is checked below.
    stream.transport.setsockopt(zmq.SUBSCRIBE, (event_type or "").encode())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)

    async def printing() -> None:
        while True:
            frames = await stream.read()
            if len(frames) != 2 or (
                event_type and frames[0].decode(errors="replace") != event_type
            ):
                continue
            try:
                event = json.loads(frames[1])
            except ValueError:
                continue
            _print_event(event)

    reader = asyncio.create_task(printing())
    stopped = asyncio.create_task(stop.wait())
    try:
        done, _ = await asyncio.wait({reader, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if reader in done:
            reader.result()  # what ended it
    except BrokenPipeError:
        pass  # e.g. `| head`: the reader has all it wants
    finally:
        for task in (reader, stopped):
            task.cancel()
        await asyncio.gather(reader, stopped, return_exceptions=True)
        stream.close()
    return 0


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = _parser().parse_args(argv)
    try:
        if args.command == "db":
            code = asyncio.run(_migrate(args))
        elif args.command == "local":
            code = _local(args)
        elif args.command == "status":
            code = _status(args)
        elif args.command == "usage":
            code = _usage(args)
        elif args.command == "admin":
            code = asyncio.run(_admin(args))
        elif args.command == "events":
            code = asyncio.run(_events(args))
        else:
            code = asyncio.run(_ping(args.endpoint, args.timeout_s))
    except Exception as exc:
        from services.local.cluster import LocalClusterError
        from services.local.postgres import PostgresError

        if not isinstance(exc, (LocalClusterError, PostgresError)):
            raise
        print(f"nimbus: {exc}", file=sys.stderr)
        code = 1
    sys.exit(code)


if __name__ == "__main__":
    main()
