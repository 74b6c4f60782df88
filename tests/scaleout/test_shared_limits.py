"""Rate limits in the real Redis on 127.0.0.1:6379, shared by two API apps (two ``create_app``,
each with its own Redis client, as two ``vpsnap api`` processes have), and what happens when
Redis goes away: requests are still answered (never 5xx), counted in each process's memory,
``/readyz`` says ``degraded``, and the shared budget applies again once Redis is back
(docs/scale-out.md, "When Redis is down").

Redis database 13 is this module's; every key it writes carries a client address of its own
(``ASGITransport(client=...)``) and is deleted at the end.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from limits import parse

from tests.conftest import api_settings
from tests.scaleout.tcp_proxy import TcpProxy
from vpsnap.api.app import create_app
from vpsnap.domain.errors import ConfigurationError
from vpsnap.metrics import REGISTRY
from vpsnap.rate_counter import RateCounter
from vpsnap.runtime import Role, Runtime

REDIS_DB = 13
REDIS = f"async+redis://127.0.0.1:6379/{REDIS_DB}"
TIMEOUT = 0.5  # rate_limit_storage_timeout_seconds of these apps (roomy: a loaded CI machine)
RETRY = 0.5  # rate_limit_storage_retry_seconds


@dataclass
class ApiProcess:
    """One API app: ``client`` calls from the test's address, ``probe`` from another one (a
    balancer's health check, whose requests count against its own budget)."""

    client: httpx.AsyncClient
    probe: httpx.AsyncClient

    async def get(self, path: str) -> httpx.Response:
        return await self.client.get(path)

    async def ready(self) -> httpx.Response:
        return await self.probe.get("/readyz")


MakeApi = Callable[..., Awaitable[ApiProcess]]


async def _redis(*command: str) -> str:
    """One command through redis-cli (the test's own view of Redis, not the app's client)."""
    process = await asyncio.create_subprocess_exec(
        "redis-cli", "-n", str(REDIS_DB), *command, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await asyncio.wait_for(process.communicate(), 10)
    assert process.returncode == 0
    return out.decode().strip()


async def _counted(address: str) -> int:
    """What Redis holds for the per-ip budget of ``address`` (0 when nothing)."""
    keys = (await _redis("--scan", "--pattern", f"*per-ip/{address}/*")).split()
    if not keys:
        return 0
    total = 0
    for key in keys:
        total += int(await _redis("GET", key) or 0)
    return total


def _errors() -> float:
    return REGISTRY.get_sample_value("vpsnap_rate_limit_storage_errors_total") or 0.0


@pytest.fixture
def address() -> str:
    """A client address of this test alone (its budget keys are its own)."""
    return f"2001:db8::{secrets.token_hex(2)}:{secrets.token_hex(2)}"


@pytest.fixture
async def make_api(tmp_path: Path, address: str) -> AsyncIterator[MakeApi]:
    """``await make_api(storage_uri)``: a new API app (its own Runtime and Redis client) with a
    per-ip budget of 6 requests a minute, called from ``address``."""
    clients: list[httpx.AsyncClient] = []
    runtimes: list[Runtime] = []
    counters: list[RateCounter] = []

    async def make(storage: str, per_ip: str = "6/minute") -> ApiProcess:
        settings = api_settings(
            tmp_path,
            database_url=f"sqlite+aiosqlite:///{tmp_path / 'vpsnap.db'}",
            rate_limit_storage=storage,
            rate_limit_per_ip=per_ip,
            rate_limit_storage_timeout_seconds=TIMEOUT,
            rate_limit_storage_retry_seconds=RETRY,
        )
        runtime = Runtime.build(settings, role=Role.API)
        await runtime.prepare()
        runtimes.append(runtime)
        app = create_app(runtime.services, settings)
        counters.append(app.state.rate_limits.counter)
        made = ApiProcess(
            *(
                httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=app, client=(caller, 40000)),
                    base_url="http://testserver",
                )
                for caller in (address, f"{address}:1")
            )
        )
        clients.extend((made.client, made.probe))
        return made

    yield make
    for client in clients:
        await client.aclose()
    for counter in counters:
        await counter.close()
    for runtime in runtimes:
        await runtime.close()
    for key in (await _redis("--scan", "--pattern", f"*{address}*")).split():
        await _redis("DEL", key)


async def _statuses(api: ApiProcess, count: int) -> list[int]:
    return [(await api.get("/api/version")).status_code for _ in range(count)]


async def test_two_api_processes_share_one_budget(make_api: MakeApi, address: str) -> None:
    one, two = await make_api(REDIS), await make_api(REDIS)
    errors = _errors()

    assert await _statuses(one, 3) == [200, 200, 200]
    answered = await two.get("/api/version")
    # The second process sees the first one's three requests: 6 - 4 left.
    assert answered.headers["X-RateLimit-Remaining"] == "2"
    assert await _statuses(two, 2) == [200, 200]
    assert await _counted(address) == 6
    refused = await one.get("/api/version")
    assert refused.status_code == 429
    assert refused.json()["code"] == "rate_limited"
    assert (await two.get("/api/version")).status_code == 429

    ready = await one.ready()
    assert ready.status_code == 200
    assert ready.json() == {"status": "ok", "checks": {"database": "ok", "rate_limits": "ok"}}
    assert _errors() == errors


