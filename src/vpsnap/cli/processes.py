"""What every long-running vpsnap process shares: uvicorn without its own signal handling,
and SIGTERM/SIGINT turned into a clean stop.

uvicorn re-raises a captured SIGTERM once ``serve()`` returns, which ends the process before
vpsnap's own shutdown runs (the worker's grace for running jobs, releasing locks): a job in
flight would stay ``in_progress`` until the next start. vpsnap's processes install their
handlers themselves (``stop_on_signals``).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import uvicorn
from starlette.applications import Starlette

from vpsnap.settings import Settings

T = TypeVar("T")


def run_event_loop(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` for the long-running processes, on the standard event loop.

    Not uvloop, although uvicorn[standard] installs it: under uvloop a managed VM's launch never
    finished (QEMU's ``-daemonize`` parent exited, but the pipes of ``communicate()`` saw no
    end of file within the launch timeout: tests/client/test_whole_api.py
    ``test_power_actions_on_a_real_vm``), and the gain it bought was within the run-to-run noise
    of bench/scale.py (docs/performance.md, "uvloop").
    """
    return asyncio.run(main)


class Server(uvicorn.Server):
    """uvicorn without its own signal handling (see the module docstring)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@contextlib.contextmanager
def stop_on_signals(
    stopping: asyncio.Event, server: uvicorn.Server | None = None
) -> Iterator[None]:
    """SIGTERM and SIGINT set ``stopping`` (and stop ``server``) for the block's duration."""
    loop = asyncio.get_running_loop()

    def stop() -> None:
        stopping.set()
        if server is not None:
            server.should_exit = True

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop)
    try:
        yield
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)


def http_server(app: Starlette, settings: Settings) -> Server:
    """The uvicorn server of every vpsnap HTTP listener (``serve``, ``api``, the health port),
    listening on ``settings.host:settings.port`` unless ``serve(sockets=...)`` is given its own.

    Idle keep-alive connections are closed after ``settings.http_keepalive_seconds`` (75 s by
    default), not uvicorn's 5 s: the side that closes an idle connection must be the one whose
    timeout is longer, or a request sent on it just as the server closes it is lost (the client
    reads end of file; nginx answers such a POST with 502, it never resends one). httpx's pool
    forgets a connection after 5 s and nginx's upstream pool after 60 s
    (``keepalive_timeout``), both below 75 s (docs/operations.md, "TLS and the proxy in front").
    """
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,  # the edge middleware logs every request as JSON
        lifespan="off",
        # uvicorn would believe X-Forwarded-* from 127.0.0.1 by default; the app applies them
        # itself, from VPSNAP_FORWARDED_ALLOW_IPS only (api/app.py, api/trust.py).
        proxy_headers=False,
        timeout_keep_alive=settings.http_keepalive_seconds,
    )
    return Server(config)


def no_nagle(listener: socket.socket) -> None:
    """Switch Nagle's algorithm off for every connection ``listener`` accepts (Linux copies
    TCP_NODELAY to accepted sockets).

    asyncio sets TCP_NODELAY itself only on sockets whose ``proto`` is ``IPPROTO_TCP``, and
    ``socket.create_server`` makes them with ``proto`` 0: uvicorn writes a response's head and
    body in two sends, and Nagle held the second until the client's delayed ACK, ~40 ms on
    every answer (bench/snapshot_latency.py: +98-103 ms over bare qemu-img instead of ~+25).
    """
    listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
