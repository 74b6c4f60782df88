"""Scale-out processes on one real PostgreSQL database, in one Python process: wake-ups through
LISTEN/NOTIFY, one agent per node, one active scheduler with takeover, key revocation seen at
once, and the schema check. (The same with real `vpsnap` processes behind a load balancer is
the system tier: tests/system/test_cluster.py.)"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.conftest import PG_URL
from vpsnap.domain.auth import Principal, Scope
from vpsnap.domain.errors import Unauthorized
from vpsnap.domain.model import JobStatus
from vpsnap.drivers.fake import FakeDriver
from vpsnap.runtime import ProcessRefused, Role, Runtime
from vpsnap.services.accounts import NewVps
from vpsnap.services.snapshots import CreateSnapshot
from vpsnap.settings import Settings
from vpsnap.store import migrate
from vpsnap.store.sql import SqlStore

pytestmark = pytest.mark.postgres

Build = Callable[..., Runtime]


@pytest.fixture
async def build(pg_schema: str, tmp_path: Path) -> AsyncIterator[Build]:
    """Runtimes of any role on the session's PostgreSQL schema (emptied first)."""
    made: list[Runtime] = []
    cleaner = SqlStore.from_url(PG_URL, schema=pg_schema)
    async with cleaner.engine.begin() as conn:
        from vpsnap.store.tables import metadata

        names = ", ".join(f'"{t.name}"' for t in metadata.sorted_tables)
        await conn.execute(sa.text(f"TRUNCATE {names} CASCADE"))
    await cleaner.dispose()

    def make(role: Role, node: str = "hv-1", **overrides: object) -> Runtime:
        settings = Settings(
            data_dir=tmp_path / f"{role.value}-{node}-{len(made)}",
            database_url=PG_URL,
            node=node,
            job_lease_seconds=5.0,
            scheduler_standby_poll_seconds=0.2,
            node_heartbeat_seconds=0.5,
            **overrides,  # type: ignore[arg-type]
        )
        store = SqlStore.from_url(PG_URL, schema=pg_schema)
        driver = FakeDriver() if role in (Role.AGENT, Role.EMBEDDED) else None
        runtime = Runtime.build(settings, role=role, store=store, driver=driver)
        made.append(runtime)
        return runtime

    yield make
    for runtime in made:
        with contextlib.suppress(Exception):
            await runtime.store.dispose()


async def _tenant(api: Runtime, node: str = "hv-1") -> tuple[Principal, str]:
    account = await api.services.accounts.create_account(f"acme-{node}")
    vps = await api.services.accounts.add_vps(
        NewVps(
            account_name=account.name,
            name="web",
            disks=("/fake/web.qcow2",),
            snapshot_slots=3,
            node=node,
        )
    )
    return Principal(account.id, frozenset({Scope.WRITE_ALL})), vps.id


@contextlib.asynccontextmanager
async def _running(coro_factory: Callable[[asyncio.Event], object]) -> AsyncIterator[asyncio.Event]:
    stopping = asyncio.Event()
    task = asyncio.create_task(coro_factory(stopping))  # type: ignore[arg-type]
    try:
        yield stopping
    finally:
        stopping.set()
        await asyncio.wait_for(task, 15)


async def _until(check: Callable[[], object], seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not await check():  # type: ignore[misc]
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


async def test_a_job_queued_through_one_api_wakes_the_agent_and_the_long_poll_of_another(
    build: Build,
) -> None:
    api_1, api_2, agent = build(Role.API), build(Role.API), build(Role.AGENT)
    principal, vps_id = await _tenant(api_1)
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(api_1.api_process())
        await stack.enter_async_context(api_2.api_process())
        await stack.enter_async_context(_running(agent.run_agent))
        await _until(lambda: _node_online(api_1, "hv-1"))

        started = time.monotonic()
        job = await api_1.services.snapshots.create(principal, vps_id, CreateSnapshot("x"))
        seen = job
        while not seen.status.is_terminal:
            seen = await api_2.services.jobs.wait(principal, job.id, 10)
        elapsed = time.monotonic() - started
    assert seen.status is JobStatus.COMPLETED
    # Wake-ups, not polling: the agent's idle timer is 5 s and nobody waited for it.
    assert elapsed < 4, elapsed


async def _node_online(runtime: Runtime, node: str) -> bool:
    async with runtime.store.transaction(read_only=True) as tx:
        return await tx.get_node(node) is not None


async def test_a_second_agent_for_the_same_node_is_refused(build: Build) -> None:
    first, second = build(Role.AGENT), build(Role.AGENT)
    async with _running(first.run_agent):
        await _until(lambda: _node_online(first, "hv-1"))
        with pytest.raises(ProcessRefused, match="another agent already serves node 'hv-1'"):
            await second.run_agent(asyncio.Event())


async def test_one_scheduler_is_active_and_a_standby_takes_over(build: Build) -> None:
    one, two = build(Role.SCHEDULER), build(Role.SCHEDULER)
    async with _running(one.run_scheduler_process) as stop_one:
        await asyncio.sleep(0.5)
        async with _running(two.run_scheduler_process):
            await asyncio.sleep(0.5)
            assert (one.active_scheduler, two.active_scheduler) == (True, False)
            stop_one.set()  # the active one goes away (its session closes)
            started = time.monotonic()
            await _until(lambda: _flag(two), 10)
            assert time.monotonic() - started < 10
            assert not one.active_scheduler


async def _flag(runtime: Runtime) -> bool:
    return runtime.active_scheduler


async def test_a_key_revoked_elsewhere_is_refused_at_once(build: Build) -> None:
    api, admin = build(Role.API, auth_cache_seconds=300.0), build(Role.ADMIN)
    await api.services.accounts.create_account("acme")
    issued = await api.services.credentials.issue("acme", frozenset({Scope.READ_VM}))
    async with api.api_process():
        await _until(lambda: _listening(api))
        await api.services.credentials.authenticate(issued.secret)  # cached for 300 s
        await admin.services.credentials.revoke(issued.key.id)
        await asyncio.sleep(0.3)
        with pytest.raises(Unauthorized):
            await api.services.credentials.authenticate(issued.secret)


async def _listening(runtime: Runtime) -> bool:
    await asyncio.sleep(0.2)
    return True


async def test_processes_refuse_an_older_schema_and_sqlite(build: Build, tmp_path: Path) -> None:
    api = build(Role.API)
    await migrate.downgrade(api.store.engine, "0004")
    try:
        with pytest.raises(ProcessRefused, match="older than this vpsnap"):
            async with api.api_process():
                pass
    finally:
        await migrate.upgrade(api.store.engine)
    sqlite = Runtime.build(
        Settings(data_dir=tmp_path, database_url=f"sqlite+aiosqlite:///{tmp_path / 'x.db'}"),
        role=Role.SCHEDULER,
    )
    with pytest.raises(ProcessRefused, match="needs PostgreSQL"):
        await sqlite.run_scheduler_process(asyncio.Event())
    await sqlite.close()
