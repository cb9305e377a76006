"""Real S3 client programs against the local cluster, driven as a user would.

The aws CLI (v1, from the dev dependencies), s3cmd (dev dependencies), rclone
and curl (Debian packages, installed by ``scripts/install-clients``) each
create a bucket, put, list, get and delete objects of 0 bytes, 1 KiB and
100 MiB, and every download is compared with its source by sha256. Each
program runs with its default settings (part sizes, concurrency, retries)
in a clean environment: a temporary HOME, no configuration file from the
machine and no inherited ``AWS_*`` variable (``AWS_CA_BUNDLE``, which some
machines set, makes rclone 1.60 refuse every plain-HTTP remote).

A missing program fails its test: these programs are part of the project's
set-up, not optional extras.

Every test starts on, and must leave, a cluster whose storage services all
answer a ping. One that stops answering during a test (as writers did while
``ValueFileWriter.sync`` could spin, fixed in 19f56b0) is restarted so that
the rest of the session keeps a working cluster, and the test errors with
the names of the services that hung.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from services.common.rpc import RpcClient, RpcTimeout
from tests.integration.conftest import LocalCluster

KIB = 1024
MIB = 1024 * KIB
BIG_SIZE = 100 * MIB
S3_NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"

# What each program's defaults do with the 100 MiB file.
AWS_CLI_PARTS = 13  # 8 MiB multipart_chunksize
S3CMD_PARTS = 7  # 15 MiB multipart_chunk_size_mb

# ---------------------------------------------------------------------------
# Payloads and working directories


@dataclass(frozen=True)
class Payload:
    path: Path
    size: int
    sha256: str
    md5: str


def _digests(path: Path) -> tuple[str, str]:
    sha, md5 = hashlib.sha256(), hashlib.md5()
    with path.open("rb") as f:
        while chunk := f.read(MIB):
            sha.update(chunk)
            md5.update(chunk)
    return sha.hexdigest(), md5.hexdigest()


def sha256_of(path: Path) -> str:
    return _digests(path)[0]


@pytest.fixture(scope="session")
def payloads(reachable_tmp: Path) -> dict[str, Payload]:
    """``empty`` (0 B), ``kib`` (1 KiB) and ``big`` (100 MiB) files of random bytes."""
    directory = reachable_tmp / f"s3-client-payloads-{uuid.uuid4().hex[:8]}"
    directory.mkdir()
    made: dict[str, Payload] = {}
    for name, size in (("empty", 0), ("kib", KIB), ("big", BIG_SIZE)):
        path = directory / name
        with path.open("wb") as f:
            for offset in range(0, size, MIB):
                f.write(os.urandom(min(MIB, size - offset)))
        sha, md5 = _digests(path)
        made[name] = Payload(path, size, sha, md5)
    return made


@pytest.fixture
def workdir(reachable_tmp: Path) -> Iterator[Path]:
    """A scratch directory for one test (downloads, HOME, config), removed after it."""
    path = reachable_tmp / f"s3-client-{uuid.uuid4().hex[:8]}"
    (path / "home").mkdir(parents=True)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def unique_bucket(tool: str) -> str:
    return f"{tool}-{uuid.uuid4().hex[:12]}"


def tree_digests(root: Path) -> dict[str, str]:
    """Every regular file under ``root``: relative path -> sha256."""
    return {
        path.relative_to(root).as_posix(): sha256_of(path)
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


# ---------------------------------------------------------------------------
# Running the programs


def _search_path() -> str:
    """PATH with this interpreter's bin directory first (where pip puts aws and s3cmd)."""
    return os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])


def find_program(name: str, how_to_install: str) -> str:
    found = shutil.which(name, path=_search_path())
    if found is None:
        pytest.fail(f"`{name}` is not installed; {how_to_install}", pytrace=False)
    return found


class GatewayLog:
    """The lines the gateway logged since a test began (for failure messages)."""

    def __init__(self, cluster: LocalCluster) -> None:
        self.path = cluster.directory / "logs" / "gateway.log"
        self.start = self.path.stat().st_size if self.path.exists() else 0

    def since_start(self, limit: int = 40) -> str:
        if not self.path.exists():
            return "(no gateway.log)"
        with self.path.open("rb") as f:
            f.seek(self.start)
            lines = f.read().decode(errors="replace").splitlines()
        shown = lines[-limit:]
        skipped = f"... {len(lines) - len(shown)} earlier lines\n" if len(lines) > limit else ""
        return skipped + "\n".join(shown) if shown else "(nothing logged)"


