"""The worker loop: claim jobs of this node, hold their leases, run their handlers.

A worker runs up to ``concurrency`` quick jobs and ``slow_concurrency`` slow ones at once
(lanes: ``domain.model.JobLane``), never two of one VPS (the queue keeps the others pending),
and never more than a share of a lane for one account (docs/how-snapshots-work.md, "Fair
queues"). It sleeps on a wake-up event, not a polling timer; the timer is only the safety net
for leases that expire while nothing else happens.

Stopping (SIGTERM) stops claiming, lets running jobs finish for ``grace_seconds``, then hands
the rest back to the queue (lease released, attempt not counted) and cancels them: a re-run
reads their journal and finishes what they started.
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

from vpsnap.domain import queue
from vpsnap.domain.clock import Clock
from vpsnap.domain.errors import DomainError, VpsNotFound
from vpsnap.domain.model import Job, JobLane, JobType, Vps
from vpsnap.domain.ports import ClaimRequest, HypervisorDriver, Store, Transaction
from vpsnap.domain.problems import error_summary
from vpsnap.events.outbox import record_job_events
from vpsnap.jobs.data_stores import WriteGuard
from vpsnap.jobs.handlers import HANDLERS
from vpsnap.jobs.journal import JobJournal
from vpsnap.jobs.signals import InProcessJobEvents
from vpsnap.metrics import JOB_DURATION, JOB_FAILURES

log = structlog.get_logger("vpsnap.worker")

CLAIM_RETRY_SECONDS = 1.0
"""After a failed claim (the database unreachable), the pause before the next try."""


@dataclass(frozen=True, slots=True)
class Claim:
    """A claimed job, its VPS, and why it must fail without running (if it must)."""

    job: Job
    vps: Vps | None
    failure: DomainError | None


def _writes_snapshot(job: Job, journal: JobJournal) -> bool:
    """A snapshot job about to write for the first time (a re-run after a crash may have
    written already: its journal names the intent, and finishing it frees nothing)."""
    return (
        job.type in (JobType.SNAPSHOT_CREATE, JobType.SNAPSHOT_SCHEDULED)
        and journal.intended is None
    )


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
    slow_concurrency: int = 2
    max_attempts: int = 5
    grace_seconds: float = 30.0
    idle_wakeup_seconds: float = 5.0
    write_guard: WriteGuard | None = None
    """Checks free space with a real statvfs right before a snapshot is written."""
    _running: dict[asyncio.Task[None], Job] = field(default_factory=dict)
    _reserved: dict[JobLane, int] = field(default_factory=dict)
    """Slots of claims in flight (a loop claim, a job end's chained claim), by lane: two
    claims of this worker may overlap, and neither may count the other's slots as free."""
    _claimed_at_end: set[str] = field(default_factory=set)
    """Jobs whose end's transaction also claimed (committed): their end wakes no claim."""
    _cutting: set[str] = field(default_factory=set)
    _stopping: bool = False

    @property
    def lease(self) -> timedelta:
        return timedelta(seconds=self.lease_seconds)

    def _slots(self) -> dict[JobLane, int]:
        return {JobLane.QUICK: self.concurrency, JobLane.SLOW: self.slow_concurrency}

    def account_share(self) -> dict[JobLane, int]:
        """At most this many jobs of one account run at once per lane: one slot of every lane
        stays for the others (a lane of one slot is shared first come, first served)."""
        return {lane: max(1, slots - 1) for lane, slots in self._slots().items()}

    async def run(self) -> None:
        """Run until ``stop()``; jobs in flight then get ``grace_seconds`` to finish, including
        their final writes, and are handed back to the queue after that.

        Stopping starts with a flag, not task cancellation: a cancel landing inside a database
        call could leave a connection mid-transaction (and SQLite's write lock held). Only the
        hypervisor work of a job past its grace is cancelled, never its final write.
        """
        log.info("worker_started", worker=self.worker_id, node=self.node)
        while not self._stopping:
            self.events.work_available.clear()
            queued, self.events.queued_since_claim = self.events.queued_since_claim, False
            try:
                await self.claim_available(look_first=not queued)
            except Exception as exc:
                # The database went away (a PostgreSQL restart, a failover): the worker must
                # outlive it, or its node would stop taking jobs while its agent looks alive.
                # The claim's transaction was rolled back; try again after a pause.
                log.warning("claim_failed", worker=self.worker_id, error=repr(exc))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.events.work_available.wait(), CLAIM_RETRY_SECONDS)
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.events.work_available.wait(), self.idle_wakeup_seconds)
        await self._drain()
        log.info("worker_stopped", worker=self.worker_id)

    def stop(self) -> None:
        self._stopping = True
        self.events.work_available.set()

    async def _drain(self) -> None:
        if not self._running:
            return
        # A job's end may still start the jobs its chained claim took (``_finish`` hands them
        # back when it sees the stop, but not before its own transaction has committed): wait
        # for those as well, within the same grace.
        deadline = asyncio.get_running_loop().time() + self.grace_seconds
        late: set[asyncio.Task[None]] = set()
        while self._running:
            remaining = deadline - asyncio.get_running_loop().time()
            _, late = await asyncio.wait(set(self._running), timeout=max(remaining, 0))
            if late:
                break
        if not late:
            return
        for task in late:
            job = self._running.get(task)
            if job is not None:
                self._cutting.add(job.id)
                log.warning("job_cut_short", job_id=job.id, grace_seconds=self.grace_seconds)
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)

    async def claim_available(self, *, look_first: bool = True) -> None:
        """Claim jobs for the free slots and start them; ``look_first``: only after a read
        found one queued (``_anything_queued``), for wake-ups that were not a job queued."""
        if self._stopping:
            return
        if not self._free_slots() or (look_first and not await self._anything_queued()):
            return
        # Counted again after the read: a chained claim may have taken the slots meanwhile.
        free = self._reserve(self._free_slots())
        if not free:
            return
        try:
            claimed = await self._claim(free)
        finally:
            self._release(free)
        self._start(claimed)

    def _free_slots(self, ending: Job | None = None) -> dict[JobLane, int]:
        """Slots by lane that neither a running job (``ending``, whose end is being written,
        not counted) nor a claim in flight holds; lanes without one left out."""
        free = self._slots()
        for job in self._running.values():
            if job is not ending:
                free[job.lane] -= 1
        for lane, n in self._reserved.items():
            free[lane] -= n
        return {lane: n for lane, n in free.items() if n > 0}

    def _reserve(self, free: dict[JobLane, int]) -> dict[JobLane, int]:
        # No await between counting and reserving: the two claims cannot take one slot twice.
        for lane, n in free.items():
            self._reserved[lane] = self._reserved.get(lane, 0) + n
        return free

    def _release(self, free: dict[JobLane, int]) -> None:
        for lane, n in free.items():
            self._reserved[lane] -= n

    def _start(self, claimed: list[Claim]) -> None:
        """Run claimed jobs, each in a task of its own (its slot held until the task ends)."""
        for claim in claimed:
            task = asyncio.create_task(self._run(claim), name=f"job:{claim.job.id}")
            self._running[task] = claim.job
            task.add_done_callback(self._job_done)

    async def _anything_queued(self) -> bool:
        """Whether a claim could take a job, read without a write transaction.

        The worker wakes after every job of its own ends (a slot is free) and every 5 s; most
        of those wake-ups find nothing queued, and a claim that finds nothing still took
        SQLite's write lock (two thread hops, the API's next write waiting behind it) or four
        PostgreSQL round trips. This read takes no lock (SQLite: inline, by the index on
        status and node). Nothing is missed: ``run`` cleared the wake-up event before this
        read, and whatever queues a job after it (the API, a promotion at a job's end, the
        reaper, another process through LISTEN/NOTIFY) sets the event after its commit. The
        claim itself stays the only place that takes jobs (exactly once, under the lock). A
        wake-up by a queued job (``queued_since_claim``) claims without this read.
        """
        try:
            async with self.store.transaction(read_only=True, small=True) as tx:
                return await tx.has_queued_jobs(self.node)
        except Exception:
            # A read that failed (SQLite's 100 ms cap on inline reads, a lost connection) says
            # nothing: the claim decides, and reports a database that is really gone.
            return True

    def _job_done(self, task: asyncio.Task[None]) -> None:
        job = self._running.pop(task, None)
        if job is not None and job.id in self._claimed_at_end:
            # Its end's transaction already claimed for every slot free without it (after the
            # job was finished there, so its account's share counted it as ended): a claim of
            # the loop now would find what that one left, nothing — an empty write
            # transaction per job in a drain. A job queued since has woken the loop itself.
            self._claimed_at_end.discard(job.id)
            return
        # A slot is free: more may be waiting, including jobs passed over because their
        # account had its share of a lane, which only an end of one of its jobs lets run.
        self.events.work_available.set()

    async def _claim(self, free: dict[JobLane, int]) -> list[Claim]:
        """Take queued jobs for the free slots and let their handlers prepare, in one
        transaction (one round trip less on every job's critical path)."""
        async with self.store.transaction() as tx:
            claimed = await self._claim_in(tx, free)
        self._announce(claimed)
        return claimed

    async def _claim_in(self, tx: Transaction, free: dict[JobLane, int]) -> list[Claim]:
        """The claim and the handlers' preparation, in the caller's write transaction."""
        now = self.clock.now()
        request = ClaimRequest(
            node=self.node,
            worker=self.worker_id,
            now=now,
            lease_until=now + self.lease,
            free=free,
            account_share=self.account_share(),
        )
        jobs = await queue.claim(tx, request)
        return [await self._prepare(tx, job) for job in jobs]

    def _announce(self, claimed: list[Claim]) -> None:
        """After the claim's commit: long-poll waiters see their jobs in progress."""
        for claim in claimed:
            self.events.job_changed(claim.job.id, claim.job)

    async def _prepare(self, tx: Transaction, job: Job) -> Claim:
        # The VPS and its snapshots (a create checks its slot again) in one statement.
        found = await tx.get_vps_with_snapshots(job.vps_id)
        if found is None:
            return Claim(job, None, VpsNotFound(f"VPS {job.vps_id} no longer exists."))
        vps, snapshots = found
        if job.attempts > self.max_attempts:
            # Its worker died every time: stop before it takes yet another one with it.
            return Claim(
                job,
                vps,
                DomainError(f"Gave up after {self.max_attempts} attempts; every worker died."),
            )
        try:
            await HANDLERS[job.type].prepare(tx, job, vps, snapshots)
        except DomainError as exc:
            return Claim(job, vps, exc)
        return Claim(job, vps, None)

    async def run_one(self) -> bool:
        """Claim and run a single job to its end (for tests and tools); False when none."""
        claimed = await self._claim({JobLane.QUICK: 1, JobLane.SLOW: 1})
        for extra in claimed[1:]:
            # One job at a time: a second one (of the other lane) goes back untouched.
            async with self.store.transaction() as tx:
                await queue.hand_back(tx, extra.job, self.worker_id)
        if not claimed:
            return False
        await self._run(claimed[0], chain=False)
        return True

    async def _heartbeat(self, job_id: str) -> None:
        interval = self.lease_seconds / 3
        while True:
            await asyncio.sleep(interval)
            async with self.store.transaction() as tx:
                kept = await queue.extend_lease(
                    tx, job_id, self.worker_id, self.clock.now() + self.lease
                )
            if not kept:
                log.warning("job_lease_lost", job_id=job_id, worker=self.worker_id)
                return

    async def _run(self, claim: Claim, *, chain: bool = True) -> None:
        """Run a claimed job to its end; ``chain``: its end may claim the next jobs
        (``_finish``), which only the worker loop's own jobs do."""
        job, vps = claim.job, claim.vps
        handler = HANDLERS[job.type]
        bound = log.bind(job_id=job.id, job_type=job.type.value, vps_id=job.vps_id)
        bound.info("job_started", attempt=job.attempts, lane=job.lane.value)
        started = asyncio.get_running_loop().time()
        heartbeat = asyncio.create_task(self._heartbeat(job.id))
        facts: dict[str, Any] = {}
        error = claim.failure
        try:
            if error is None and vps is not None:
                journal = JobJournal(self.store, self.clock, job, self.worker_id)
                if self.write_guard is not None and _writes_snapshot(job, journal):
                    await self.write_guard.before_write(
                        vps, include_memory_state=bool(job.payload.get("includeMemoryState"))
                    )
                facts = await handler.perform(self.driver, job, vps, journal)
        except queue.LeaseLost:
            bound.warning("job_lease_lost", worker=self.worker_id)
            return
        except asyncio.CancelledError:
            if job.id not in self._cutting:
                raise
            # Past the shutdown grace: the next worker re-runs it from its journal.
            await asyncio.shield(self._hand_back(job))
            return
        except DomainError as exc:
            error = exc
        except Exception as exc:  # a bug must fail the job, not leave it in progress forever
            bound.exception("job_crashed")
            error = DomainError(f"The job failed unexpectedly: {type(exc).__name__}.")
        finally:
            heartbeat.cancel()
        # The final state is written even if the server is shutting down meanwhile.
        await asyncio.shield(self._finish(job, error, facts, chain=chain))
        elapsed = asyncio.get_running_loop().time() - started
        JOB_DURATION.labels(job.type.value, "failed" if error else "completed").observe(elapsed)
        elapsed_ms = round(elapsed * 1000, 1)
        if error is None:
            bound.info("job_succeeded", duration_ms=elapsed_ms)
        else:
            JOB_FAILURES.labels(job.type.value, error.code).inc()
            # A warning: an operator's log shipping alerts on these, with the code to act on.
            # log_detail: the operator's account (paths, tool output) the problem never shows.
            bound.warning(
                "job_failed",
                duration_ms=elapsed_ms,
                code=error.code,
                detail=error.detail,
                log_detail=error.log_detail,
            )

    async def _hand_back(self, job: Job) -> None:
        async with self.store.transaction() as tx:
            handed = await queue.hand_back(tx, job, self.worker_id)
        if handed:
            log.warning("job_handed_back", job_id=job.id, worker=self.worker_id)
            self.events.job_changed(job.id)

    async def _finish(
        self, job: Job, error: DomainError | None, facts: dict[str, Any], *, chain: bool = False
    ) -> None:
        """Write the job's end. With ``chain``, the same transaction
        then claims queued jobs for the slots free once this job is gone, and they start
        right after its commit.

        Why: draining a queue, every end was followed by a wake-up of the worker loop and a
        claim of its own — a second write transaction (on SQLite ``BEGIN IMMEDIATE`` and
        ``COMMIT`` in aiosqlite's thread, the write lock taken again behind whatever queued
        meanwhile; on PostgreSQL two more round trips) between two jobs, while the slot stood
        empty (bench/drain.py; docs/performance.md, "Draining queued creates"). The claim is
        the same ``queue.claim`` (the only place that takes jobs) after ``queue.finish``
        promoted the VPS's next job, in one transaction: exactly once, per-VPS order and the
        leases are those of a claim of its own. Its slots are reserved (``_reserve``) so that a
        claim of the loop at the same time does not count them. If the chained part fails,
        the whole transaction rolled back and the end is written again alone: a claim must
        never cost a job its end.
        """
        free: dict[JobLane, int] = {}
        if chain and not self._stopping:
            free = self._reserve(self._free_slots(ending=job))
        try:
            ended = await self._write_end(job, error, facts, free)
        except queue.LeaseLost:
            log.warning("job_lease_lost", job_id=job.id, worker=self.worker_id)
            return
        except _ChainFailed as failed:
            log.warning("chained_claim_failed", job_id=job.id, error=repr(failed.__cause__))
            self._release(free)
            free = {}
            try:
                ended = await self._write_end(job, error, facts, free)
            except queue.LeaseLost:
                log.warning("job_lease_lost", job_id=job.id, worker=self.worker_id)
                return
        finally:
            # Released before the tasks start: they hold their slots from then on.
            self._release(free)
        finished, promoted, claimed = ended
        if free:
            self._claimed_at_end.add(job.id)
        self.events.job_changed(finished.id, finished)
        if claimed and self._stopping:
            # Stopped while the claim was being written: a stopping worker starts nothing.
            for claim in claimed:
                await self._hand_back(claim.job)
            claimed = []
        self._announce(claimed)
        self._start(claimed)
        if promoted is not None:
            self.events.job_changed(promoted.id, promoted)
            if not free:
                # No claim in this transaction: the loop's claim takes it.
                self.events.jobs_queued()
            # Otherwise that claim saw it queued, under the rules a claim of the loop would
            # apply: taken, or not claimable until a slot or its account's share frees up —
            # a job's end, which claims again.

    async def _write_end(
        self,
        job: Job,
        error: DomainError | None,
        facts: dict[str, Any],
        free: dict[JobLane, int],
    ) -> tuple[Job, Job | None, list[Claim]]:
        """The end's transaction (and the chained claim for ``free``, when not empty): the
        finished job, the one promoted behind it, the jobs claimed. Raises ``LeaseLost``;
        ``_ChainFailed`` when the claim failed (nothing of the transaction committed)."""
        handler = HANDLERS[job.type]
        now = self.clock.now()
        async with self.store.transaction() as tx:
            vps = await tx.get_vps(job.vps_id, lock=True)
            before = (
                await tx.get_snapshot(vps.id, job.snapshot_name)
                if vps is not None and job.snapshot_name
                else None
            )
            if vps is None or error is not None:
                failure = error or VpsNotFound("The VPS no longer exists.")
                finished, promoted = await queue.finish(
                    tx, job, self.worker_id, now, error=error_summary(failure)
                )
                if vps is not None:
                    await handler.undo(tx, job, vps)
            else:
                result = await handler.succeed(tx, job, vps, facts, now)
                finished, promoted = await queue.finish(tx, job, self.worker_id, now, result=result)
            # Webhook events commit with the job's end, or not at all (events.outbox).
            await record_job_events(tx, now, finished, vps, snapshot_before=before)
            claimed: list[Claim] = []
            if free:
                try:
                    claimed = await self._claim_in(tx, free)
                except Exception as exc:
                    # Rolls the transaction back (the end too): written again without it.
                    raise _ChainFailed from exc
        return finished, promoted, claimed


class _ChainFailed(Exception):
    """The claim chained to a job's end failed; the end's transaction was rolled back."""
