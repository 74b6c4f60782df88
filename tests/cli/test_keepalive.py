"""Idle keep-alive connections: the side that closes one must be the one that waits longest.

Kind (found by tests/system/test_load.py under CI load, ``httpx.ReadError``): uvicorn closed an
idle connection after its default 5 s, the same 5 s after which httpx's pool forgets one, and
nginx's upstream pool keeps one 60 s. A request sent on a connection the server is closing at
that moment is lost: the client reads end of file, and nginx answers such a POST with 502 (it
never resends one). Invariant: every vpsnap HTTP listener keeps an idle connection open longer
than any client pool we ship or document forgets it (``http_keepalive_seconds``, 75 s).
"""

from __future__ import annotations

import inspect
import re
import socket
import time
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette

from tests.live_server import ServerProcess
from vpsnap import localcluster
from vpsnap.cli.processes import http_server
from vpsnap.settings import Settings

NGINX_SITE = Path(__file__).resolve().parents[2] / "contrib" / "nginx" / "vpsnap.conf"
NGINX_UPSTREAM_TIMEOUT = re.compile(r"^\s*keepalive_timeout (\d+)s;", re.MULTILINE)


def test_every_listener_outlasts_the_client_pools_in_front_of_it() -> None:
    default = Settings().http_keepalive_seconds
    assert http_server(Starlette(), Settings()).config.timeout_keep_alive == default
    assert (
        http_server(Starlette(), Settings(http_keepalive_seconds=7)).config.timeout_keep_alive == 7
    )

    # httpx (the SDK, the CLI) forgets an idle connection after keepalive_expiry.
    expiry = httpx.Limits().keepalive_expiry
    assert expiry is not None
    assert default > expiry
    # nginx's upstream pools: the shipped site and the local cluster's balancer say it
    # explicitly (nginx's own default, 60 s, is what they say).
    for text in (NGINX_SITE.read_text(), inspect.getsource(localcluster)):
        timeouts = [int(t) for t in NGINX_UPSTREAM_TIMEOUT.findall(text)]
        assert timeouts, "the upstream block must set keepalive_timeout"
        assert all(t < default for t in timeouts), (timeouts, default)


def _request(sock: socket.socket) -> bytes:
    """One keep-alive GET /healthz on ``sock``; the answer's bytes (b"" if the server had
    closed the connection)."""
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    answer = b""
    while b"\r\n\r\n" not in answer or not answer.endswith(b"}"):
        chunk = sock.recv(4096)
        if not chunk:
            break
        answer += chunk
    return answer


def _closed_by_peer(sock: socket.socket, within: float) -> bool:
    sock.settimeout(within)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False


@pytest.mark.slow
@pytest.mark.qemu
def test_a_real_server_keeps_an_idle_connection_past_the_clients_expiry(tmp_path: Path) -> None:
    # Longer than httpx's 5 s and uvicorn's own default (5 s): the connection must still answer.
    (tmp_path / "default").mkdir()
    server = ServerProcess(tmp_path / "default", env={})
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            assert _request(sock).startswith(b"HTTP/1.1 200")
            assert not _closed_by_peer(sock, within=6.0)
            sock.settimeout(10)
            assert _request(sock).startswith(b"HTTP/1.1 200")
    finally:
        server.stop()

    # And the setting is what decides: 1 s closes it after about 1 s.
    (tmp_path / "short").mkdir()
    short = ServerProcess(tmp_path / "short", env={"VPSNAP_HTTP_KEEPALIVE_SECONDS": "1"})
    try:
        with socket.create_connection(("127.0.0.1", short.port), timeout=10) as sock:
            assert _request(sock).startswith(b"HTTP/1.1 200")
            started = time.monotonic()
            assert _closed_by_peer(sock, within=5.0)
            assert time.monotonic() - started >= 0.5
    finally:
        short.stop()
