"""CPU of a snapshot create's store work, in process: the create's transaction (what the POST
does), then the worker's claim, write intent and finish, with the in-memory fake driver (no
hypervisor, no HTTP). Process CPU is much steadier than wall time on a loaded machine, so this
resolves changes of a millisecond or two that ``snapshot_latency.py`` cannot at load 5-8
(docs/performance.md, "The job path, fourth round").

Usage (from the repository root)::

    .venv/bin/python bench/job_path_cpu.py [--database sqlite|postgres] [--creates N]

PostgreSQL: a private schema at ``VPSNAP_BENCH_POSTGRES_URL``'s database, dropped afterwards.
Prints the mean CPU per create (the create's transaction, and claim + run + finish), and the
mean wall time.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import secrets
import shutil
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa
import structlog
from common import BENCH_POSTGRES_URL as POSTGRES_URL
from sqlalchemy.ext.asyncio import create_async_engine

from vpsnap.domain.auth import Principal, Scope
from vpsnap.drivers.fake import FakeDriver
from vpsnap.runtime import Runtime
from vpsnap.services.accounts import NewVps
from vpsnap.services.snapshots import CreateSnapshot
from vpsnap.settings import Settings
from vpsnap.store import migrate
from vpsnap.store.sql import SqlStore

WARMUP = 20


@dataclass
class _Clock:
    """Moved by hand: one second per round, so every job is younger than the next."""

    moment: datetime = datetime(2026, 4, 27, 12, 0, 0, tzinfo=UTC)

    def now(self) -> datetime:
        return self.moment


async def _store(database: str, data_dir: Path) -> tuple[SqlStore, str | None]:
    if database == "sqlite":
        store = SqlStore.from_url(f"sqlite+aiosqlite:///{data_dir / 'vpsnap.db'}")
        await migrate.upgrade(store.engine)
        return store, None
    schema = f"bench_job_path_{secrets.token_hex(4)}"
    admin = create_async_engine(POSTGRES_URL)
    async with admin.begin() as conn:
        await conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    await admin.dispose()
    store = SqlStore.from_url(POSTGRES_URL, schema=schema)
    await migrate.upgrade(store.engine)
    return store, schema


async def measure(database: str, creates: int) -> dict[str, float]:
    """Mean CPU (ms) per create of the create's transaction and of the job's run; wall (ms)."""
    data_dir = Path(tempfile.mkdtemp(prefix="vpsnap-job-path-"))
    store, schema = await _store(database, data_dir)
    clock = _Clock()
    settings = Settings(
        data_dir=data_dir,
        password_hash_time_cost=1,
        password_hash_memory_kib=8 * 1024,
        password_hash_parallelism=1,
    )
    runtime = Runtime.build(settings, driver=FakeDriver(clock), clock=clock, store=store)
    try:
        account = await runtime.services.accounts.create_account("bench")
        principal = Principal(account.id, frozenset({Scope.WRITE_ALL}))
        vps = await runtime.services.accounts.add_vps(
            NewVps(account_name="bench", name="web", disks=("/fake/a.qcow2",), snapshot_slots=3)
        )
        worker, snapshots = runtime.worker(), runtime.services.snapshots
        post = job = wall = 0.0
        for i in range(WARMUP + creates):
            name = f"s{i}"
            cpu0, wall0 = time.process_time(), time.perf_counter()
            await snapshots.create(principal, vps.id, CreateSnapshot(name))
            cpu1 = time.process_time()
            assert await worker.run_one()
            cpu2, wall2 = time.process_time(), time.perf_counter()
            # Untimed: the slot is freed for the next round.
            await snapshots.delete(principal, vps.id, name)
            assert await worker.run_one()
            clock.moment += timedelta(seconds=1)
            if i >= WARMUP:
                post += cpu1 - cpu0
                job += cpu2 - cpu1
                wall += wall2 - wall0
    finally:
        await store.dispose()
        shutil.rmtree(data_dir, ignore_errors=True)
        if schema is not None:
            admin = create_async_engine(POSTGRES_URL)
            async with admin.begin() as conn:
                await conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
            await admin.dispose()
    return {
        "create_tx_cpu_ms": post / creates * 1000,
        "job_cpu_ms": job / creates * 1000,
        "cpu_ms": (post + job) / creates * 1000,
        "wall_ms": wall / creates * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--creates", type=int, default=200, help="timed creates")
    args = parser.parse_args()
    # The job log lines are not what is measured.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    found = asyncio.run(measure(args.database, args.creates))
    print(
        f"{args.database}: per create, CPU {found['cpu_ms']:.2f} ms (create's transaction "
        f"{found['create_tx_cpu_ms']:.2f}, claim + run + finish {found['job_cpu_ms']:.2f}), "
        f"wall {found['wall_ms']:.2f} ms"
    )


if __name__ == "__main__":
    main()
