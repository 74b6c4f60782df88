"""A service-level world: the real store (SQLite and PostgreSQL), the in-memory FakeDriver and a
ManualClock, wired by ``Runtime.build``. Jobs run one at a time with ``Worker.run_one``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

import pytest

from tests.support import ManualClock
from vpsnap.domain.auth import Principal, Scope
from vpsnap.domain.model import Job, JobLane, Machine, ServiceStatus, Snapshot, Vps
from vpsnap.domain.ports import ClaimRequest
from vpsnap.drivers.fake import FakeDriver
from vpsnap.jobs.journal import JobJournal
from vpsnap.jobs.worker import Worker
from vpsnap.runtime import Runtime
from vpsnap.services.accounts import NewVps
from vpsnap.settings import Settings

if TYPE_CHECKING:
    from pathlib import Path

    from vpsnap.domain.model import Account
    from vpsnap.services.snapshots import SnapshotListing
    from vpsnap.store.sql import SqlStore

RETENTION_HOURS = 36.5
LEASE_SECONDS = 30.0
DISKS = ("/fake/a.qcow2", "/fake/b.qcow2")


@dataclass
class World:
    runtime: Runtime
    clock: ManualClock
    driver: FakeDriver
    account: Account
    principal: Principal
    default_disks: int = 0

    @property
    def store(self) -> SqlStore:
        return self.runtime.store

    @property
    def retention(self) -> timedelta:
        return timedelta(hours=RETENTION_HOURS)

    async def add_vps(
        self,
        name: str = "web",
        *,
        slots: int = 3,
        disks: tuple[str, ...] | None = None,
        status: ServiceStatus = ServiceStatus.ACTIVE,
        account_name: str | None = None,
        machine: Machine | None = None,
    ) -> Vps:
        if disks is None:
            # One disk file belongs to one VPS: the first VPS gets DISKS, later ones their own.
            self.default_disks += 1
            disks = (
                DISKS
                if self.default_disks == 1
                else tuple(d.replace("/fake/", f"/fake/{self.default_disks}/") for d in DISKS)
            )
        return await self.runtime.services.accounts.add_vps(
            NewVps(
                account_name=account_name or self.account.name,
                name=name,
                disks=disks,
                snapshot_slots=slots,
                service_status=status,
                machine=machine,
            )
        )

    def worker(
        self,
        worker_id: str = "worker-1",
        driver: FakeDriver | None = None,
        lease_seconds: float = LEASE_SECONDS,
    ) -> Worker:
        return Worker(
            store=self.store,
            driver=driver or self.driver,
            events=self.runtime.events,
            clock=self.clock,
            node=self.runtime.settings.node,
            worker_id=worker_id,
            lease_seconds=lease_seconds,
        )

    async def claim(self, worker_id: str, limit: int = 1, node: str = "local") -> list[Job]:
        """What a worker's claim does, without running anything afterwards (it "dies")."""
        now = self.clock.now()
        request = ClaimRequest(
            node=node,
            worker=worker_id,
            now=now,
            lease_until=now + timedelta(seconds=LEASE_SECONDS),
            free={JobLane.QUICK: limit, JobLane.SLOW: limit},
        )
        async with self.store.transaction() as tx:
            return await tx.claim_jobs(request)

    def journal(self, job: Job, worker_id: str) -> JobJournal:
        """The journal a worker holding ``job``'s lease writes (for handlers run by hand)."""
        return JobJournal(self.store, self.clock, job, worker_id)

    async def publish(self) -> int:
        """What the node's agent does periodically: read every VM of the node and store what it
        saw (power states, VM facts); the API and the gates serve only that."""
        return await self.runtime.observer().refresh_power_states()

    async def run_all(self) -> int:
        """Run queued jobs one by one until none is left; returns how many ran."""
        worker = self.runtime.worker()
        ran = 0
        while await worker.run_one():
            ran += 1
        return ran

    async def job(self, job_id: str) -> Job:
        async with self.store.transaction(read_only=True) as tx:
            job = await tx.get_job(job_id)
        assert job is not None, job_id
        return job

    async def vps(self, vps_id: str) -> Vps:
        async with self.store.transaction(read_only=True) as tx:
            vps = await tx.get_vps(vps_id)
        assert vps is not None, vps_id
        return vps

    async def listing(self, vps_id: str) -> SnapshotListing:
        return await self.runtime.services.snapshots.listing(self.principal, vps_id)

    async def snapshot(self, vps_id: str, name: str) -> Snapshot | None:
        async with self.store.transaction(read_only=True) as tx:
            return await tx.get_snapshot(vps_id, name)

    async def statuses(self, vps_id: str) -> dict[str, str]:
        return {s.name: s.status.value for s in (await self.listing(vps_id)).snapshots}


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def driver(clock: ManualClock) -> FakeDriver:
    return FakeDriver(clock)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path,
        retention_hours=RETENTION_HOURS,
        job_lease_seconds=LEASE_SECONDS,
        password_hash_time_cost=1,
        password_hash_memory_kib=8 * 1024,
        password_hash_parallelism=1,
    )


@pytest.fixture
async def world(
    store: SqlStore, settings: Settings, driver: FakeDriver, clock: ManualClock
) -> World:
    runtime = Runtime.build(settings, driver=driver, clock=clock, store=store)
    account = await runtime.services.accounts.create_account("alice")
    principal = Principal(account.id, frozenset({Scope.WRITE_ALL}))
    return World(runtime, clock, driver, account, principal)


@pytest.fixture
async def stranger(world: World) -> Principal:
    """A principal of another account, with every scope."""
    other = await world.runtime.services.accounts.create_account("mallory")
    return Principal(other.id, frozenset({Scope.WRITE_ALL}))
