"""Loaded by every Python process started with this folder on PYTHONPATH: no network but loopback.

Tests put this folder first on ``PYTHONPATH`` (``tests.conftest.offline_env``) so that the pipeline,
Snakemake and every process they spawn (job scripts, vLLM workers) run with outbound network refused,
whatever ``HF_HUB_OFFLINE`` says. A connection, datagram or name lookup to anything but loopback or a
Unix socket raises ``OSError`` (ENETUNREACH), as on a machine without a network, and is appended to
the JSON-lines file ``$PIPELINE_NETWORK_LOG`` with the process's command line; every process also
records that it loaded the blocker, so a test can tell that the blocker was in force.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import os
import socket
import sys

_LOG = os.environ.get("PIPELINE_NETWORK_LOG")
_LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"}


def _record(event: str, target: object) -> None:
    if _LOG:
        line = json.dumps({"event": event, "target": repr(target), "pid": os.getpid(), "argv": sys.argv[:3]})
        with open(_LOG, "a") as f:
            f.write(line + "\n")


def _is_loopback(host: object) -> bool:
    if host is None:
        return True  # getaddrinfo(None, port): the local host
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    host = str(host).split("%")[0]
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _refuse(event: str, target: object) -> OSError:
    _record(event, target)
    return OSError(errno.ENETUNREACH, f"network blocked by tests/offline/sitecustomize.py: {event} {target!r}")


def _checked(address: object, family: int) -> None:
    if family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address[0]):  # type: ignore[index]
        raise _refuse("connect", address)


_connect, _connect_ex, _sendto = socket.socket.connect, socket.socket.connect_ex, socket.socket.sendto
_getaddrinfo = socket.getaddrinfo
_gethostbyname, _gethostbyname_ex = socket.gethostbyname, socket.gethostbyname_ex


def connect(self: socket.socket, address: object) -> None:
    _checked(address, self.family)
    return _connect(self, address)


def connect_ex(self: socket.socket, address: object) -> int:
    _checked(address, self.family)
    return _connect_ex(self, address)


def sendto(self: socket.socket, data: bytes, *args: object) -> int:
    _checked(args[-1], self.family)
    return _sendto(self, data, *args)


def getaddrinfo(host: object, *args: object, **kwargs: object) -> list:
    if not _is_loopback(host):
        raise _refuse("lookup", host)
    return _getaddrinfo(host, *args, **kwargs)


def gethostbyname(host: str) -> str:
    if not _is_loopback(host):
        raise _refuse("lookup", host)
    return _gethostbyname(host)


def gethostbyname_ex(host: str) -> tuple:
    if not _is_loopback(host):
        raise _refuse("lookup", host)
    return _gethostbyname_ex(host)


socket.socket.connect = connect  # type: ignore[method-assign]
socket.socket.connect_ex = connect_ex  # type: ignore[method-assign]
socket.socket.sendto = sendto  # type: ignore[method-assign]
socket.getaddrinfo = getaddrinfo
socket.gethostbyname = gethostbyname
socket.gethostbyname_ex = gethostbyname_ex
_record("loaded", None)
