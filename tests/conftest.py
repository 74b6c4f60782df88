"""Fixtures shared by every suite: a migrated store on SQLite *and* PostgreSQL, and a running
API (real app, real worker, real qcow2 disks through the qemu driver)."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from tests.support import kill_vms_under
from vpsnap.api.app import create_app
from vpsnap.demo import seed_demo
from vpsnap.domain.ports import HypervisorDriver
from vpsnap.runtime import Runtime, qemu_img_for
from vpsnap.settings import Settings
from vpsnap.store import migrate
from vpsnap.store.sql import SqlStore
from vpsnap.store.tables import metadata

PG_URL = os.environ.get(
    "VPSNAP_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)


def pytest_sessionstart(session: pytest.Session) -> None:
    # The qemu tests are real: a machine without qemu-img must fail them, not skip them.
    if shutil.which("qemu-img") is None:
        print("\n!! qemu-img is not installed: qemu tests will fail (run .ci/run to install)")


# -- pytest-xdist (scripts/check runs the suite on two workers) ----------------------------------
# A test file is one unit of work, so its module- and session-scoped fixtures (a live server, a
# cluster, a database) are built once; tests/guest is one unit, so one worker boots the real guest
# once and the other never pays a TCG boot. Files that take minutes of wall time go first: the
# other worker goes through the many short files meanwhile instead of waiting for one long file
# at the end.
_ONE_UNIT = "tests/guest/"
# Every file that drives the machine's one real libvirtd is one unit too: one of them restarts
# libvirtd (test_the_connection_is_reopened_after_libvirtd_restarts), which cut another file's
# connection mid-test when the two ran on both workers at once.
_REAL_LIBVIRTD = (
    "tests/drivers/test_libvirt.py",
    "tests/drivers/test_libvirt_vm_safety.py",
    "tests/drivers/test_contract_libvirt.py",
    "tests/cli/test_libvirt_import.py",
    "tests/cli/test_admin_disks.py",
)
_LONG_FIRST = ("tests/guest/", "tests/system/", "tests/scaleout/", "tests/dashboard/")


@pytest.hookimpl(optionalhook=True)  # a run without pytest-xdist (-p no:xdist) ignores it
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    from xdist.scheduler import LoadScopeScheduling  # only under xdist

    class FileScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            if path.startswith(_ONE_UNIT):
                return _ONE_UNIT
            return "real libvirtd" if path in _REAL_LIBVIRTD else path

    config.option.loadscopereorder = False  # keep the order below, not "most tests first"
    return FileScheduling(config, log)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if hasattr(config, "workerinput"):  # only under xdist: a plain run keeps the file order
        items.sort(key=_long_first)


def _long_first(item: pytest.Item) -> int:
    for rank, prefix in enumerate(_LONG_FIRST):
        if item.nodeid.startswith(prefix):
            return rank
    return len(_LONG_FIRST)


@pytest.fixture(scope="session")
def pg_schema() -> Iterator[str]:
    """A private schema in the shared `test` database, migrated once for the session."""
    schema = f"vpsnap_test_{secrets.token_hex(4)}"

    async def setup() -> None:
        engine = create_async_engine(PG_URL)
        async with engine.begin() as conn:
            await conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
        await engine.dispose()
        store = SqlStore.from_url(PG_URL, schema=schema)
        await migrate.upgrade(store.engine)
        await store.dispose()

    async def teardown() -> None:
        engine = create_async_engine(PG_URL)
        async with engine.begin() as conn:
            await conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        await engine.dispose()

    asyncio.run(setup())
    yield schema
    asyncio.run(teardown())


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'vpsnap.db'}"
    schema = request.getfixturevalue("pg_schema")
    return f"{PG_URL}#{schema}"


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[SqlStore]:
    url, _, schema = database_url.partition("#")
    sql_store = SqlStore.from_url(url, schema=schema or None)
    if schema:
        async with sql_store.engine.begin() as conn:
            names = ", ".join(f'"{t.name}"' for t in metadata.sorted_tables)
            await conn.execute(sa.text(f"TRUNCATE {names} CASCADE"))
    else:
        await migrate.upgrade(sql_store.engine)
    yield sql_store
    await sql_store.dispose()


@dataclass
class Api:
    """A running vpsnap: the real app over ASGI, its worker, and the demo data."""

    client: httpx.AsyncClient
    runtime: Runtime
    tokens: dict[str, str]
    vps_ids: dict[str, str]
    data_dir: Path

    def auth(self, token: str = "full") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[token]}"}

    def disk(self, vps_name: str) -> Path:
        return self.data_dir / "disks" / f"{vps_name}.qcow2"

    async def wait_job(self, job_id: str, token: str = "full") -> dict[str, object]:
        for _ in range(100):
            response = await self.client.get(
                f"/api/jobs/{job_id}", headers={**self.auth(token), "Prefer": "wait=5"}
            )
            body: dict[str, object] = response.json()
            if body["status"] in ("completed", "failed"):
                return body
        raise AssertionError(f"job {job_id} did not finish")


# Real argon2id, at the lowest cost the settings allow: every API test seeds three demo users.
CHEAP_PASSWORD_HASHES = {
    "password_hash_time_cost": 1,
    "password_hash_memory_kib": 8 * 1024,
    "password_hash_parallelism": 1,
}


def api_settings(data_dir: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "data_dir": data_dir,
        "rate_limit_per_key": "100000/minute",
        "rate_limit_snapshot_mutations_per_vps": "100000/minute",
        "job_lease_seconds": 5.0,
        **CHEAP_PASSWORD_HASHES,
        # httpx's ASGI client sends `Host: testserver` (base_url below).
        "allowed_hosts": ["testserver"],
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
def api_overrides() -> dict[str, object]:
    """Settings a test module wants changed (override this fixture)."""
    return {}


@pytest.fixture
def api_worker() -> bool:
    """Whether the API fixture runs a worker (override with False to hold jobs queued)."""
    return True


@pytest.fixture
def api_driver() -> HypervisorDriver | None:
    """The driver behind the API fixture: None is the real qemu driver (override to swap)."""
    return None


@pytest.fixture
async def api(
    store: SqlStore,
    tmp_path: Path,
    api_overrides: dict[str, object],
    api_worker: bool,
    api_driver: HypervisorDriver | None,
) -> AsyncIterator[Api]:
    settings = api_settings(tmp_path, **api_overrides)
    runtime = Runtime.build(settings, store=store, driver=api_driver)
    await runtime.prepare()
    tokens = await seed_demo(
        runtime, qemu_img_for(settings), disk_bytes=64 * 1024**2, data_bytes=1024**2
    )
    listing = await runtime.services.accounts.list_vps()
    vps_ids = {vps.name: vps.id for vps, _ in listing}
    # What the embedded agent does at start: publish its node and its VMs' power states.
    observer = runtime.observer()
    await observer.heartbeat()
    await observer.refresh_power_states()
    worker = runtime.worker()
    worker_task = asyncio.create_task(worker.run()) if api_worker else None
    app = create_app(runtime.services, settings)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield Api(client, runtime, tokens, vps_ids, tmp_path)
    if worker_task is not None:
        worker.stop()
        await worker_task
    # demo-web is a managed VM: a test that started it (a power action, a fuzzed startVps)
    # would leave it running after the app is gone.
    kill_vms_under(tmp_path)
