"""``snapshot.scheduled``: take a schedule's snapshot, then delete the one it replaces.

The run was decided when it was queued (``vpsnap.scheduler.schedules``): the new snapshot's
row is ``creating`` and, when every slot was used, the replaced scheduled snapshot is
``deleting``, its name in the payload (``SnapshotPayload.replaces``). The new snapshot is taken
*before* the old one is deleted, so a run that fails anywhere keeps the old restore point: the
new row goes (its slot is free at once) and the old one is ``available`` again.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import structlog

from vpsnap.domain.errors import DomainError
from vpsnap.domain.job_types import snapshot_payload
from vpsnap.domain.model import Job, Snapshot, SnapshotStatus, Vps
from vpsnap.domain.ports import HypervisorDriver, Transaction
from vpsnap.jobs.handlers.create import CreateSnapshotHandler, settle_failed_write
from vpsnap.jobs.handlers.delete import delete_own_snapshot
from vpsnap.jobs.journal import JobJournal

log = structlog.get_logger("vpsnap.worker")

# ``snapshot_schedules.last_run_status`` is VARCHAR(300); PostgreSQL refuses longer values.
LAST_RUN_STATUS_MAX = 300


def run_status(text: str) -> str:
    """``text`` cut to what ``last_run_status`` holds."""
    if len(text) <= LAST_RUN_STATUS_MAX:
        return text
    return text[: LAST_RUN_STATUS_MAX - 1] + "…"


def _replaced(job: Job) -> str | None:
    return snapshot_payload(job).replaces


async def _record_run(tx: Transaction, vps_id: str, at: datetime, status: str) -> None:
    # The schedule may have been deleted while its run was queued; the run still counts.
    schedule = await tx.get_schedule(vps_id)
    if schedule is not None:
        await tx.save_schedule(
            dataclasses.replace(schedule, last_run_at=at, last_run_status=run_status(status))
        )


class ScheduledSnapshotHandler:
    """The create handler's work (the same slot re-check, the same idempotent re-runs), plus
    the rotation and the schedule's ``last_run_*``."""

    def __init__(self) -> None:
        self._create = CreateSnapshotHandler()

    async def prepare(
        self, tx: Transaction, job: Job, vps: Vps, snapshots: Sequence[Snapshot]
    ) -> None:
        await self._create.prepare(tx, job, vps, snapshots)

    async def perform(
        self, driver: HypervisorDriver, job: Job, vps: Vps, journal: JobJournal
    ) -> dict[str, Any]:
        facts = await self._create.perform(driver, job, vps, journal)
        replaced = _replaced(job)
        if replaced is None:
            return facts
        try:
            row = await journal.snapshot(vps.id, replaced)
            recorded = row.disk_created_at if row is not None else None
            # Deleting what a re-run finds already gone succeeds; a snapshot of that name that
            # is not the one vpsnap made is left alone (its row still goes).
            await delete_own_snapshot(driver, vps, replaced, recorded)
        except DomainError as exc:
            # Keep the old restore point and take the new one back: the failed run then
            # changes nothing, and the VPS never holds more snapshots than it has slots. The
            # new one is this job's own (its write intent is still open).
            name = job.snapshot
            try:
                await driver.delete_snapshot(vps, name)
            except DomainError as cleanup:
                log.warning(
                    "scheduled_rollback_failed",
                    job_id=job.id,
                    snapshot=name,
                    detail=cleanup.log_detail or cleanup.detail,
                )
            # Closes the intent when nothing is left, else reconciliation removes the rest.
            await settle_failed_write(driver, vps, name, journal)
            raise DomainError(
                f"Could not delete {replaced!r} to make room: {exc.detail}",
                code=exc.code,
                extensions=exc.extensions,
                log_detail=exc.log_detail,  # the operator's account travels with it
            ) from exc
        return facts

    async def succeed(
        self, tx: Transaction, job: Job, vps: Vps, facts: dict[str, Any], now: datetime
    ) -> dict[str, Any]:
        result = await self._create.succeed(tx, job, vps, facts, now)
        replaced = _replaced(job)
        if replaced is not None:
            # The new snapshot just became the VPS's current one, so the replaced one is not.
            await tx.remove_snapshot(vps.id, replaced)
        await _record_run(tx, vps.id, now, "ok")
        return {**result, "replaced": replaced}

    async def undo(self, tx: Transaction, job: Job, vps: Vps) -> None:
        await self._create.undo(tx, job, vps)
        replaced = _replaced(job)
        if replaced is not None:
            await tx.set_snapshot_status(
                vps.id, replaced, SnapshotStatus.AVAILABLE, only_from=SnapshotStatus.DELETING
            )
        # The worker has written the job's end (time and problem) in this transaction.
        ended = await tx.get_job(job.id)
        if ended is None or ended.finished_at is None:
            return
        detail = (ended.error or {}).get("detail") or "the job failed"
        await _record_run(tx, vps.id, ended.finished_at, f"failed: {detail}")
