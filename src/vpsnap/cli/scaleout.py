"""The scale-out processes (docs/scale-out.md): ``vpsnap api``, ``vpsnap agent``,
``vpsnap scheduler`` and ``vpsnap migrate``. The CLI commands parse options and call these.

Each process stops cleanly on SIGTERM or SIGINT: the API stops accepting requests, the agent
lets running jobs finish within the shutdown grace and hands the rest back, a scheduler releases
its lock at once (a standby takes over).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Iterator

import structlog
import uvicorn

from vpsnap.api.app import create_app
from vpsnap.logging import configure_logging
from vpsnap.runtime import Role, Runtime
from vpsnap.settings import Settings
from vpsnap.store import migrate

log = structlog.get_logger("vpsnap.process")


class Server(uvicorn.Server):
    """uvicorn without its own signal handling.

    uvicorn re-raises a captured SIGTERM once ``serve()`` returns, which ends the process
    before vpsnap's own shutdown (a worker's grace, releasing locks) runs. vpsnap's processes
    install their handlers themselves (``stop_on_signals``).
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def http_server(runtime: Runtime, settings: Settings) -> Server:
    config = uvicorn.Config(
        create_app(runtime.services, settings),
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,  # the edge middleware logs every request as JSON
        lifespan="off",
        proxy_headers=False,  # forwarded headers are the edge's business (trusted proxies only)
    )
    return Server(config)


@contextlib.contextmanager
def stop_on_signals(stopping: asyncio.Event, server: Server | None = None) -> Iterator[None]:
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


async def run_api(settings: Settings) -> None:
    """``vpsnap api``: HTTP only, stateless; refuses to start unless the schema is current."""
    configure_logging(settings.log_level)
    runtime = Runtime.build(settings, role=Role.API)
    server = http_server(runtime, settings)
    stopping = asyncio.Event()
    with stop_on_signals(stopping, server):
        async with runtime.api_process():
            log.info("api_started", host=settings.host, port=settings.port)
            await server.serve()


async def run_agent(settings: Settings) -> None:
    """``vpsnap agent --node NAME``: its node's jobs, VMs, reconciliation and observations."""
    configure_logging(settings.log_level)
    runtime = Runtime.build(settings, role=Role.AGENT)
    stopping = asyncio.Event()
    with stop_on_signals(stopping):
        await runtime.run_agent(stopping)


async def run_scheduler(settings: Settings) -> None:
    """``vpsnap scheduler``: active or standby, until stopped."""
    configure_logging(settings.log_level)
    runtime = Runtime.build(settings, role=Role.SCHEDULER)
    stopping = asyncio.Event()
    with stop_on_signals(stopping):
        await runtime.run_scheduler_process(stopping)


async def run_migrate(settings: Settings) -> tuple[str | None, str]:
    """``vpsnap migrate``: bring the database to this vpsnap's schema; returns (before, after)."""
    runtime = Runtime.build(settings, role=Role.ADMIN)
    try:
        before = await migrate.current_revision(runtime.store.engine)
        await migrate.upgrade(runtime.store.engine)
        return before, migrate.head_revision()
    finally:
        await runtime.close()
