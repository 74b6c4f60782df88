"""``/healthz`` and ``/readyz`` of the processes without an HTTP API (``vpsnap agent
--health-port``, ``vpsnap scheduler --health-port``): a tiny Starlette app on uvicorn, both
already the API's, so a supervisor, a load balancer or Kubernetes can ask them the same
questions as an API process (docs/scale-out.md, "Health checks").

``/healthz``: the process runs (200). ``/readyz``: its dependencies answer, 503 naming the one
that does not — for an agent the database, the hypervisor and that it holds its node (a second
agent started for a node already served is refused and never ready); for a scheduler the
database, with ``role`` saying whether it is the active one or a standby (both are ready: a
standby is doing its job).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import structlog
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from vpsnap.cli.processes import http_server, no_nagle
from vpsnap.domain.errors import ProcessRefused
from vpsnap.runtime import Role, Runtime

log = structlog.get_logger("vpsnap.process")

Report = tuple[dict[str, str], dict[str, str]]
"""(checks, each ``ok`` or why not; facts about the process, e.g. ``role``)."""


def health_app(report: Callable[[], Awaitable[Report]]) -> Starlette:
    async def healthz(_: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def readyz(_: Request) -> JSONResponse:
        checks, facts = await report()
        ready = all(value == "ok" for value in checks.values())
        return JSONResponse(
            {"status": "ok" if ready else "unavailable", "checks": checks, **facts},
            status_code=200 if ready else 503,
        )

    return Starlette(
        routes=[Route("/healthz", healthz), Route("/readyz", readyz)],
    )


def process_report(runtime: Runtime) -> Callable[[], Awaitable[Report]]:
    """What an agent's or a scheduler's ``/readyz`` says about ``runtime``."""

    async def report() -> Report:
        checks = await runtime.services.readiness()  # database (+ hypervisor on an agent)
        facts: dict[str, str] = {"process": runtime.role.value}
        if runtime.role is Role.AGENT:
            facts["node"] = runtime.settings.node
            checks["node_lock"] = (
                "ok" if runtime.node_held else "unavailable: this agent does not hold its node"
            )
        elif runtime.role is Role.SCHEDULER:
            facts["role"] = "active" if runtime.active_scheduler else "standby"
        return checks, facts

    return report


@contextlib.asynccontextmanager
async def health_endpoint(runtime: Runtime, port: int | None) -> AsyncIterator[None]:
    """Serve the health endpoints on ``VPSNAP_HOST:port`` for the block's duration (nothing
    when ``port`` is None). Raises ``ProcessRefused`` when the port cannot be listened on."""
    if port is None:
        yield
        return
    # Bound here, not by uvicorn: uvicorn ends the whole process (SystemExit from inside a
    # task) when its port is taken; this way a taken port is a refusal with a message.
    host = runtime.settings.host
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        listener = socket.create_server((host, port), family=family)
        no_nagle(listener)
    except OSError as exc:
        raise ProcessRefused(
            f"cannot listen on {host}:{port} for health checks (--health-port): {exc.strerror}"
        ) from None
    server = http_server(health_app(process_report(runtime)), runtime.settings)
    serving = asyncio.create_task(server.serve(sockets=[listener]), name="health")
    log.info("health_endpoint_started", host=host, port=port)
    try:
        yield
    finally:
        server.should_exit = True
        await serving
        listener.close()
