"""Reconciliation: compare each VPS's snapshots in the database with what the hypervisor holds.

- A database snapshot that vanished from the disks (all or some) is marked ``failed``, which
  frees its slot; it can still be deleted (to clear the row).
- A snapshot on disk that a vpsnap create job made and then gave up on (the job failed, the
  rollback could not remove it) is removed from the disks.
- A snapshot on disk that vpsnap never made is reported and never touched.

VPSes with a job queued or running are skipped: a job in flight legitimately makes the two
sides differ for a moment.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import timedelta

import structlog

from vpsnap.domain.errors import DomainError
from vpsnap.domain.model import JobStatus, JobType, SnapshotStatus, Vps
from vpsnap.domain.ports import HypervisorDriver, RestorePoint, Store, VpsFilter
from vpsnap.metrics import RECONCILIATION_ACTIONS

log = structlog.get_logger("vpsnap.reconcile")

_PAGE = 200
# Disk timestamps come from the hypervisor host's clock, job timestamps from the worker's.
_CLOCK_TOLERANCE = timedelta(seconds=1)


class Action(enum.StrEnum):
    MARKED_MISSING = "marked_missing"
    REMOVED_LEFTOVER = "removed_leftover"
    REPORTED_FOREIGN = "reported_foreign"
    SKIPPED_BUSY = "skipped_busy"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Finding:
    action: Action
    vps_id: str
    vps_name: str
    snapshot: str | None
    detail: str


@dataclass(slots=True)
class Report:
    dry_run: bool
    findings: list[Finding] = field(default_factory=list)

    def count(self, action: Action) -> int:
        return sum(1 for f in self.findings if f.action is action)


async def reconcile(
    store: Store, driver: HypervisorDriver, node: str | None, *, dry_run: bool = False
) -> Report:
    report = Report(dry_run=dry_run)
    after: str | None = None
    while True:
        async with store.transaction(read_only=True) as tx:
            page = await tx.list_vps(None, VpsFilter(node=node), after, _PAGE)
        for vps in page:
            await _reconcile_vps(store, driver, vps, report)
        if len(page) < _PAGE:
            break
        after = page[-1].id
    for finding in report.findings:
        if not dry_run:
            RECONCILIATION_ACTIONS.labels(finding.action.value).inc()
        log.info(
            "reconcile_finding",
            action=finding.action.value,
            vps_id=finding.vps_id,
            snapshot=finding.snapshot,
            detail=finding.detail,
            dry_run=dry_run,
        )
    return report


async def _reconcile_vps(store: Store, driver: HypervisorDriver, vps: Vps, report: Report) -> None:
    async with store.transaction(read_only=True) as tx:
        busy = await tx.has_active_job(vps.id)
    if busy:
        report.findings.append(
            Finding(Action.SKIPPED_BUSY, vps.id, vps.name, None, "a job is queued or running")
        )
        return
    try:
        on_disk = {p.name: p for p in await driver.list_restore_points(vps)}
    except DomainError as exc:
        report.findings.append(Finding(Action.FAILED, vps.id, vps.name, None, exc.detail))
        return
    async with store.transaction(read_only=True) as tx:
        known = {s.name: s for s in await tx.list_snapshots(vps.id)}

    for name, snapshot in known.items():
        point = on_disk.get(name)
        if snapshot.status is SnapshotStatus.FAILED or _complete(point, vps):
            continue
        where = "any disk" if point is None else "every disk"
        report.findings.append(
            Finding(
                Action.MARKED_MISSING,
                vps.id,
                vps.name,
                name,
                f"in the database as {snapshot.status.value} but missing from {where}",
            )
        )
        if not report.dry_run:
            await _mark_missing(store, vps, name, snapshot.status)

    for name in sorted(on_disk.keys() - known.keys()):
        if await _left_by_failed_job(store, vps, on_disk[name]):
            report.findings.append(
                Finding(
                    Action.REMOVED_LEFTOVER,
                    vps.id,
                    vps.name,
                    name,
                    "left on disk by a vpsnap create job that failed",
                )
            )
            if not report.dry_run:
                await driver.delete_snapshot(vps, name)
        else:
            report.findings.append(
                Finding(
                    Action.REPORTED_FOREIGN,
                    vps.id,
                    vps.name,
                    name,
                    "on disk but not made by vpsnap: left alone",
                )
            )


def _complete(point: RestorePoint | None, vps: Vps) -> bool:
    return point is not None and set(point.disks) == set(vps.disks)


async def _mark_missing(store: Store, vps: Vps, name: str, seen: SnapshotStatus) -> None:
    async with store.transaction() as tx:
        locked = await tx.get_vps(vps.id, lock=True)
        # Re-check under the lock: a job queued since the scan owns the snapshot now.
        if locked is None or await tx.has_active_job(vps.id):
            return
        await tx.set_snapshot_status(vps.id, name, SnapshotStatus.FAILED, only_from=seen)


async def _left_by_failed_job(store: Store, vps: Vps, point: RestorePoint) -> bool:
    """Provably vpsnap's leftover: a create job of this name failed, and the snapshot on disk
    was made while that job ran. Anything else (no such job, or a snapshot older or younger
    than the failed attempt, e.g. one whose name clash made the job fail) is not touched."""
    async with store.transaction(read_only=True) as tx:
        history = await tx.jobs_for_snapshot(vps.id, point.name)
    if point.created_at is None:
        return False
    for job in history:
        if (
            job.type in (JobType.SNAPSHOT_CREATE, JobType.SNAPSHOT_SCHEDULED)
            and job.status is JobStatus.FAILED
            and job.started_at is not None
            and job.finished_at is not None
            and job.started_at - _CLOCK_TOLERANCE <= point.created_at
            and point.created_at <= job.finished_at + _CLOCK_TOLERANCE
        ):
            return True
    return False
