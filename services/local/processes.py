"""Service processes of the local cluster: start detached, find, stop.

Each process is described by a :class:`ProcessSpec` (argv, environment, log
file) and, once started, by its pid and the kernel's start time of that pid,
so a recycled pid is never mistaken for our process and a zombie (killed but
not yet reaped) counts as stopped.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ProcessSpec:
    name: str
    argv: list[str]
    env: dict[str, str]
    log_file: str
    #: Readiness probe: a ZeroMQ endpoint that answers ping, or an HTTP URL.
    ready: str
    #: For a ZeroMQ probe: the ``service`` the ping reply must name (e.g.
    #: ``reader node03``), so that another process on that port never passes.
    ready_service: str = ""


@dataclass(frozen=True)
class Running:
    pid: int
    start_ticks: int


#: Ports this process has handed out: the kernel may offer a just-closed port
#: again, and two services of one cluster must never share one.
_handed_out: set[int] = set()


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now and not handed out before by this
    process (the caller binds it soon after)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            port: int = s.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def _stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start time in clock ticks) of ``pid``, or None if gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) may hold spaces; the rest follows its ')'.
    fields = raw[raw.rindex(")") + 2 :].split()
    return fields[0], int(fields[19])


def is_alive(proc: Running | None) -> bool:
    if proc is None:
        return False
    stat = _stat(proc.pid)
    return stat is not None and stat[0] not in ("Z", "X") and stat[1] == proc.start_ticks


def start(spec: ProcessSpec) -> Running:
    """Start ``spec`` in its own session, detached from the caller's terminal."""
    Path(spec.log_file).parent.mkdir(parents=True, exist_ok=True)
    with open(spec.log_file, "ab") as log:
        child = subprocess.Popen(
            spec.argv,
            env={**os.environ, **spec.env},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    stat = _stat(child.pid)
    return Running(child.pid, stat[1] if stat else 0)


def stop(procs: list[Running], timeout_s: float = 30.0) -> list[Running]:
    """SIGTERM all at once, wait up to ``timeout_s``, then SIGKILL the rest.

    Returns the processes that had to be killed.
    """
    alive = [proc for proc in procs if is_alive(proc)]
    for proc in alive:
        os.kill(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    killed = []
    for proc in alive:
        if not wait_gone(proc, max(0.0, deadline - time.monotonic())):
            os.kill(proc.pid, signal.SIGKILL)
            wait_gone(proc, 10.0)
            killed.append(proc)
    return killed


def wait_gone(proc: Running, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    delay = 0.01
    while is_alive(proc):
        if time.monotonic() > deadline:
            return False
        _reap(proc.pid)
        time.sleep(delay)  # polling a process table: there is nothing to await
        delay = min(delay * 2, 0.2)
    _reap(proc.pid)
    return True


def _reap(pid: int) -> None:
    """Collect our own child's exit status, if it is ours (else a no-op)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
