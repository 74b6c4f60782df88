"""Use cases on a VPS's snapshot schedule (one per VPS): read, set, remove.

The runs themselves are the scheduler's (``vpsnap.scheduler.schedules``); this module only
keeps the schedule row. Writes lock the VPS row, as the scheduler does before it advances
``next_run_at``, so a change made while a run is being queued is never lost.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from datetime import timedelta

from vpsnap.domain.audit import Actor, AuditAction, Target
from vpsnap.domain.auth import Principal, Scope
from vpsnap.domain.clock import Clock
from vpsnap.domain.errors import FieldError, InvalidRequest, SnapshotsNotIncluded
from vpsnap.domain.model import Vps
from vpsnap.domain.ports import Store
from vpsnap.domain.rules import ALLOWED, Gate, SlotUsage, not_on_plan_reason, slot_usage
from vpsnap.domain.schedules import Schedule, clamp_interval
from vpsnap.events.audit import AuditTrail
from vpsnap.services.access import owned_vps


@dataclass(frozen=True, slots=True)
class ScheduleView:
    """What ``GET /snapshot-schedules`` shows: the schedule (or None), the VPS's slots, and
    whether the caller may enable it."""

    vps: Vps
    schedule: Schedule | None
    usage: SlotUsage
    available: bool
    reason: str | None
    can_enable: Gate


def can_enable(vps: Vps, principal: Principal | None = None) -> Gate:
    """Enabling needs ``write:vm`` and at least one slot. A service that is not active does not
    block it: its runs are skipped (and say so) until the service is active again."""
    if principal is not None and not principal.has(Scope.WRITE_VM):
        return Gate.refused("The credential lacks the write:vm scope.", "forbidden")
    if vps.snapshot_slots == 0:
        return Gate.refused(not_on_plan_reason(vps), "snapshots_not_included")
    return ALLOWED


@dataclass(frozen=True, slots=True)
class ScheduleService:
    store: Store
    clock: Clock

    async def get(self, principal: Principal, vps_id: str) -> ScheduleView:
        async with self.store.transaction(read_only=True) as tx:
            vps = await owned_vps(tx, principal, vps_id)
            schedule = await tx.get_schedule(vps.id)
            usage = slot_usage(vps, await tx.list_snapshots(vps.id))
        return _view(principal, vps, schedule, usage)

    async def put(
        self, principal: Principal, vps_id: str, *, enabled: bool, interval_hours: float
    ) -> ScheduleView:
        """Create or replace the schedule. ``interval_hours`` is floored and clamped to 4..24.

        The next run is ``now + interval`` when the schedule is (re-)enabled or its interval
        changes; otherwise it keeps its time, so re-sending the same settings never postpones
        a run. Nothing is written when nothing changes.
        """
        if not math.isfinite(interval_hours):
            raise InvalidRequest(
                "intervalHours must be a finite number.",
                [FieldError("/intervalHours", "Must be a finite number.", "invalid_type")],
            )
        interval = clamp_interval(interval_hours)
        audit = AuditTrail(self.store, self.clock)
        actor, action = Actor.of(principal), AuditAction.SCHEDULE_UPDATE
        async with audit.refusals(
            actor,
            action,
            account_id=principal.account_id,
            target=Target("schedule", vps_id),
            vps_id=vps_id,
        ):
            return await self._put(principal, vps_id, enabled=enabled, interval=interval)

    async def _put(
        self, principal: Principal, vps_id: str, *, enabled: bool, interval: int
    ) -> ScheduleView:
        async with self.store.transaction() as tx:
            vps = await owned_vps(tx, principal, vps_id, lock=True)
            if enabled and vps.snapshot_slots == 0:
                raise SnapshotsNotIncluded(not_on_plan_reason(vps))
            existing = await tx.get_schedule(vps.id)
            schedule = self._changed(vps.id, existing, enabled=enabled, interval=interval)
            if schedule is not existing:
                await tx.save_schedule(schedule)
                await AuditTrail(self.store, self.clock).record(
                    tx,
                    Actor.of(principal),
                    AuditAction.SCHEDULE_UPDATE,
                    account_id=principal.account_id,
                    target=Target("schedule", vps.id),
                    vps_id=vps.id,
                    details={"enabled": enabled, "intervalHours": interval},
                )
            usage = slot_usage(vps, await tx.list_snapshots(vps.id))
        return _view(principal, vps, schedule, usage)

    def _changed(
        self, vps_id: str, existing: Schedule | None, *, enabled: bool, interval: int
    ) -> Schedule:
        if (
            existing is not None
            and existing.enabled == enabled
            and existing.interval_hours == interval
        ):
            return existing
        now = self.clock.now()
        next_run_at = now + timedelta(hours=interval) if enabled else None
        if existing is None:
            return Schedule(
                vps_id=vps_id,
                enabled=enabled,
                interval_hours=interval,
                next_run_at=next_run_at,
                last_run_at=None,
                last_run_status=None,
                created_at=now,
                updated_at=now,
            )
        return dataclasses.replace(
            existing,
            enabled=enabled,
            interval_hours=interval,
            next_run_at=next_run_at,
            updated_at=now,
        )

    async def delete(self, principal: Principal, vps_id: str) -> bool:
        """Remove the schedule; its snapshots are kept. False when there was none (the API
        answers 204 either way: the schedule is gone, which is what was asked)."""
        audit = AuditTrail(self.store, self.clock)
        actor, target = Actor.of(principal), Target("schedule", vps_id)
        action = AuditAction.SCHEDULE_DELETE
        async with audit.refusals(
            actor, action, account_id=principal.account_id, target=target, vps_id=vps_id
        ):
            async with self.store.transaction() as tx:
                vps = await owned_vps(tx, principal, vps_id, lock=True)
                deleted = await tx.delete_schedule(vps.id)
                await audit.record(
                    tx,
                    actor,
                    action,
                    account_id=principal.account_id,
                    target=target,
                    vps_id=vps.id,
                    details={"existed": deleted},
                )
            return deleted


def _view(
    principal: Principal, vps: Vps, schedule: Schedule | None, usage: SlotUsage
) -> ScheduleView:
    available = usage.total > 0
    return ScheduleView(
        vps=vps,
        schedule=schedule,
        usage=usage,
        available=available,
        reason=None if available else not_on_plan_reason(vps),
        can_enable=can_enable(vps, principal),
    )
