"""The scale-out processes (docs/scale-out.md): ``vpsnap api``, ``vpsnap agent``,
``vpsnap scheduler`` and ``vpsnap migrate``. The CLI commands parse options and call these.

Each process stops cleanly on SIGTERM or SIGINT: the API stops accepting requests, the agent
lets running jobs finish within the shutdown grace and hands the rest back, a scheduler releases
its lock at once (a standby takes over).
"""

from __future__ import annotations

import asyncio

import structlog

from vpsnap.api.app import create_app
from vpsnap.cli.health import health_endpoint
from vpsnap.cli.heap import resume_collector
from vpsnap.cli.processes import http_server, stop_on_signals
from vpsnap.logging import configure_logging
from vpsnap.runtime import Role, Runtime
from vpsnap.settings import Settings
from vpsnap.store import migrate

log = structlog.get_logger("vpsnap.process")


async def run_api(settings: Settings) -> None:
    """``vpsnap api``: HTTP only, stateless; refuses to start unless the schema is current."""
    configure_logging(settings.log_level, settings.log_format)
    runtime = Runtime.build(settings, role=Role.API)
    app = create_app(runtime.services, settings)
    server = http_server(app, settings)
    stopping = asyncio.Event()
    with stop_on_signals(stopping, server):
        async with runtime.api_process():
            # Everything the start-up made lives as long as the process (cli/heap.py).
            resume_collector(freeze=True)
            log.info("api_started", host=settings.host, port=settings.port)
            try:
                await server.serve()
            finally:
                await app.state.rate_limits.counter.close()


async def run_agent(settings: Settings) -> None:
    """``vpsnap agent --node NAME``: its node's jobs, VMs, reconciliation and observations
    (and ``/healthz``, ``/readyz`` on ``settings.health_port`` when set)."""
    configure_logging(settings.log_level, settings.log_format)
    runtime = Runtime.build(settings, role=Role.AGENT)
    stopping = asyncio.Event()
    with stop_on_signals(stopping):
        async with health_endpoint(runtime, settings.health_port):
            await runtime.run_agent(stopping)


async def run_scheduler(settings: Settings) -> None:
    """``vpsnap scheduler``: active or standby, until stopped (and ``/healthz``, ``/readyz``
    on ``settings.health_port`` when set)."""
    configure_logging(settings.log_level, settings.log_format)
    runtime = Runtime.build(settings, role=Role.SCHEDULER)
    stopping = asyncio.Event()
    with stop_on_signals(stopping):
        async with health_endpoint(runtime, settings.health_port):
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
