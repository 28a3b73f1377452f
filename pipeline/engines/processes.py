"""Process helpers of the served engines: free ports, health checks, process groups, the watchdog.

Shared by the server client and supervisor (:mod:`pipeline.engines.server`) and the run's own server
(:mod:`pipeline.engines.run_server`), so that neither imports the other. Linux: processes are read
from ``/proc``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

log = logging.getLogger(__name__)


class ServerError(RuntimeError):
    """The server could not be reached or answered with an error."""


def wait_until_healthy(base_url: str, *, timeout: float, process: subprocess.Popen | None = None) -> None:
    """Poll ``/health`` until it answers 200; fail early if ``process`` dies."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise ServerError(f"the server exited with code {process.returncode} before it was ready")
        try:
            with urllib.request.urlopen(f"{base_url}/health", timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(1.0)
    raise ServerError(f"{base_url}/health did not answer within {timeout:.0f}s")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that nothing listens on now (the OS picks it: bind to port 0)."""
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def start_ticks(pid: int) -> int | None:
    """A process's start time (clock ticks since boot, /proc), or None when it does not exist.

    With the pid it identifies a process: a pid the kernel reused starts at another time.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def alive(pid: int, ticks: int | None = None) -> bool:
    """Whether process ``pid`` (started at ``ticks``, when given) still runs (zombies count as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    fields = stat.rsplit(")", 1)[1].split()
    return fields[0] != "Z" and (ticks is None or int(fields[19]) == ticks)


def group_members(pgid: int) -> list[int]:
    """The live processes of process group ``pgid`` (the server's session: supervisor, vLLM, workers)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def stop_group(pid: int, pgid: int, *, grace_s: float = 30.0, ticks: int | None = None) -> None:
    """SIGTERM the supervisor ``pid`` (it stops vLLM), then SIGKILL whatever of its group is left."""
    if alive(pid, ticks):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while group_members(pgid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if group_members(pgid):
        log.warning("run server: process group %d still running after %.0fs; killing it", pgid, grace_s)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while group_members(pgid) and time.monotonic() < deadline:
            time.sleep(0.1)


def watch(pid: int, ticks: int | None, *, interval_s: float = 2.0) -> None:
    """Return once process ``pid`` (started at ``ticks``) is gone: the supervisor's lifeline to its run."""
    while alive(pid, ticks):
        time.sleep(interval_s)