@dataclass
class Program:
    """One client program with its clean environment."""

    name: str
    executable: str
    env: dict[str, str]
    log: GatewayLog
    cwd: Path
    leading_args: tuple[str, ...] = ()

    def run(
        self, *args: str, ok: bool = True, timeout_s: float = 300
    ) -> subprocess.CompletedProcess[str]:
        argv = [self.executable, *self.leading_args, *args]
        try:
            result = subprocess.run(
                argv,
                env=self.env,
                cwd=self.cwd,
                capture_output=True,
                text=True,
                timeout=timeout_s,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(
                f"{self.name} {' '.join(args)} still running after {timeout_s} s\n"
                f"gateway.log since the test began:\n{self.log.since_start()}"
            ) from exc
        if ok and result.returncode != 0:
            raise AssertionError(
                f"{self.name} {' '.join(args)} exited {result.returncode}\n"
                f"stdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-3000:]}\n"
                f"gateway.log since the test began:\n{self.log.since_start()}"
            )
        return result

    def json(self, *args: str) -> Any:
        return json.loads(self.run(*args).stdout or "null")


def base_env(home: Path) -> dict[str, str]:
    """Only what a program needs: nothing of this machine's configuration leaks in."""
    return {
        "PATH": _search_path(),
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "TMPDIR": str(home),
    }


# ---------------------------------------------------------------------------
# Every storage service answers before and after each test


def _ping_all(cluster: LocalCluster, timeout_s: float) -> list[str]:
    """Names (``node03-writer``) of the storage services that do not answer a ping."""

    async def ping(address: str) -> bool:
        client = await RpcClient.connect(address, timeout_s=timeout_s)
        try:
            reply = await client.request({"message-type": "ping"})
        except RpcTimeout:
            return False
        finally:
            await client.close()
        return reply.header.get("result") == "success"

    async def ping_every_service() -> list[str]:
        services = [
            (f"{node['name']}-{service}", node[service])
            for node in cluster.nodes
            for service in ("writer", "reader")
        ]
        answers = await asyncio.gather(*(ping(address) for _, address in services))
        return [name for (name, _), answered in zip(services, answers, strict=True) if not answered]

    # A thread of its own, so that no event loop of pytest-asyncio is touched.
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, ping_every_service()).result()


