"""Rules of the snapshot domain: names, slot accounting and the action gates."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from vpsnap.domain.auth import Principal, Scope
from vpsnap.domain.job_types import JobPayload, PowerPayload, SnapshotPayload
from vpsnap.domain.model import (
    JobLane,
    JobType,
    PowerAction,
    ServiceStatus,
    Snapshot,
    SnapshotStatus,
    Vps,
)

SNAPSHOT_NAME_PATTERN = r"^[A-Za-z0-9_-]{1,40}$"
_NAME_RE = re.compile(SNAPSHOT_NAME_PATTERN)
DESCRIPTION_MAX_LENGTH = 255
# Text vpsnap stores or compares: no control characters (C0, DEL, C1), which no name or
# description needs and PostgreSQL cannot even store (NUL). A description may span lines.
DESCRIPTION_PATTERN = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]*$"
NAME_FILTER_MAX_LENGTH = 100
NAME_FILTER_PATTERN = r"^[^\x00-\x1f\x7f-\x9f]{1,100}$"


def is_valid_snapshot_name(name: str) -> bool:
    return _NAME_RE.fullmatch(name) is not None


def name_key(name: str) -> str:
    """Snapshot names are unique per VPS compared case-insensitively; case is preserved."""
    return name.lower()


@dataclass(frozen=True, slots=True)
class SlotUsage:
    total: int
    used: int

    @property
    def remaining(self) -> int:
        return max(self.total - self.used, 0)


def slot_usage(vps: Vps, snapshots: Iterable[Snapshot]) -> SlotUsage:
    return SlotUsage(total=vps.snapshot_slots, used=sum(1 for s in snapshots if s.holds_slot))


@dataclass(frozen=True, slots=True)
class Gate:
    """Whether an action is allowed now, and if not the error code it would answer with."""

    allowed: bool
    reason: str | None = None
    code: str | None = None

    @classmethod
    def refused(cls, reason: str, code: str) -> Gate:
        return cls(allowed=False, reason=reason, code=code)


ALLOWED = Gate(allowed=True)


def not_on_plan_reason(vps: Vps) -> str:
    return (
        f"Snapshots are not included in the plan of {vps.name}. Add snapshot slots through "
        f"GET /api/v2/vps/{vps.id}/actions/upgrade and POST /api/v2/vps/{vps.id}/actions/config."
    )


def service_gate(vps: Vps) -> Gate:
    if vps.service_status is not ServiceStatus.ACTIVE:
        return Gate.refused(
            f"The service of {vps.name} is {vps.service_status.value}, not active.",
            "vps_not_ready",
        )
    return ALLOWED


def can_create(vps: Vps, usage: SlotUsage, principal: Principal | None = None) -> Gate:
    if principal is not None and not principal.has(Scope.BACKUP_VM):
        return Gate.refused("The credential lacks the backup:vm scope.", "forbidden")
    gate = service_gate(vps)
    if not gate.allowed:
        return gate
    if usage.total == 0:
        return Gate.refused(not_on_plan_reason(vps), "snapshots_not_included")
    if usage.used >= usage.total:
        return Gate.refused(
            f"All {usage.total} snapshot slots are in use. Delete a snapshot or add slots "
            f"through POST /api/v2/vps/{vps.id}/actions/config.",
            "snapshot_limit_reached",
        )
    return ALLOWED


def can_restore(
    vps: Vps, snapshots: Iterable[Snapshot], principal: Principal | None = None
) -> Gate:
    if principal is not None and not principal.has(Scope.BACKUP_VM):
        return Gate.refused("The credential lacks the backup:vm scope.", "forbidden")
    gate = service_gate(vps)
    if not gate.allowed:
        return gate
    if not any(s.status is SnapshotStatus.AVAILABLE for s in snapshots):
        return Gate.refused("There is no available snapshot to restore to.", "snapshot_not_found")
    return ALLOWED


def lane_for(job_type: JobType, payload: JobPayload, snapshot: Snapshot | None) -> JobLane:
    """The worker lane of a job: ``slow`` for work that can wait on a guest or write RAM for
    minutes (a graceful shutdown or restart, a snapshot with RAM state, a restore of one),
    ``quick`` for the rest."""
    slow = False
    if isinstance(payload, PowerPayload):
        slow = payload.action is PowerAction.SHUTDOWN or (
            payload.action is PowerAction.RESTART and not payload.force
        )
    elif isinstance(payload, SnapshotPayload):
        slow = payload.include_memory_state
    elif job_type is JobType.SNAPSHOT_RESTORE:
        slow = snapshot is not None and snapshot.includes_memory_state
    return JobLane.SLOW if slow else JobLane.QUICK
