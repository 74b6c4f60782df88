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

Incremental (issue 15): the pass works a page of VPSes at a time (one statement each for their
busy check, their snapshot rows and their open intents) and, given a ``DiskFingerprints`` kept
between passes, does not read again a VPS's disks whose (device, inode, size, mtime, ctime) are
what they were when it last read them: it compares the database with the restore points it read
then, so a suspected snapshot is still confirmed (or cleared) by a later pass, on the same
observation rules. The comparison itself is skipped only when it cannot find anything new: the
disks are unchanged, the last comparison found nothing, and no job was queued for the VPS
since (only jobs and the reconciler change snapshot rows and write intents).
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import structlog

from vpsnap.domain.audit import RECONCILER, AuditAction, Target
from vpsnap.domain.clock import Clock, SystemClock
from vpsnap.domain.errors import DomainError
from vpsnap.domain.model import IntentState, Snapshot, SnapshotStatus, Vps, WriteIntent
from vpsnap.domain.ports import HypervisorDriver, RestorePoint, Store, Transaction, VpsFilter
from vpsnap.events.audit import record
from vpsnap.jobs.handlers.ownership import is_the_recorded_one
from vpsnap.metrics import RECONCILIATION_ACTIONS
from vpsnap.pacing import between_pages

log = structlog.get_logger("vpsnap.reconcile")

_PAGE = 200
# Disk timestamps come from the hypervisor host's clock, intent timestamps from the worker's.
_CLOCK_TOLERANCE = timedelta(seconds=1)
DEFAULT_CONFIRM_AFTER = timedelta(seconds=60)
# A file modified this close to when it was looked at may change again within the same mtime
# tick (file times move in clock ticks, not nanoseconds): such a fingerprint proves nothing,
# the disk is read again next pass (git's "racily clean" rule), in nanoseconds.
_RACY_NS = 2_000_000_000

_JOB_CLOCK_MARGIN = timedelta(minutes=5)

Fingerprint = tuple[int, int, int, int, int]
"""(device, inode, size in bytes, mtime in ns, ctime in ns) of one disk file. The ctime is
there because no tool can set it back: a file rewritten and given its old mtime again (a
restore from backup with ``touch -r``, ``cp -p``) still differs."""


@dataclass(slots=True)
class DiskFingerprints:
    """What the reconciler read from each VPS's disks, and the fingerprints of those files
    just before it read them; kept in memory by the process that reconciles its node, from one
    pass to the next. Lost on restart (the first pass reads everything), never shared."""

    _seen: dict[str, tuple[tuple[str, ...], tuple[Fingerprint, ...], list[RestorePoint]]] = field(
        default_factory=dict
    )
    racy_ns: int = _RACY_NS
    """Disks modified this recently (ns) when looked at are read again next pass."""
    reads: int = 0
    """Hypervisor reads made (for the operator's and the tests' eyes)."""
    skipped: int = 0
    """Reads saved because the disks had not changed."""
    compares_skipped: int = 0
    """Comparisons saved: disks unchanged, nothing found last time, no job since."""
    unchanged: set[str] = field(default_factory=set)
    """VPSes whose last comparison found nothing to report or do."""
    last_pass_at: datetime | None = None

    def jobs_since(self) -> datetime | None:
        """Jobs created since this moment may have changed rows (None: no pass yet). Job times
        come from other processes' clocks: the margin covers their drift."""
        if self.last_pass_at is None:
            return None
        return self.last_pass_at - _JOB_CLOCK_MARGIN

    def compared(self, vps_id: str, *, clean: bool) -> None:
        if clean:
            self.unchanged.add(vps_id)
        else:
            self.unchanged.discard(vps_id)

    def passed(self, started_at: datetime) -> None:
        self.last_pass_at = started_at

    def points(self, vps: Vps, prints: tuple[Fingerprint, ...] | None) -> list[RestorePoint] | None:
        """The restore points read last time, if the VPS's disks are the same files unchanged."""
        if prints is None:
            return None
        seen = self._seen.get(vps.id)
        if seen is None or seen[0] != vps.disks or seen[1] != prints:
            return None
        return seen[2]

    def remember(
        self, vps: Vps, prints: tuple[Fingerprint, ...] | None, points: list[RestorePoint]
    ) -> None:
        if prints is None:
            self._seen.pop(vps.id, None)
        else:
            self._seen[vps.id] = (vps.disks, prints, points)

    def forget(self, vps_id: str) -> None:
        self._seen.pop(vps_id, None)
        self.unchanged.discard(vps_id)