def _alive(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return False
    return b"services." in cmdline


def _gateway_sees_all_up(cluster: LocalCluster) -> bool:
    try:
        with urllib.request.urlopen(f"{cluster.gateway['url']}/-/health", timeout=5) as response:
            health = json.load(response)
    except OSError:  # URLError, HTTPError (503), refused connection
        return False
    return all(all(node.values()) for node in health.get("nodes", {}).values())


def restore_unresponsive(cluster: LocalCluster) -> list[str]:
    """SIGKILL and restart every storage service that does not answer; wait for the gateway.

    Returns the services that were restarted.
    """
    silent = _ping_all(cluster, timeout_s=5)
    for name in silent:
        pid = cluster.pid(name)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
    for node in sorted({name.rsplit("-", 1)[0] for name in silent}):
        cluster.local("start-node", node)
    deadline = time.monotonic() + 30
    while not _gateway_sees_all_up(cluster):
        assert time.monotonic() < deadline, "the gateway still reports storage services down"
        time.sleep(0.1)  # poll interval of the gateway's health endpoint
    return silent


@pytest.fixture(autouse=True)
def responsive_cluster(local_cluster: LocalCluster) -> Iterator[None]:
    """Each test starts on, and leaves, a cluster whose services all answer."""
    restarted = restore_unresponsive(local_cluster)
    if restarted:
        warnings.warn(
            f"storage services not answering before this test, restarted: {restarted}",
            stacklevel=1,
        )
    yield
    restarted = restore_unresponsive(local_cluster)
    if restarted:
        pytest.fail(
            f"storage services stopped answering during this test (restarted since): {restarted}",
            pytrace=False,
        )


# ---------------------------------------------------------------------------
# aws CLI


def aws_cli(cluster: LocalCluster, workdir: Path) -> Program:
    executable = find_program(
        "aws", "it comes with the Python dev dependencies (awscli): run ./scripts/install"
    )
    config_file = workdir / "aws-config"
    config_file.write_text("")  # the CLI's defaults: 8 MiB parts, 10 requests at once
    env = base_env(workdir / "home") | {
        "AWS_ACCESS_KEY_ID": cluster.gateway["access_key"],
        "AWS_SECRET_ACCESS_KEY": cluster.gateway["secret_key"],
        "AWS_DEFAULT_REGION": cluster.gateway["region"],
        "AWS_CONFIG_FILE": str(config_file),
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
        "AWS_PAGER": "",
    }
    return Program("aws", executable, env, GatewayLog(cluster), workdir)


class Aws:
    def __init__(self, program: Program, endpoint: str) -> None:
        self.program = program
        self.endpoint = endpoint

    def __call__(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        return self.program.run("--endpoint-url", self.endpoint, *args, ok=ok)

    def api(self, *args: str) -> Any:
        return self.program.json(
            "--endpoint-url", self.endpoint, "--output", "json", "s3api", *args
        )

    def buckets(self) -> list[str]:
        return [line.split()[-1] for line in self("s3", "ls").stdout.splitlines() if line.strip()]

    def listing(self, url: str, *options: str) -> tuple[dict[str, int], list[str]]:
        """``aws s3 ls``: {key: size} and the ``PRE`` prefixes."""
        objects: dict[str, int] = {}
        prefixes: list[str] = []
        for line in self("s3", "ls", url, *options).stdout.splitlines():
            if not line.strip():
                continue
            if line.split()[0] == "PRE":
                prefixes.append(line.split(maxsplit=1)[1])
                continue
            _date, _time, size, key = line.split(maxsplit=3)
            objects[key] = int(size)
        return objects, prefixes


def test_aws_cli_cp_ls_rm(
    local_cluster: LocalCluster, payloads: dict[str, Payload], workdir: Path
) -> None:
    aws = Aws(aws_cli(local_cluster, workdir), local_cluster.gateway["url"])
    bucket = unique_bucket("aws")
    keys = {"empty": "empty", "kib": "dir/kib", "big": "big"}
    aws("s3", "mb", f"s3://{bucket}")
    assert bucket in aws.buckets()

    for name, key in keys.items():
        aws("s3", "cp", "--no-progress", str(payloads[name].path), f"s3://{bucket}/{key}")
    # The 100 MiB upload went multipart, with the CLI's default 8 MiB parts.
    head = aws.api("head-object", "--bucket", bucket, "--key", "big")
    assert head["ContentLength"] == BIG_SIZE
    assert head["ETag"].strip('"').endswith(f"-{AWS_CLI_PARTS}"), head["ETag"]

    top, prefixes = aws.listing(f"s3://{bucket}")
    assert top == {"empty": 0, "big": BIG_SIZE}
    assert prefixes == ["dir/"]
    everything, _ = aws.listing(f"s3://{bucket}", "--recursive")
    assert everything == {key: payloads[name].size for name, key in keys.items()}
    # One key per page: the CLI follows the continuation tokens.
    assert aws.listing(f"s3://{bucket}", "--recursive", "--page-size", "1")[0] == everything

    for name, key in keys.items():
        target = workdir / "down" / name
        aws("s3", "cp", "--no-progress", f"s3://{bucket}/{key}", str(target))
        assert sha256_of(target) == payloads[name].sha256, name

    aws("s3", "rm", f"s3://{bucket}/empty")
    assert set(aws.listing(f"s3://{bucket}", "--recursive")[0]) == {"dir/kib", "big"}
    removed = aws("s3", "rm", f"s3://{bucket}", "--recursive").stdout
    assert f"delete: s3://{bucket}/dir/kib" in removed
    assert f"delete: s3://{bucket}/big" in removed
    assert aws.listing(f"s3://{bucket}", "--recursive") == ({}, [])
    aws("s3", "rb", f"s3://{bucket}")
    assert bucket not in aws.buckets()


def _write_tree(root: Path) -> None:
    files = {
        "a.txt": b"a" * 10,
        "empty": b"",
        "sub/b.bin": os.urandom(KIB),
        "sub/with space+plus.txt": b"spaces and a plus sign\n",
        "sub/deeper/c.bin": os.urandom(70 * KIB),
        "sub/deeper/d.bin": os.urandom(300 * KIB),
        "\u00fcn\u00efcode/\u00e7 \u00f8.txt": b"unicode key\n",
        "z/last": os.urandom(5 * KIB),
        # Characters that must survive URL encoding, signing and XML listings.
        "odd/100%25 #1 ?&=;@$,~'()!*[]{}^`|<>\"": b"odd characters\n",
    }
    for relative, data in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def test_aws_cli_sync(local_cluster: LocalCluster, workdir: Path) -> None:
    aws = Aws(aws_cli(local_cluster, workdir), local_cluster.gateway["url"])
    bucket = unique_bucket("aws-sync")
    source, copy = workdir / "source", workdir / "copy"
    _write_tree(source)
    expected = tree_digests(source)
    aws("s3", "mb", f"s3://{bucket}")
    aws("s3", "sync", "--no-progress", str(source), f"s3://{bucket}/tree")
    listed, _ = aws.listing(f"s3://{bucket}/tree/", "--recursive")
    assert set(listed) == {f"tree/{relative}" for relative in expected}

    aws("s3", "sync", "--no-progress", f"s3://{bucket}/tree", str(copy))
    assert tree_digests(copy) == expected

    # Nothing changed: a second sync uploads nothing.
    again = aws("s3", "sync", "--no-progress", str(source), f"s3://{bucket}/tree")
    assert again.stdout.strip() == ""

    # A file deleted locally goes away remotely with --delete.
    (source / "a.txt").unlink()
    deleted = aws("s3", "sync", "--no-progress", "--delete", str(source), f"s3://{bucket}/tree")
    assert f"delete: s3://{bucket}/tree/a.txt" in deleted.stdout
    assert "tree/a.txt" not in aws.listing(f"s3://{bucket}", "--recursive")[0]

    aws("s3", "rm", "--recursive", f"s3://{bucket}")
    aws("s3", "rb", f"s3://{bucket}")


def _etag(value: str) -> str:
    return value.strip('"')


def test_aws_cli_s3api(
    local_cluster: LocalCluster, payloads: dict[str, Payload], workdir: Path
) -> None:
    aws = Aws(aws_cli(local_cluster, workdir), local_cluster.gateway["url"])
    bucket = unique_bucket("aws-api")
    aws.api("create-bucket", "--bucket", bucket)
    assert bucket in [b["Name"] for b in aws.api("list-buckets")["Buckets"]]

    for name in ("empty", "kib"):
        put = aws.api(
            "put-object",
            "--bucket",
            bucket,
            "--key",
            f"small/{name}",
            "--body",
            str(payloads[name].path),
            "--content-type",
            "text/plain",
            "--metadata",
            f"origin=s3api,name={name}",
        )
        assert _etag(put["ETag"]) == payloads[name].md5
        head = aws.api("head-object", "--bucket", bucket, "--key", f"small/{name}")
        assert head["ContentLength"] == payloads[name].size
        assert _etag(head["ETag"]) == payloads[name].md5
        assert head["ContentType"] == "text/plain"
        assert head["Metadata"] == {"origin": "s3api", "name": name}

    # The 100 MiB object by hand: four 25 MiB parts.
    big = payloads["big"]
    upload_id = aws.api("create-multipart-upload", "--bucket", bucket, "--key", "big")["UploadId"]
    parts, part_md5s = [], []
    with big.path.open("rb") as source:
        for number in range(1, 5):
            data = source.read(25 * MIB)
            part_file = workdir / f"part{number}"
            part_file.write_bytes(data)
            part_md5s.append(hashlib.md5(data).digest())
            uploaded = aws.api(
                "upload-part",
                "--bucket",
                bucket,
                "--key",
                "big",
                "--upload-id",
                upload_id,
                "--part-number",
                str(number),
                "--body",
                str(part_file),
            )
            part_file.unlink()
            assert _etag(uploaded["ETag"]) == part_md5s[-1].hex()
            parts.append({"ETag": uploaded["ETag"], "PartNumber": number})
    completed = aws.api(
        "complete-multipart-upload",
        "--bucket",
        bucket,
        "--key",
        "big",
        "--upload-id",
        upload_id,
        "--multipart-upload",
        json.dumps({"Parts": parts}),
    )
    expected_etag = f"{hashlib.md5(b''.join(part_md5s)).hexdigest()}-4"
    assert _etag(completed["ETag"]) == expected_etag
    assert _etag(aws.api("head-object", "--bucket", bucket, "--key", "big")["ETag"]) == (
        expected_etag
    )

    listed = aws.api("list-objects-v2", "--bucket", bucket)
    assert {o["Key"]: o["Size"] for o in listed["Contents"]} == {
        "small/empty": 0,
        "small/kib": KIB,
        "big": BIG_SIZE,
    }
    under_small = aws.api("list-objects-v2", "--bucket", bucket, "--prefix", "small/")
    assert [o["Key"] for o in under_small["Contents"]] == ["small/empty", "small/kib"]
    by_folder = aws.api("list-objects-v2", "--bucket", bucket, "--delimiter", "/")
    assert [o["Key"] for o in by_folder["Contents"]] == ["big"]
    assert by_folder["CommonPrefixes"] == [{"Prefix": "small/"}]

    for name, key in (("empty", "small/empty"), ("kib", "small/kib"), ("big", "big")):
        target = workdir / f"got-{name}"
        got = aws.api("get-object", "--bucket", bucket, "--key", key, str(target))
        assert got["ContentLength"] == payloads[name].size
        assert sha256_of(target) == payloads[name].sha256, name
        target.unlink()

    for key in ("small/empty", "small/kib", "big"):
        aws.api("delete-object", "--bucket", bucket, "--key", key)
    missing = aws("s3api", "head-object", "--bucket", bucket, "--key", "small/kib", ok=False)
    assert missing.returncode != 0 and "404" in missing.stderr, missing.stderr
    assert "Contents" not in aws.api("list-objects-v2", "--bucket", bucket)
    aws.api("delete-bucket", "--bucket", bucket)
    assert bucket not in [b["Name"] for b in aws.api("list-buckets")["Buckets"]]


# ---------------------------------------------------------------------------
# s3cmd


def s3cmd(cluster: LocalCluster, workdir: Path) -> Program:
    executable = find_program(
        "s3cmd", "it comes with the Python dev dependencies (s3cmd): run ./scripts/install"
    )
    host = cluster.gateway["url"].removeprefix("http://")
    config = workdir / "s3cfg"
    # host_bucket without %(bucket)s: path-style requests to the gateway itself.
    config.write_text(
        "[default]\n"
        f"access_key = {cluster.gateway['access_key']}\n"
        f"secret_key = {cluster.gateway['secret_key']}\n"
        f"host_base = {host}\n"
        f"host_bucket = {host}\n"
        f"bucket_location = {cluster.gateway['region']}\n"
        "use_https = False\n"
        "signature_v2 = False\n"
    )
    env = base_env(workdir / "home")
    return Program(
        "s3cmd", executable, env, GatewayLog(cluster), workdir, ("--config", str(config))
    )


def _s3cmd_listing(output: str) -> tuple[dict[str, int], list[str]]:
    """``s3cmd ls``: {url: size} and the ``DIR`` prefixes."""
    objects: dict[str, int] = {}
    dirs: list[str] = []
    for line in output.splitlines():
        fields = line.split()
        if not fields:
            continue
        if fields[0] == "DIR":
            dirs.append(fields[1])
        else:
            _date, _time, size, url = line.split(maxsplit=3)
            objects[url] = int(size)
    return objects, dirs


def test_s3cmd(local_cluster: LocalCluster, payloads: dict[str, Payload], workdir: Path) -> None:
    cmd = s3cmd(local_cluster, workdir)
    bucket = unique_bucket("s3cmd")
    keys = {"empty": "empty", "kib": "dir/kib", "big": "big"}
    cmd.run("mb", f"s3://{bucket}")
    assert f"s3://{bucket}" in cmd.run("ls").stdout.split()

    for name, key in keys.items():
        cmd.run("put", str(payloads[name].path), f"s3://{bucket}/{key}")
    # The 100 MiB file went up in s3cmd's default 15 MiB parts.
    etag = local_cluster.s3().head_object(Bucket=bucket, Key="big")["ETag"]
    assert etag.strip('"').endswith(f"-{S3CMD_PARTS}"), etag

    top, dirs = _s3cmd_listing(cmd.run("ls", f"s3://{bucket}").stdout)
    assert top == {f"s3://{bucket}/empty": 0, f"s3://{bucket}/big": BIG_SIZE}
    assert dirs == [f"s3://{bucket}/dir/"]
    everything, _ = _s3cmd_listing(cmd.run("ls", "--recursive", f"s3://{bucket}").stdout)
    assert everything == {f"s3://{bucket}/{key}": payloads[name].size for name, key in keys.items()}

    for name, key in keys.items():
        target = workdir / "down" / name
        target.parent.mkdir(exist_ok=True)
        cmd.run("get", f"s3://{bucket}/{key}", str(target))
        assert sha256_of(target) == payloads[name].sha256, name

    not_empty = cmd.run("rb", f"s3://{bucket}", ok=False)
    assert not_empty.returncode != 0 and "BucketNotEmpty" in not_empty.stderr, not_empty.stderr
    for key in keys.values():
        cmd.run("del", f"s3://{bucket}/{key}")
    assert cmd.run("ls", "--recursive", f"s3://{bucket}").stdout.strip() == ""
    cmd.run("rb", f"s3://{bucket}")
    assert f"s3://{bucket}" not in cmd.run("ls").stdout.split()


# ---------------------------------------------------------------------------
# rclone


def rclone(cluster: LocalCluster, workdir: Path) -> Program:
    executable = find_program(
        "rclone", "it is a Debian package: run ./scripts/install-clients (apt-get install rclone)"
    )
    env = base_env(workdir / "home") | {
        "RCLONE_CONFIG": "/dev/null",
        "RCLONE_CONFIG_NIMBUS_TYPE": "s3",
        "RCLONE_CONFIG_NIMBUS_PROVIDER": "Other",
        "RCLONE_CONFIG_NIMBUS_ENDPOINT": cluster.gateway["url"],
        "RCLONE_CONFIG_NIMBUS_ACCESS_KEY_ID": cluster.gateway["access_key"],
        "RCLONE_CONFIG_NIMBUS_SECRET_ACCESS_KEY": cluster.gateway["secret_key"],
        "RCLONE_CONFIG_NIMBUS_REGION": cluster.gateway["region"],
        "RCLONE_CONFIG_NIMBUS_FORCE_PATH_STYLE": "true",
    }
    return Program("rclone", executable, env, GatewayLog(cluster), workdir)


def _rclone_buckets(program: Program) -> list[str]:
    return [line.split()[-1] for line in program.run("lsd", "nimbus:").stdout.splitlines()]


def _rclone_sizes(program: Program, remote: str) -> dict[str, int]:
    sizes: dict[str, int] = {}
    for line in program.run("ls", remote).stdout.splitlines():
        size, path = line.strip().split(maxsplit=1)
        sizes[path] = int(size)
    return sizes


def test_rclone(local_cluster: LocalCluster, payloads: dict[str, Payload], workdir: Path) -> None:
    rc = rclone(local_cluster, workdir)
    bucket = unique_bucket("rclone")
    keys = {"empty": "empty", "kib": "dir/kib", "big": "big"}
    local = workdir / "local"
    for name, key in keys.items():
        (local / key).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(payloads[name].path, local / key)

    rc.run("mkdir", f"nimbus:{bucket}")
    assert bucket in _rclone_buckets(rc)

    # One object at a time, then the whole directory (rclone's default 4 transfers).
    for name, key in keys.items():
        rc.run("copyto", str(payloads[name].path), f"nimbus:{bucket}/one-by-one/{key}")
    rc.run("copy", str(local), f"nimbus:{bucket}/directory")

    expected = {key: payloads[name].size for name, key in keys.items()}
    for folder in ("one-by-one", "directory"):
        assert _rclone_sizes(rc, f"nimbus:{bucket}/{folder}") == expected
        # Hashes compared object by object (rclone reads the md5 of each object).
        rc.run("check", str(local), f"nimbus:{bucket}/{folder}")
    # Listed in pages of one key (rclone follows the markers).
    paged = rc.run("lsf", "--recursive", "--s3-list-chunk", "1", f"nimbus:{bucket}/directory")
    assert sorted(paged.stdout.split()) == ["big", "dir/", "dir/kib", "empty"]
    flat = rc.run("lsf", f"nimbus:{bucket}/one-by-one").stdout.split()
    assert sorted(flat) == ["big", "dir/", "empty"]
    recursive = rc.run("lsf", "--recursive", "--files-only", f"nimbus:{bucket}").stdout.split()
    assert sorted(recursive) == sorted(
        f"{folder}/{key}" for folder in ("one-by-one", "directory") for key in keys.values()
    )

    for name, key in keys.items():
        target = workdir / "down" / name
        rc.run("copyto", f"nimbus:{bucket}/one-by-one/{key}", str(target))
        assert sha256_of(target) == payloads[name].sha256, name
    rc.run("copy", f"nimbus:{bucket}/directory", str(workdir / "directory-copy"))
    assert tree_digests(workdir / "directory-copy") == tree_digests(local)

    rc.run("delete", f"nimbus:{bucket}/one-by-one")
    assert _rclone_sizes(rc, f"nimbus:{bucket}") == {
        f"directory/{key}": size for key, size in expected.items()
    }
    not_empty = rc.run("rmdir", f"nimbus:{bucket}", ok=False)
    assert not_empty.returncode != 0 and "BucketNotEmpty" in not_empty.stderr
    rc.run("purge", f"nimbus:{bucket}")
    assert bucket not in _rclone_buckets(rc)

    # rmdir of a bucket that is empty.
    other = unique_bucket("rclone")
    rc.run("mkdir", f"nimbus:{other}")
    rc.run("copyto", str(payloads["kib"].path), f"nimbus:{other}/kib")
    rc.run("deletefile", f"nimbus:{other}/kib")
    rc.run("rmdir", f"nimbus:{other}")
    assert other not in _rclone_buckets(rc)


# ---------------------------------------------------------------------------
# curl --aws-sigv4


def curl(cluster: LocalCluster, workdir: Path) -> Program:
    executable = find_program(
        "curl", "it is a Debian package: run ./scripts/install-clients (apt-get install curl)"
    )
    version = subprocess.run(
        [executable, "--version"], capture_output=True, text=True, check=True
    ).stdout
    if (
        "--aws-sigv4"
        not in subprocess.run(
            [executable, "--help", "all"], capture_output=True, text=True, check=True
        ).stdout
    ):
        pytest.fail(f"curl has no --aws-sigv4 (7.75 or newer needed): {version.splitlines()[0]}")
    return Program("curl", executable, base_env(workdir / "home"), GatewayLog(cluster), workdir)


@dataclass
class CurlResponse:
    status: int
    headers: dict[str, str]
    body: bytes


class Curl:
    """``curl --aws-sigv4`` as a user types it.

    curl 7.88 (Debian 12) signs requests for service ``s3`` but, unlike newer
    curls, sends no ``x-amz-content-sha256`` header, which S3 requires of every
    SigV4 request (without it the answer is 400 InvalidRequest, checked below):
    so each request adds ``x-amz-content-sha256: UNSIGNED-PAYLOAD``, which curl
    then signs like any ``x-amz-*`` header. curl 7.88 also signs the query
    string as written, so URLs here are already canonical (parameters sorted,
    values percent-encoded: ``?list-type=2&prefix=dir%2F``) and keys use only
    unreserved characters.
    """

    def __init__(self, program: Program, cluster: LocalCluster, workdir: Path) -> None:
        self.program = program
        self.url = cluster.gateway["url"]
        self.auth = [
            "--aws-sigv4",
            f"aws:amz:{cluster.gateway['region']}:s3",
            "--user",
            f"{cluster.gateway['access_key']}:{cluster.gateway['secret_key']}",
        ]
        self.headers_file = workdir / "curl-headers"
        self.body_file = workdir / "curl-body"

    def __call__(
        self, path: str, *args: str, unsigned_payload: bool = True, output: Path | None = None
    ) -> CurlResponse:
        extra = ["-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD"] if unsigned_payload else []
        target = output or self.body_file
        for stale in (self.headers_file, target):
            stale.unlink(missing_ok=True)
        result = self.program.run(
            "--silent",
            "--show-error",
            *self.auth,
            *extra,
            "--dump-header",
            str(self.headers_file),
            "--output",
            str(target),
            "--write-out",
            "%{http_code}",
            *args,
            f"{self.url}{path}",
        )
        headers: dict[str, str] = {}
        for line in self.headers_file.read_text(errors="replace").splitlines()[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        body = b"" if output is not None or not target.exists() else target.read_bytes()
        return CurlResponse(int(result.stdout.strip()), headers, body)


def _list_v2(body: bytes) -> dict[str, int]:
    root = ET.fromstring(body)
    return {
        contents.findtext(f"{S3_NS}Key", ""): int(contents.findtext(f"{S3_NS}Size", "-1"))
        for contents in root.iter(f"{S3_NS}Contents")
    }


def test_curl_aws_sigv4(
    local_cluster: LocalCluster, payloads: dict[str, Payload], workdir: Path
) -> None:
    http = Curl(curl(local_cluster, workdir), local_cluster, workdir)
    bucket = unique_bucket("curl")
    keys = {"empty": "empty", "kib": "dir/kib", "big": "big"}

    # Why the extra header: without it, the request is refused as S3 refuses it.
    refused = http("/", unsigned_payload=False)
    assert refused.status == 400 and b"x-amz-content-sha256" in refused.body, refused

    # A PUT must say how long its body is (411 MissingContentLength otherwise).
    created = http(f"/{bucket}", "-X", "PUT", "-H", "Content-Length: 0")
    assert created.status == 200, created
    listed = http("/")
    assert listed.status == 200, listed
    names = [e.text for e in ET.fromstring(listed.body).iter(f"{S3_NS}Name")]
    assert bucket in names

    for name, key in keys.items():
        put = http(f"/{bucket}/{key}", "--upload-file", str(payloads[name].path))
        assert put.status == 200, put
        assert put.headers["etag"].strip('"') == payloads[name].md5

    everything = http(f"/{bucket}?list-type=2")
    assert everything.status == 200, everything
    assert _list_v2(everything.body) == {key: payloads[name].size for name, key in keys.items()}
    under_dir = http(f"/{bucket}?list-type=2&prefix=dir%2F")
    assert _list_v2(under_dir.body) == {"dir/kib": KIB}

    for name, key in keys.items():
        head = http(f"/{bucket}/{key}", "--head")
        assert head.status == 200, head
        assert int(head.headers["content-length"]) == payloads[name].size
        assert head.headers["etag"].strip('"') == payloads[name].md5
        target = workdir / f"got-{name}"
        got = http(f"/{bucket}/{key}", output=target)
        assert got.status == 200, got
        assert sha256_of(target) == payloads[name].sha256, name

    # A range that straddles the first 1 MiB boundary of the 100 MiB object.
    ranged = http(f"/{bucket}/big", "--range", f"{MIB - 10}-{MIB + 9}")
    assert ranged.status == 206, ranged
    assert ranged.headers["content-range"] == f"bytes {MIB - 10}-{MIB + 9}/{BIG_SIZE}"
    with payloads["big"].path.open("rb") as f:
        f.seek(MIB - 10)
        assert ranged.body == f.read(20)

    for key in keys.values():
        deleted = http(f"/{bucket}/{key}", "-X", "DELETE")
        assert deleted.status == 204, deleted
    gone = http(f"/{bucket}/dir/kib")
    assert gone.status == 404 and b"<Code>NoSuchKey</Code>" in gone.body, gone
    assert _list_v2(http(f"/{bucket}?list-type=2").body) == {}
    dropped = http(f"/{bucket}", "-X", "DELETE")
    assert dropped.status == 204, dropped
    assert http(f"/{bucket}?list-type=2").status == 404
