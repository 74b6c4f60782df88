"""Readiness of real processes on a PostgreSQL database of this module's own (created, migrated
with ``vpsnap migrate``, dropped): ``--health-port`` of ``vpsnap agent`` and ``vpsnap
scheduler`` (``/healthz`` answers, ``/readyz`` checks the database, an agent's hypervisor — a
broken qemu-img makes it 503 — and that it holds its node, and says which scheduler is active),
and ``/readyz`` of ``vpsnap api`` with Redis up and with Redis unreachable."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from tests.conftest import PG_URL
from tests.live_server import VPSNAP, free_port

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

START_SECONDS = 60.0


def _admin(statement: str) -> None:
    async def run() -> None:
        engine = create_async_engine(PG_URL, isolation_level="AUTOCOMMIT")
        try:
            async with engine.connect() as conn:
                await conn.execute(sa.text(statement))
        finally:
            await engine.dispose()

    asyncio.run(run())


@pytest.fixture(scope="module")
def database_url() -> Iterator[str]:
    name = f"vpsnap_health_{secrets.token_hex(4)}"
    _admin(f'CREATE DATABASE "{name}"')
    url = PG_URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        yield url
    finally:
        _admin(f'DROP DATABASE "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def env(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The processes' environment, on the database ``vpsnap migrate`` brought up (once)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("VPSNAP_")}
    clean |= {
        "VPSNAP_DATABASE_URL": database_url,
        "VPSNAP_DATA_DIR": str(tmp_path_factory.mktemp("health") / "var"),
        "VPSNAP_LOG_FORMAT": "json",
        "VPSNAP_NODE_HEARTBEAT_SECONDS": "0.5",
        "VPSNAP_SCHEDULER_STANDBY_POLL_SECONDS": "0.5",
    }
    migrated = subprocess.run(
        [VPSNAP, "migrate"], env=clean, capture_output=True, text=True, timeout=120, check=False
    )
    assert migrated.returncode == 0, migrated.stderr
    return clean


class Process:
    """A vpsnap process in its own process group, logging to a file; stopped by SIGTERM. An
    agent or scheduler gets ``--health-port``, an API process ``--port``."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.log = log
        port_option = "--port" if args[0] == "api" else "--health-port"
        with log.open("w") as out:
            self.popen = subprocess.Popen(
                [VPSNAP, *args, port_option, str(self.port)],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.url = f"http://127.0.0.1:{self.port}"

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.url + path, timeout=10)

    def wait_ready(self, expected: int = 200, lock: bool = True) -> httpx.Response:
        """The first /readyz answer with status ``expected`` (once an agent holds its node)."""
        deadline = time.monotonic() + START_SECONDS
        while True:
            assert self.popen.poll() is None, self.log.read_text()
            try:
                answer = self.get("/readyz")
                held = answer.json()["checks"].get("node_lock", "ok") == "ok" or not lock
                if answer.status_code == expected and held:
                    return answer
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, self.log.read_text()
            time.sleep(0.1)

    def stop(self) -> int:
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(timeout=10)
        return self.popen.returncode


@pytest.fixture
def start(tmp_path: Path, env: dict[str, str]) -> Iterator[object]:
    started: list[Process] = []

    def run(*args: str, **extra_env: str) -> Process:
        process = Process(list(args), env | extra_env, tmp_path / f"p{len(started)}.log")
        started.append(process)
        return process

    yield run
    for process in started:
        process.stop()


def test_an_agent_is_ready_with_its_database_hypervisor_and_node(start, tmp_path: Path) -> None:
    agent = start("agent", "--node", "hv-h")
    ready = agent.wait_ready()
    assert ready.json() == {
        "status": "ok",
        "checks": {"database": "ok", "hypervisor": "ok", "node_lock": "ok"},
        "process": "agent",
        "node": "hv-h",
    }
    assert agent.get("/healthz").json() == {"status": "ok"}

    # A second agent for the node is refused at start: it exits, its health port closes.
    second = start("agent", "--node", "hv-h")
    assert second.popen.wait(timeout=START_SECONDS) != 0
    assert "another agent already serves node 'hv-h'" in second.log.read_text()
    with pytest.raises(httpx.TransportError):
        second.get("/healthz")

    # SIGTERM: a clean stop.
    assert agent.stop() == 0


def test_an_agent_whose_hypervisor_tool_is_broken_is_not_ready(start, tmp_path: Path) -> None:
    broken = tmp_path / "qemu-img"
    broken.write_text("#!/bin/sh\necho 'qemu-img: broken on purpose' >&2\nexit 1\n")
    broken.chmod(0o755)
    agent = start("agent", "--node", "hv-broken", VPSNAP_QEMU_IMG=str(broken))
    answer = agent.wait_ready(expected=503)
    body = answer.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["node_lock"] == "ok"
    assert body["checks"]["hypervisor"].startswith("unavailable")
    assert agent.get("/healthz").status_code == 200  # alive, just not ready


def test_schedulers_say_which_one_is_active(start) -> None:
    first = start("scheduler")
    first.wait_ready()
    assert _role_becomes(first, "active").json() == {
        "status": "ok",
        "checks": {"database": "ok"},
        "process": "scheduler",
        "role": "active",
    }
    second = start("scheduler")
    assert second.wait_ready().json()["role"] == "standby"
    # The active one stops: the standby takes over, and says so.
    assert first.stop() == 0
    _role_becomes(second, "active")


def _role_becomes(process: Process, role: str, seconds: float = 15) -> httpx.Response:
    deadline = time.monotonic() + seconds
    while (answer := process.get("/readyz")).json()["role"] != role:
        assert time.monotonic() < deadline, process.log.read_text()
        time.sleep(0.1)
    return answer


def test_a_taken_health_port_is_a_clear_refusal(env: dict[str, str]) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        refused = subprocess.run(
            [VPSNAP, "scheduler", "--health-port", str(port)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert refused.returncode != 0
    assert f"cannot listen on 127.0.0.1:{port} for health checks" in refused.stderr


def test_an_api_process_reports_postgresql_and_redis(start) -> None:
    closed = free_port()  # nothing listens there
    with_redis = start("api", VPSNAP_RATE_LIMIT_STORAGE="async+redis://127.0.0.1:6379/13")
    without = start("api", VPSNAP_RATE_LIMIT_STORAGE=f"async+redis://127.0.0.1:{closed}/13")
    assert with_redis.wait_ready().json() == {
        "status": "ok",
        "checks": {"database": "ok", "rate_limits": "ok"},
    }
    degraded = without.wait_ready()  # 200: the process serves, counting in its memory
    assert degraded.json()["status"] == "degraded"
    assert degraded.json()["checks"]["database"] == "ok"
    assert degraded.json()["checks"]["rate_limits"].startswith("unavailable: ConnectionError")
    for _ in range(3):
        answered = without.get("/api/version")
        assert answered.status_code == 200
        assert "X-RateLimit-Remaining" in answered.headers
    assert with_redis.stop() == 0
    assert without.stop() == 0
    # The counts it left in Redis database 13 (tests/scaleout's own).
    keys = subprocess.run(
        ["redis-cli", "-n", "13", "--scan", "--pattern", "LIMITS:*/127.0.0.1/*"],
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
    ).stdout.split()
    if keys:
        subprocess.run(["redis-cli", "-n", "13", "DEL", *keys], check=True, timeout=10)