async def test_a_redis_nobody_listens_on_degrades_to_process_memory(
    make_api: MakeApi,
) -> None:
    closed = TcpProxy("127.0.0.1", 6379)  # never opened: its port refuses connections
    api = await make_api(f"async+redis://127.0.0.1:{closed.port}/{REDIS_DB}", "3/minute")
    errors = _errors()

    # Still answered, still limited: by this process's own count.
    assert await _statuses(api, 4) == [200, 200, 200, 429]
    assert _errors() > errors

    ready = await api.ready()
    assert ready.status_code == 200
    body = ready.json()
    assert body["status"] == "degraded"
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["rate_limits"].startswith("unavailable: ConnectionError")
    metrics = await api.probe.get("/metrics")
    assert metrics.status_code == 200
    assert "vpsnap_rate_limit_storage_errors_total" in metrics.text


async def test_redis_lost_mid_run_hung_then_back(make_api: MakeApi, address: str) -> None:
    proxy = TcpProxy("127.0.0.1", 6379)
    await proxy.open()
    try:
        via_proxy = f"async+redis://127.0.0.1:{proxy.port}/{REDIS_DB}"
        one, two = (
            await make_api(via_proxy, "8/minute"),
            await make_api(via_proxy, "8/minute"),
        )
        assert await _statuses(one, 2) == [200, 200]
        assert await _counted(address) == 2

        # Redis goes away under the running processes: connections cut, the port refuses.
        await proxy.close()
        assert await _statuses(one, 3) == [200, 200, 200]
        assert await _counted(address) == 2  # counted in memory, not in Redis
        ready = (await one.ready()).json()
        assert (ready["status"], ready["checks"]["rate_limits"][:11]) == ("degraded", "unavailable")

        # A hung Redis (accepts, never answers): each request waits at most the timeout.
        await proxy.hang()
        await asyncio.sleep(RETRY)  # the retry interval passed: the next request tries Redis
        errors = _errors()
        for _ in range(3):
            started = time.monotonic()
            answered = await two.get("/api/version")
            elapsed = time.monotonic() - started
            assert answered.status_code == 200
            assert elapsed < TIMEOUT + 0.5, elapsed
        started = time.monotonic()
        ready_response = await two.ready()
        # Two bounded waits at most: the probe's own rate-limit hit (when the retry interval
        # has passed meanwhile, as it does on a loaded machine) and the readiness check's PING.
        assert time.monotonic() - started < 2 * TIMEOUT + 0.5
        assert ready_response.status_code == 200
        assert ready_response.json()["checks"]["rate_limits"].startswith("unavailable")
        assert _errors() >= errors + 2  # the first request and the probe did try, and gave up

        # Redis back: after the retry interval the shared budget applies again, in both.
        await proxy.close()
        await proxy.open()
        await asyncio.sleep(RETRY)
        assert (await one.ready()).json()["status"] == "ok"
        assert (await two.ready()).json()["status"] == "ok"
        statuses = await _statuses(one, 3) + await _statuses(two, 3)
        assert await _counted(address) == 8
        assert statuses == [200] * 6
        assert (await one.get("/api/version")).status_code == 429
        assert (await two.get("/api/version")).status_code == 429
    finally:
        await proxy.close()


async def test_the_sign_in_throttle_and_counter_never_raise_while_redis_is_down() -> None:
    closed = TcpProxy("127.0.0.1", 6379)
    counter = RateCounter(
        f"async+redis://127.0.0.1:{closed.port}/{REDIS_DB}", timeout_seconds=TIMEOUT
    )
    item = parse("2/minute")
    assert await counter.hit(item, "login-failures-ip", "x")
    assert await counter.test(item, "login-failures-ip", "x")
    assert await counter.hit(item, "login-failures-ip", "x")
    assert not await counter.test(item, "login-failures-ip", "x")
    await counter.clear(item, "login-failures-ip", "x")
    assert await counter.test(item, "login-failures-ip", "x")
    assert counter.degraded
    assert counter.last_error is not None


def test_a_storage_that_cannot_serve_an_api_process_is_refused_with_the_setting_named() -> None:
    # memory:// is synchronous (it would be a blocking call on the event loop), redis:// is
    # too and its client is not installed, foo:// is nothing.
    for uri in ("memory://", "redis://127.0.0.1:6379/13", "foo://x"):
        with pytest.raises(ConfigurationError, match="VPSNAP_RATE_LIMIT_STORAGE: "):
            RateCounter(uri)