def _fingerprints(vpses: Sequence[Vps], racy_ns: int) -> dict[str, tuple[Fingerprint, ...] | None]:
    """Blocking (a ``stat`` per disk): call it through ``asyncio.to_thread``, once a page.

    None for a VPS when a disk cannot be stat'ed here (not a local file: the driver decides
    what it is) or was modified within ``racy_ns`` of now."""
    found: dict[str, tuple[Fingerprint, ...] | None] = {}
    for vps in vpses:
        prints: list[Fingerprint] = []
        now = time.time_ns()
        for disk in vps.disks:
            try:
                st = Path(disk).stat()
            except OSError:
                break
            if now - max(st.st_mtime_ns, st.st_ctime_ns) < racy_ns:
                break
            prints.append((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
        found[vps.id] = tuple(prints) if len(prints) == len(vps.disks) else None
    return found


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
    seen: DiskFingerprints | None = None,
) -> Report:
    """One pass over the VPSes of ``node`` (all nodes when None); returns what it found and did
    (nothing is changed with ``dry_run``). With ``seen`` (kept from the previous pass), disks
    that did not change are not read again."""
    report = Report(dry_run=dry_run)
    run = _Pass(store, driver, report, (clock or SystemClock()).now(), confirm_after)
    try:
        await _pass(run, node, seen)
    finally:
        # Also when the pass was stopped between pages (``RunStopped``): what the pages before
        # found and did is reported.
        _report(report, dry_run=dry_run)
    return report


async def _pass(run: _Pass, node: str | None, seen: DiskFingerprints | None) -> None:
    after: str | None = None
    while True:
        async with run.store.transaction(read_only=True) as tx:
            page = await tx.list_vps(None, VpsFilter(node=node), after, _PAGE)
        await _reconcile_page(run, page, seen)
        if len(page) < _PAGE:
            break
        after = page[-1].id
        # Paced, and a stop ends the pass here (vpsnap.pacing); a stopped pass is not
        # `passed`: the next one compares everything the jobs may have touched since.
        await between_pages()
    if seen is not None:
        seen.passed(run.now)


def _report(report: Report, *, dry_run: bool) -> None:
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


async def _reconcile_page(run: _Pass, page: list[Vps], seen: DiskFingerprints | None) -> None:
    """Per VPS, in this order as before: the busy check, then its disks, then its rows (a row
    read before the disks could miss a job that ended in between)."""
    if not page:
        return
    ids = [v.id for v in page]
    since = seen.jobs_since() if seen is not None else None
    async with run.store.transaction(read_only=True) as tx:
        busy = await tx.vps_with_unfinished_jobs(ids)
        touched = await tx.vps_with_jobs_since(ids, since) if since is not None else set(ids)
    idle = [v for v in page if v.id not in busy]
    for vps in page:
        if vps.id in busy:
            run.note(Action.SKIPPED_BUSY, vps, None, "a job is queued or running")
    on_disk, remembered = await _read_disks(run, idle, seen)
    # Disks as last pass, a comparison that found nothing, and no job since (only jobs and the
    # reconciler itself change snapshot rows and intents): comparing again would find nothing.
    read = [
        v
        for v in idle
        if v.id in on_disk
        and not (
            seen is not None
            and v.id in remembered
            and v.id in seen.unchanged
            and v.id not in touched
        )
    ]
    if seen is not None:
        seen.compares_skipped += sum(1 for v in idle if v.id in on_disk) - len(read)
    async with run.store.transaction(read_only=True) as tx:
        rows = await tx.list_snapshots_of([v.id for v in read])
        intents = await tx.open_write_intents_of([v.id for v in read])
    for vps in read:
        before = len(run.report.findings)
        await _compare(run, vps, on_disk[vps.id], rows[vps.id], intents[vps.id])
        if seen is not None:
            seen.compared(vps.id, clean=len(run.report.findings) == before)


async def _read_disks(
    run: _Pass, idle: list[Vps], seen: DiskFingerprints | None
) -> tuple[dict[str, list[RestorePoint]], set[str]]:
    """The restore points of each VPS that could be read (read now, or remembered from a pass
    that saw the same files; the second set says which were remembered); the others are noted
    unreadable."""
    prints = await asyncio.to_thread(_fingerprints, idle, seen.racy_ns) if seen else {}
    on_disk: dict[str, list[RestorePoint]] = {}
    remembered: set[str] = set()
    for vps in idle:
        points = seen.points(vps, prints.get(vps.id)) if seen is not None else None
        if points is not None and seen is not None:
            seen.skipped += 1
            remembered.add(vps.id)
        else:
            if seen is not None:
                seen.reads += 1
            try:
                points = await run.driver.list_restore_points(vps)
            except DomainError as exc:
                # Not "the snapshots are gone": nothing is concluded from a disk that cannot be
                # read. Findings are the operator's (log, `admin reconcile`): the full account,
                # paths included.
                if seen is not None:
                    seen.forget(vps.id)
                reason = exc.log_detail or exc.detail
                run.note(
                    Action.UNREADABLE, vps, None, f"could not read the disks, retried: {reason}"
                )
                continue
            if seen is not None:
                seen.remember(vps, prints.get(vps.id), points)
        on_disk[vps.id] = points
    return on_disk, remembered


async def _compare(
    run: _Pass,
    vps: Vps,
    points: list[RestorePoint],
    rows: list[Snapshot],
    intents: list[WriteIntent],
) -> None:
    on_disk = {p.name: p for p in points}
    known = {s.name: s for s in rows}
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
