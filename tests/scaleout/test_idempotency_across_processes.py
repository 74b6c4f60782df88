"""``Idempotency-Key`` across API processes: two apps, each with its own Runtime and PostgreSQL
connection pool on one database (as two ``vpsnap api`` behind a balancer). A retry that lands
on the other process gets 409 ``idempotency_key_in_use`` while the first is being handled, and
the first answer, replayed byte for byte, once it is stored; one job exists."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from tests.api.test_idempotency import REPLAYED, Gate, install
from tests.conftest import PG_URL, api_settings
from vpsnap.api.app import create_app
from vpsnap.domain.auth import Scope
from vpsnap.drivers.fake import FakeDriver
from vpsnap.runtime import Role, Runtime
from vpsnap.services.accounts import NewVps
from vpsnap.store.sql import SqlStore
from vpsnap.store.tables import metadata

pytestmark = pytest.mark.postgres


@dataclass
class TwoApis:
    one: httpx.AsyncClient
    two: httpx.AsyncClient
    gate: Gate
    """Holds requests with ``X-Test-Hold`` in process one, after they claimed their key."""
    headers: dict[str, str]
    path: str
    vps_id: str
    store: SqlStore


@pytest.fixture
async def apis(pg_schema: str, tmp_path: Path) -> AsyncIterator[TwoApis]:
    cleaner = SqlStore.from_url(PG_URL, schema=pg_schema)
    async with cleaner.engine.begin() as conn:
        names = ", ".join(f'"{t.name}"' for t in metadata.sorted_tables)
        await conn.execute(sa.text(f"TRUNCATE {names} CASCADE"))
    await cleaner.dispose()

    runtimes: list[Runtime] = []

    def build(role: Role) -> Runtime:
        settings = api_settings(
            tmp_path / f"{role.value}-{len(runtimes)}", database_url=PG_URL, node="hv-1"
        )
        store = SqlStore.from_url(PG_URL, schema=pg_schema)
        driver = FakeDriver() if role is Role.AGENT else None
        runtime = Runtime.build(settings, role=role, store=store, driver=driver)
        runtimes.append(runtime)
        return runtime

    api_1, api_2, agent = build(Role.API), build(Role.API), build(Role.AGENT)
    await agent.observer().heartbeat()  # node hv-1 is online: creates are accepted
    account = await api_1.services.accounts.create_account("acme")
    vps = await api_1.services.accounts.add_vps(
        NewVps(
            account_name=account.name,
            name="web",
            disks=("/fake/web.qcow2",),
            snapshot_slots=3,
            node="hv-1",
        )
    )
    issued = await api_1.services.credentials.issue("acme", frozenset({Scope.WRITE_ALL}))
    gate = Gate()
    app_1 = create_app(api_1.services, api_1.settings)
    install(app_1, api_1.services.idempotency, api_1.services.credentials, gate)
    app_2 = create_app(api_2.services, api_2.settings)
    clients = [
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")
        for app in (app_1, app_2)
    ]
    try:
        yield TwoApis(
            *clients,
            gate,
            {"Authorization": f"Bearer {issued.secret}"},
            f"/api/v2/vps/{vps.id}/snapshots",
            vps.id,
            agent.store,
        )
    finally:
        for client in clients:
            await client.aclose()
        for runtime in runtimes:
            await runtime.close()


async def test_a_retry_on_another_api_process_waits_then_replays(apis: TwoApis) -> None:
    body = {"name": "nightly"}
    keyed = {**apis.headers, "Idempotency-Key": "create-nightly-1"}
    first = asyncio.create_task(
        apis.one.post(apis.path, json=body, headers={**keyed, "X-Test-Hold": "1"})
    )
    await asyncio.wait_for(apis.gate.entered.wait(), timeout=10)

    # The first is in flight in process one: the retry on process two is told so.
    in_flight = await apis.two.post(apis.path, json=body, headers=keyed)
    assert in_flight.status_code == 409, in_flight.text
    assert in_flight.json()["code"] == "idempotency_key_in_use"
    assert not first.done()

    apis.gate.opened.set()
    answered = await asyncio.wait_for(first, 10)
    assert answered.status_code == 202, answered.text

    replayed = await apis.two.post(apis.path, json=body, headers=keyed)
    assert replayed.status_code == 202
    assert replayed.headers[REPLAYED] == "true"
    assert replayed.content == answered.content

    # The same key for another request, on process two: refused, nothing queued.
    other = await apis.two.post(apis.path, json={"name": "other"}, headers=keyed)
    assert other.status_code == 422
    assert other.json()["code"] == "idempotency_key_reused"

    async with apis.store.transaction(read_only=True) as tx:
        jobs = await tx.jobs_for_snapshot(apis.vps_id, "nightly")
        others = await tx.jobs_for_snapshot(apis.vps_id, "other")
    assert [job.type.value for job in jobs] == ["snapshot.create"]
    assert others == []
