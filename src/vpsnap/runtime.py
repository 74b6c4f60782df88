"""The composition root: builds store, driver, services, worker and scheduler from settings,
and runs them together in the embedded mode."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import IO

from argon2 import PasswordHasher

from vpsnap.billing.webhook import billing_gateway
from vpsnap.capacity_config import load_capacity_config
from vpsnap.domain.clock import Clock, SystemClock
from vpsnap.domain.errors import DataDirInUse
from vpsnap.domain.ports import HypervisorDriver
from vpsnap.domain.users import SessionPolicy
from vpsnap.drivers.dispatch import DispatchingDriver, libvirt_driver_factory
from vpsnap.drivers.machines import ManagedMachines
from vpsnap.drivers.qemu import LiveTimeouts, QemuDriver
from vpsnap.drivers.qemu_img import QemuImg
from vpsnap.jobs.signals import InProcessJobEvents
from vpsnap.jobs.worker import Worker
from vpsnap.private_files import private_dir, private_file
from vpsnap.scheduler.loop import PeriodicTask, run_scheduler
from vpsnap.scheduler.reaper import requeue_orphans
from vpsnap.scheduler.reconcile import reconcile
from vpsnap.scheduler.retention import sweep_expired
from vpsnap.scheduler.schedules import run_due_schedules
from vpsnap.services.accounts import AccountService
from vpsnap.services.capacity import CapacityService
from vpsnap.services.container import Services
from vpsnap.services.credentials import CredentialService
from vpsnap.services.idempotency import IdempotencyService
from vpsnap.services.inventory import InventoryService
from vpsnap.services.jobs import JobService
from vpsnap.services.panel import PanelService
from vpsnap.services.passwords import Passwords
from vpsnap.services.power import PowerService
from vpsnap.services.sessions import SessionService
from vpsnap.services.snapshots import SnapshotService
from vpsnap.services.users import UserService
from vpsnap.settings import Settings
from vpsnap.store import migrate
from vpsnap.store.sql import SqlStore


def qemu_img_for(settings: Settings) -> QemuImg:
    return QemuImg(
        settings.qemu_img, timeout=settings.qemu_img_timeout_seconds, qemu_io=settings.qemu_io
    )


def qemu_driver_for(settings: Settings) -> QemuDriver:
    timeouts = LiveTimeouts(
        qmp=settings.qmp_timeout_seconds,
        status=settings.power_state_timeout_seconds,
        guest_agent=settings.guest_agent_timeout_seconds,
        guest_freeze=settings.guest_freeze_timeout_seconds,
        guest_agent_recovery=settings.guest_agent_recovery_seconds,
        shutdown=settings.shutdown_timeout_seconds,
        snapshot_job=settings.vm_snapshot_timeout_seconds,
    )
    machines = ManagedMachines(
        settings.data_dir, settings.qemu_system, timeout=settings.qmp_timeout_seconds
    )
    return QemuDriver(qemu_img_for(settings), machines, timeouts)


def session_policy(settings: Settings) -> SessionPolicy:
    return SessionPolicy(
        idle=timedelta(seconds=settings.session_idle_timeout_seconds),
        lifetime=timedelta(seconds=settings.session_lifetime_seconds),
    )


@dataclass
class Runtime:
    settings: Settings
    store: SqlStore
    driver: HypervisorDriver
    events: InProcessJobEvents
    clock: Clock
    services: Services
    _lock_file: IO[str] | None = field(default=None, repr=False)

    @classmethod
    def build(
        cls,
        settings: Settings,
        *,
        driver: HypervisorDriver | None = None,
        clock: Clock | None = None,
        store: SqlStore | None = None,
    ) -> Runtime:
        clock = clock or SystemClock()
        store = store or SqlStore.from_url(settings.resolved_database_url())
        driver = driver or DispatchingDriver(
            qemu_driver_for(settings),
            libvirt_driver_factory(
                shutdown_timeout=settings.shutdown_timeout_seconds,
                status_timeout=settings.power_state_timeout_seconds,
                call_timeout=settings.vm_snapshot_timeout_seconds,
            ),
        )
        events = InProcessJobEvents()
        passwords = Passwords(
            PasswordHasher(
                time_cost=settings.password_hash_time_cost,
                memory_cost=settings.password_hash_memory_kib,
                parallelism=settings.password_hash_parallelism,
            )
        )
        inventory = InventoryService(store, driver)
        services = Services(
            store=store,
            driver=driver,
            accounts=AccountService(store, clock, disks=qemu_img_for(settings)),
            credentials=CredentialService(store, clock, settings.auth_cache_seconds),
            inventory=inventory,
            snapshots=SnapshotService(
                store,
                events,
                clock,
                timedelta(hours=settings.retention_hours),
                max_jobs_per_vps=settings.max_jobs_per_vps,
                driver=driver,
            ),
            jobs=JobService(store, events),
            capacity=CapacityService(
                store,
                clock,
                load_capacity_config(settings.capacity_file),
                billing_gateway(settings, clock),
            ),
            idempotency=IdempotencyService(store, clock),
            power=PowerService(store, events, clock, max_jobs_per_vps=settings.max_jobs_per_vps),
            users=UserService(store, clock, passwords),
            sessions=SessionService(store, clock, passwords, session_policy(settings)),
            panel=PanelService(store, inventory),
        )
        return cls(settings, store, driver, events, clock, services)

    async def prepare(self) -> None:
        """Create the data dir (0700) and bring the database schema up to date; a SQLite
        database is created 0600 before SQLite opens it (its -wal and -shm take its mode)."""
        await asyncio.to_thread(self._private_files)
        await migrate.upgrade(self.store.engine)

    def _private_files(self) -> None:
        private_dir(self.settings.data_dir)
        url = self.store.engine.url
        database = url.database
        if url.get_backend_name() == "sqlite" and database and database != ":memory:":
            path = Path(database)
            private_dir(path.parent)
            private_file(path)
            for suffix in ("-wal", "-shm", "-journal"):
                private_file(path.with_name(path.name + suffix), create=False)

    def claim_data_dir(self) -> None:
        """Hold an exclusive lock on the data dir for the life of this embedded server.

        Two servers on one SQLite database would both believe they own every job; with the
        lock held, any job still in progress at start-up is known to be orphaned.
        """
        path = self.settings.data_dir / "vpsnap.lock"
        private_file(path)
        handle = path.open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise DataDirInUse(
                f"Another vpsnap server is already using {self.settings.data_dir}."
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._lock_file = handle

    def worker(self) -> Worker:
        return Worker(
            store=self.store,
            driver=self.driver,
            events=self.events,
            clock=self.clock,
            node=self.settings.node,
            lease_seconds=self.settings.job_lease_seconds,
            concurrency=self.settings.worker_concurrency,
            slow_concurrency=self.settings.worker_slow_concurrency,
            max_attempts=self.settings.job_max_attempts,
            grace_seconds=self.settings.shutdown_grace_seconds,
        )

    def periodic_tasks(self) -> list[PeriodicTask]:
        settings, node = self.settings, self.settings.node

        async def reap_leases() -> object:
            return await requeue_orphans(
                self.store, self.events, self.clock, node, all_in_progress=False
            )

        async def housekeeping() -> object:
            now = self.clock.now()
            async with self.store.transaction() as tx:
                jobs = await tx.purge_finished_jobs(
                    now - timedelta(days=settings.job_retention_days)
                )
                records = await tx.purge_idempotency(now)
            sessions = await self.services.sessions.purge()
            return jobs, records, sessions

        async def reconcile_node() -> object:
            return await reconcile(self.store, self.driver, node, clock=self.clock)

        async def expire_snapshots() -> object:
            return await sweep_expired(self.store, self.events, self.clock)

        async def run_schedules() -> object:
            return await run_due_schedules(
                self.store,
                self.events,
                self.clock,
                retention=timedelta(hours=settings.retention_hours),
            )

        return [
            PeriodicTask("lease-reaper", max(settings.job_lease_seconds / 3, 0.5), reap_leases),
            PeriodicTask("housekeeping", settings.scheduler_interval_seconds, housekeeping),
            PeriodicTask("retention", settings.scheduler_interval_seconds, expire_snapshots),
            PeriodicTask("schedules", settings.scheduler_interval_seconds, run_schedules),
            PeriodicTask("reconcile", settings.reconcile_interval_seconds, reconcile_node),
        ]

    @contextlib.asynccontextmanager
    async def embedded(self) -> AsyncIterator[None]:
        """Worker and scheduler running in this process for the duration of the block."""
        await self.prepare()
        self.claim_data_dir()
        await requeue_orphans(
            self.store, self.events, self.clock, self.settings.node, all_in_progress=True
        )
        worker = self.worker()
        stopping = asyncio.Event()
        tasks = [
            asyncio.create_task(worker.run(), name="worker"),
            asyncio.create_task(run_scheduler(self.periodic_tasks(), stopping), name="scheduler"),
        ]
        try:
            yield
        finally:
            # Stop by flag, never by cancelling a task that may be inside a transaction.
            worker.stop()
            stopping.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.close()

    async def close(self) -> None:
        await self.store.dispose()
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None
