"""The worker loop: claim jobs of this node, hold their leases, run their handlers.

A worker runs up to ``concurrency`` jobs at once (never two of one VPS: the queue keeps the
others pending). It sleeps on a wake-up event, not a polling timer; the timer is only the
safety net for leases that expire while nothing else happens.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import structlog

from vpsnap.domain.clock import Clock
from vpsnap.domain.errors import DomainError, VpsNotFound
from vpsnap.domain.model import Job, Vps
from vpsnap.domain.ports import HypervisorDriver, Store, Transaction
from vpsnap.domain.problems import error_summary
from vpsnap.jobs import queue
from vpsnap.jobs.handlers import HANDLERS
from vpsnap.jobs.signals import InProcessJobEvents
from vpsnap.metrics import JOB_DURATION

log = structlog.get_logger("vpsnap.worker")


@dataclass(frozen=True, slots=True)
class Claim:
    """A claimed job, its VPS, and why it must fail without running (if it must)."""

    job: Job
    vps: Vps | None
    failure: DomainError | None


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class Worker:
    store: Store
    driver: HypervisorDriver
    events: InProcessJobEvents
    clock: Clock
    node: str = "local"
    worker_id: str = field(default_factory=default_worker_id)
    lease_seconds: float = 30.0
    concurrency: int = 4
    max_attempts: int = 5
    idle_wakeup_seconds: float = 5.0
    _running: set[asyncio.Task[None]] = field(default_factory=set)
    _stopping: bool = False
    _saturated: bool = False

    @property
    def lease(self) -> timedelta:
        return timedelta(seconds=self.lease_seconds)

    async def run(self) -> None:
        """Run until ``stop()``; jobs in flight then finish, including their final writes.

        Stopping is a flag, not task cancellation: a cancel landing inside a database call
        could leave a connection mid-transaction (and SQLite's write lock held).
        """
        log.info("worker_started", worker=self.worker_id, node=self.node)
        while not self._stopping:
            self.events.work_available.clear()
            await self.claim_available()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.events.work_available.wait(), self.idle_wakeup_seconds)
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)
        log.info("worker_stopped", worker=self.worker_id)

    def stop(self) -> None:
        self._stopping = True
        self.events.work_available.set()

    async def claim_available(self) -> None:
        free = self.concurrency - len(self._running)
        if free <= 0 or self._stopping:
            return
        claimed = await self._claim(free)
        for claim in claimed:
            task = asyncio.create_task(self._run(claim), name=f"job:{claim.job.id}")
            self._running.add(task)
            task.add_done_callback(self._job_done)
        # Every free slot got a job: more may be waiting, to be claimed when one ends.
        self._saturated = len(claimed) == free

    def _job_done(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        if self._saturated:
            self._saturated = False
            self.events.work_available.set()

    async def _claim(self, limit: int) -> list[Claim]:
        """Take up to ``limit`` queued jobs and let their handlers prepare, in one transaction
        (one round trip less on every job's critical path)."""
        now = self.clock.now()
        async with self.store.transaction() as tx:
            jobs = await tx.claim_jobs(self.node, self.worker_id, now, now + self.lease, limit)
            claimed = [await self._prepare(tx, job) for job in jobs]
        for claim in claimed:
            self.events.job_changed(claim.job.id, claim.job)
        return claimed

    async def _prepare(self, tx: Transaction, job: Job) -> Claim:
        vps = await tx.get_vps(job.vps_id)
        if vps is None:
            return Claim(job, None, VpsNotFound(f"VPS {job.vps_id} no longer exists."))
        if job.attempts > self.max_attempts:
            # Its worker died every time: stop before it takes yet another one with it.
            return Claim(
                job,
                vps,
                DomainError(f"Gave up after {self.max_attempts} attempts; every worker died."),
            )
        try:
            await HANDLERS[job.type].prepare(tx, job, vps)
        except DomainError as exc:
            return Claim(job, vps, exc)
        return Claim(job, vps, None)

    async def run_one(self) -> bool:
        """Claim and run a single job to its end (for tests and tools); False when none."""
        claimed = await self._claim(1)
        if not claimed:
            return False
        await self._run(claimed[0])
        return True

    async def _heartbeat(self, job_id: str) -> None:
        interval = self.lease_seconds / 3
        while True:
            await asyncio.sleep(interval)
            async with self.store.transaction() as tx:
                kept = await tx.extend_lease(job_id, self.worker_id, self.clock.now() + self.lease)
            if not kept:
                log.warning("job_lease_lost", job_id=job_id, worker=self.worker_id)
                return

    async def _run(self, claim: Claim) -> None:
        job, vps = claim.job, claim.vps
        handler = HANDLERS[job.type]
        bound = log.bind(job_id=job.id, job_type=job.type.value, vps_id=job.vps_id)
        bound.info("job_started", attempt=job.attempts)
        started = asyncio.get_running_loop().time()
        heartbeat = asyncio.create_task(self._heartbeat(job.id))
        facts: dict[str, Any] = {}
        error = claim.failure
        try:
            if error is None and vps is not None:
                facts = await handler.perform(self.driver, job, vps)
        except DomainError as exc:
            error = exc
        except Exception as exc:  # a bug must fail the job, not leave it in progress forever
            bound.exception("job_crashed")
            error = DomainError(f"The job failed unexpectedly: {type(exc).__name__}.")
        finally:
            heartbeat.cancel()
        # The final state is written even if the server is shutting down meanwhile.
        await asyncio.shield(self._finish(job, error, facts))
        elapsed = asyncio.get_running_loop().time() - started
        JOB_DURATION.labels(job.type.value, "failed" if error else "completed").observe(elapsed)
        elapsed_ms = round(elapsed * 1000, 1)
        if error is None:
            bound.info("job_succeeded", duration_ms=elapsed_ms)
        else:
            # log_detail: the operator's account (paths, tool output) the problem never shows.
            bound.info(
                "job_failed",
                duration_ms=elapsed_ms,
                code=error.code,
                detail=error.detail,
                log_detail=error.log_detail,
            )

    async def _finish(self, job: Job, error: DomainError | None, facts: dict[str, Any]) -> None:
        handler = HANDLERS[job.type]
        now = self.clock.now()
        try:
            async with self.store.transaction() as tx:
                vps = await tx.get_vps(job.vps_id, lock=True)
                if vps is None or error is not None:
                    failure = error or VpsNotFound("The VPS no longer exists.")
                    finished, promoted = await queue.finish(
                        tx, job, self.worker_id, now, error=error_summary(failure)
                    )
                    if vps is not None:
                        await handler.undo(tx, job, vps)
                else:
                    result = await handler.succeed(tx, job, vps, facts, now)
                    finished, promoted = await queue.finish(
                        tx, job, self.worker_id, now, result=result
                    )
        except queue.LeaseLost:
            log.warning("job_lease_lost", job_id=job.id, worker=self.worker_id)
            return
        self.events.job_changed(finished.id, finished)
        if promoted is not None:
            self.events.job_changed(promoted.id, promoted)
            self.events.jobs_queued()
