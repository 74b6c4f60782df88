"""Reconciliation: compare each VPS's snapshots in the database with what the hypervisor holds.

Invariants (docs/how-snapshots-work.md, "Reconciliation"):

- **Only repeated, unambiguous observations change anything.** A disk that cannot be read (a
  tool failed, the image is not qcow2 any more, a header is damaged) says nothing about its
  snapshots: the VPS is reported and retried on the next pass. A snapshot missing from a
  readable disk is first *suspected* (``missing_since``); only when it is still missing on a
  pass at least ``confirm_after`` later is it marked ``failed``, which frees its slot. A
  ``failed`` snapshot that is on its disks again (the one vpsnap made) is ``available`` again.
- **vpsnap deletes on disk only what it can prove it wrote.** A snapshot on disk without a row
  is removed only when an open write intent covers it: a job recorded that it was about to
  write that name on that VPS, the job is over, and the snapshot is no older than the intent.
  Anything else is reported as foreign and never touched.

VPSes with a job queued or running are skipped: a job in flight legitimately makes the two
sides differ for a moment. Every change is made under the VPS row lock after checking again that
no job has been queued since the scan.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import structlog

from vpsnap.domain.audit import RECONCILER, AuditAction, Target
from vpsnap.domain.clock import Clock, SystemClock
from vpsnap.domain.errors import DomainError
from vpsnap.domain.model import IntentState, Snapshot, SnapshotStatus, Vps, WriteIntent
from vpsnap.domain.ports import HypervisorDriver, RestorePoint, Store, Transaction, VpsFilter
from vpsnap.events.audit import record
from vpsnap.jobs.handlers.ownership import is_the_recorded_one
from vpsnap.metrics import RECONCILIATION_ACTIONS

log = structlog.get_logger("vpsnap.reconcile")

_PAGE = 200
# Disk timestamps come from the hypervisor host's clock, intent timestamps from the worker's.
_CLOCK_TOLERANCE = timedelta(seconds=1)
DEFAULT_CONFIRM_AFTER = timedelta(seconds=60)


class Action(enum.StrEnum):
    SUSPECTED_MISSING = "suspected_missing"
    MARKED_MISSING = "marked_missing"
    REAPPEARED = "reappeared"
    REMOVED_LEFTOVER = "removed_leftover"
    SETTLED_INTENT = "settled_intent"
    REPORTED_FOREIGN = "reported_foreign"
    SKIPPED_BUSY = "skipped_busy"
    UNREADABLE = "unreadable"
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


@dataclass(frozen=True, slots=True)
class _Pass:
    store: Store
    driver: HypervisorDriver
    report: Report
    now: datetime
    confirm_after: timedelta

    def note(self, action: Action, vps: Vps, snapshot: str | None, detail: str) -> None:
        self.report.findings.append(Finding(action, vps.id, vps.name, snapshot, detail))


async def reconcile(
    store: Store,
    driver: HypervisorDriver,
    node: str | None,
    *,
    dry_run: bool = False,
    clock: Clock | None = None,
    confirm_after: timedelta = DEFAULT_CONFIRM_AFTER,
) -> Report:
    """One pass over the VPSes of ``node`` (all nodes when None); returns what it found and did
    (nothing is changed with ``dry_run``)."""
    report = Report(dry_run=dry_run)
    run = _Pass(store, driver, report, (clock or SystemClock()).now(), confirm_after)
    after: str | None = None
    while True:
        async with store.transaction(read_only=True) as tx:
            page = await tx.list_vps(None, VpsFilter(node=node), after, _PAGE)
        for vps in page:
            await _reconcile_vps(run, vps)
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


async def _reconcile_vps(run: _Pass, vps: Vps) -> None:
    async with run.store.transaction(read_only=True) as tx:
        busy = await tx.has_active_job(vps.id)
    if busy:
        run.note(Action.SKIPPED_BUSY, vps, None, "a job is queued or running")
        return
    try:
        points = await run.driver.list_restore_points(vps)
    except DomainError as exc:
        # Not "the snapshots are gone": nothing is concluded from a disk that cannot be read.
        # Findings are the operator's (log, `admin reconcile`): the full account, paths included.
        reason = exc.log_detail or exc.detail
        run.note(Action.UNREADABLE, vps, None, f"could not read the disks, retried: {reason}")
        return
    on_disk = {p.name: p for p in points}
    async with run.store.transaction(read_only=True) as tx:
        known = {s.name: s for s in await tx.list_snapshots(vps.id)}
        intents = await tx.open_write_intents(vps.id)

    for snapshot in known.values():
        await _check_row(run, vps, snapshot, on_disk.get(snapshot.name))
    for point in points:
        row = known.get(point.name)
        if row is None or not is_the_recorded_one(point, row.disk_created_at):
            await _check_unknown(run, vps, point, intents, has_row=row is not None)
    for intent in intents:
        if intent.name not in on_disk:
            await _settle_intent(run, vps, intent)


async def _check_row(run: _Pass, vps: Vps, snapshot: Snapshot, point: RestorePoint | None) -> None:
    name = snapshot.name
    whole = (
        point is not None
        and set(point.disks) == set(vps.disks)
        and is_the_recorded_one(point, snapshot.disk_created_at)
    )
    if snapshot.status is SnapshotStatus.FAILED:
        if whole:
            run.note(Action.REAPPEARED, vps, name, "on every disk again: available")
            await _locked(
                run,
                vps,
                lambda tx: _reappeared(tx, vps, name),
                audit=(AuditAction.RECONCILE_REAPPEARED, name),
            )
        return
    if snapshot.status is not SnapshotStatus.AVAILABLE:
        return  # creating/deleting/restoring without a job: a job's end is being written
    if whole:
        if snapshot.missing_since is not None:
            await _locked(run, vps, lambda tx: tx.set_snapshot_missing_since(vps.id, name, None))
        return
    if point is None:
        where = "any disk"
    elif set(point.disks) != set(vps.disks):
        where = "some disks"
    else:
        where = "its disks (another snapshot carries its name)"
    since = snapshot.missing_since
    if since is None or run.now - since < run.confirm_after:
        run.note(Action.SUSPECTED_MISSING, vps, name, f"missing from {where}; checked again later")
        if since is None:
            await _locked(run, vps, lambda tx: tx.set_snapshot_missing_since(vps.id, name, run.now))
        return
    run.note(
        Action.MARKED_MISSING,
        vps,
        name,
        f"missing from {where} since {since.isoformat()}: marked failed",
    )
    await _locked(
        run,
        vps,
        lambda tx: tx.set_snapshot_status(
            vps.id, name, SnapshotStatus.FAILED, only_from=SnapshotStatus.AVAILABLE
        ),
        audit=(AuditAction.RECONCILE_MARK_MISSING, name),
    )


async def _reappeared(tx: Transaction, vps: Vps, name: str) -> None:
    await tx.set_snapshot_status(
        vps.id, name, SnapshotStatus.AVAILABLE, only_from=SnapshotStatus.FAILED
    )
    await tx.set_snapshot_missing_since(vps.id, name, None)


async def _check_unknown(
    run: _Pass, vps: Vps, point: RestorePoint, intents: list[WriteIntent], *, has_row: bool
) -> None:
    intent = _covering_intent(point, intents)
    if intent is None or has_row:
        run.note(
            Action.REPORTED_FOREIGN,
            vps,
            point.name,
            "on disk but not made by vpsnap: left alone",
        )
        return
    run.note(
        Action.REMOVED_LEFTOVER,
        vps,
        point.name,
        f"left on disk by job {intent.job_id}, which recorded that it was writing it",
    )

    async def remove(tx: Transaction) -> None:
        if await tx.get_snapshot(vps.id, point.name) is not None:
            return  # a create of that name was accepted since the scan: it is not leftover
        # Under the VPS lock, so that no job of this VPS can start meanwhile.
        await run.driver.delete_snapshot(vps, point.name)
        await tx.close_write_intents(intent.job_id, IntentState.UNDONE, run.now, name=point.name)

    await _locked(run, vps, remove, audit=(AuditAction.RECONCILE_REMOVE_LEFTOVER, point.name))


def _covering_intent(point: RestorePoint, intents: list[WriteIntent]) -> WriteIntent | None:
    for intent in intents:
        if (
            intent.name == point.name
            and point.created_at is not None
            and point.created_at >= intent.created_at - _CLOCK_TOLERANCE
        ):
            return intent
    return None


async def _settle_intent(run: _Pass, vps: Vps, intent: WriteIntent) -> None:
    run.note(
        Action.SETTLED_INTENT,
        vps,
        intent.name,
        f"job {intent.job_id} is over and left nothing of it on disk",
    )
    await _locked(
        run,
        vps,
        lambda tx: tx.close_write_intents(
            intent.job_id, IntentState.UNDONE, run.now, name=intent.name
        ),
    )


async def _locked(
    run: _Pass,
    vps: Vps,
    change: Callable[[Transaction], Awaitable[object]],
    *,
    audit: tuple[AuditAction, str] | None = None,
) -> None:
    """Apply ``change`` under the VPS row lock, unless a job was queued since the scan (it owns
    the VPS's snapshots now) or this is a dry run; ``audit`` (action, snapshot name) records
    the change in the same transaction, by the reconciler."""
    if run.report.dry_run:
        return
    try:
        async with run.store.transaction() as tx:
            locked = await tx.get_vps(vps.id, lock=True)
            if locked is None or await tx.has_active_job(vps.id):
                return
            await change(tx)
            if audit is not None:
                action, name = audit
                await record(
                    tx,
                    run.now,
                    RECONCILER,
                    action,
                    account_id=vps.account_id,
                    target=Target("snapshot", name),
                    vps_id=vps.id,
                )
    except DomainError as exc:
        run.note(Action.FAILED, vps, None, exc.log_detail or exc.detail)
