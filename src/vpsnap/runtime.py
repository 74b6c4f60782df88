"""The composition root: builds store, driver, services, worker and scheduler from settings,
and runs the processes of both modes (docs/scale-out.md):

- ``embedded`` (``vpsnap serve``): API, worker, scheduler and the node's agent in one process;
- ``api`` (``vpsnap api``): HTTP only, never a hypervisor call;
- ``agent`` (``vpsnap agent --node NAME``): its node's jobs, VMs, reconciliation, heartbeat and
  power states; one per node (a PostgreSQL advisory lock);
- ``scheduler`` (``vpsnap scheduler``): expiry, schedules, housekeeping, lease reaper; several
  may run, one is active (a PostgreSQL advisory lock held on its session).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import IO

import structlog
from argon2 import PasswordHasher

from vpsnap import __version__
from vpsnap.billing.webhook import billing_gateway
from vpsnap.capacity_config import load_capacity_config
from vpsnap.domain.clock import Clock, SystemClock
from vpsnap.domain.errors import DataDirInUse, ProcessRefused
from vpsnap.domain.ports import HypervisorDriver
from vpsnap.domain.storage import SpaceGuard
from vpsnap.domain.users import SessionPolicy
from vpsnap.domain.webhooks import RetryPolicy
from vpsnap.drivers.dispatch import DispatchingDriver, libvirt_driver_factory
from vpsnap.drivers.machines import ManagedMachines
from vpsnap.drivers.qemu import LiveTimeouts, QemuDriver
from vpsnap.drivers.qemu_img import QemuImg
from vpsnap.events.addresses import AddressPolicy
from vpsnap.events.delivery import WebhookDispatcher, WebhookSender
from vpsnap.jobs.data_stores import WriteGuard, publish_data_stores
from vpsnap.jobs.observer import NodeObserver
from vpsnap.jobs.signals import InProcessJobEvents, PgListener, asyncpg_dsn
from vpsnap.jobs.worker import Worker, default_worker_id
from vpsnap.private_files import private_dir, private_file
from vpsnap.scheduler.loop import PeriodicTask, run_scheduler
from vpsnap.scheduler.reaper import requeue_orphans
from vpsnap.scheduler.reconcile import DiskFingerprints, reconcile
from vpsnap.scheduler.retention import sweep_expired
from vpsnap.scheduler.schedules import run_due_schedules
from vpsnap.scheduler.stale_jobs import fail_unstartable_jobs
from vpsnap.services.accounts import AccountService
from vpsnap.services.audit import AuditService
from vpsnap.services.capacity import CapacityService
from vpsnap.services.container import Services
from vpsnap.services.credentials import CredentialService
from vpsnap.services.idempotency import IdempotencyService
from vpsnap.services.inventory import InventoryService
from vpsnap.services.jobs import JobService
from vpsnap.services.nodes import NodeDirectory
from vpsnap.services.panel import PanelService
from vpsnap.services.passwords import Passwords
from vpsnap.services.power import PowerService
from vpsnap.services.sessions import SessionService
from vpsnap.services.snapshots import SnapshotService
from vpsnap.services.users import UserService
from vpsnap.services.webhooks import WebhookService
from vpsnap.settings import ConfigFileError, Settings
from vpsnap.store import migrate
from vpsnap.store.locks import SessionLock
from vpsnap.store.sql import Channel, SqlStore

log = structlog.get_logger("vpsnap.runtime")


class Role(StrEnum):
    """Which vpsnap process this is (the module docstring says what each runs)."""

    EMBEDDED = "embedded"
    API = "api"
    AGENT = "agent"
    SCHEDULER = "scheduler"
    ADMIN = "admin"


def space_guard(settings: Settings) -> SpaceGuard:
    return SpaceGuard(
        floor_bytes=int(settings.storage_free_floor),
        margin_bytes=int(settings.storage_snapshot_margin),
        # Several missed publications: the node is not publishing, its numbers mean little.
        stale_after=timedelta(seconds=max(5 * settings.data_store_interval_seconds, 60)),
    )


def address_policy(settings: Settings) -> AddressPolicy:
    try:
        return AddressPolicy.from_settings(settings.webhook_allowed_networks)
    except ValueError as exc:
        raise ConfigFileError(f"VPSNAP_WEBHOOK_ALLOWED_NETWORKS: {exc}") from None


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
    driver: HypervisorDriver | None
    events: InProcessJobEvents
    clock: Clock
    services: Services
    role: Role = Role.EMBEDDED
    active_scheduler: bool = False
    """In a ``scheduler`` process: whether it holds the lock and runs the tasks now."""
    node_held: bool = False
    """In an ``agent`` process: whether it holds its node's lock (serves the node) now."""
    _lock_file: IO[str] | None = field(default=None, repr=False)

    @classmethod
    def build(
        cls,
        settings: Settings,
        *,
        role: Role = Role.EMBEDDED,
        driver: HypervisorDriver | None = None,
        clock: Clock | None = None,
        store: SqlStore | None = None,
    ) -> Runtime:
        clock = clock or SystemClock()
        store = store or SqlStore.from_url(
            settings.resolved_database_url(),
            busy_timeout_seconds=settings.sqlite_busy_timeout_seconds,
        )
        if driver is None and role in (Role.EMBEDDED, Role.AGENT, Role.ADMIN):
            driver = DispatchingDriver(
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
        nodes = NodeDirectory(
            clock,
            timedelta(seconds=settings.node_offline_after_seconds),
            # The serving process is its node's agent: alive while it answers.
            local_node=settings.node if role is Role.EMBEDDED else None,
        )
        inventory = InventoryService(store, nodes)
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
                nodes,
                max_jobs_per_vps=settings.max_jobs_per_vps,
                space=space_guard(settings),
            ),
            jobs=JobService(store, events),
            capacity=CapacityService(
                store,
                clock,
                load_capacity_config(settings.capacity_file),
                billing_gateway(settings, clock),
            ),
            idempotency=IdempotencyService(store, clock),
            power=PowerService(
                store, events, clock, nodes, max_jobs_per_vps=settings.max_jobs_per_vps
            ),
            users=UserService(store, clock, passwords),
            sessions=SessionService(store, clock, passwords, session_policy(settings)),
            panel=PanelService(store, inventory),
            nodes=nodes,
            audit=AuditService(store),
            webhooks=WebhookService(store, clock, address_policy(settings)),
        )
        return cls(settings, store, driver, events, clock, services, role)

    # -- pieces ------------------------------------------------------------------------------

    def hypervisor(self) -> HypervisorDriver:
        if self.driver is None:
            raise ProcessRefused(f"a {self.role.value} process has no hypervisor driver")
        return self.driver

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
            driver=self.hypervisor(),
            events=self.events,
            clock=self.clock,
            node=self.settings.node,
            lease_seconds=self.settings.job_lease_seconds,
            concurrency=self.settings.worker_concurrency,
            slow_concurrency=self.settings.worker_slow_concurrency,
            max_attempts=self.settings.job_max_attempts,
            grace_seconds=self.settings.shutdown_grace_seconds,
            write_guard=WriteGuard(space_guard(self.settings), self.clock),
        )

    def observer(self) -> NodeObserver:
        return NodeObserver(
            self.store,
            self.hypervisor(),
            self.clock,
            self.settings.node,
            __version__,
            default_worker_id(),
        )

    def periodic_tasks(self) -> list[PeriodicTask]:
        """The scheduler's tasks (the lease reaper covers every node: any scheduler may run)."""
        settings = self.settings
        node = settings.node if self.role is Role.EMBEDDED else None

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
                # The audit trail has a retention of its own, independent of jobs.
                audit = await tx.purge_audit_events(
                    now - timedelta(days=settings.audit_retention_days)
                )
                deliveries = await tx.purge_webhook_history(
                    now - timedelta(days=settings.webhook_retention_days)
                )
            sessions = await self.services.sessions.purge()
            return jobs, records, sessions, audit, deliveries

        async def expire_snapshots() -> object:
            return await sweep_expired(self.store, self.events, self.clock)

        async def run_schedules() -> object:
            return await run_due_schedules(
                self.store,
                self.events,
                self.clock,
                retention=timedelta(hours=settings.retention_hours),
                space=space_guard(settings),
            )

        async def unstartable_jobs() -> object:
            return await fail_unstartable_jobs(
                self.store,
                self.events,
                self.clock,
                self.services.nodes,
                timedelta(seconds=settings.queued_job_timeout_seconds),
            )

        dispatcher = self.webhook_dispatcher()

        return [
            PeriodicTask("lease-reaper", max(settings.job_lease_seconds / 3, 0.5), reap_leases),
            PeriodicTask("housekeeping", settings.scheduler_interval_seconds, housekeeping),
            PeriodicTask("retention", settings.scheduler_interval_seconds, expire_snapshots),
            PeriodicTask("schedules", settings.scheduler_interval_seconds, run_schedules),
            PeriodicTask("unstartable-jobs", settings.scheduler_interval_seconds, unstartable_jobs),
            # Webhooks go out from the (one active) scheduler: sent once in scale-out.
            PeriodicTask(
                "webhooks", settings.webhook_delivery_interval_seconds, dispatcher.deliver_due
            ),
        ]

    def node_tasks(self, observer: NodeObserver) -> list[PeriodicTask]:
        """An agent's own periodic work for its node."""
        settings, driver = self.settings, self.hypervisor()
        # Kept across passes: disks unchanged since the last pass are not read again.
        seen = DiskFingerprints()

        async def reconcile_node() -> object:
            return await reconcile(self.store, driver, settings.node, clock=self.clock, seen=seen)

        async def publish_data_stores_of_node() -> object:
            # Only the node's agent sees its disks: the API and the gates read what it wrote.
            return await publish_data_stores(self.store, self.clock, settings.node)

        return [
            PeriodicTask("heartbeat", settings.node_heartbeat_seconds, observer.heartbeat),
            PeriodicTask(
                "power-states",
                settings.power_refresh_seconds,
                observer.refresh_power_states,
                first_delay_seconds=settings.node_scan_start_delay_seconds,
            ),
            PeriodicTask(
                "reconcile",
                settings.reconcile_interval_seconds,
                reconcile_node,
                first_delay_seconds=settings.reconcile_start_delay_seconds,
            ),
            PeriodicTask(
                "data-stores",
                settings.data_store_interval_seconds,
                publish_data_stores_of_node,
                first_delay_seconds=settings.node_scan_start_delay_seconds,
            ),
        ]

    def webhook_dispatcher(self) -> WebhookDispatcher:
        settings = self.settings
        return WebhookDispatcher(
            self.store,
            self.clock,
            WebhookSender(address_policy(settings), timeout=settings.webhook_timeout_seconds),
            RetryPolicy(
                base=timedelta(seconds=settings.webhook_retry_base_seconds),
                cap=timedelta(seconds=settings.webhook_retry_max_seconds),
                window=timedelta(hours=settings.webhook_retry_window_hours),
            ),
        )

    def listener(self, *, wake_worker: bool) -> PgListener | None:
        """LISTEN/NOTIFY wake-ups from other processes (PostgreSQL only; None on SQLite)."""
        if not self.store.is_postgres or self.store.url is None:
            return None
        events, node = self.events, self.settings.node

        def jobs_queued(payload: str) -> None:
            if wake_worker and payload in (node, "*"):
                events.jobs_queued()

        def key_revoked(payload: str) -> None:
            self.services.credentials.forget(payload)

        return PgListener(
            asyncpg_dsn(self.store.url),
            {
                self.store.channel(Channel.JOBS): jobs_queued,
                self.store.channel(Channel.JOB): events.job_changed,
                self.store.channel(Channel.KEYS): key_revoked,
            },
            on_reconnect=events.wake_all,
        )

    async def require_postgres_schema(self) -> None:
        """Scale-out processes run on PostgreSQL, on a schema ``vpsnap migrate`` brought up."""
        if not self.store.is_postgres:
            raise ProcessRefused(
                f"vpsnap {self.role.value} needs PostgreSQL (VPSNAP_DATABASE_URL="
                "postgresql+asyncpg://…); the embedded `vpsnap serve` runs on SQLite"
            )
        try:
            await migrate.require_current(self.store.engine)
        except migrate.SchemaMismatch as exc:
            raise ProcessRefused(str(exc)) from None

    # -- processes ---------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def embedded(self) -> AsyncIterator[None]:
        """Worker, scheduler and the node's agent work running in this process for the
        duration of the block (``vpsnap serve``)."""
        await self.prepare()
        self.claim_data_dir()
        await requeue_orphans(
            self.store, self.events, self.clock, self.settings.node, all_in_progress=True
        )
        observer = self.observer()
        await observer.heartbeat()
        worker = self.worker()
        stopping = asyncio.Event()
        tasks = [
            asyncio.create_task(worker.run(), name="worker"),
            asyncio.create_task(
                run_scheduler(
                    [*self.periodic_tasks(), *self.node_tasks(observer)],
                    stopping,
                    self.settings.scheduler_busy_share,
                ),
                name="scheduler",
            ),
        ]
        listener = self.listener(wake_worker=True)
        if listener is not None:
            tasks.append(asyncio.create_task(listener.run(stopping), name="listener"))
        try:
            yield
        finally:
            # Stop by flag, never by cancelling a task that may be inside a transaction.
            worker.stop()
            stopping.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.close()

    @contextlib.asynccontextmanager
    async def api_process(self) -> AsyncIterator[None]:
        """What ``vpsnap api`` runs beside HTTP: the listener that wakes its long-polls and
        drops revoked keys from its cache."""
        await self.require_postgres_schema()
        stopping = asyncio.Event()
        listener = self.listener(wake_worker=False)
        assert listener is not None  # PostgreSQL was required above
        task = asyncio.create_task(listener.run(stopping), name="listener")
        try:
            yield
        finally:
            stopping.set()
            await asyncio.gather(task, return_exceptions=True)
            await self.close()

    async def run_agent(self, stopping: asyncio.Event) -> None:
        """``vpsnap agent``: until ``stopping``, run this node's jobs and agent work.

        One agent per node: the node's advisory lock is taken first, and a second agent for the
        same node is refused (it would otherwise take over the first one's *running* jobs).
        Holding the lock, every job of the node still in progress is an orphan of a dead agent
        and is re-queued at once.
        """
        await self.require_postgres_schema()
        node = self.settings.node
        lock = SessionLock(
            asyncpg_dsn(self.store.url or ""), f"{self.store.channel_prefix}:node:{node}"
        )
        if not await lock.acquire():
            await self.close()
            raise ProcessRefused(
                f"another agent already serves node {node!r} (one agent per node); stop it "
                "first, or start this one with another --node"
            )
        self.node_held = True
        try:
            await self._agent_loop(lock, stopping)
        finally:
            self.node_held = False
            await lock.release()
            await self.close()

    async def _agent_loop(self, lock: SessionLock, stopping: asyncio.Event) -> None:
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        await requeue_orphans(
            self.store, self.events, self.clock, self.settings.node, all_in_progress=True
        )
        observer = self.observer()
        await observer.heartbeat()
        worker = self.worker()
        inner = asyncio.Event()
        listener = self.listener(wake_worker=True)
        assert listener is not None
        tasks = [
            asyncio.create_task(worker.run(), name="worker"),
            asyncio.create_task(
                run_scheduler(self.node_tasks(observer), inner, self.settings.scheduler_busy_share),
                name="agent",
            ),
            asyncio.create_task(listener.run(inner), name="listener"),
        ]
        log.info("agent_started", node=self.settings.node, version=__version__)
        try:
            while not stopping.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), self.settings.node_heartbeat_seconds)
                if stopping.is_set() or await lock.check() or await lock.acquire():
                    continue
                if lock.reachable:
                    # PostgreSQL restarted and someone else took the node meanwhile.
                    log.error("agent_node_lost", node=self.settings.node)
                    break
                # PostgreSQL is down or restarting: the node is still ours to take back (its
                # other connections reconnect by themselves); try again at the next beat.
                log.warning("agent_node_lock_unreachable", node=self.settings.node)
        finally:
            worker.stop()
            inner.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            log.info("agent_stopped", node=self.settings.node)

    async def run_scheduler_process(self, stopping: asyncio.Event) -> None:
        """``vpsnap scheduler``: stand by until this process holds the scheduler lock, then run
        the periodic tasks until it loses it or ``stopping``. A standby tries every
        ``scheduler_standby_poll_seconds``, so it takes over within that (plus PostgreSQL
        noticing the dead connection) of the active one dying."""
        await self.require_postgres_schema()
        lock = SessionLock(
            asyncpg_dsn(self.store.url or ""), f"{self.store.channel_prefix}:scheduler"
        )
        poll = self.settings.scheduler_standby_poll_seconds
        listener = self.listener(wake_worker=False)
        assert listener is not None
        listening = asyncio.create_task(listener.run(stopping), name="listener")
        try:
            while not stopping.is_set():
                if not await lock.acquire():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stopping.wait(), poll)
                    continue
                log.info("scheduler_active")
                self.active_scheduler = True
                try:
                    await self._lead(lock, stopping, poll)
                finally:
                    self.active_scheduler = False
                log.info("scheduler_standby")
        finally:
            await lock.release()
            await asyncio.gather(listening, return_exceptions=True)
            await self.close()

    async def _lead(self, lock: SessionLock, stopping: asyncio.Event, poll: float) -> None:
        inner = asyncio.Event()
        running = asyncio.create_task(
            run_scheduler(self.periodic_tasks(), inner, self.settings.scheduler_busy_share)
        )
        try:
            while not stopping.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), poll)
                if not await lock.check():
                    break  # lost the session: another scheduler may be active now
        finally:
            inner.set()
            await asyncio.gather(running, return_exceptions=True)

    async def close(self) -> None:
        await self.store.dispose()
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None
